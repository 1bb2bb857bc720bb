"""NASH training on one GPU, in one command: the ceiling, per-child and concurrent training rates,
and a real (time-limited, resumable) table3-c10-s5 search with its predicted total wall time.

    python3 benchmarks/gpu.py --out DIR                   # a CUDA machine (about 7 minutes)
    .venv/bin/python benchmarks/gpu.py --smoke --out DIR  # the same code, tiny, on a CPU (<2 min)

Data: --data (default gpu-data/cifar10-jpeg.tar.gz, put there by scripts/gpu_data.py): a
.tar[.gz] image-folder archive (decoded once to an .npz beside it), an .npz or a folder tree;
the paper's split, 40,000 train / 10,000 validation of the 50,000 training images.
--smoke uses 1,000 images of the bundled mini CIFAR-10 at 16x16 instead.

Sections (each is printed as a table and saved to DIR/results.json and DIR/results.md as soon
as it is done, so a killed run keeps what it measured):

1. ceiling    the bf16 matrix-multiply rate (8192^3, median of 10): what "TFLOP/s" is against.
2. per-child  one model at a time, batch 128: the starting network (widths 32-64-128) and
              networks grown from it by 10 and 25 random morphisms, for each step mechanism
              (train.fit's step: eager = today's path, cuda_graph, compile), each trained for
              --child-epochs epochs on --child-images images: steady img/s (median epoch after
              the first), training TFLOP/s (3 x forward FLOPs counted from the Arch,
              morphclimb.flops), one-off seconds (capture, compile, autotuning: the time of the
              fit beyond its steady epochs) and the final training loss (the mechanisms train
              the same batches from the same weights, so the losses should agree closely).
3. aggregate  a step's 8 models (7 children of the +10 network, 5 morphisms each, and that
              network itself) trained one epoch on --agg-images images: the serial executor
              (today: one at a time, eager), the stream executor with 1, 2, 4, 8 slots, eager
              and with CUDA graphs, and the local executor with 2 and 8 worker processes on
              the one GPU (--concurrency, --processes change the counts). Aggregate img/s
              and TFLOP/s, share of the bf16 ceiling, speedup over serial, and the largest
              difference in final loss from the serial run.
4. search     table3-c10-s5 without its snapshot ensemble (n_steps 5, n_neigh 8, n_NM 5, 17
              epochs per child, model_0 pretrained 20 epochs, 100 final epochs) on the data
              above, with the fastest executor of section 3, until --budget runs out (it
              stops at an epoch's end; the run directory, default gpu-runs/search-s<seed>,
              resumes on the next call). Then the predicted wall time of the whole search:
              finished phases as measured; unfinished steps from the FLOPs of a simulated
              lineage (the search's own child-making procedure from the last real best, the
              largest child taken as the next parent: an upper estimate) at the FLOP rate of
              the last measured step (else section 3's); the final training at section 2's
              one-model rate for the nearest network. Every predicted number says so.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from morphclimb import build, starting_arch, weights_of  # noqa: E402
from morphclimb.config import SearchConfig, resolve  # noqa: E402
from morphclimb.data import ImageData, dataset_info, load_dataset  # noqa: E402
from morphclimb.data.archive import archive_to_npz  # noqa: E402
from morphclimb.device import auto_settings, cpu_count, resolve_device  # noqa: E402
from morphclimb.events import Event  # noqa: E402
from morphclimb.executors import SerialExecutor  # noqa: E402
from morphclimb.flops import forward_flops  # noqa: E402
from morphclimb.morphisms import apply_random_morphisms  # noqa: E402
from morphclimb.parallel import LocalExecutor  # noqa: E402
from morphclimb.parallel.streams import StreamExecutor  # noqa: E402
from morphclimb.spec import Arch  # noqa: E402
from morphclimb.train import TrainConfig, fit  # noqa: E402
from morphclimb.worker import TrainTask, derive_seed  # noqa: E402

DEFAULT_DATA = ROOT / "gpu-data" / "cifar10-jpeg.tar.gz"
PAPER = {"preset": "table3-c10-s5", "test_error_pct": 5.7, "params_m": 5.7, "gpu_hours": 12,
         "note": "Elsken et al., Table 3: NASH (n_steps=5, n_neigh=8), one Titan X"}


@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes of one benchmark run (GPU or smoke)."""

    widths: tuple[int, int, int] = (32, 64, 128)
    image: int | None = None          # downsample to this side (None: as stored)
    batch: int = 128
    matmul: int = 8192
    child_images: int = 6400          # 50 batches
    child_images_big: int = 2560      # ... for networks over big_gflop forward GFLOP/img
    big_gflop: float = 5.0
    child_epochs: int = 3
    grow: tuple[int, ...] = (0, 10, 25)
    agg_images: int = 3840            # 30 batches per model
    agg_models: int = 8
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    processes: tuple[int, ...] = (2, 8)
    budget: float = 400.0             # seconds for the whole command (all sections)
    reserve: float = 45.0             # kept back after the search (stop, prediction, writing)
    child_min_left: float = 240.0     # section 2 rows only while this much time is left
    agg_min_left: float = 150.0       # section 3 rows likewise (the search gets the rest)
    compile_min_left: float = 330.0   # compile rows only while this much time is left
    compile_nets: int = 2             # ... and only for the first networks (compiling is slow)
    search: dict = dataclasses.field(default_factory=dict)   # SearchConfig overrides
    val: int | float = 10_000
    threads: int | None = None        # CPU threads per training (None: the device's default)


GPU = Scale()
SMOKE = Scale(widths=(4, 8, 8), image=16, batch=32, matmul=256, child_images=64,
              child_epochs=2, agg_images=64, agg_models=4, concurrency=(1, 2), processes=(2,),
              budget=100.0, reserve=10.0, child_min_left=30.0, agg_min_left=20.0,
              compile_min_left=1e9, val=200, threads=1,
              search=dict(n_steps=2, n_neigh=3, n_nm=2, epoch_pretrain=1, epoch_neigh=1,
                          epoch_final=1, widths=(4, 8, 8), batch_size=32, probe_size=16,
                          eval_batch_size=200, threads=1))


class TimeUp(BaseException):
    """The search's time is up (a BaseException: executors turn Exceptions into failed
    outcomes, this must pass through them)."""


class Budget:
    """Wall-clock budget of the whole command."""

    def __init__(self, seconds: float):
        self.t0, self.total = time.perf_counter(), seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.total - self.elapsed()


# ----------------------------------------------------------------------------- reporting
def md_table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


class Report:
    """results.json + results.md in the output folder, rewritten after every section."""

    def __init__(self, out: Path, meta: dict):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.data = {"meta": meta, "sections": {}}
        self.md = [f"# NASH GPU benchmark\n\n{self._meta_md(meta)}"]

    @staticmethod
    def _meta_md(meta: dict) -> str:
        return "\n".join(f"- {k}: {v}" for k, v in meta.items() if not isinstance(v, dict))

    def add(self, name: str, data, text: str) -> None:
        self.data["sections"][name] = data
        self.md.append(f"## {name}\n\n{text}")
        print(f"\n## {name}\n\n{text}\n", flush=True)
        self.save()

    def save(self) -> None:
        tmp = self.out / ".results.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.out / "results.json")
        (self.out / "results.md").write_text("\n\n".join(self.md) + "\n")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- set-up
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    info = {"cpu": f"{cpu}, {cpu_count()} usable cores", "python": platform.python_version(),
            "torch": torch.__version__, "device": str(device),
            "auto settings": auto_settings(device), "load average": os.getloadavg()[0],
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info["gpu"] = (f"{p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} "
                       f"SMs, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    return info


def load_data(data: str | None, scale: Scale, smoke: bool, out: Path):
    """(dataset path for SearchConfig, split, description)."""
    if smoke and data is None:
        ds = load_dataset("mini-cifar10")
        rng = np.random.default_rng(0)
        train = ds.train.subset(np.sort(rng.choice(len(ds.train), 1000, replace=False)))
        test = ds.test.subset(np.sort(rng.choice(len(ds.test), 200, replace=False)))
        path = out / "smoke-data.npz"
        np.savez(path, x=_downsample(train.x, scale.image), y=train.y,
                 x_test=_downsample(test.x, scale.image), y_test=test.y,
                 classes=np.array(ds.classes))
        desc = (f"1,000 train / 200 test images of the bundled mini CIFAR-10, mean-pooled to "
                f"{scale.image}x{scale.image}")
    else:
        path = Path(data) if data is not None else DEFAULT_DATA
        if not path.exists():
            raise SystemExit(f"no data at {path}: run `python3 scripts/gpu_data.py` first (it "
                             f"copies ../shared/data/cifar10-jpeg.tar.gz there), or pass --data")
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            t = time.perf_counter()
            path = archive_to_npz(path)
            log(f"data: {path} ready in {time.perf_counter() - t:.1f} s")
        desc = f"{path} (CIFAR-10 JPEG q75 copy when it is gpu-data's archive)"
    ds = load_dataset(str(path))
    split = ds.split(val=scale.val, seed=0)
    desc += (f"; split {len(split.train):,} train / {len(split.val):,} validation / "
             f"{len(split.test):,} test")
    return str(path), split, desc


def _downsample(x: np.ndarray, side: int | None) -> np.ndarray:
    if side is None or x.shape[1] == side:
        return x
    f = x.shape[1] // side
    n, h, w, c = x.shape
    return x.reshape(n, h // f, f, w // f, f, c).mean((2, 4)).round().astype(np.uint8)


def networks(split, scale: Scale) -> list[tuple[str, Arch, dict]]:
    """The starting network and networks grown from it by random morphisms (rng 0)."""
    arch = starting_arch(split.channels, split.num_classes, split.image_size,
                         widths=scale.widths)
    weights = weights_of(build(arch, seed=0))
    out = []
    for n in scale.grow:
        if n == 0:
            out.append(("model_0", arch, weights))
        else:
            a, w, _ = apply_random_morphisms(arch, weights, n, np.random.default_rng(0))
            out.append((f"+{n} morphisms", a, w))
    return out


def part(data, n: int):
    n = min(n, len(data))
    return ImageData(data.x[:n], data.y[:n])


# ----------------------------------------------------------------------------- 1 ceiling
def section_ceiling(device: torch.device, n: int) -> dict:
    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        g = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(n, n, generator=g, device=device).to(dtype)
        b = torch.randn(n, n, generator=g, device=device).to(dtype)
        times = []
        for k in range(13):
            sync(device)
            t = time.perf_counter()
            torch.mm(a, b)
            sync(device)
            if k >= 3:
                times.append(time.perf_counter() - t)
        out[name] = 2 * n ** 3 / statistics.median(times) / 1e12
        del a, b
    return out


# ----------------------------------------------------------------------------- 2 per-child
def section_per_child(nets, split, device, scale: Scale, mechanisms, budget: Budget) -> list:
    rows = []
    config = TrainConfig(batch_size=scale.batch, threads=scale.threads)
    for mech in mechanisms:
        for k, (name, arch, weights) in enumerate(nets):
            if mech == "cuda_graph" and device.type != "cuda":
                label = "cuda_graph (uncaptured: no CUDA)"
            else:
                label = mech
            if mech == "compile" and k >= scale.compile_nets:
                rows.append({"network": name, "mechanism": label, "skipped": "not measured "
                             "for this network (compiling is slow)"})
                continue
            if budget.left() < (scale.compile_min_left if mech == "compile"
                                else scale.child_min_left):
                rows.append({"network": name, "mechanism": label, "skipped": "time budget"})
                continue
            fwd = forward_flops(arch)
            data = part(split.train, scale.child_images if fwd < scale.big_gflop * 1e9
                        else scale.child_images_big)
            model = build(arch, weights)
            try:
                res = fit(model, data, epochs=scale.child_epochs, config=config,
                          mean=split.mean, std=split.std, seed=0, device=device, step=mech)
            except Exception as e:  # noqa: BLE001 - a mechanism that fails is a result too
                rows.append({"network": name, "mechanism": label,
                             "error": f"{type(e).__name__}: {e}"[:500],
                             "traceback": traceback.format_exc(limit=4)})
                log(f"per-child {name} {label}: FAILED {type(e).__name__}: {e}")
                continue
            finally:
                del model
            secs = [r.seconds for r in res.records]
            steady = statistics.median(secs[1:]) if len(secs) > 1 else secs[0]
            ips = res.records[-1].images / steady
            rows.append({"network": name, "mechanism": label, "params": arch.num_params,
                         "images": len(data), "fwd_gflop": fwd / 1e9, "img_s": ips,
                         "tflop_s": 3 * fwd * ips / 1e12,
                         "one_off_s": max(0.0, res.seconds - steady * len(secs)),
                         "epoch_s": secs, "loss": res.records[-1].loss,
                         "settings": {k: v for k, v in res.settings.items()}})
            log(f"per-child {name:>14} {label:>10}: {ips:9.0f} img/s "
                f"{3 * fwd * ips / 1e12:8.3g} TFLOP/s, one-off {rows[-1]['one_off_s']:.2f} s")
    return rows


def per_child_md(rows, peak: float | None) -> str:
    table = []
    for r in rows:
        if "img_s" not in r:
            table.append([r["network"], r["mechanism"], "-", "-", "-", "-", "-", "-", "-",
                          r.get("skipped") or r.get("error", "")[:80]])
            continue
        share = f"{100 * r['tflop_s'] / peak:.1f}%" if peak else "-"
        table.append([r["network"], r["mechanism"], f"{r['params']:,}",
                      f"{r['fwd_gflop']:.3f}", f"{r['images']:,}", f"{r['img_s']:,.0f}",
                      f"{r['tflop_s']:.3g}", share, f"{r['one_off_s']:.2f}",
                      f"{r['loss']:.4f}"])
    return md_table(["network", "step", "params", "fwd GFLOP/img", "images", "img/s",
                     "TFLOP/s", "of bf16 peak", "one-off s", "train loss at end"], table)


# ----------------------------------------------------------------------------- 3 aggregate
def step_models(nets, scale: Scale, parent: int, step: int) -> list[tuple[str, Arch, dict]]:
    """A search step's models: children of nets[parent] (5 morphisms each, the search's seeds
    for `step`) and that network itself."""
    name, parent, pw = nets[min(parent, len(nets) - 1)]
    models = []
    for j in range(1, scale.agg_models):
        rng = np.random.default_rng(derive_seed(0, "morph", step, j))
        a, w, _ = apply_random_morphisms(parent, pw, 5, rng)
        models.append((f"c{j}", a, w))
    models.append(("inc", parent, pw))
    return models


def step_tasks(models, scale: Scale, epochs: int = 1) -> list[TrainTask]:
    config = TrainConfig(batch_size=scale.batch, threads=scale.threads)
    return [TrainTask(mid, a.to_dict(), w, epochs, config, derive_seed(0, "train", mid),
                      eval_part=None) for mid, a, w in models]


def executor_factories(split, device, scale: Scale, processes: bool):
    """key -> (label, factory(split, on_epoch)) for every configuration of section 3."""
    f = {"serial": ("serial, eager (today)",
                    lambda s, cb=None: SerialExecutor(s, device, on_epoch=cb))}
    for k in scale.concurrency:
        f[f"streams{k}"] = (f"streams x{k}, eager", lambda s, cb=None, k=k: StreamExecutor(
            s, device, concurrency=k, threads=scale.threads, on_epoch=cb))
    for k in scale.concurrency:
        label = "cuda graph" if device.type == "cuda" else "cuda_graph uncaptured"
        f[f"graph{k}"] = (f"streams x{k}, {label}", lambda s, cb=None, k=k: StreamExecutor(
            s, device, concurrency=k, threads=scale.threads, on_epoch=cb, cuda_graph=True))
    if processes:
        dev = f"cuda:{torch.cuda.current_device()}" if device.type == "cuda" else device
        for k in scale.processes:
            f[f"processes{k}"] = (f"processes x{k}, eager", lambda s, cb=None, k=k: LocalExecutor(
                s, dev, workers=k, threads=scale.threads, on_epoch=cb))
    return f


def section_aggregate(models, split, device, scale: Scale, factories, budget: Budget,
                      keys=None) -> list:
    sub = dataclasses.replace(split, train=part(split.train, scale.agg_images))
    warm = dataclasses.replace(split, train=part(split.train, 2 * scale.batch))
    tasks = step_tasks(models, scale)
    fwd = {mid: forward_flops(a) for mid, a, _ in models}
    with SerialExecutor(warm, device) as ex:   # cuDNN autotuning of these shapes, once
        ex.run(tasks)
    rows, base = [], None
    for key, (label, factory) in factories.items():
        if keys is not None and key not in keys:
            continue
        if budget.left() < scale.agg_min_left:
            rows.append({"key": key, "config": label, "error": "skipped: time budget"})
            continue
        t0 = time.perf_counter()
        try:
            ex = factory(sub)
            if key.startswith("processes"):    # each worker selects its own kernels: warm up
                ex.run(tasks)
            startup = time.perf_counter() - t0
            sync(device)
            t = time.perf_counter()
            outs = ex.run(tasks)
            sync(device)
            wall = time.perf_counter() - t
            ex.close()
        except Exception as e:  # noqa: BLE001
            rows.append({"key": key, "config": label, "error": f"{type(e).__name__}: {e}"[:500],
                         "traceback": traceback.format_exc(limit=4)})
            log(f"aggregate {label}: FAILED {type(e).__name__}: {e}")
            continue
        bad = [o for o in outs if not o.ok]
        if bad:
            rows.append({"key": key, "config": label, "error": f"{len(bad)} failed: "
                         f"{bad[0].error[:400]}"})
            log(f"aggregate {label}: {len(bad)} children failed: {bad[0].error[:200]}")
            continue
        images = sum(r["images"] for o in outs for r in o.records)
        flops = sum(3 * fwd[o.model_id] * r["images"] for o in outs for r in o.records)
        loss = {o.model_id: o.records[-1]["loss"] for o in outs}
        row = {"key": key, "config": label, "startup_s": startup, "wall_s": wall,
               "img_s": images / wall, "tflop_s": flops / wall / 1e12, "loss": loss}
        if base is None:
            base = row
        row["speedup"] = row["img_s"] / base["img_s"]
        row["max_loss_diff"] = max(abs(loss[m] - base["loss"][m]) for m in loss)
        rows.append(row)
        log(f"aggregate {label:>28}: {row['img_s']:9.0f} img/s {row['tflop_s']:8.3g} TFLOP/s "
            f"x{row['speedup']:.2f} (wall {wall:.2f} s, start {startup:.1f} s)")
    return rows


def aggregate_md(rows, models, peak: float | None) -> str:
    table = []
    for r in rows:
        if "img_s" not in r:
            table.append([r["config"], "-", "-", "-", "-", "-", "-", r.get("error", "")[:80]])
            continue
        share = f"{100 * r['tflop_s'] / peak:.1f}%" if peak else "-"
        table.append([r["config"], f"{r['startup_s']:.1f}", f"{r['wall_s']:.2f}",
                      f"{r['img_s']:,.0f}", f"{r['tflop_s']:.3g}", share, f"{r['speedup']:.2f}x",
                      f"{r['max_loss_diff']:.2g}"])
    sizes = ", ".join(f"{forward_flops(a) / 1e9:.2f}" for _, a, _ in models)
    return (f"Models (forward GFLOP/img): {sizes}\n\n" + md_table(
        ["configuration", "start s", "wall s", "img/s", "TFLOP/s", "of bf16 peak",
         "vs serial", "max |loss - serial|"], table))


# ----------------------------------------------------------------------------- 4 search
def search_config(data_path: str, scale: Scale, seed: int, device) -> SearchConfig:
    over = dict(dataset=data_path, val=scale.val, snapshot_ensemble=False, seed=seed,
                device=str(device), **scale.search)
    return resolve("table3-c10-s5", overrides=over)


def run_search(config: SearchConfig, split, run_dir: Path, factory, deadline: float
               ) -> dict:
    """Run or resume the search until it ends or `deadline` (perf_counter) passes."""
    from morphclimb.nash import Climber, open_run
    resume = (run_dir / "config.json").is_file()
    run = open_run(run_dir, config, resume)
    if resume:
        config = SearchConfig.from_dict(run.config())
        log(f"search: resuming {run_dir}")
    t0 = time.perf_counter()
    longest = [0.0]   # the longest epoch seen: stop when the next one would end past the deadline

    def on_epoch(model_id, record):
        longest[0] = max(longest[0], float(record.get("seconds", 0.0)))
        if time.perf_counter() + longest[0] > deadline:
            raise TimeUp

    def on_event(rec):
        ev = Event(rec["event"])
        if ev is Event.MODEL_TRAINED:
            acc = rec.get("val_accuracy", rec.get("test_accuracy"))
            log(f"search +{time.perf_counter() - t0:6.1f}s: {rec['model']:>7} trained "
                f"({rec.get('params', 0):,} params, {rec.get('epochs')} epochs, "
                f"{rec.get('seconds', 0):.1f} s, acc {acc if acc is None else round(acc, 4)})")
        elif ev in (Event.STEP_DECIDED, Event.CHILD_FAILED):
            log(f"search +{time.perf_counter() - t0:6.1f}s: {ev} {rec.get('step', '')} "
                f"{rec.get('best', rec.get('model', ''))}")
        if time.perf_counter() > deadline:
            raise TimeUp

    status = "finished"
    ex = factory(split, on_epoch)
    try:
        climber = Climber(config, run, split, ex, dataset_info(split), on_event)
        climber.climb()
    except TimeUp:
        status = "stopped at the time limit (resumable)"
    finally:
        ex.close()
        run.unlock()
    return {"status": status, "seconds_this_call": time.perf_counter() - t0,
            "run_dir": str(run_dir), "config": config}


def _images(rec) -> int:
    return sum(int(c.get("images", 0)) for c in rec.get("curves") or [])


def measured_phases(run_dir: Path, sizes: dict) -> dict:
    """Wall time and FLOPs of each finished phase, from the journal and the saved archs."""
    from morphclimb.journal import RunDir
    run = RunDir.open(run_dir)
    st = run.state()
    trained = list(st.trained.values())
    decided = st.decided
    made: dict = {}
    for r in st.made.values():
        made[r["step"]] = max(made.get(r["step"], 0.0), r.get("clock", 0.0))
    fwd = {r["model"]: forward_flops(run.load_arch(r["model"])) for r in trained}

    def work(r) -> float:
        n_eval = sizes["test"] if r.get("part") == "train_full" else sizes["val"]
        return 3 * fwd[r["model"]] * _images(r) + fwd[r["model"]] * n_eval

    models = [{"model": r["model"], "role": r.get("role"), "step": r.get("step"),
               "params": r.get("params"), "fwd_gflop": fwd[r["model"]] / 1e9,
               "epochs": r.get("epochs"), "seconds": r.get("seconds"),
               "epoch_s": [c.get("seconds") for c in r.get("curves") or []],
               "val_accuracy": r.get("val_accuracy"), "test_accuracy": r.get("test_accuracy")}
              for r in trained]
    phases, start = [], 0.0
    m0 = next((r for r in trained if r.get("role") == "pretrain"), None)
    if m0 is not None:
        phases.append({"phase": "pretrain", "models": 1, "wall_s": m0["clock"] - start,
                       "flops": work(m0)})
        start = m0["clock"]
    for i in sorted(decided):
        rs = [r for r in trained if r.get("step") == i and r.get("role") in ("child",
                                                                                "incumbent")]
        phases.append({"phase": f"step {i}", "models": len(rs),
                       "wall_s": decided[i]["clock"] - start, "flops": sum(map(work, rs)),
                       "children_s": made[i] - start if i in made else None})
        start = decided[i]["clock"]
    final = next((r for r in trained if r.get("role") == "final"), None)
    if final is not None:
        phases.append({"phase": "final", "models": 1, "wall_s": final["clock"] - start,
                       "flops": work(final), "test_accuracy": final.get("test_accuracy")})
    best = decided[max(decided)]["best"] if decided else (m0 or {}).get("model")
    return {"phases": phases, "models": models, "best": best, "run": run}


def simulate_lineage(arch: Arch, weights: dict, config: SearchConfig, first_step: int,
                     budget_s: float, pick: str) -> list[dict]:
    """Forward FLOPs of the unfinished steps' models and of the final network: children made
    by the search's own procedure (seeds of (run seed, step, child); no probe batch, which
    changes new weights, not architectures) from `arch`; the next step's parent is the child
    of median FLOPs (pick="median") or the largest (pick="largest"). Past `budget_s` seconds
    the later steps repeat the last simulated growth factor ("extrapolated")."""
    out, t0 = [], time.perf_counter()
    for i in range(first_step, config.n_steps + 1):
        if time.perf_counter() - t0 > budget_s and out:
            growth = (sum(out[-1]["fwd"]) / sum(out[-2]["fwd"])) if len(out) > 1 else 1.0
            out.append({"step": i, "fwd": [f * growth for f in out[-1]["fwd"]],
                        "how": "extrapolated"})
            continue
        children = []
        for j in range(1, max(config.n_neigh, 2)):
            rng = np.random.default_rng(derive_seed(config.seed, "morph", i, j))
            a, w, _ = apply_random_morphisms(arch, weights, config.n_nm, rng)
            children.append((forward_flops(a), a, w))
        fwd = [c[0] for c in children] + ([forward_flops(arch)] if config.n_neigh > 1 else [])
        out.append({"step": i, "fwd": fwd, "how": "simulated"})
        children.sort(key=lambda c: c[0])
        _, arch, weights = children[-1] if pick == "largest" else children[len(children) // 2]
    if out and out[-1]["how"] == "extrapolated":
        ordered = sorted(out[-1]["fwd"][:-1] or out[-1]["fwd"])
        final = ordered[-1] if pick == "largest" else ordered[len(ordered) // 2]
        out.append({"step": "final", "fwd": [final], "how": "extrapolated"})
    else:
        out.append({"step": "final", "fwd": [forward_flops(arch)], "how": "simulated"})
    return out


def predict(measured: dict, config: SearchConfig, sizes: dict, climb_rate: float | None,
            one_model_rate, budget_s: float) -> dict:
    """The whole search's wall time: measured phases, plus predicted unfinished ones along two
    simulated lineages (median child wins each step: "typical"; largest: "upper")."""
    base = [dict(p, basis="measured") for p in measured["phases"]]
    for p in base:
        p["tflop_s"] = p["flops"] / p["wall_s"] / 1e12 if p["wall_s"] > 0 else float("nan")
    done_steps = [p for p in base if p["phase"].startswith("step")]
    if done_steps:
        climb_rate = done_steps[-1]["tflop_s"] * 1e12
        rate_basis = f"the rate of {done_steps[-1]['phase']} as measured"
    else:
        rate_basis = "section 3b's rate of the chosen configuration (no step finished)"
    have = {p["phase"] for p in base}
    if "pretrain" not in have:
        arch = starting_arch(sizes["channels"], sizes["classes"], sizes["image"],
                             widths=config.widths)
        f = forward_flops(arch)
        flops = config.epoch_pretrain * sizes["train"] * 3 * f + sizes["val"] * f
        rate = one_model_rate(f)
        base.append({"phase": "pretrain", "models": 1, "flops": flops,
                     "wall_s": flops / rate, "tflop_s": rate / 1e12,
                     "basis": "predicted: section 2's one-model rate"})
    lineages = {"median": [], "largest": []}
    if "final" not in have:
        if measured["best"] is not None:
            arch, weights = measured["run"].load_model(measured["best"])
        else:  # stopped during the pretraining: grow from a fresh model_0
            arch = starting_arch(sizes["channels"], sizes["classes"], sizes["image"],
                                 widths=config.widths)
            weights = weights_of(build(arch, seed=0))
        for pick, rows in lineages.items():
            sim = simulate_lineage(arch, weights, config, len(done_steps) + 1, budget_s / 2,
                                   pick)
            for s in sim:
                if s["step"] == "final":
                    f = s["fwd"][0]
                    flops = (config.epoch_final * (sizes["train"] + sizes["val"]) * 3 * f
                             + sizes["test"] * f)
                    rate = one_model_rate(f)
                    rows.append({"phase": "final", "models": 1, "flops": flops,
                                 "wall_s": flops / rate, "tflop_s": rate / 1e12,
                                 "basis": f"predicted: {s['how']} {pick}-child winner at "
                                          f"section 2's one-model rate"})
                    continue
                flops = sum(config.epoch_neigh * sizes["train"] * 3 * f + sizes["val"] * f
                            for f in s["fwd"])
                rate = climb_rate or float("nan")
                rows.append({"phase": f"step {s['step']}", "models": len(s["fwd"]),
                             "flops": flops, "wall_s": flops / rate, "tflop_s": rate / 1e12,
                             "basis": f"predicted: {s['how']} children of the {pick} child "
                                      f"of the step before, at {rate_basis}"})
    order = {"pretrain": 0, "final": 99}

    def ordered(rows):
        return sorted(rows, key=lambda p: order.get(p["phase"], 1 + int(p["phase"].split()[-1])
                                                    if p["phase"].startswith("step") else 50))
    phases, upper = ordered(base + lineages["median"]), ordered(base + lineages["largest"])
    climb = [p for p in base if p["phase"].startswith("step")]
    climb_tflops = (sum(p["flops"] for p in climb) / sum(p["wall_s"] for p in climb) / 1e12
                    if climb else None)
    return {"phases": phases, "total_s": sum(p["wall_s"] for p in phases),
            "upper_phases": upper, "upper_total_s": sum(p["wall_s"] for p in upper),
            "measured_s": sum(p["wall_s"] for p in base if p["basis"] == "measured"),
            "climb_tflop_s_measured": climb_tflops}


def search_md(result: dict, pred: dict, measured: dict, peak: float | None) -> str:
    upper = {p["phase"]: p for p in pred["upper_phases"]}
    rows = [[p["phase"], p["models"], f"{p['flops'] / 1e15:.2f}", f"{p['wall_s']:.1f}",
             "-" if p.get("children_s") is None else f"{p['children_s']:.1f}",
             f"{p['tflop_s']:.3g}",
             "" if p["basis"] == "measured" else f"{upper[p['phase']]['wall_s']:.1f}",
             p["basis"]] for p in pred["phases"]]
    text = (f"Status: {result['status']}; this call searched {result['seconds_this_call']:.0f} s"
            f"; run directory {result['run_dir']}.\n\n")
    text += md_table(["phase", "models", "PFLOP", "wall s", "of it making children s",
                      "TFLOP/s", "wall s if the largest child won", "basis"], rows)
    text += (f"\n\n**Whole search (without the snapshot ensemble): {pred['total_s'] / 60:.1f} "
             f"min predicted** ({pred['measured_s'] / 60:.1f} min of it measured, the rest "
             f"predicted as each row says, the median child winning each simulated step); "
             f"{pred['upper_total_s'] / 60:.1f} min if the largest child won every simulated "
             f"step.")
    if pred["climb_tflop_s_measured"] is not None:
        share = (f", {100 * pred['climb_tflop_s_measured'] / peak:.1f}% of the bf16 ceiling"
                 if peak else "")
        text += (f" Training during the measured climb steps: "
                 f"{pred['climb_tflop_s_measured']:.1f} TFLOP/s{share}.")
    final = next((p for p in measured["phases"] if p["phase"] == "final"), None)
    if final is not None and final.get("test_accuracy") is not None:
        text += (f"\n\nTest error of the found network: "
                 f"{100 * (1 - final['test_accuracy']):.2f}% (paper: "
                 f"{PAPER['test_error_pct']}% on the official CIFAR-10).")
    models = [[m["model"], m["role"], f"{m['params']:,}", f"{m['fwd_gflop']:.3f}", m["epochs"],
               f"{statistics.median(m['epoch_s']):.2f}" if m["epoch_s"] else "-",
               f"{m['seconds']:.1f}",
               "-" if m["val_accuracy"] is None else f"{m['val_accuracy']:.4f}"]
              for m in measured["models"]]
    text += "\n\nModels trained (epoch s: median, while the step's models trained at once):\n\n"
    text += md_table(["model", "role", "params", "fwd GFLOP/img", "epochs", "epoch s",
                      "total s", "val acc"], models)
    return text


# ----------------------------------------------------------------------------- main
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="folder for results.json/.md")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (< 2 min)")
    p.add_argument("--data", help=f"archive, .npz or folder (default {DEFAULT_DATA})")
    p.add_argument("--device", default=None, help="default: cuda if available (smoke: cpu)")
    p.add_argument("--budget", type=float, help="seconds for the whole command")
    p.add_argument("--sections", default="ceiling,per-child,aggregate,search")
    p.add_argument("--mechanisms", default=None,
                   help="per-child step mechanisms (default eager,cuda_graph,compile; "
                        "smoke: eager,cuda_graph)")
    p.add_argument("--no-processes", action="store_true", help="skip the local executor rows")
    p.add_argument("--search-executor", default="auto",
                   help="auto (fastest of section 3) or a key: serial, streams<k>, graph<k>, "
                        "processes<k>")
    p.add_argument("--run-dir", type=Path, help="search run directory (default "
                   "gpu-runs/search-s<seed>, smoke: OUT/search); an existing one is resumed")
    p.add_argument("--search-seconds", type=float,
                   help="stop the search after this long (default: when --budget runs out)")
    p.add_argument("--seed", type=int, default=0)
    for name in ("child-images", "child-epochs", "agg-images"):
        p.add_argument(f"--{name}", type=int)
    for name in ("concurrency", "processes"):
        p.add_argument(f"--{name}", help="comma-separated counts for section 3 (default "
                       f"{','.join(map(str, getattr(GPU, name)))})")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    scale = SMOKE if args.smoke else GPU
    over = {k: getattr(args, k.replace("-", "_")) for k in ("child-images", "child-epochs",
                                                             "agg-images")}
    scale = dataclasses.replace(scale, **{k.replace("-", "_"): v for k, v in over.items()
                                          if v is not None})
    for name in ("concurrency", "processes"):
        if getattr(args, name):
            scale = dataclasses.replace(scale, **{name: tuple(
                int(v) for v in getattr(args, name).split(",") if v)})
    if args.budget is not None:
        scale = dataclasses.replace(scale, budget=args.budget)
    budget = Budget(scale.budget)
    device = resolve_device(args.device or ("cpu" if args.smoke else "auto"))
    if device.type == "cpu":   # one thread per training in the smoke: robust on a busy machine
        torch.set_num_threads(scale.threads or cpu_count())
    sections = set(args.sections.split(","))
    mechanisms = (args.mechanisms or ("eager,cuda_graph,compile" if device.type == "cuda"
                                      else "eager,cuda_graph")).split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    data_path, split, desc = load_data(args.data, scale, args.smoke, args.out)
    meta = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None
                                                              else sys.argv[1:])),
            "mode": "smoke (CPU, tiny sizes: checks the code, measures nothing)" if args.smoke
            else "full", "data": desc, **machine(device),
            "scale": dataclasses.asdict(scale), "paper": PAPER}
    report = Report(args.out, meta)
    log(f"{meta['mode']}; {desc}; device {device}")

    peak = None
    if "ceiling" in sections:
        c = section_ceiling(device, scale.matmul)
        peak = c["bf16"]
        report.add("1. ceiling", c, f"Matrix multiply {scale.matmul}^3 (median of 10 after 3 "
                   f"warm-ups): **bf16 {c['bf16']:.3g} TFLOP/s**, fp32 {c['fp32']:.3g} TFLOP/s.")

    nets = networks(split, scale) if sections & {"per-child", "aggregate"} else []
    child_rows: list = []
    if "per-child" in sections:
        child_rows = section_per_child(nets, split, device, scale, mechanisms, budget)
        report.add("2. per-child", child_rows, (
            f"One model at a time, batch {scale.batch}, {scale.child_epochs} epochs of the "
            f"first `images` training images; img/s is the median of the epochs after the "
            f"first.\n\n" + per_child_md(child_rows, peak)))

    factories = executor_factories(split, device, scale, not args.no_processes)
    agg_rows: list = []      # 3a: a first step (children of model_0), every configuration
    late_rows: list = []     # 3b: a later step (children of the +10 network), the widest ones
    if "aggregate" in sections:
        what = (f"each one epoch of {min(scale.agg_images, len(split.train)):,} images (batch "
                f"{scale.batch}), all handed to the executor at once; wall time from hand-over "
                f"to the last outcome (building, weight transfer, capture included; worker "
                f"start-up apart)")
        models = step_models(nets, scale, parent=0, step=1)
        agg_rows = section_aggregate(models, split, device, scale, factories, budget)
        report.add("3a. aggregate: a first step", agg_rows, (
            f"{len(models)} models ({len(models) - 1} children of model_0, 5 morphisms each, "
            f"and model_0), "
            f"{what}.\n\n" + aggregate_md(agg_rows, models, peak)))
        top = max(scale.concurrency)
        keys = ["serial", f"streams{top}", f"graph{top}", f"processes{max(scale.processes)}"]
        models = step_models(nets, scale, parent=1, step=3)
        late_rows = section_aggregate(models, split, device, scale, factories, budget, keys)
        report.add("3b. aggregate: a later step", late_rows, (
            f"{len(models)} models ({len(models) - 1} children of the +10 network, 5 morphisms "
            f"each, and that network), {what}; only the widest configurations.\n\n"
            + aggregate_md(late_rows, models, peak)))

    if "search" in sections:
        key = args.search_executor
        failed_late = {r["key"] for r in late_rows
                       if "img_s" not in r and not r.get("error", "").startswith("skipped")}
        ok_rows = [r for r in agg_rows if "img_s" in r and r["key"] != "serial"
                   and r["key"] not in failed_late]
        if key == "auto":
            if ok_rows:
                key = max(ok_rows, key=lambda r: r["img_s"])["key"]
            else:
                key = f"graph{max(scale.concurrency)}" if device.type == "cuda" else \
                    f"streams{max(scale.concurrency)}"
        if key not in factories:
            raise SystemExit(f"unknown --search-executor {key!r}; known: {', '.join(factories)}")
        label, factory = factories[key]
        agg_rate = next((r["tflop_s"] * 1e12 for r in late_rows + agg_rows
                         if r.get("key") == key and "tflop_s" in r), None)
        step_mech = "cuda_graph" if key.startswith("graph") else "eager"
        config = search_config(data_path, scale, args.seed, device)
        run_dir = args.run_dir or (args.out / "search" if args.smoke
                                   else ROOT / "gpu-runs" / f"search-s{args.seed}")
        deadline = budget.t0 + budget.total - scale.reserve
        if args.search_seconds is not None:
            deadline = min(deadline, time.perf_counter() + args.search_seconds)
        log(f"search with {label}: {deadline - time.perf_counter():.0f} s until the time limit")
        try:
            result = run_search(config, split, run_dir, factory, deadline)
        except Exception as e:  # noqa: BLE001 - report what was measured before it broke
            log(f"search FAILED: {type(e).__name__}: {e}")
            result = {"status": f"failed: {type(e).__name__}: {str(e)[:300]}",
                      "seconds_this_call": float("nan"), "run_dir": str(run_dir),
                      "config": config}
        config = result["config"]
        sizes = {"train": len(split.train), "val": len(split.val), "test": len(split.test),
                 "channels": split.channels, "classes": split.num_classes,
                 "image": split.image_size}

        def one_model_rate(f: float) -> float:
            """Section 2's rate (FLOP/s) for the step mechanism, nearest network by FLOPs."""
            rows = [r for r in child_rows if "tflop_s" in r
                    and r["mechanism"].startswith(step_mech)] or \
                   [r for r in child_rows if "tflop_s" in r]
            if not rows:
                return float("nan")
            r = min(rows, key=lambda r: abs(math.log(r["fwd_gflop"] * 1e9 / f)))
            return r["tflop_s"] * 1e12

        try:
            measured = measured_phases(run_dir, sizes)
            pred = predict(measured, config, sizes, agg_rate, one_model_rate,
                           budget_s=max(5.0, min(30.0, budget.left() - 15)))
            data = {"executor": label, "status": result["status"], "run_dir": str(run_dir),
                    "config": config.to_dict(), "prediction": pred,
                    "models": measured["models"], "measured_phases": measured["phases"]}
            text = f"Executor: {label}.\n\n" + search_md(result, pred, measured, peak)
        except Exception as e:  # noqa: BLE001
            data = {"executor": label, "status": result["status"], "run_dir": str(run_dir),
                    "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            text = (f"Executor: {label}. Status: {result['status']}. No prediction: "
                    f"{type(e).__name__}: {e}")
        report.add("4. search", data, text)
        journal = run_dir / "journal.jsonl"
        if journal.is_file() and args.out.resolve() not in run_dir.resolve().parents:
            shutil.copyfile(journal, args.out / "search-journal.jsonl")

    report.data["meta"]["seconds"] = budget.elapsed()
    report.save()
    log(f"done in {budget.elapsed():.0f} s; results in {args.out}/results.md and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
