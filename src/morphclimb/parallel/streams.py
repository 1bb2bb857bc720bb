"""The stream executor: a step's children train at once in threads of this process.

On CUDA each thread ("slot") owns one CUDA stream (device.side_stream) and trains its tasks
there, so the kernels of several children overlap on one GPU without the context switching of
several processes (the local executor) and without copying the data set to each of them: the
split's arrays are uploaded once (augment.device_images) and every thread reads the same
device tensors. With `cuda_graph=True` each child's training step is captured as a CUDA graph
(train.fit's step="cuda_graph"), which also takes the per-kernel launch cost off the Python
threads, which share one interpreter lock.

On a CPU the slots are plain threads, each running its tasks with `threads` intra-op threads.

Training a task is still `worker.run_task`, a pure function of the task: on the CPU, with the
same thread count per task, the outcomes (weights, curves, metrics) are bitwise those of the
serial executor (tests/test_gpu_bench.py checks this); on CUDA they agree within CUDA's own
run-to-run non-determinism (cuDNN autotuning picks kernels per process). A task that raises
comes back as a failed outcome, as under the other executors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import traceback
from collections import deque

import torch

from ..augment import device_images, device_labels
from ..device import cpu_count, resolve_device, side_stream
from ..errors import ConfigError
from ..train import CAPTURE_LOCK
from ..worker import TrainOutcome, TrainTask, run_isolated
from .transport import OnDone, OnEpoch, failed, with_threads

PER_GPU = 8   # default slots per GPU: the paper's n_neigh (a whole step at once)


class _Stopped(BaseException):
    """Raised inside a slot's epoch callback to abandon its task (not an Exception, so that
    run_task and run_isolated let it through)."""


def slot_devices(device: torch.device, concurrency: int | None) -> list[str]:
    """The device of each slot: CUDA slots round-robin over the visible GPUs (for a device
    without an index), else every slot on `device`."""
    if concurrency is not None and (isinstance(concurrency, bool)
                                    or not isinstance(concurrency, int) or concurrency < 1):
        raise ConfigError(f"concurrency must be a positive integer, got {concurrency!r}")
    if device.type == "cuda":
        if device.index is None:
            gpus = torch.cuda.device_count()
            return [f"cuda:{k % gpus}" for k in range(concurrency or PER_GPU * gpus)]
        return [str(device)] * (concurrency or PER_GPU)
    return [str(device)] * (concurrency or cpu_count())


def _first_cuda_work(dev: torch.device) -> None:
    """A tiny convolution, matrix product and their backward passes (fp32 and bf16) on this
    thread's stream, then wait for them: the thread's cuDNN and cuBLAS handles and
    workspaces are made here, under CAPTURE_LOCK, rather than during another thread's CUDA
    graph capture."""
    x = torch.randn(2, 3, 8, 8, device=dev, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device=dev, requires_grad=True)
    for bf16 in (False, True):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            y = torch.nn.functional.conv2d(x, w, padding=1)
            z = y.flatten(1) @ torch.randn(y[0].numel(), 5, device=dev)
        z.float().sum().backward()
    torch.cuda.current_stream(dev).synchronize()


class StreamExecutor:
    """Trains up to `concurrency` tasks at once in threads, one CUDA stream per thread.

    `concurrency`: slots (CUDA: 8 per GPU by default; CPU: one per core). `threads`: intra-op
    threads per slot on the CPU (default cores // concurrency; also given to every task whose
    config leaves `threads` unset). `cuda_graph=True` trains every task with
    step="cuda_graph" (train.fit). `on_epoch(model_id, record)` runs in the calling thread.
    """

    name = "streams"
    one_at_a_time = False

    def __init__(self, split, device=None, concurrency: int | None = None,
                 threads: int | None = None, on_epoch: OnEpoch | None = None,
                 cuda_graph: bool = False):
        self.split = split
        self.device = resolve_device(device)
        self.devices = slot_devices(self.device, concurrency)
        self.concurrency = len(self.devices)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
        cpu = self.device.type == "cpu"
        self.threads = (threads or max(1, cpu_count() // self.concurrency)) if cpu else None
        self.on_epoch = on_epoch
        self.cuda_graph = bool(cuda_graph)
        self.streams = ([side_stream(d, ("streams", k)) for k, d in enumerate(self.devices)]
                        if self.device.type == "cuda" else [None] * self.concurrency)
        self._held = self._upload()

    def _upload(self) -> list[torch.Tensor]:
        """On an accelerator: put the train and validation parts on each slot device now (once;
        later parts, e.g. train+val for the final training, are cached on first use)."""
        if self.device.type == "cpu":
            return []
        held = []
        for dev in dict.fromkeys(self.devices):
            for part in (self.split.train, self.split.val):
                held.append(device_images(part.x, dev))
                held.append(device_labels(part.y, len(part.y), dev))
        return held

    def _prepare(self, task: TrainTask) -> TrainTask:
        task = with_threads(task, self.threads)
        if self.cuda_graph:
            task = dataclasses.replace(task, step="cuda_graph")
        return task

    def run(self, tasks: list[TrainTask], on_done: OnDone | None = None) -> list[TrainOutcome]:
        """Train every task; `on_done(outcome)` runs here, in the calling thread, as each one
        finishes. Returns the outcomes in the order of `tasks`."""
        tasks = [self._prepare(t) for t in tasks]
        outcomes: list[TrainOutcome | None] = [None] * len(tasks)
        if not tasks:
            return []
        todo = deque(range(len(tasks)))
        messages: queue.Queue = queue.Queue()
        stop = threading.Event()
        slots = [threading.Thread(target=self._slot, args=(k, tasks, todo, messages, stop),
                                  name=f"morphclimb-stream-{k}", daemon=True)
                 for k in range(min(self.concurrency, len(tasks)))]
        for t in slots:
            t.start()
        running, crash = len(slots), None
        try:
            while running:
                kind, *rest = messages.get()
                if kind == "exit":
                    running -= 1
                elif kind == "crash":
                    crash = rest[0]
                elif kind == "epoch":
                    self.on_epoch(*rest)
                else:
                    i, out = rest
                    outcomes[i] = out
                    if on_done is not None:
                        on_done(out)
        except BaseException:
            stop.set()   # each slot stops at its next epoch's end; nothing half-done is kept
            for t in slots:
                t.join()
            raise
        for t in slots:
            t.join()
        for i, out in enumerate(outcomes):   # only if every slot thread broke down
            if out is None:
                outcomes[i] = failed(tasks[i], f"stream executor slot failed: {crash}")
                if on_done is not None:
                    on_done(outcomes[i])
        return outcomes  # type: ignore[return-value]

    def _slot(self, k: int, tasks: list[TrainTask], todo: deque, messages: queue.Queue,
              stop: threading.Event) -> None:
        """One thread: take the next task until none is left (or `stop`), on slot k's stream."""
        try:
            dev = self.devices[k]
            if self.streams[k] is not None:
                torch.cuda.set_device(torch.device(dev))   # the current device is per thread
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            ctx = (torch.cuda.stream(self.streams[k]) if self.streams[k] is not None
                   else contextlib.nullcontext())
            with ctx:
                if self.streams[k] is not None:
                    with CAPTURE_LOCK:
                        _first_cuda_work(torch.device(dev))
                while not stop.is_set():
                    try:
                        i = todo.popleft()
                    except IndexError:
                        return
                    task = tasks[i]

                    def callback(record, _id=task.model_id):
                        if stop.is_set():
                            raise _Stopped
                        if self.on_epoch is not None:
                            messages.put(("epoch", _id, dict(record)))

                    try:
                        out = run_isolated(task, self.split, dev, callback)
                    except _Stopped:
                        return
                    messages.put(("done", i, out))
        except BaseException as e:  # noqa: BLE001 - reported to run(), which fails the rest
            messages.put(("crash", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))
        finally:
            messages.put(("exit",))

    def close(self) -> None:
        """Release this executor's hold on the uploaded data (the device copies stay cached
        while the split's arrays live; augment.clear_device_cache() drops them)."""
        self._held = []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
