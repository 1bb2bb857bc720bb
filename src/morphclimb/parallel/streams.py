"""The stream executor: a step's children train at once in threads of this process.

On CUDA each thread ("slot") owns one CUDA stream (device.side_stream) and trains its tasks
there, so the kernels of several children overlap on one GPU without the context switching of
several processes (the local executor) and without copying the data set to each of them: the
split's arrays are uploaded once (augment.device_images) and every thread reads the same
device tensors. With `cuda_graph=True` each child's training step is captured as a CUDA graph
(train.fit's step="cuda_graph"), which also takes the per-kernel launch cost off the Python
threads, which share one interpreter lock: eager training in several threads is bound by that
lock (and by the one autograd thread per device), so on a GPU the graphs are what can scale.

The slot threads are started on the first run() and live until close(): what PyTorch keeps per
thread (cuDNN's autotuned plans, with cudnn.benchmark on; the cuBLAS and cuDNN handles and
workspaces) is made once per slot, not once per run, so a search step's convolutions are
tuned only for the shapes the slot has not seen before.

On a CPU the slots are plain threads, each running its tasks with `threads` intra-op threads.

Training a task is still `worker.run_task`, a pure function of the task: on the CPU, with the
same thread count per task, the outcomes (weights, curves, metrics) are bitwise those of the
serial executor (tests/test_gpu_bench.py checks this); on CUDA they agree within CUDA's own
run-to-run non-determinism (cuDNN autotuning picks kernels per process). A task that raises
comes back as a failed outcome, as under the other executors. torch.compile is not thread-safe,
so tasks with step="compile" are refused (ConfigError) before anything starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import traceback

import torch

from ..augment import device_images, device_labels
from ..device import CUDA_WORK, cpu_count, resolve_device, side_stream
from ..errors import ConfigError
from ..worker import TrainOutcome, TrainTask, run_isolated
from .transport import OnDone, OnEpoch, failed, with_threads

PER_GPU = 8   # default slots per GPU: the paper's n_neigh (a whole step at once)
POLL = 1.0    # seconds run() waits for a message before it checks that a slot is still alive


class _Stopped(BaseException):
    """Raised inside a slot's epoch callback to abandon its task (not an Exception, so that
    run_task and run_isolated let it through)."""


class _Run:
    """One run() call: its tasks, the messages the slots send back for it, its stop flag."""

    def __init__(self, tasks: list[TrainTask]):
        self.tasks = tasks
        self.messages: queue.Queue = queue.Queue()
        self.stop = threading.Event()


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
    workspaces are made here, alone (device.CUDA_WORK.exclusive), rather than during another
    thread's CUDA graph capture. No random draws: after a failed capture elsewhere PyTorch's
    CUDA generator would refuse them."""
    x = torch.linspace(-1, 1, 2 * 3 * 8 * 8, device=dev).view(2, 3, 8, 8).requires_grad_()
    w = torch.linspace(-1, 1, 4 * 3 * 3 * 3, device=dev).view(4, 3, 3, 3).requires_grad_()
    for bf16 in (False, True):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            y = torch.nn.functional.conv2d(x, w, padding=1)
            z = y.flatten(1) @ torch.ones(y[0].numel(), 5, device=dev)
        z.float().sum().backward()
    torch.cuda.current_stream(dev).synchronize()


class StreamExecutor:
    """Trains up to `concurrency` tasks at once in threads, one CUDA stream per thread.

    `concurrency`: slots (CUDA: 8 per GPU by default; CPU: one per core). `threads`: intra-op
    threads per slot on the CPU (default cores // concurrency; also given to every task whose
    config leaves `threads` unset). `cuda_graph=True` trains every task with
    step="cuda_graph" (train.fit). Where several slots share a GPU, a task whose config
    leaves `cudnn_benchmark` unset (None) trains without cuDNN autotuning (it synchronises the
    device; measured much slower there, docs/gpu.md). `on_epoch(model_id, record)` runs in the
    calling thread. The slot threads start on the first run() and end at close() (or the
    `with` block's end).
    """

    name = "streams"
    one_at_a_time = False

    @classmethod
    def from_config(cls, config, split, device, on_epoch: OnEpoch | None = None):
        """`workers` children at once, `threads` CPU threads, CUDA graphs with
        train_step=cuda_graph."""
        return cls(split, device, concurrency=config.workers, threads=config.threads,
                   on_epoch=on_epoch, cuda_graph=config.train_step == "cuda_graph")

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
        # several slots train on one GPU: cuDNN autotuning off unless a task asks for it
        self.shared_gpu = (self.device.type == "cuda"
                           and len(self.devices) > len(set(self.devices)))
        self.streams = ([side_stream(d, ("streams", k)) for k, d in enumerate(self.devices)]
                        if self.device.type == "cuda" else [None] * self.concurrency)
        self._jobs: queue.Queue = queue.Queue()    # (run, task index), or None: end the slot
        self._slots: list[threading.Thread] = []
        self._broken: dict[int, str] = {}          # slot -> why its thread could not start
        self._closed = False
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
        if self.cuda_graph and task.step != "compile":
            task = dataclasses.replace(task, step="cuda_graph")
        if self.shared_gpu and task.config.cudnn_benchmark is None:
            # autotuning synchronises the device: measured 3.9x slower for a step of 8
            # children on one H200 (docs/gpu.md), so off unless asked for
            task = dataclasses.replace(task, config=dataclasses.replace(task.config,
                                                                        cudnn_benchmark=False))
        if task.step == "compile":
            raise ConfigError(f"the stream executor cannot train {task.model_id} with "
                              "train_step=compile (torch.compile is not thread-safe); use "
                              "train_step=cuda_graph or eager, or another executor")
        return task

    @property
    def threads_started(self) -> list[threading.Thread]:
        """The slot threads started so far (alive until close())."""
        return list(self._slots)

    def _start_slots(self, n: int) -> None:
        while len(self._slots) < min(n, self.concurrency):
            k = len(self._slots)
            t = threading.Thread(target=self._slot, args=(k,), name=f"morphclimb-stream-{k}",
                                 daemon=True)
            self._slots.append(t)
            t.start()

    def run(self, tasks: list[TrainTask], on_done: OnDone | None = None) -> list[TrainOutcome]:
        """Train every task; `on_done(outcome)` runs here, in the calling thread, as each one
        finishes. Returns the outcomes in the order of `tasks`.

        An exception raised by a callback (on_done, on_epoch) stops every slot at its next
        epoch's end; run() waits for that, then re-raises: nothing of this run trains on."""
        if self._closed:
            raise RuntimeError("this StreamExecutor is closed")
        tasks = [self._prepare(t) for t in tasks]
        if not tasks:
            return []
        self._start_slots(len(tasks))
        r = _Run(tasks)
        for i in range(len(tasks)):
            self._jobs.put((r, i))
        outcomes: list[TrainOutcome | None] = [None] * len(tasks)
        pending = len(tasks)
        try:
            while pending:
                msg = self._next(r)
                if msg is None:          # no slot thread is alive: the rest fail below
                    break
                kind, *rest = msg
                if kind == "epoch":
                    if self.on_epoch is not None:
                        self.on_epoch(*rest)
                    continue
                pending -= 1
                if kind == "done":
                    i, out = rest
                    outcomes[i] = out
                    if on_done is not None:
                        on_done(out)
        except BaseException:
            r.stop.set()   # each slot stops at its next epoch's end; nothing half-done is kept
            self._drain(r, pending)
            raise
        r.stop.set()       # jobs still queued (only if every slot broke down) are dropped
        why = "; ".join(f"slot {k}: {e}" for k, e in sorted(self._broken.items()))
        for i, out in enumerate(outcomes):
            if out is None:
                outcomes[i] = failed(tasks[i], f"stream executor: no slot could train it: "
                                               f"{why}"[:2000])
                if on_done is not None:
                    on_done(outcomes[i])
        return outcomes  # type: ignore[return-value]

    def _next(self, r: _Run):
        """The next message for run `r`, or None once no slot thread is alive."""
        while True:
            try:
                return r.messages.get(timeout=POLL)
            except queue.Empty:
                if not any(t.is_alive() for t in self._slots):
                    return None

    def _drain(self, r: _Run, pending: int) -> None:
        """Wait until every job of the stopped run `r` has ended (done, or dropped)."""
        while pending:
            msg = self._next(r)
            if msg is None:
                return
            if msg[0] != "epoch":
                pending -= 1

    def _slot(self, k: int) -> None:
        """Slot k's thread: set up once (device, threads, stream, CUDA handles), then train
        the jobs it takes from the queue until close() sends None."""
        dev = self.devices[k]
        stream = self.streams[k]
        try:
            if stream is not None:
                torch.cuda.set_device(torch.device(dev))   # the current device is per thread
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
            with ctx:
                if stream is not None:
                    with CUDA_WORK.exclusive(dev):
                        _first_cuda_work(torch.device(dev))
                self._serve(k, dev)
        except BaseException as e:  # noqa: BLE001 - run() fails the tasks no slot can take
            self._broken[k] = (f"{type(e).__name__}: {e}\n"
                               f"{traceback.format_exc(limit=-4)}")

    def _serve(self, k: int, dev: str) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            r, i = job
            if r.stop.is_set():
                r.messages.put(("dropped", i))
                continue
            task = r.tasks[i]

            def callback(record, _id=task.model_id, _r=r):
                if _r.stop.is_set():
                    raise _Stopped
                if self.on_epoch is not None:
                    _r.messages.put(("epoch", _id, dict(record)))

            try:
                out = run_isolated(task, self.split, dev, callback)
            except _Stopped:
                r.messages.put(("dropped", i))
                continue
            except BaseException as e:  # noqa: BLE001 - the slot stays up for the next job
                out = failed(task, f"stream executor slot {k}: {type(e).__name__}: {e}\n"
                                   f"{traceback.format_exc(limit=-4)}"[:2000])
            r.messages.put(("done", i, out))

    def close(self) -> None:
        """End the slot threads (after the job each one is on) and release this executor's
        hold on the uploaded data (the device copies stay cached while the split's arrays
        live; augment.clear_device_cache() drops them). Idempotent."""
        if not self._closed:
            self._closed = True
            for _ in self._slots:
                self._jobs.put(None)
            for t in self._slots:
                t.join()
        self._held = []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
