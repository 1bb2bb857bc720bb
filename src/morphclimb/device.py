"""Device resolution and per-device speed settings (bf16 autocast, channels_last, threads)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Hashable, Iterator
from functools import lru_cache

import torch

from .errors import ConfigError

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX512-BF16 / AMX, ARMv8.6 BF16


def resolve_device(spec: str | torch.device | None = None) -> torch.device:
    """The torch.device for `spec`: None/"auto" -> cuda if available else cpu; "cpu", "cuda:1"..."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(spec.strip() if isinstance(spec, str) else spec)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"unknown device {spec!r}; use 'auto', 'cpu', 'cuda' or 'cuda:<index>'"
                          ) from exc
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "without CUDA" if torch.version.cuda is None else f"with CUDA {torch.version.cuda}"
            raise ConfigError(f"device {spec!r} is not available: no CUDA device found (torch "
                              f"{torch.__version__}, built {build}); use 'cpu' or 'auto'")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device {spec!r} is not available: this machine has {count} CUDA "
                              f"device(s), cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {spec!r} is not available (no Apple MPS backend); use "
                              "'cpu' or 'auto'")
    elif dev.type != "cpu":
        raise ConfigError(f"unsupported device {spec!r}; use 'auto', 'cpu', 'cuda[:index]' or 'mps'")
    return dev


@lru_cache(maxsize=1)
def _cpuinfo_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16, AMX or ARM BF16)."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except RuntimeError:
            pass
    return any(flag in _cpuinfo_flags() for flag in _CPU_BF16_FLAGS)


def cpu_count() -> int:
    """The number of CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


OVERSUBSCRIBE = 4          # workers or threads per CPU core at most (a setting past it is
                           # a typo or a damaged run, and each worker holds its own copy)
CUDA_WORKERS = 64          # concurrent trainings on the GPUs at most (streams or processes)


def check_resources(workers: int | None, threads: int | None, device: torch.device) -> None:
    """ConfigError unless `workers` and `threads` are within what this machine can run: at
    most OVERSUBSCRIBE per CPU core (CUDA: CUDA_WORKERS workers). Checked before any worker
    or thread starts, so a damaged or mistyped setting never starts a million processes."""
    from .errors import ConfigError
    cores = cpu_count()
    most = CUDA_WORKERS if device.type == "cuda" else OVERSUBSCRIBE * cores
    if workers is not None and workers > most:
        raise ConfigError(f"workers {workers:,} is more than this machine runs at once "
                          f"(at most {most} here, {cores} CPU cores); pass --workers N")
    if threads is not None and threads > OVERSUBSCRIBE * cores:
        raise ConfigError(f"threads {threads:,} is more than this machine has cores for (at "
                          f"most {OVERSUBSCRIBE * cores} here, {cores} CPU cores); pass "
                          "--threads N")


def auto_settings(device: torch.device | str) -> dict:
    """Default speed settings for a device: {"bf16": bool, "channels_last": bool, "threads": int|None}.

    bf16 autocast where the hardware computes bf16 natively (measured ~1.9x faster training on
    an AVX512-BF16 CPU, accuracy unchanged; see BENCHMARKS.md). channels_last where it measured
    faster: CPUs with oneDNN (~1.3x here, fp32 and bf16) and CUDA GPUs with bf16 tensor cores.
    threads: all usable cores on CPU, None (leave torch's setting alone) elsewhere.
    """
    dev = torch.device(device)
    if dev.type == "cpu":
        onednn = torch.backends.mkldnn.is_available()
        return {"bf16": cpu_supports_bf16(), "channels_last": bool(onednn),
                "threads": cpu_count()}
    if dev.type == "cuda":
        bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        return {"bf16": bf16, "channels_last": bf16, "threads": None}
    return {"bf16": False, "channels_last": False, "threads": None}


@contextlib.contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for the duration of the block, then restore it."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_cudnn_lock = threading.Lock()
_cudnn_users = 0          # CUDA blocks of speed_settings open now (in any thread)
_cudnn_wanted = 0         # ... of them asking for cuDNN autotuning
_cudnn_before = False     # cudnn.benchmark as it was before the first of them


@contextlib.contextmanager
def speed_settings(device: torch.device, threads: int | None,
                   cudnn_benchmark: bool = True) -> Iterator[None]:
    """Threads (see num_threads) and, on CUDA, cuDNN autotuning (`cudnn_benchmark`) for the
    block; both restored.

    cudnn.benchmark is process-wide: with blocks open in several threads at once (the stream
    executor) it is on while any open block asks for it, and restored when the last one ends.
    Autotuning times every candidate kernel of each new convolution shape once per thread
    (PyTorch keeps the chosen plans per thread) and synchronises the device while it does.
    """
    global _cudnn_users, _cudnn_wanted, _cudnn_before
    cuda = device.type == "cuda"
    if cuda:
        with _cudnn_lock:
            if _cudnn_users == 0:
                _cudnn_before = torch.backends.cudnn.benchmark
            _cudnn_users += 1
            _cudnn_wanted += bool(cudnn_benchmark)
            torch.backends.cudnn.benchmark = _cudnn_wanted > 0
    try:
        with num_threads(threads):
            yield
    finally:
        if cuda:
            with _cudnn_lock:
                _cudnn_users -= 1
                _cudnn_wanted -= bool(cudnn_benchmark)
                torch.backends.cudnn.benchmark = (_cudnn_wanted > 0 if _cudnn_users
                                                  else _cudnn_before)


_streams: dict[tuple, torch.cuda.Stream] = {}
_streams_lock = threading.Lock()


def side_stream(device: torch.device | str, key: Hashable) -> torch.cuda.Stream:
    """A CUDA stream of `device` kept for `key` and handed out again for it, never to another key.

    PyTorch hands out pooled streams round-robin (32 per device), so asking for a new stream
    per training run would sooner or later give one that another thread is using, fatal
    during a CUDA graph capture. Holding one stream per key (an executor slot, a thread)
    keeps the number of streams asked for small and each one private to its user.
    """
    dev = torch.device(device)
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    with _streams_lock:
        stream = _streams.get((dev.index, key))
        if stream is None:
            stream = _streams[(dev.index, key)] = torch.cuda.Stream(dev)
        return stream


class CaptureGuard:
    """Keeps CUDA graph captures apart from eager CUDA work in other threads of the process.

    CUDA forbids synchronising the device (or its context) while any stream of it is being
    captured: the call fails and invalidates the capture. Eager work can do exactly that
    behind the caller's back: cuDNN autotuning synchronises the device for every new
    convolution shape, and the caching allocator's cudaFree does too. A failed capture also
    leaves PyTorch's CUDA generator and graph memory pool in capture state, so every later
    capture or random draw on the device fails. So, in a process whose threads train at once
    (parallel.streams):

    * `exclusive(device)`: a capture (and each slot thread's first CUDA work, which creates
      its cuDNN/cuBLAS handles) runs alone: it waits until no thread is inside `shared`, and
      keeps new ones out until it ends;
    * `shared(device)`: eager CUDA work that may synchronise the device (a CUDA graph's
      warm-up, an eager or compiled training, an evaluation); any number of threads at once,
      re-entrant within a thread. Replays of captured graphs need neither.

    A waiting capture goes before new `shared` blocks (so eager work cannot starve it). On
    other devices both are no-ops."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0            # threads inside shared() now
        self._exclusive = False     # a thread inside exclusive() now
        self._waiting = 0           # threads waiting for exclusive()
        self._depth = threading.local()

    @staticmethod
    def _cuda(device) -> bool:
        return device is not None and torch.device(device).type == "cuda"

    @contextlib.contextmanager
    def shared(self, device) -> Iterator[None]:
        if not self._cuda(device):
            yield
            return
        depth = getattr(self._depth, "n", 0)
        if depth == 0:   # a thread already inside shared() never waits (no self-deadlock)
            with self._cond:
                while self._exclusive or self._waiting:
                    self._cond.wait()
                self._shared += 1
        self._depth.n = depth + 1
        try:
            yield
        finally:
            self._depth.n = depth
            if depth == 0:
                with self._cond:
                    self._shared -= 1
                    self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self, device) -> Iterator[None]:
        if not self._cuda(device):
            yield
            return
        if getattr(self._depth, "n", 0):
            raise RuntimeError("a CUDA graph capture inside this thread's own eager CUDA work "
                               "(CaptureGuard.shared) would wait for itself")
        with self._cond:
            self._waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait()
            except BaseException:   # interrupted: let the shared blocks it held back go on
                self._waiting -= 1
                self._cond.notify_all()
                raise
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


# The process's one guard: captures (train._StaticStep.capture, parallel.streams' first CUDA
# work) are exclusive, eager CUDA training and evaluation shared.
CUDA_WORK = CaptureGuard()
