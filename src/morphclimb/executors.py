"""Where models train: the Executor protocol, and the serial executor (in this process).

To add an executor: a class with the members of `Executor` (its `from_config` builds it from
a search config) and its name and "module:class" in config.EXECUTORS, the one table the
config check, the CLI and `make_executor` read. Training a task must stay `worker.run_task`
(a pure function of the task), so the executor changes only the time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .worker import TrainOutcome, TrainTask, failed_outcome, run_isolated

__all__ = ["Executor", "SerialExecutor", "failed_outcome", "make_executor", "run_isolated"]

OnDone = Callable[[TrainOutcome], None]
OnEpoch = Callable[[str, dict], None]


class Executor(Protocol):
    """What the search needs of an executor."""

    name: str
    one_at_a_time: bool   # True: the search hands it one task at a time (live progress)

    def run(self, tasks: list[TrainTask], on_done: OnDone | None = None
            ) -> list[TrainOutcome]:
        """Train every task, calling `on_done(outcome)` as each finishes. A task that raises
        must come back as a failed outcome, never as an exception."""

    def close(self) -> None:
        """Release workers and memory."""

    @classmethod
    def from_config(cls, config, split, device, on_epoch: OnEpoch | None = None) -> Executor:
        """The executor a search config asks for (workers, threads, ...), on `device`."""


class SerialExecutor:
    """Trains tasks one after another in this process (the default)."""

    name = "serial"
    one_at_a_time = True

    def __init__(self, split, device=None, on_epoch: OnEpoch | None = None):
        self.split = split
        self.device = device
        self.on_epoch = on_epoch

    @classmethod
    def from_config(cls, config, split, device, on_epoch: OnEpoch | None = None):
        """The serial executor (no setting of the config changes it)."""
        return cls(split, device, on_epoch)

    def run(self, tasks: list[TrainTask], on_done: OnDone | None = None) -> list[TrainOutcome]:
        """Train every task; `on_done(outcome)` is called as each one finishes."""
        outcomes = []
        for task in tasks:
            cb = None
            if self.on_epoch is not None:
                def cb(record, _id=task.model_id):
                    self.on_epoch(_id, dict(record))
            out = run_isolated(task, self.split, self.device, cb)
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


def auto_executor(config, device) -> str:
    """The executor `config.executor` names, with "auto" resolved for `device`.

    "auto": the stream executor on CUDA (with train_step auto, each child's step is captured
    as a CUDA graph there; serial instead when train_step is compile, which is not
    thread-safe), the serial executor elsewhere (CPU behaviour as before). A choice made
    before the GPU benchmark measured it: docs/gpu.md says why, and how to check it.
    """
    if config.executor != "auto":
        return config.executor
    from .device import resolve_device
    dev = resolve_device(device if device is not None else config.device)
    if dev.type == "cuda" and config.train_step != "compile":
        return "streams"
    return "serial"


def make_executor(config, split, device=None, on_epoch: OnEpoch | None = None):
    """The executor named by `config.executor` (a name of config.EXECUTORS; "auto" resolved
    by auto_executor), built by its class's `from_config`."""
    import importlib

    from .config import EXECUTORS
    module, cls = EXECUTORS[auto_executor(config, device)].split(":")
    return getattr(importlib.import_module(module), cls).from_config(config, split, device,
                                                                     on_epoch)
