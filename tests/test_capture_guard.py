"""device.CaptureGuard: CUDA graph captures kept apart from other threads' eager CUDA work.

CUDA invalidates a capture when any thread synchronises the device meanwhile (cuDNN
autotuning does, for every new convolution shape), and a failed capture leaves PyTorch's CUDA
generator and graph pool unusable for the rest of the process: seen on an H200 with eight
stream slots (docs/gpu.md). The guard's rules are checked here with threads; its wiring into
training and evaluation with `_cuda` patched to treat the CPU as CUDA.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

import morphclimb.device as device
from conftest import make_tiny_npz
from morphclimb import build, starting_arch
from morphclimb.data import load_dataset
from morphclimb.device import CaptureGuard
from morphclimb.train import TrainConfig, evaluate, fit, predict_proba

CUDA = "cuda"   # the guard only looks at the device's type: no GPU is needed to test it


def _start(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def _settle():
    time.sleep(0.15)


def _until(cond, seconds: float = 10.0) -> None:
    """Wait until cond() holds (a thread reached the point the test needs), or fail."""
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, "timed out waiting for a thread"
        time.sleep(0.005)


def test_shared_blocks_run_together():
    g = CaptureGuard()
    inside = threading.Barrier(3, timeout=5)

    def work():
        with g.shared(CUDA):
            inside.wait()       # all three inside at once, or the barrier times out

    threads = [_start(work) for _ in range(2)]
    with g.shared(CUDA):
        inside.wait()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)


def test_exclusive_waits_for_shared_and_keeps_new_shared_out():
    g = CaptureGuard()
    log = []
    release = threading.Event()

    def eager(name, hold=None):
        with g.shared(CUDA):
            log.append(f"{name} in")
            if hold is not None:
                hold.wait(5)
            log.append(f"{name} out")

    def capture():
        with g.exclusive(CUDA):
            log.append("capture in")
            _settle()
            log.append("capture out")

    first = _start(lambda: eager("eager1", release))
    _until(lambda: log == ["eager1 in"])
    cap = _start(capture)
    _until(lambda: g._waiting == 1)           # the capture waits for eager1
    late = _start(lambda: eager("eager2"))   # arrives while the capture waits: goes after it
    _settle()
    assert log == ["eager1 in"]
    release.set()
    for t in (first, cap, late):
        t.join(5)
    assert log == ["eager1 in", "eager1 out", "capture in", "capture out", "eager2 in",
                   "eager2 out"]


def test_shared_waits_for_a_running_capture():
    g = CaptureGuard()
    log = []
    started = threading.Event()

    def capture():
        with g.exclusive(CUDA):
            started.set()
            log.append("capture in")
            _settle()
            log.append("capture out")

    cap = _start(capture)
    started.wait(5)
    with g.shared(CUDA):
        log.append("eager")
    cap.join(5)
    assert log == ["capture in", "capture out", "eager"]


def test_two_captures_never_overlap():
    g = CaptureGuard()
    inside, most = [0], [0]
    lock = threading.Lock()

    def capture():
        for _ in range(20):
            with g.exclusive(CUDA):
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.001)
                with lock:
                    inside[0] -= 1

    threads = [_start(capture) for _ in range(4)]
    for t in threads:
        t.join(10)
    assert most[0] == 1


def test_shared_is_reentrant_while_a_capture_waits():
    """A thread inside shared() asking again (an evaluation inside a training, say) must not
    queue behind a waiting capture, which waits for that very thread: a deadlock. (Run in a
    daemon thread, so that a deadlock fails this test instead of hanging the suite.)"""
    g = CaptureGuard()
    log = []
    waiting = threading.Event()

    def capture():
        waiting.set()
        with g.exclusive(CUDA):
            log.append("capture")

    def eager():
        with g.shared(CUDA):
            cap = _start(capture)
            waiting.wait(5)
            _until(lambda: g._waiting == 1)   # the capture waits for this very thread
            with g.shared(CUDA):
                log.append("inner")
            log.append("outer")          # still inside: the capture has not run
        cap.join(5)

    t = _start(eager)
    t.join(10)
    assert not t.is_alive(), "deadlocked"
    assert log == ["inner", "outer", "capture"]


def test_a_capture_inside_the_threads_own_eager_work_is_refused():
    g = CaptureGuard()
    with g.shared(CUDA), pytest.raises(RuntimeError) as err:
        with g.exclusive(CUDA):
            pass
    assert str(err.value) == ("a CUDA graph capture inside this thread's own eager CUDA work "
                              "(CaptureGuard.shared) would wait for itself")
    with g.exclusive(CUDA):   # and the guard is free again
        pass


@pytest.mark.parametrize("dev", ["cpu", None, torch.device("cpu")])
def test_the_guard_does_nothing_off_cuda(dev):
    g = CaptureGuard()
    with g.shared(dev), g.exclusive(dev), g.exclusive(dev):
        pass
    assert (g._shared, g._exclusive, g._waiting) == (0, False, 0)


# --------------------------------------------------------------- wiring into train.py
@pytest.fixture(scope="module")
def split(tmp_path_factory):
    path = make_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz", n_train=64, n_test=32)
    return load_dataset(str(path)).split(val=32, seed=0)


def _blocked_by_a_capture(monkeypatch, work) -> list[str]:
    """Run `work` in a thread while the process's guard is held exclusively (as by a capture),
    treating the CPU as CUDA; the order in which things happened. The capture is held for up
    to 2 s or until the work is done: guarded work cannot end first."""
    work()   # once unguarded first: lazy initialisation stays out of the timing
    monkeypatch.setattr(CaptureGuard, "_cuda", staticmethod(lambda d: d is not None))
    log, done = [], threading.Event()
    with device.CUDA_WORK.exclusive("cpu"):
        t = _start(lambda: (work(), log.append("work done"), done.set()))
        done.wait(2)
        log.append("capture done")
    t.join(30)
    return log


CONFIG = TrainConfig(batch_size=16, bf16=False, channels_last=False, threads=1)


@pytest.mark.parametrize("step", ["eager", "compile"])
def test_eager_training_waits_for_a_capture(split, monkeypatch, step):
    if step == "compile":   # only the guard is checked here: compile would take minutes
        monkeypatch.setattr(torch, "compile", lambda model, **k: model)
    net = build(starting_arch(num_classes=4, image_size=8, widths=(4, 8, 8)))
    log = _blocked_by_a_capture(monkeypatch, lambda: fit(
        net, split.train, epochs=1, config=CONFIG, mean=split.mean, std=split.std, seed=0,
        device="cpu", step=step))
    assert log == ["capture done", "work done"]


def test_evaluation_and_prediction_wait_for_a_capture(split, monkeypatch):
    net = build(starting_arch(num_classes=4, image_size=8, widths=(4, 8, 8)))
    for work in (lambda: evaluate(net, split.val, mean=split.mean, std=split.std, device="cpu"),
                 lambda: predict_proba(net, split.val.x, mean=split.mean, std=split.std,
                                       device="cpu")):
        assert _blocked_by_a_capture(monkeypatch, work) == ["capture done", "work done"]


def test_the_static_step_unguarded_off_cuda_still_trains(split):
    """On a CPU the cuda_graph step runs uncaptured ("static") and the guard is not involved."""
    net = build(starting_arch(num_classes=4, image_size=8, widths=(4, 8, 8)))
    with device.CUDA_WORK.exclusive("cuda"):   # held: a guarded CPU step would hang here
        res = fit(net, split.train, epochs=1, config=CONFIG, mean=split.mean, std=split.std,
                  seed=0, device="cpu", step="cuda_graph")
    assert res.settings["step"] == "static" and np.isfinite(res.records[0].loss)


def test_build_leaves_the_cuda_generators_alone(monkeypatch):
    """build() seeds the CPU generator only: reseeding the CUDA ones (torch.manual_seed does)
    would change state that another thread's graph capture has registered."""
    def refuse(*a, **k):
        raise AssertionError("build() reseeded the CUDA generators")
    monkeypatch.setattr(torch.cuda, "manual_seed_all", refuse)
    monkeypatch.setattr(torch.cuda, "manual_seed", refuse)
    arch = starting_arch(num_classes=4, image_size=8, widths=(4, 8, 8))
    a, b = build(arch, seed=5), build(arch, seed=5)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    before = torch.random.get_rng_state()
    build(arch, seed=6)
    assert torch.equal(torch.random.get_rng_state(), before)


# ------------------------------------------------- cuDNN autotuning in the stream executor
@pytest.mark.parametrize("devices, asked, want", [
    (["cuda:0"] * 8, None, False),              # 8 slots on one GPU: off unless asked for
    (["cuda:0", "cuda:0"], None, False),
    (["cuda:0"] * 8, True, True),               # asked for: kept
    (["cuda:0"] * 8, False, False),
    (["cuda:0"], None, None),                   # one slot per GPU: fit's own default (on)
    (["cuda:0", "cuda:1"], None, None),
])
def test_stream_slots_sharing_a_gpu_train_without_autotuning_unless_asked(devices, asked,
                                                                          want, monkeypatch):
    """The first H200 run: a step of 8 children in 8 slots of one GPU trained 3.9x faster
    with cuDNN autotuning off (it synchronises the device); so the executor's tasks leave it
    off where slots share a GPU and the config does not say."""
    import morphclimb.parallel.streams as streams
    from morphclimb.worker import TrainTask
    monkeypatch.setattr(streams, "slot_devices", lambda device, concurrency: devices)
    monkeypatch.setattr(streams, "side_stream", lambda d, key: None)
    monkeypatch.setattr(streams.StreamExecutor, "_upload", lambda self: [])
    monkeypatch.setattr(streams, "resolve_device", lambda d: torch.device("cuda"))
    ex = streams.StreamExecutor(None, "cuda", cuda_graph=True)   # as made on a CUDA machine
    arch = starting_arch(num_classes=4, image_size=8, widths=(4, 8, 8))
    task = TrainTask("m", arch.to_dict(), None, 1, TrainConfig(cudnn_benchmark=asked), seed=0)
    out = ex._prepare(task)
    assert out.config.cudnn_benchmark is want and out.step == "cuda_graph"
    assert task.config.cudnn_benchmark is asked        # the caller's task is left alone
