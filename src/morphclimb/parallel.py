"""Parallel executors: a step's children train at once in local worker processes or on Ray.

Training a child is a pure function of its task (worker.run_task), so results do not depend on
which worker ran it or when. The data set travels to each worker once (shared memory, or the
Ray object store); tasks and outcomes (weights as CPU tensors) are pickled per child.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import pickle
import signal
import traceback
import warnings
from collections import deque
from collections.abc import Callable
from multiprocessing import connection, get_context
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np
import torch

from .device import cpu_count, resolve_device
from .errors import ConfigError, TrainingError
from .worker import TrainOutcome, TrainTask, run_task

OnDone = Callable[[TrainOutcome], None]
HOOK_ENV = "MORPHCLIMB_WORKER_HOOK"   # "module:function" called with each task in the worker
DIED_TWICE = "worker died twice"


# ---------------------------------------------------------------------------- data and tasks
@dataclasses.dataclass(frozen=True)
class Part:
    """One data part as a worker sees it: uint8 images x (N, H, W, C) and int64 labels y."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


class WorkerSplit:
    """A split rebuilt from packed arrays; train and val are views of one train+val buffer."""

    def __init__(self, arrays: dict[str, Any]):
        n = int(arrays["n_train"])
        tv_x, tv_y = arrays["trainval_x"], arrays["trainval_y"]
        self.train_full = Part(tv_x, tv_y)
        self.train, self.val = Part(tv_x[:n], tv_y[:n]), Part(tv_x[n:], tv_y[n:])
        self.test = Part(arrays["test_x"], arrays["test_y"])
        self.mean, self.std = tuple(arrays["mean"]), tuple(arrays["std"])


def pack_split(split) -> dict[str, Any]:
    """The arrays a worker needs: train+val images in one buffer (train first), test, stats."""
    return {"trainval_x": np.concatenate([split.train.x, split.val.x]),
            "trainval_y": np.concatenate([split.train.y, split.val.y]).astype(np.int64),
            "n_train": len(split.train.y), "test_x": np.ascontiguousarray(split.test.x),
            "test_y": np.asarray(split.test.y, dtype=np.int64),
            "mean": [float(m) for m in split.mean], "std": [float(s) for s in split.std]}


def _apply_hook(task: TrainTask) -> TrainTask:
    """Test/debug hook: $MORPHCLIMB_WORKER_HOOK="module:function" may replace the task."""
    spec = os.environ.get(HOOK_ENV)
    if not spec:
        return task
    module, _, name = spec.partition(":")
    new = getattr(importlib.import_module(module), name)(task)
    return task if new is None else new


def execute(task: TrainTask, split, device: str) -> tuple:
    """Run one task in a worker: ("ok", outcome) or ("raise", exception, traceback text)."""
    try:
        return ("ok", run_task(_apply_hook(task), split, device))
    except Exception as e:  # noqa: BLE001 - re-raised in the parent, as the serial executor would
        tb = traceback.format_exc()
        try:
            pickle.dumps(e)
        except Exception:  # noqa: BLE001
            e = TrainingError(f"{type(e).__name__}: {e}")
        return ("raise", e, tb)


def _failed(task: TrainTask, reason: str, **meta) -> TrainOutcome:
    return TrainOutcome(task.model_id, False, None, [], None, 0.0, error=reason,
                        meta={**task.meta, **meta})


def _result(task: TrainTask, message: tuple, **meta) -> TrainOutcome:
    """The outcome in a worker's message; a task that raised re-raises here, in the parent."""
    if message[0] == "raise":
        _, exc, tb = message
        raise exc from TrainingError(f"while training {task.model_id} in a worker:\n{tb}")
    out = message[1]
    out.meta.update(meta)
    return out


def _with_threads(task: TrainTask, threads: int | None) -> TrainTask:
    if threads is None or task.config.threads is not None:
        return task
    return dataclasses.replace(task, config=dataclasses.replace(task.config, threads=threads))


# ---------------------------------------------------------------------------- local processes
class _Shared:
    """Packed split arrays copied once into shared-memory blocks owned by the parent."""

    def __init__(self, packed: dict[str, Any]):
        self.blocks: list[SharedMemory] = []
        self.spec: dict[str, Any] = {}
        for key, value in packed.items():
            if not isinstance(value, np.ndarray):
                self.spec[key] = value
                continue
            shm = SharedMemory(create=True, size=max(1, value.nbytes))
            self.blocks.append(shm)
            np.ndarray(value.shape, value.dtype, buffer=shm.buf)[...] = value
            self.spec[key] = ("shm", shm.name, value.shape, value.dtype.str)

    def close(self) -> None:
        """Release and remove the blocks."""
        for shm in self.blocks:
            shm.close()
            shm.unlink()
        self.blocks = []


def _attach(spec: dict[str, Any]) -> tuple[list[SharedMemory], dict[str, Any]]:
    blocks, arrays = [], {}
    for key, value in spec.items():
        if isinstance(value, tuple) and value and value[0] == "shm":
            shm = SharedMemory(name=value[1])
            blocks.append(shm)
            arrays[key] = np.ndarray(value[2], np.dtype(value[3]), buffer=shm.buf)
        else:
            arrays[key] = value
    return blocks, arrays


def _worker_main(conn, spec: dict[str, Any], device: str, threads: int) -> None:
    """A worker process: attach the data once, then train the tasks that arrive on `conn`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    blocks, arrays = _attach(spec)
    split = WorkerSplit(arrays)
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            break
        if not message:
            break
        reply = execute(pickle.loads(message), split, device)
        conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
    del split, arrays
    for shm in blocks:
        try:
            shm.close()
        except BufferError:  # a view is still referenced; the OS frees it at exit
            pass


def worker_devices(device: torch.device, workers: int | None) -> list[str]:
    """The device of each worker: CUDA round-robin over visible GPUs, else all on `device`."""
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if device.type == "cuda" and device.index is None:
        gpus = torch.cuda.device_count()
        return [f"cuda:{k % gpus}" for k in range(workers or gpus)]
    return [str(device)] * (workers or (2 if device.type == "cpu" else 1))


@dataclasses.dataclass
class _Slot:
    device: str
    proc: Any = None
    conn: Any = None
    job: int | None = None   # index of the task it is training


class LocalExecutor:
    """Trains tasks in N spawned worker processes (CPU: 2 by default; CUDA: one per GPU)."""

    name = "local"

    def __init__(self, split, device=None, workers: int | None = None,
                 threads: int | None = None):
        self.device = resolve_device(device)
        self.devices = worker_devices(self.device, workers)
        self.workers = len(self.devices)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = threads or max(1, cpu_count() // self.workers)
        self.deaths: list[dict[str, Any]] = []   # model, worker, exit code of each dead worker
        self._ctx = get_context("spawn")
        self._shared = _Shared(pack_split(split))
        self._slots = [_Slot(d) for d in self.devices]
        try:
            for slot in self._slots:
                self._start(slot)
        except BaseException:
            self.close()
            raise

    def _start(self, slot: _Slot) -> None:
        ours, theirs = self._ctx.Pipe()
        slot.proc = self._ctx.Process(target=_worker_main, daemon=True,
                                      args=(theirs, self._shared.spec, slot.device, self.threads),
                                      name=f"morphclimb-worker-{self._slots.index(slot)}")
        slot.proc.start()
        theirs.close()
        slot.conn, slot.job = ours, None

    def _thread_count(self) -> int | None:
        return self.threads if self.device.type == "cpu" else None

    def run(self, tasks: list[TrainTask], on_done: OnDone | None = None) -> list[TrainOutcome]:
        """Train every task in parallel; `on_done(outcome)` runs here as each one finishes."""
        tasks = [_with_threads(t, self._thread_count()) for t in tasks]
        outcomes: list[TrainOutcome | None] = [None] * len(tasks)
        tries, todo = [0] * len(tasks), deque(range(len(tasks)))
        try:
            for slot in self._slots:
                if slot.proc is None or not slot.proc.is_alive():
                    self._start(slot)
            while todo or any(s.job is not None for s in self._slots):
                for slot in self._slots:
                    if slot.job is None and todo:
                        slot.job = todo.popleft()
                        tries[slot.job] += 1
                        slot.conn.send_bytes(pickle.dumps(tasks[slot.job]))
                for slot, message in self._wait():
                    i, slot.job = slot.job, None
                    if message is None:
                        out = self._died(slot, tasks[i], tries[i], todo, i)
                    else:
                        out = _result(tasks[i], pickle.loads(message), attempts=tries[i],
                                      worker=self._slots.index(slot))
                    if out is not None:
                        outcomes[i] = out
                        if on_done is not None:
                            on_done(out)
        except BaseException:
            self._stop_all()
            raise
        return outcomes  # type: ignore[return-value]

    def _wait(self) -> list[tuple[_Slot, bytes | None]]:
        """Busy slots that finished: (slot, reply bytes) or (slot, None) if its worker died."""
        busy = [s for s in self._slots if s.job is not None]
        ready = set(connection.wait([s.conn for s in busy] + [s.proc.sentinel for s in busy]))
        done = []
        for s in busy:
            if s.conn in ready or s.proc.sentinel in ready:
                try:
                    done.append((s, s.conn.recv_bytes() if s.conn.poll() else None))
                except (EOFError, OSError):
                    done.append((s, None))
        return done

    def _died(self, slot: _Slot, task: TrainTask, tries: int, todo: deque, i: int):
        """Replace a dead worker; retry its task once, then give up on it."""
        slot.proc.join(timeout=5)
        code = slot.proc.exitcode
        self.deaths.append({"model": task.model_id, "worker": self._slots.index(slot),
                            "exitcode": code})
        slot.conn.close()
        self._start(slot)
        if tries < 2:
            todo.appendleft(i)
            return None
        return _failed(task, f"{DIED_TWICE} while training {task.model_id} (last exit code "
                       f"{code})", attempts=tries)

    def _stop_all(self) -> None:
        """Stop every worker now (terminate, then kill), e.g. on Ctrl-C."""
        for slot in self._slots:
            if slot.proc is not None and slot.proc.is_alive():
                slot.proc.terminate()
        for slot in self._slots:
            if slot.proc is not None:
                slot.proc.join(timeout=3)
                if slot.proc.is_alive():
                    slot.proc.kill()
                    slot.proc.join()
            if slot.conn is not None:
                slot.conn.close()
            slot.proc, slot.conn, slot.job = None, None, None

    def close(self) -> None:
        """Ask the workers to exit, stop any that do not, and free the shared data."""
        for slot in self._slots:
            if slot.proc is not None and slot.proc.is_alive():
                try:
                    slot.conn.send_bytes(b"")
                except OSError:
                    pass
        for slot in self._slots:
            if slot.proc is not None:
                slot.proc.join(timeout=5)
        self._stop_all()
        self._shared.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------- Ray
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

    def __init__(self, split, device=None, workers: int | None = None,
                 address: str | None = None):
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

    def run(self, tasks: list[TrainTask], on_done: OnDone | None = None) -> list[TrainOutcome]:
        """Submit every task; `on_done(outcome)` runs here, in completion order."""
        ray = self._ray
        device = "cuda" if self.device.type == "cuda" else str(self.device)
        threads = self.threads if self.device.type == "cpu" else None
        fn = self._remote.options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=1,
                                  retry_exceptions=False)
        tasks = [_with_threads(t, threads) for t in tasks]
        refs = {fn.remote(t, self._data, device, self.threads): i for i, t in enumerate(tasks)}
        outcomes: list[TrainOutcome | None] = [None] * len(tasks)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                i = refs[done[0]]
                outcomes[i] = self._get(done[0], tasks[i])
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
            return _result(task, self._ray.get(ref))
        except exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None
        except exceptions.RayError as e:
            return _failed(task, f"{DIED_TWICE} while training {task.model_id}: "
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
