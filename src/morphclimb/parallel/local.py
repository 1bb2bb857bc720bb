"""The local executor: children train at once in spawned worker processes on this machine."""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import threading
import time
from collections import deque
from multiprocessing import connection, get_context
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np
import torch

from ..device import cpu_count, resolve_device
from ..errors import ConfigError
from ..worker import TrainOutcome, TrainTask
from .transport import (
    DIED_TWICE,
    OnDone,
    OnEpoch,
    WorkerSplit,
    execute,
    failed,
    pack_split,
    result,
    with_threads,
)


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


PARENT_POLL_S = 0.2   # how often a worker checks that the search that started it is alive


def _watch_parent(parent: int) -> None:
    """End this worker at once when its parent (the search) is gone, killed with SIGKILL
    included: a worker mid-training would otherwise train on for nothing, and keep the
    resource tracker (and so the shared-memory blocks) alive until it finished."""
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(0)


def _worker_main(conn, spec: dict[str, Any], device: str, threads: int,
                 parent: int | None = None) -> None:
    """A worker process: attach the data once, then train the tasks that arrive on `conn`;
    it ends with its parent (`parent`: the pid of the search that started it)."""
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
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
        task, progress = pickle.loads(message)
        callback = None
        if progress:  # stream each epoch's record to the parent (the search's on_epoch)
            def callback(record, _id=task.model_id):
                conn.send_bytes(pickle.dumps(("epoch", _id, dict(record))))
        reply = execute(task, split, device, callback)
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

    @classmethod
    def from_config(cls, config, split, device, on_epoch: OnEpoch | None = None):
        """`workers` worker processes (default: 2 on a CPU, one per GPU) of `threads` each."""
        return cls(split, device, workers=config.workers, threads=config.threads,
                   on_epoch=on_epoch)

    def __init__(self, split, device=None, workers: int | None = None,
                 threads: int | None = None, on_epoch: OnEpoch | None = None):
        self.device = resolve_device(device)
        self.devices = worker_devices(self.device, workers)
        self.workers = len(self.devices)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = threads or max(1, cpu_count() // self.workers)
        self.on_epoch = on_epoch  # called here with (model id, epoch record) as epochs end
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
                                      args=(theirs, self._shared.spec, slot.device, self.threads,
                                            os.getpid()),
                                      name=f"morphclimb-worker-{self._slots.index(slot)}")
        slot.proc.start()
        theirs.close()
        slot.conn, slot.job = ours, None

    def _thread_count(self) -> int | None:
        return self.threads if self.device.type == "cpu" else None

    one_at_a_time = False

    def run(self, tasks: list[TrainTask], on_done: OnDone | None = None) -> list[TrainOutcome]:
        """Train every task in parallel; `on_done(outcome)` runs here as each one finishes."""
        tasks = [with_threads(t, self._thread_count()) for t in tasks]
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
                        self._send(slot, tasks[slot.job])
                for slot, message in self._wait():
                    reply = None if message is None else pickle.loads(message)
                    if reply is not None and reply[0] == "epoch":
                        self.on_epoch(reply[1], reply[2])
                        continue
                    i, slot.job = slot.job, None
                    if reply is None:
                        out = self._died(slot, tasks[i], tries[i], todo, i)
                    else:
                        out = result(tasks[i], reply, attempts=tries[i],
                                     worker=self._slots.index(slot))
                    if out is not None:
                        outcomes[i] = out
                        if on_done is not None:
                            on_done(out)
        except BaseException:
            self._stop_all()
            raise
        return outcomes  # type: ignore[return-value]

    def _send(self, slot: _Slot, task: TrainTask) -> None:
        try:
            slot.conn.send_bytes(pickle.dumps((task, self.on_epoch is not None)))
        except OSError:  # the worker died while idle: _wait sees it and retries the task
            pass

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
        return failed(task, f"{DIED_TWICE} while training {task.model_id} (last exit code "
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
