"""The Ray executor: each child is a Ray task on an existing cluster or a local one."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from ..device import cpu_count
from ..errors import ConfigError
from ..worker import TrainOutcome, TrainTask
from .transport import (
    DIED_TWICE,
    OnDone,
    WorkerSplit,
    execute,
    failed,
    pack_split,
    result,
    with_threads,
)


def _ray_train(task: TrainTask, packed: dict[str, Any], device: str, threads: int) -> tuple:
    """A Ray task: train one child on the split from the object store."""
    torch.set_num_threads(threads)
    with warnings.catch_warnings():  # object-store arrays are read-only; training only reads
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return execute(task, WorkerSplit(packed), device)


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ConfigError("executor 'ray' needs Ray: pip install 'morphclimb[ray]' (or use "
                          "executor 'local' for worker processes on this machine)") from e
    return ray


class RayExecutor:
    """Trains each task as a Ray task on an existing cluster (`address`) or a local one."""

    name = "ray"

    @classmethod
    def from_config(cls, config, split, device, on_epoch=None):
        """`workers` Ray tasks at once, on the cluster at `ray_address` (else a local one)."""
        return cls(split, device, workers=config.workers, address=config.ray_address,
                   on_epoch=on_epoch)

    def __init__(self, split, device=None, workers: int | None = None,
                 address: str | None = None, on_epoch=None):
        self.on_epoch = on_epoch
        ray = self._ray = _import_ray()
        self._owns = not ray.is_initialized()
        if self._owns:
            kw = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            if address:
                ray.init(address=address, **kw)
            else:
                ray.init(num_cpus=cpu_count(), **kw)
        try:
            self._plan(device, workers)
            self._data = ray.put(pack_split(split))
        except BaseException:
            self.close()
            raise
        self._remote = ray.remote(_ray_train)

    def _plan(self, device, workers: int | None) -> None:
        """Device, workers and each task's CPU/GPU request from the cluster's resources."""
        res = self._ray.cluster_resources()
        cpus, gpus = float(res.get("CPU", 1)), float(res.get("GPU", 0))
        auto = device is None or (isinstance(device, str) and device.strip().lower() == "auto")
        self.device = torch.device("cuda" if gpus >= 1 else "cpu") if auto else torch.device(device)
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"workers must be a positive integer, got {workers!r}")
        self.num_gpus = 0.0
        if self.device.type == "cuda":
            if gpus < 1:
                raise ConfigError(f"device {self.device} asked for, but the Ray cluster has no "
                                  "GPUs; use device 'cpu'")
            self.workers = workers or int(gpus)
            self.num_gpus = 1.0 if self.workers <= gpus else gpus / self.workers
        else:
            self.workers = workers or 2
        self.num_cpus = max(cpus / self.workers, 0.01) if self.device.type != "cuda" else 1.0
        self.threads = max(1, int(self.num_cpus))

    one_at_a_time = False

    def run(self, tasks: list[TrainTask], on_done: OnDone | None = None) -> list[TrainOutcome]:
        """Submit every task; `on_done(outcome)` runs here, in completion order."""
        ray = self._ray
        device = "cuda" if self.device.type == "cuda" else str(self.device)
        threads = self.threads if self.device.type == "cpu" else None
        fn = self._remote.options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=1,
                                  retry_exceptions=False)
        tasks = [with_threads(t, threads) for t in tasks]
        refs = {fn.remote(t, self._data, device, self.threads): i for i, t in enumerate(tasks)}
        outcomes: list[TrainOutcome | None] = [None] * len(tasks)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                i = refs[done[0]]
                outcomes[i] = self._get(done[0], tasks[i])
                if self.on_epoch is not None:   # Ray sends no live messages: replay them
                    for record in outcomes[i].records:
                        self.on_epoch(outcomes[i].model_id, dict(record))
                if on_done is not None:
                    on_done(outcomes[i])
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return outcomes  # type: ignore[return-value]

    def _get(self, ref, task: TrainTask) -> TrainOutcome:
        exceptions = self._ray.exceptions
        try:
            return result(task, self._ray.get(ref))
        except exceptions.RayTaskError as e:
            return failed(task, f"{type(e).__name__}: {str(e)[:1500]}")
        except exceptions.RayError as e:
            return failed(task, f"{DIED_TWICE} while training {task.model_id}: "
                           f"{type(e).__name__}: {str(e)[:500]}")

    def close(self) -> None:
        """Disconnect from (or shut down the local) Ray cluster if this executor started it."""
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
