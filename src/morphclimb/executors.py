"""Where models train: the serial executor (in this process); others share its interface."""

from __future__ import annotations

from collections.abc import Callable

from .worker import TrainOutcome, TrainTask, run_task

OnDone = Callable[[TrainOutcome], None]
OnEpoch = Callable[[str, dict], None]


class SerialExecutor:
    """Trains tasks one after another in this process (the default)."""

    name = "serial"

    def __init__(self, split, device=None, on_epoch: OnEpoch | None = None):
        self.split = split
        self.device = device
        self.on_epoch = on_epoch

    def run(self, tasks: list[TrainTask], on_done: OnDone | None = None) -> list[TrainOutcome]:
        """Train every task; `on_done(outcome)` is called as each one finishes."""
        outcomes = []
        for task in tasks:
            cb = None
            if self.on_epoch is not None:
                def cb(record, _id=task.model_id):
                    self.on_epoch(_id, dict(record))
            out = run_task(task, self.split, self.device, cb)
            if on_done is not None:
                on_done(out)
            outcomes.append(out)
        return outcomes

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_executor(config, split, device=None, on_epoch: OnEpoch | None = None):
    """The executor named by `config.executor` ('serial', 'local' or 'ray')."""
    if config.executor == "serial":
        return SerialExecutor(split, device, on_epoch)
    if config.executor == "local":
        from .parallel import LocalExecutor
        return LocalExecutor(split, device, workers=config.workers, threads=config.threads,
                             on_epoch=on_epoch)
    from .parallel import RayExecutor
    return RayExecutor(split, device, workers=config.workers, address=config.ray_address)
