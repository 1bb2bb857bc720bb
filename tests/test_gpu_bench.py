"""Issue 10's CPU-testable side: FLOP counts, the device cache, the stream executor (same
outcomes as the serial executor), the graph-ready training step, the archive decoder, and
benchmarks/gpu.py end to end in its --smoke mode. GPU-only checks skip without CUDA."""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import io
import json
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import morphclimb.augment as augment
from conftest import make_tiny_npz
from morphclimb import build, starting_arch, weights_of
from morphclimb.data import ImageData, load_dataset
from morphclimb.data.archive import archive_to_npz
from morphclimb.data.folder import load_folder
from morphclimb.errors import ConfigError, DataError
from morphclimb.executors import SerialExecutor
from morphclimb.flops import flops_by_op, forward_flops, training_flops
from morphclimb.morphisms import apply_random_morphisms
from morphclimb.parallel.streams import StreamExecutor, slot_devices
from morphclimb.spec import has_bias
from morphclimb.train import TrainConfig, evaluate, fit
from morphclimb.worker import TrainTask

ROOT = Path(__file__).resolve().parent.parent
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
CPU_FAST = TrainConfig(batch_size=32, bf16=False, channels_last=False, threads=1,
                       eval_batch_size=64)


def grown(n: int, seed: int = 0, widths=(4, 8, 8), size: int = 8, classes: int = 4):
    arch = starting_arch(num_classes=classes, image_size=size, widths=widths)
    w = weights_of(build(arch, seed=0))
    if n == 0:
        return arch, w
    a, w2, _ = apply_random_morphisms(arch, w, n, np.random.default_rng(seed))
    return a, w2


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    path = make_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz", n_train=192, n_test=48)
    return load_dataset(str(path)).split(val=48, seed=0)


def step_tasks(config=CPU_FAST, children: int = 3, epochs: int = 2) -> list[TrainTask]:
    """A step's tasks: children grown by random morphisms, plus one fresh (unweighted) model."""
    tasks = []
    for j in range(children):
        a, w = grown(3, seed=j)
        tasks.append(TrainTask(f"c{j}", a.to_dict(), w, epochs, config, seed=10 + j))
    a, _ = grown(0)
    tasks.append(TrainTask("fresh", a.to_dict(), None, epochs, config, seed=99, init_seed=7))
    return tasks


# ----------------------------------------------------------------------------- FLOPs
@pytest.mark.parametrize("n", [0, 6])
def test_conv_and_linear_flops_match_torch_flop_counter(n):
    from torch.utils.flop_counter import FlopCounterMode
    arch, w = grown(n, widths=(8, 16, 16), size=16)
    net = build(arch, w).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.randn(1, 3, 16, 16))
    by_op = flops_by_op(arch)
    biases = sum(arch.shapes[x.id][0] if x.op == "linear" else int(np.prod(arch.shapes[x.id]))
                 for x in arch.nodes if x.op in ("conv", "linear") and has_bias(x))
    assert by_op.get("conv", 0) + by_op["linear"] - biases == counter.get_total_flops()
    assert forward_flops(arch) == sum(by_op.values()) > counter.get_total_flops()
    assert training_flops(arch) == 3 * forward_flops(arch)


def test_starting_arch_flops_by_hand():
    arch = starting_arch(widths=(32, 64, 128))  # 32x32, pools after conv 1 and 2
    conv = 2 * (3 * 32 * 9 * 32 * 32 + 32 * 64 * 9 * 16 * 16 + 64 * 128 * 9 * 8 * 8)
    assert flops_by_op(arch)["conv"] == conv
    assert flops_by_op(arch)["linear"] == 2 * 128 * 10 + 10
    assert 0.9 < conv / forward_flops(arch) < 1.0


# ----------------------------------------------------------------------------- device cache
def test_device_cache_reuses_tensors_per_array_and_forgets_dead_arrays(monkeypatch):
    monkeypatch.setattr(augment, "CACHED_DEVICE_TYPES", frozenset({"cpu"}))
    augment.clear_device_cache()
    x = np.random.default_rng(0).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    y = np.arange(6)
    a, b = augment.device_images(x, "cpu"), augment.device_images(x, "cpu")
    assert a is b and torch.equal(a, augment.images_to_device(x, "cpu"))
    assert augment.device_labels(y, 6, "cpu") is augment.device_labels(y, 6, "cpu")
    other = x.copy()
    assert augment.device_images(other, "cpu") is not a
    assert augment.cached_entries() == 3
    del other
    gc.collect()
    assert augment.cached_entries() == 2      # the dead array's entry went with it
    with pytest.raises(DataError, match="labels must lie in 0..2"):
        augment.device_labels(y, 6, "cpu", classes=3)   # checked on every call, cached or not
    assert augment.clear_device_cache() == 2 and augment.cached_entries() == 0


def test_device_cache_is_off_on_cpu_by_default():
    augment.clear_device_cache()
    x = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    assert augment.device_images(x, "cpu") is not augment.device_images(x, "cpu")
    assert augment.cached_entries() == 0


def test_fits_through_the_cache_train_exactly_as_without(monkeypatch, split):
    arch, w = grown(2)
    results = []
    for cached in (False, True, True):
        if cached:
            monkeypatch.setattr(augment, "CACHED_DEVICE_TYPES", frozenset({"cpu"}))
        net = build(arch, w)
        fit(net, split.train, epochs=2, config=CPU_FAST, mean=split.mean, std=split.std, seed=3)
        ev = evaluate(net, split.val, mean=split.mean, std=split.std)
        results.append((weights_of(net), ev))
    augment.clear_device_cache()
    for weights, ev in results[1:]:
        assert all(torch.equal(weights[k], results[0][0][k]) for k in weights)
        assert ev == results[0][1]


# ----------------------------------------------------------------------------- executor
def _same(a, b) -> None:
    assert a.model_id == b.model_id and a.ok and b.ok
    assert a.weights.keys() == b.weights.keys()
    for k in a.weights:
        assert torch.equal(a.weights[k], b.weights[k]), (a.model_id, k)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a.records]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b.records]
    assert a.eval == b.eval


@pytest.mark.parametrize("speed", [dict(bf16=False, channels_last=False),
                                   dict(bf16=None, channels_last=None)])
def test_stream_executor_outcomes_equal_serial_on_cpu(split, speed):
    import dataclasses
    config = dataclasses.replace(CPU_FAST, **speed)
    tasks = step_tasks(config)
    serial = SerialExecutor(split, "cpu").run(tasks)
    done, epochs, threads = [], [], set()

    def on_done(out):
        threads.add(threading.current_thread().name)
        done.append(out.model_id)

    with StreamExecutor(split, "cpu", concurrency=2, threads=1,
                        on_epoch=lambda m, r: epochs.append((m, r["epoch"]))) as ex:
        assert ex.name == "streams" and not ex.one_at_a_time and ex.threads == 1
        outs = ex.run(tasks, on_done)
    assert [o.model_id for o in outs] == [t.model_id for t in tasks]
    assert sorted(done) == sorted(t.model_id for t in tasks)
    assert threads == {threading.current_thread().name}   # callbacks in the calling thread
    assert sorted(epochs) == sorted((t.model_id, e) for t in tasks for e in (1, 2))
    for a, b in zip(serial, outs, strict=True):
        _same(a, b)


def test_stream_executor_failures_become_outcomes_and_stops_cleanly(split):
    tasks = step_tasks(children=2, epochs=1)
    bad = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
           for k, v in tasks[0].weights.items()}
    tasks[0].weights = bad
    with StreamExecutor(split, "cpu", concurrency=2, threads=1) as ex:
        outs = ex.run(tasks)
    assert [o.ok for o in outs] == [False, True, True]
    assert "diverged" in outs[0].error

    class Stop(BaseException):
        pass

    def on_epoch(model, record):
        raise Stop

    before = threading.active_count()
    with StreamExecutor(split, "cpu", concurrency=2, threads=1, on_epoch=on_epoch) as ex, \
            pytest.raises(Stop):
        ex.run(step_tasks(epochs=3))
    assert threading.active_count() == before       # every slot thread joined


def test_stream_executor_keeps_its_slot_threads_for_its_life(split, monkeypatch):
    import morphclimb.parallel.streams as streams
    seen: list[list[threading.Thread]] = [[], []]
    run = [0]

    def spy(task, *args, **kwargs):
        seen[run[0]].append(threading.current_thread())
        return streams_run_isolated(task, *args, **kwargs)

    streams_run_isolated = streams.run_isolated
    monkeypatch.setattr(streams, "run_isolated", spy)
    before = threading.active_count()
    tasks = step_tasks(children=3, epochs=1)
    with StreamExecutor(split, "cpu", concurrency=2, threads=1) as ex:
        first = ex.run(tasks)
        started = ex.threads_started
        run[0] = 1
        again = ex.run(tasks)
        assert threading.active_count() == before + 2     # no new threads for the 2nd run
    assert len(started) == 2 and all(not t.is_alive() for t in started)   # closed: ended
    assert threading.active_count() == before
    assert {id(t) for t in seen[1]} <= {id(t) for t in started}          # the same threads
    assert all(t in started for t in seen[0])
    for a, b in zip(first, again, strict=True):
        _same(a, b)
    with pytest.raises(RuntimeError, match="closed"):
        ex.run(tasks)


def test_streams_with_compile_is_refused_at_config_check(split, tmp_path, capsys):
    from morphclimb.cli import main
    from morphclimb.config import resolve
    with pytest.raises(ConfigError, match="torch.compile is not thread-safe"):
        resolve("demo", overrides={"executor": "streams", "train_step": "compile"})
    resolve("demo", overrides={"executor": "serial", "train_step": "compile"})   # fine
    out = tmp_path / "run"
    assert main(["search", "--executor", "streams", "--set", "train_step=compile",
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "thread-safe" in err and not out.exists()
    task = dataclasses.replace(step_tasks(children=1, epochs=1)[0], step="compile")
    with StreamExecutor(split, "cpu", concurrency=2, threads=1) as ex:
        with pytest.raises(ConfigError, match="train_step=compile"):
            ex.run([task])
        assert ex.threads_started == []          # refused before anything started


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
def test_search_on_cuda_without_one_fails_at_once(tmp_path, capsys, monkeypatch):
    import morphclimb.nash as nash
    from morphclimb.cli import main
    monkeypatch.setattr(nash, "load_split", lambda *a, **k: pytest.fail("loaded the data"))
    out = tmp_path / "run"
    assert main(["search", "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err and not out.exists()


def test_default_execution_is_streams_with_graphs_on_cuda_and_unchanged_on_cpu(monkeypatch,
                                                                                split):
    import morphclimb.device as device
    from morphclimb.config import SearchConfig
    from morphclimb.executors import auto_executor, make_executor
    c = SearchConfig()
    assert (c.executor, c.train_step) == ("auto", "auto")
    assert auto_executor(c, "cpu") == "serial"
    assert isinstance(make_executor(c, split, torch.device("cpu")), SerialExecutor)
    net = build(*grown(1))
    res = fit(net, split.train, epochs=1, config=CPU_FAST, mean=split.mean, std=split.std,
              seed=0, step="auto")
    assert res.settings["step"] == "eager"               # CPU: today's step
    monkeypatch.setattr(device, "resolve_device", lambda spec=None: torch.device("cuda"))
    assert auto_executor(c, "cuda") == "streams"
    assert auto_executor(c.replace(train_step="compile"), "cuda") == "serial"
    assert auto_executor(c.replace(executor="local"), "cuda") == "local"


def test_cudnn_benchmark_is_a_setting_and_on_while_any_block_wants_it():
    from morphclimb.device import speed_settings
    from morphclimb.train import _settings
    cuda = torch.device("cuda")
    assert _settings(TrainConfig(), cuda)["cudnn_benchmark"] is True          # default on
    assert _settings(TrainConfig(cudnn_benchmark=False), cuda)["cudnn_benchmark"] is False
    assert "cudnn_benchmark" not in _settings(TrainConfig(), torch.device("cpu"))
    with pytest.raises(Exception, match="cudnn_benchmark"):
        TrainConfig(cudnn_benchmark="yes")
    flag = torch.backends.cudnn
    before = flag.benchmark
    try:
        flag.benchmark = True
        with speed_settings(cuda, None, cudnn_benchmark=False):
            assert flag.benchmark is False
            with speed_settings(cuda, None, cudnn_benchmark=True):   # another slot's fit
                assert flag.benchmark is True
            assert flag.benchmark is False
        assert flag.benchmark is True                                  # restored
    finally:
        flag.benchmark = before


def _eval_dtypes(model):
    """Record the dtype and memory format of the first convolution's input in eval mode."""
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))

    def hook(mod, args, out):
        if not mod.training:
            seen.append((out.dtype, args[0].is_contiguous(memory_format=torch.channels_last)))
    conv.register_forward_hook(hook)
    return seen


def test_evaluation_runs_in_the_training_precision_and_layout(split, monkeypatch):
    import morphclimb.worker as worker
    from morphclimb.train import eval_settings
    both = TrainConfig(bf16=True, channels_last=True)
    assert eval_settings(both, "cuda") == {"bf16": True, "channels_last": True}
    assert eval_settings(TrainConfig(bf16=False, channels_last=False), "cuda:0") == {
        "bf16": False, "channels_last": False}
    assert eval_settings(both, "cpu") == {"bf16": False, "channels_last": False}  # CPU: fp32
    net = build(*grown(2))
    seen = _eval_dtypes(net)
    ref = evaluate(net, split.val, mean=split.mean, std=split.std)
    low = evaluate(net, split.val, mean=split.mean, std=split.std, bf16=True,
                   channels_last=True)
    assert seen == [(torch.float32, False), (torch.bfloat16, True)]
    assert all(p.is_contiguous() for p in net.parameters())   # layout restored afterwards
    assert not any(p.is_inference() for p in net.parameters())   # ... and still trainable
    fit(net, split.train, epochs=1, config=CPU_FAST, mean=split.mean, std=split.std, seed=0)
    assert abs(low.accuracy - ref.accuracy) < 0.1
    # run_task evaluates with eval_settings(task's config, device)
    built = []
    monkeypatch.setattr(worker, "eval_settings", lambda config, dev: {"bf16": True,
                                                                      "channels_last": True})
    real_build = worker.build

    def spy_build(*a, **k):
        built.append(real_build(*a, **k))
        built.append(_eval_dtypes(built[-1]))
        return built[-2]
    monkeypatch.setattr(worker, "build", spy_build)
    out = worker.run_task(step_tasks(children=1, epochs=1)[0], split, "cpu")
    assert out.ok and built[1] == [(torch.bfloat16, True)]


def test_slot_devices():
    assert slot_devices(torch.device("cpu"), 3) == ["cpu"] * 3
    with pytest.raises(ConfigError, match="concurrency must be a positive integer, got 0"):
        slot_devices(torch.device("cpu"), 0)


# ----------------------------------------------------------------------------- graph step
def test_graph_ready_step_trains_like_eager_on_cpu(split):
    arch, w = grown(3)
    runs = {}
    for step in ("eager", "cuda_graph"):
        net = build(arch, w)
        res = fit(net, split.train, epochs=3, config=CPU_FAST, mean=split.mean, std=split.std,
                  seed=5, step=step)
        runs[step] = (res, weights_of(net))
    res, weights = runs["cuda_graph"]
    assert res.settings["step"] == "static" and "setup_seconds" in res.settings
    ref, ref_w = runs["eager"]
    assert [r.images for r in res.records] == [r.images for r in ref.records]
    np.testing.assert_allclose([r.loss for r in res.records], [r.loss for r in ref.records],
                               rtol=1e-4)
    for k in weights:
        torch.testing.assert_close(weights[k], ref_w[k], rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="step must be one of .*got 'fast'"):
        fit(build(arch, w), split.train, epochs=1, config=CPU_FAST, mean=split.mean,
            std=split.std, seed=0, step="fast")


# ----------------------------------------------------------------------------- archive
def _tree(root: Path, classes=("b", "a"), n=3, test=True) -> None:
    rng = np.random.default_rng(0)
    for part in ("train", "test") if test else ("train",):
        for c in classes:
            d = root / part / c
            d.mkdir(parents=True)
            for i in range(n):
                img = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
                img.save(d / f"{i:03d}.{'png' if i % 2 else 'jpg'}")


@pytest.mark.parametrize("workers", [1, 2])
def test_archive_decodes_like_the_folder_tree(tmp_path, monkeypatch, workers):
    import morphclimb.data.archive as archive_mod
    pools = []
    context = archive_mod._context
    monkeypatch.setattr(archive_mod, "CHUNK", 2)      # small chunks: the pool takes this tree
    monkeypatch.setattr(archive_mod, "_context", lambda: pools.append(1) or context())
    top = tmp_path / "tree" / "set"
    _tree(top)
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(top, arcname="set")
    npz = archive_to_npz(archive, workers=workers)
    assert len(pools) == (workers > 1)                # decoded in worker processes
    assert npz == tmp_path / "set.npz"
    a, b = load_dataset(str(npz)), load_folder(top)
    assert a.classes == b.classes == ("a", "b")
    for part in ("train", "test"):
        assert np.array_equal(getattr(a, part).x, getattr(b, part).x)
        assert np.array_equal(getattr(a, part).y, getattr(b, part).y)
    stamp = npz.stat().st_mtime_ns
    assert archive_to_npz(archive) == npz and npz.stat().st_mtime_ns == stamp   # reused
    with tarfile.open(archive, "w:gz") as tar:                                  # changed
        tar.add(top / "train", arcname="set/train")
    archive_to_npz(archive)
    assert len(load_dataset(str(npz)).test) < len(a.test)   # no test/: held out from train


def test_archive_errors(tmp_path):
    archive = tmp_path / "empty.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("readme.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataError, match="no images under train/<class>/"):
        archive_to_npz(archive)
    with pytest.raises(DataError, match="no such archive: .*missing.tar.gz"):
        archive_to_npz(tmp_path / "missing.tar.gz")


def test_archive_bad_image_named_from_a_worker_process(tmp_path, monkeypatch):
    import morphclimb.data.archive as archive_mod
    monkeypatch.setattr(archive_mod, "CHUNK", 2)
    top = tmp_path / "tree" / "set"
    _tree(top, test=False)
    (top / "train" / "a" / "001.png").write_bytes(b"not an image")
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(top, arcname="set")
    with pytest.raises(DataError, match="cannot decode image .*bad.tar:set/train/a/001.png"):
        archive_mod.decode_archive(archive, workers=2)


# ----------------------------------------------------------------------------- benchmark
def _gpu_module():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod      # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("pick", ["median", "largest"])
def test_simulated_lineage_grows_the_searchs_own_children(pick):
    """benchmarks/gpu.py's estimate of the unfinished steps: each step's children are the
    search's own (seeds of (run seed, step, child)), the next parent the median or largest by
    FLOPs, worked out here child by child; only one child's weights are held at a time."""
    from morphclimb.config import SearchConfig
    from morphclimb.seeds import derive_seed
    gpu = _gpu_module()
    config = SearchConfig(n_steps=3, n_neigh=4, n_nm=2, seed=5)
    arch, w = grown(0, widths=(4, 8, 8))
    sim = gpu.simulate_lineage(arch, w, config, 1, 60.0, pick, None)
    want, a, wt = [], arch, w
    for i in (1, 2, 3):
        kids = []
        for j in (1, 2, 3):
            k = apply_random_morphisms(a, wt, 2, np.random.default_rng(
                derive_seed(5, "morph", i, j)))
            kids.append((forward_flops(k[0]), j, k))
        want.append([f for f, _, _ in kids] + [forward_flops(a)])
        kids.sort(key=lambda c: c[0])
        a, wt, _ = (kids[-1] if pick == "largest" else kids[1])[2]
    assert [s["fwd"] for s in sim[:-1]] == want
    assert [s["how"] for s in sim] == ["simulated"] * 4
    assert sim[-1] == {"step": "final", "fwd": [forward_flops(a)], "how": "simulated"}


def test_simulated_lineage_stops_growing_past_its_parameter_limit(monkeypatch):
    from morphclimb.config import SearchConfig
    gpu = _gpu_module()
    arch, w = grown(0, widths=(4, 8, 8))
    monkeypatch.setattr(gpu, "SIMULATE_MAX_PARAMS", arch.num_params + 1)
    sim = gpu.simulate_lineage(arch, w, SearchConfig(n_steps=3, n_neigh=4, n_nm=3, seed=1),
                               1, 60.0, "largest", None)
    assert sim[0]["how"] == "simulated"
    assert [s["how"] for s in sim[1:3]] == [
        f"extrapolated (the parent has over {arch.num_params + 1:.0e} parameters)"] * 2
    assert sim[2]["fwd"] == [f * 1.0 for f in sim[1]["fwd"]]    # one measured step: growth 1
    assert sim[3]["how"] == "extrapolated" and sim[3]["fwd"] == [max(sim[2]["fwd"][:-1])]


def test_gpu_benchmark_smoke_end_to_end_then_resume(tmp_path, capsys, monkeypatch):
    gpu = _gpu_module()
    saves, copies = [], []
    save, copy = gpu.Report.save, gpu.copy_journal

    def spy_save(self):
        name = self.data["in_progress"]
        saves.append((name, len(self.data["sections"].get(name) or []) if name else None))
        save(self)

    def spy_copy(run_dir, out):
        copies.append(run_dir)
        copy(run_dir, out)

    monkeypatch.setattr(gpu.Report, "save", spy_save)
    monkeypatch.setattr(gpu, "copy_journal", spy_copy)
    out = tmp_path / "out"
    common = ["--smoke", "--out", str(out), "--no-processes", "--search-executor", "streams2"]
    assert gpu.main(common + ["--search-seconds", "0"]) == 0   # stops at the first epoch
    res = json.loads((out / "results.json").read_text())
    sec = res["sections"]
    assert sec["1. ceiling"]["bf16"] > 0
    rows = sec["2. per-child"]
    assert {r["network"] for r in rows} == {"model_0", "+10 morphisms", "+25 morphisms"}
    assert all(r["img_s"] > 0 and r["tflop_s"] > 0 for r in rows), rows
    assert {r["settings"]["step"] for r in rows} == {"eager", "static"}
    # results.json was rewritten after every row, not only at the sections' ends
    assert [n for name, n in saves if name == "2. per-child"] == list(range(1, len(rows) + 1))
    agg = sec["3a. aggregate: a first step"]
    assert [r["key"] for r in agg] == ["serial", "streams1", "streams2", "graph1", "graph2",
                                       "graph2-nobench"]
    assert all("img_s_first" in r and "img_s_again" in r for r in agg), agg
    assert agg[1]["max_loss_diff"] == 0.0       # same threads as serial: the same training
    assert "cudnn.benchmark off" in agg[-1]["config"]
    late = sec["3b. aggregate: a later step"]
    assert [r["key"] for r in late["rows"]] == ["serial", "streams2", "graph2"]
    assert all("img_s_first" in r for r in late["rows"]), late
    assert late["verdict"]["best"] in {r["key"] for r in agg}
    search = sec["4. search"]
    assert search["status"].startswith("stopped")
    phases = search["prediction"]["phases"]
    assert [p["phase"] for p in phases] == ["pretrain", "step 1", "step 2", "final"]
    # every figure is measured or says it is an estimate, and how it was made
    assert all(p["basis"].startswith("estimate: ") and p["wall_s"] > 0 for p in phases)
    assert all("making children" in p["basis"] and p["children_s"] > 0
               for p in phases if p["phase"].startswith("step"))
    md = (out / "results.md").read_text()
    assert "Whole search" in md and "estimated as each row says" in md
    assert "## 4. search" in capsys.readouterr().out
    assert "## 4. search" in (out / "log.txt").read_text()
    run_dir = out / "search"
    assert len(copies) > 1      # the journal was copied as it grew, not only at the end
    assert (out / "search-journal.jsonl").read_bytes() == (run_dir / "journal.jsonl").read_bytes()

    assert gpu.main(common + ["--sections", "search"]) == 0   # resumes and finishes
    search = json.loads((out / "results.json").read_text())["sections"]["4. search"]
    assert search["status"] == "finished"
    assert all(p["basis"] == "measured" for p in search["prediction"]["phases"])
    assert {m["role"] for m in search["models"]} == {"pretrain", "child", "incumbent", "final"}
    assert (out / "search-journal.jsonl").read_bytes() == (run_dir / "journal.jsonl").read_bytes()


def test_gpu_benchmark_compile_rows_are_budgeted(tmp_path):
    gpu = _gpu_module()
    out = tmp_path / "out"
    assert gpu.main(["--smoke", "--out", str(out), "--sections", "per-child", "--mechanisms",
                     "eager,compile", "--compile-estimate", "1e6"]) == 0
    sections = json.loads((out / "results.json").read_text())["sections"]
    assert list(sections) == ["2. per-child", "2b. per-child: torch.compile"]
    assert [r["mechanism"] for r in sections["2. per-child"]] == ["eager"] * 3
    rows = sections["2b. per-child: torch.compile"]           # after the rest, first network
    assert [(r["network"], r["mechanism"]) for r in rows] == [("model_0", "compile")]
    assert "estimate" in rows[0]["skipped"] and "were left" in rows[0]["skipped"]


def test_gpu_benchmark_tee_keeps_stderr(tmp_path):
    gpu = _gpu_module()
    with gpu.tee_output(tmp_path / "log.txt"):
        print("to stdout")
        print("to stderr", file=sys.stderr)
    with pytest.raises(ZeroDivisionError), gpu.tee_output(tmp_path / "log.txt"):
        1 / 0   # noqa: B018
    text = (tmp_path / "log.txt").read_text()
    assert "to stdout" in text and "to stderr" in text and "ZeroDivisionError" in text


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("extra", [[], ["--device", "cuda"]])
def test_gpu_benchmark_without_cuda_fails_at_once(tmp_path, capsys, monkeypatch, extra):
    gpu = _gpu_module()
    monkeypatch.setattr(gpu, "load_data", lambda *a: pytest.fail("went on to load data"))
    out = tmp_path / "out"
    assert gpu.main(["--out", str(out)] + extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpu.py: error: ") and "CUDA" in err
    assert not out.exists()


# ----------------------------------------------------------------------------- GPU only
@needs_cuda
def test_morphisms_of_cuda_weights_stay_on_gpu_and_equal_the_cpu_ones_on_gpu():
    """A GPU run's children: every morphism of weights on the GPU makes its new tensors there
    (a CPU tensor among them would fail the child's first batch), with the values the same
    draws give on the CPU (He-normal weights are drawn on the CPU, then moved)."""
    from morphclimb.morphisms import ALL
    arch = starting_arch(in_channels=3, num_classes=5, image_size=12, widths=(4, 8, 8))
    cpu = weights_of(build(arch, seed=0))
    arch, cpu, _ = apply_random_morphisms(arch, cpu, 5, np.random.default_rng(2))
    gpu = {k: v.cuda() for k, v in cpu.items()}
    probe = torch.randn(8, 3, 12, 12)
    seen = set()
    for seed in range(40):
        a1, s1, r1 = apply_random_morphisms(arch, cpu, 2, np.random.default_rng(seed), probe,
                                            approximate=True)
        a2, s2, r2 = apply_random_morphisms(arch, gpu, 2, np.random.default_rng(seed),
                                            probe.cuda(), approximate=True)
        assert a1.to_dict() == a2.to_dict() and set(s1) == set(s2)
        assert {v.device.type for v in s2.values()} == {"cuda"}
        for k in s1:
            torch.testing.assert_close(s2[k].cpu(), s1[k], rtol=1e-4, atol=1e-5)
        seen.update(r["op"] for r in r1)
    assert set(ALL) <= seen    # every operator, exact and approximate, was applied


@needs_cuda
def test_cuda_graph_fit_agrees_with_eager_on_gpu(split):
    arch, w = grown(4, widths=(16, 32, 32), size=8)
    config = TrainConfig(batch_size=32)
    out = {}
    for step in ("eager", "cuda_graph", "cuda_graph"):
        net = build(arch, w)
        res = fit(net, split.train, epochs=4, config=config, mean=split.mean, std=split.std,
                  seed=1, device="cuda", step=step)
        out.setdefault(step, []).append(
            (res, evaluate(net, split.val, mean=split.mean, std=split.std)))
    assert out["cuda_graph"][0][0].settings["step"] == "cuda_graph"
    eager_losses = [r.loss for r in out["eager"][0][0].records]
    for res, ev in out["cuda_graph"]:
        np.testing.assert_allclose([r.loss for r in res.records], eager_losses, rtol=0.05)
        assert abs(ev.accuracy - out["eager"][0][1].accuracy) < 0.15


@needs_cuda
def test_stream_executor_on_gpu_concurrent_graphs(split):
    augment.clear_device_cache()
    tasks = step_tasks(TrainConfig(batch_size=32), children=5, epochs=3)
    serial = SerialExecutor(split, "cuda").run(tasks)
    for graphs in (False, True):
        with StreamExecutor(split, "cuda", concurrency=4, cuda_graph=graphs) as ex:
            outs = ex.run(tasks)
        assert all(o.ok for o in outs), [o.error for o in outs if not o.ok]
        for a, b in zip(serial, outs, strict=True):
            np.testing.assert_allclose(a.records[-1]["loss"], b.records[-1]["loss"], rtol=0.1)
    assert augment.cached_entries() >= 4   # train and val images and labels, uploaded once


@needs_cuda
def test_device_cache_on_gpu_uploads_once(split):
    augment.clear_device_cache()
    part = ImageData(split.train.x, split.train.y)
    a = augment.device_images(part.x, "cuda")
    assert augment.device_images(part.x, "cuda") is a and a.is_cuda


@needs_cuda
def test_stream_slots_persist_across_runs_on_gpu(split, monkeypatch):
    import morphclimb.parallel.streams as streams
    seen = []
    real = streams.run_isolated

    def spy(task, *args, **kwargs):
        seen.append(threading.current_thread())
        return real(task, *args, **kwargs)

    monkeypatch.setattr(streams, "run_isolated", spy)
    tasks = step_tasks(TrainConfig(batch_size=32), children=3, epochs=2)
    with StreamExecutor(split, "cuda", concurrency=2, cuda_graph=True) as ex:
        first, again = ex.run(tasks), ex.run(tasks)
        started = ex.threads_started
    assert all(o.ok for o in first + again), [o.error for o in first + again if not o.ok]
    assert len(started) == 2 and all(any(t is s for s in started) for t in seen)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_allclose(a.records[-1]["loss"], b.records[-1]["loss"], rtol=0.1)


@needs_cuda
def test_training_settings_on_gpu_cudnn_flag_and_eval_precision(split, monkeypatch):
    import morphclimb.worker as worker
    arch, w = grown(3, widths=(16, 32, 32))
    flags = {}
    for bench in (None, False):
        net = build(arch, w)
        conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        def hook(mod, args, out, b=bench):   # returns None: the output is left alone
            flags.setdefault(b, torch.backends.cudnn.benchmark)
        h = conv.register_forward_hook(hook)
        fit(net, split.train, epochs=1, config=TrainConfig(batch_size=32, cudnn_benchmark=bench),
            mean=split.mean, std=split.std, seed=0, device="cuda", step="eager")
        h.remove()
    assert flags == {None: True, False: False}
    built = []
    real_build = worker.build

    def spy_build(*a, **k):
        built.append(real_build(*a, **k))
        built.append(_eval_dtypes(built[-1]))
        return built[-2]
    monkeypatch.setattr(worker, "build", spy_build)
    task = TrainTask("m", arch.to_dict(), w, 1, TrainConfig(batch_size=32), seed=0)
    out = worker.run_task(task, split, "cuda")
    assert out.ok, out.error
    assert built[1] == [(torch.bfloat16, True)]      # H100/H200: bf16 + channels_last (auto)


@needs_cuda
def test_default_search_on_gpu_trains_in_stream_slots_with_graphs(tmp_path, monkeypatch):
    import morphclimb.worker as worker
    from conftest import TINY
    from morphclimb.config import SearchConfig
    from morphclimb.nash import hill_climb
    steps, threads = [], set()
    real_fit = worker.fit

    def spy_fit(*a, **k):
        res = real_fit(*a, **k)
        steps.append(res.settings["step"])
        threads.add(threading.current_thread().name)
        return res
    monkeypatch.setattr(worker, "fit", spy_fit)
    data = make_tiny_npz(tmp_path / "tiny.npz")
    config = SearchConfig(**{**TINY, "dataset": str(data), "device": "cuda", "threads": None})
    assert (config.executor, config.train_step) == ("auto", "auto")
    result = hill_climb(config, tmp_path / "run")
    assert result is not None and steps and set(steps) == {"cuda_graph"}
    assert all(name.startswith("morphclimb-stream") for name in threads), threads


@needs_cuda
def test_distillation_cuda_graph_agrees_with_eager_on_gpu(split):
    """The teacher's forward pass captured in the step's graph (docs/distill.md) trains like
    the eager step, and the teacher stays as it was (eval mode, no gradient, same weights)."""
    from morphclimb.train import Distill
    arch, w = grown(4, widths=(16, 32, 32), size=8)
    t_arch, t_w = grown(6, seed=3, widths=(16, 32, 32), size=8)
    teacher = build(t_arch, t_w)
    before = {k: v.clone() for k, v in weights_of(teacher).items()}
    losses = {}
    for step in ("eager", "cuda_graph"):
        res = fit(build(arch, w), split.train, epochs=4, config=TrainConfig(batch_size=32),
                  mean=split.mean, std=split.std, seed=1, device="cuda", step=step,
                  teacher=teacher, distill=Distill(0.7, 3.0))
        assert res.settings["step"] == step and res.settings["distill"]["weight"] == 0.7
        losses[step] = [r.loss for r in res.records]
    np.testing.assert_allclose(losses["cuda_graph"], losses["eager"], rtol=0.05)
    after = weights_of(teacher)
    for k, v in before.items():
        torch.testing.assert_close(after[k].cpu(), v.cpu(), rtol=0, atol=0)


@needs_cuda
def test_pareto_search_on_gpu_distills_in_stream_slots_with_graphs(tmp_path, monkeypatch):
    """A Pareto search with approximate morphisms under the CUDA defaults: its approximate
    children learn from their parents in captured graphs in the stream slots."""
    import morphclimb.worker as worker
    from conftest import TINY
    from morphclimb.config import SearchConfig
    from morphclimb.nash import hill_climb
    seen = []
    real_fit = worker.fit

    def spy_fit(*a, **k):
        res = real_fit(*a, **k)
        seen.append((res.settings["step"], k.get("teacher") is not None,
                     threading.current_thread().name))
        return res
    monkeypatch.setattr(worker, "fit", spy_fit)
    data = make_tiny_npz(tmp_path / "tiny.npz")
    config = SearchConfig(**{**TINY, "dataset": str(data), "device": "cuda", "threads": None,
                             "strategy": "pareto", "approximate": True, "n_steps": 2,
                             "n_neigh": 4, "n_draw": 8})
    result = hill_climb(config, tmp_path / "run")
    assert result is not None and result.results["front"]
    assert {s for s, _, _ in seen} == {"cuda_graph"}
    assert any(t for _, t, _ in seen), "no approximate child was distilled"
    assert all(name.startswith("morphclimb-stream") for _, _, name in seen), seen


@needs_cuda
def test_eight_slots_capture_while_others_tune_and_evaluate_on_gpu(tmp_path):
    """What failed on the first GPU run (docs/gpu.md): 8 slots, each child with new shapes,
    cuDNN autotuning on, captures beside other slots' warm-ups and evaluations (autotuning
    synchronises the device, which invalidates a capture under way). Every task must train,
    both times, and the process must stay usable (random draws on the device afterwards)."""
    path = make_tiny_npz(tmp_path / "d.npz", n_train=2048, n_test=64, size=32, classes=10)
    split32 = load_dataset(str(path)).split(val=512, seed=0)
    config = TrainConfig(batch_size=128, lr_start=0.01)   # CUDA defaults: bf16, channels_last,
    # autotuning
    tasks = []
    for j in range(8):
        a, w = grown(5, seed=40 + j, widths=(16, 32, 64), size=32, classes=10)
        tasks.append(TrainTask(f"c{j}", a.to_dict(), w, 2, config, seed=j, step="cuda_graph"))
    with StreamExecutor(split32, "cuda", concurrency=8, cuda_graph=True) as ex:
        first, again = ex.run(tasks), ex.run(tasks)
    bad = [o.error for o in first + again if not o.ok]
    assert not bad, bad[0]
    assert all(o.eval is not None for o in first + again)
    torch.randn(4, device="cuda").sum().item()   # the CUDA generator was left usable
