"""NASH training on one GPU, in one command: the ceiling, per-child and concurrent training rates,
and a real (time-limited, resumable) table3-c10-s5 search with an estimate of its whole wall time.

    python3 benchmarks/gpu.py --out DIR --budget 330        # a CUDA machine (--budget seconds)
    .venv/bin/python benchmarks/gpu.py --smoke --out DIR    # the same code, tiny, on a CPU

scripts/gpu_check.sh runs the GPU tests and then this under `timeout` (docs/gpu.md). Without
--smoke the device is CUDA: with no CUDA device it stops at once, one line, exit status 2
(--device cpu measures a CPU instead, on purpose).

Data: --data (default gpu-data/cifar10-jpeg.tar.gz, put there by scripts/gpu_data.py): a
.tar[.gz] image-folder archive (decoded once, by one process per core, to an .npz beside it),
an .npz or a folder tree; the paper's split, 40,000 train / 10,000 validation of the 50,000
training images. --smoke uses 1,000 images of the bundled mini CIFAR-10 at 16x16 instead.

Everything printed also goes to DIR/log.txt (stdout and stderr); DIR/results.json is rewritten
after every row and DIR/results.md after every section, and the search's journal is copied to
DIR/search-journal.jsonl whenever it grows, so a run killed at any point keeps what it measured.

Sections (each with its share of --budget; a row that would not fit in what is left of its
share is skipped, and says so):

1. ceiling    the bf16 matrix-multiply rate (8192^3, median of 10): what "TFLOP/s" is against.
2. per-child  one model at a time, batch 128: the starting network (widths 32-64-128) and
              networks grown from it by 10 and 25 random morphisms, for each step mechanism
              (train.fit's step: eager, cuda_graph; compile, for the first network only, in
              section 2b after section 3: torch.compile takes an estimated --compile-estimate
              seconds, and its row starts only if that much is left before the search's
              minimum). Each fit runs in a new thread
              (cuDNN keeps its autotuned plans per thread, so every row starts cold): steady
              img/s (median epoch after the first), training TFLOP/s (3 x forward FLOPs
              counted from the Arch), one-off seconds (autotuning, capture, compile: the fit's
              time beyond its steady epochs), final training loss.
3. aggregate  a step's 8 models trained one epoch each, handed to an executor at once: 3a a
              first step (children of model_0), 3b a later step (children of the +10
              network, up to ~57 GFLOP/img). Each configuration (serial, streams<k> eager,
              graph<k> with CUDA graphs, -bench/-nobench: cudnn.benchmark on/off, else the
              library's default, processes<k>) is made
              fresh and runs the same tasks twice: "first" (every slot autotunes these shapes
              and captures its graphs, as a search step's new children do) and "again" (the
              slots have seen the shapes). The serial row runs in a fresh thread too, so that
              all rows start equally cold. Also: which configuration the library's CUDA
              default (executor=auto, train_step=auto: streams x 8 with CUDA graphs) is, and
              how it compares with the fastest.
4. search     table3-c10-s5 without its snapshot ensemble, with the fastest configuration of
              section 3 ("first" runs), until --budget runs out (it stops at an epoch's end;
              the run directory resumes on the next call). Then the whole search's wall time:
              finished phases measured, the rest estimated (each row says how): one-model
              rates of section 2 interpolated by FLOPs, the concurrency gain of section 3,
              calibrated by the last measured phase, and the time to make the children (the
              BatchNorm probe) timed on the simulated parents.
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
from concurrent.futures import ThreadPoolExecutor
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
from morphclimb.errors import ConfigError  # noqa: E402
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
CUDA_DEFAULT = "graph8"   # what executor=auto, train_step=auto run on one GPU (executors.py)


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
    agg_images: int = 3840            # 3a: 30 batches per model
    agg_images_late: int = 1280       # 3b: 10 batches per model (one child is ~57 GFLOP/img)
    agg_models: int = 8
    # most telling first: rows that no longer fit in the section's share are skipped
    # graph8 is the library's CUDA default (autotuning off in shared slots); graph8-bench the
    # default before the first GPU run (autotuning on), kept as the comparison
    configs_first: tuple[str, ...] = ("serial", "graph8", "graph8-bench", "streams8",
                                      "processes8", "graph1", "graph4")
    configs_later: tuple[str, ...] = ("serial", "graph8", "graph8-bench", "streams8",
                                      "processes8")
    budget: float = 330.0             # seconds for the whole command (all sections)
    reserve: float = 25.0             # kept back after the search (stop, estimate, writing)
    share_child: float = 0.40         # section 2 ends at this share of the budget
    share_agg: float = 0.70           # section 3 at this one (3a gets 65% of its part)
    row_min: float = 5.0              # a section-2 row starts only with this much left
    compile_nets: int = 1             # compile rows: only for the first networks
    compile_estimate: float = 60.0    # seconds torch.compile is assumed to need (cold cache)
    search_min: float = 60.0          # compile rows leave at least this to the search
    processes_start: float = 20.0     # seconds assumed for starting worker processes
    search: dict = dataclasses.field(default_factory=dict)   # SearchConfig overrides
    val: int | float = 10_000
    threads: int | None = None        # CPU threads per training (None: the device's default)


GPU = Scale()
SMOKE = Scale(widths=(4, 8, 8), image=16, batch=32, matmul=256, child_images=64,
              child_epochs=2, agg_images=64, agg_images_late=64, agg_models=4,
              configs_first=("serial", "streams1", "streams2", "graph1", "graph2",
                             "graph2-nobench", "processes2"),
              configs_later=("serial", "streams2", "graph2", "processes2"),
              budget=150.0, reserve=10.0, row_min=0.5, compile_estimate=1e9,
              processes_start=5.0, val=200, threads=1,
              search=dict(n_steps=2, n_neigh=3, n_nm=2, epoch_pretrain=1, epoch_neigh=1,
                          epoch_final=1, widths=(4, 8, 8), batch_size=32, probe_size=16,
                          eval_batch_size=200, threads=1))


class TimeUp(BaseException):
    """The search's time is up (a BaseException: executors turn Exceptions into failed
    outcomes, this must pass through them)."""


class Budget:
    """Wall-clock budget of the whole command, with the end of each section's share."""

    def __init__(self, seconds: float):
        self.t0, self.total = time.perf_counter(), seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.total - self.elapsed()

    def at(self, share: float) -> float:
        """perf_counter time at `share` of the budget."""
        return self.t0 + share * self.total


def left_until(end: float) -> float:
    return end - time.perf_counter()


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
    """results.json (rewritten after every row) and results.md (after every section) in the
    output folder."""

    def __init__(self, out: Path, meta: dict):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.data = {"meta": meta, "sections": {}, "in_progress": None}
        self.md = [f"# NASH GPU benchmark\n\nEvery number below is measured in this run unless "
                   f"it says it is an estimate.\n\n{self._meta_md(meta)}"]
        self.save()

    @staticmethod
    def _meta_md(meta: dict) -> str:
        return "\n".join(f"- {k}: {v}" for k, v in meta.items() if not isinstance(v, dict))

    def progress(self, name: str, rows) -> None:
        """A section's rows so far (results.json only; results.md gets the section at its end)."""
        self.data["sections"][name] = rows
        self.data["in_progress"] = name
        self.save()

    def add(self, name: str, data, text: str) -> None:
        self.data["sections"][name] = data
        self.data["in_progress"] = None
        self.md.append(f"## {name}\n\n{text}")
        print(f"\n## {name}\n\n{text}\n", flush=True)
        self.save()

    def save(self) -> None:
        tmp = self.out / ".results.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.out / "results.json")
        tmp = self.out / ".results.md.tmp"
        tmp.write_text("\n\n".join(self.md) + "\n")
        tmp.replace(self.out / "results.md")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class _Tee:
    """A text stream writing to `stream` and to an open log file."""

    def __init__(self, stream, file):
        self.stream, self.file = stream, file

    def write(self, text: str) -> int:
        self.stream.write(text)
        with contextlib.suppress(ValueError):   # the log closed under a straggling thread
            self.file.write(text)
            self.file.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextlib.contextmanager
def tee_output(path: Path):
    """Everything written to sys.stdout and sys.stderr in the block also goes to `path`
    (appended), a traceback that ends the block included."""
    with open(path, "a", encoding="utf-8") as f:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, f), _Tee(err, f)
        try:
            yield
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            sys.stdout, sys.stderr = out, err


def in_fresh_thread(fn, *args, **kwargs):
    """fn(*args, **kwargs) in a new thread (cold per-thread state: cuDNN's autotuned plans)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


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


class NoData(Exception):
    """The data the benchmark needs is not there."""


def data_path(data: str | None, smoke: bool) -> Path | None:
    """The data file or folder to use (None: the smoke data, made later); NoData if missing."""
    if smoke and data is None:
        return None
    path = Path(data) if data is not None else DEFAULT_DATA
    if not path.exists():
        raise NoData(f"no data at {path}: run `python3 scripts/gpu_data.py` first (it copies "
                     f"../shared/data/cifar10-jpeg.tar.gz there), or pass --data")
    return path


def load_data(path: Path | None, scale: Scale, out: Path):
    """(dataset path for SearchConfig, split, description)."""
    if path is None:
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
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            t = time.perf_counter()
            path = archive_to_npz(path)
            log(f"data: {path} ready in {time.perf_counter() - t:.1f} s "
                f"(decoded by {cpu_count()} processes unless it was there already)")
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
def mech_label(mech: str, device: torch.device) -> str:
    return "cuda_graph (uncaptured: no CUDA)" if mech == "cuda_graph" and \
        device.type != "cuda" else mech


def section_per_child(nets, split, device, scale: Scale, mechanisms, end: float,
                      report: Report, name: str) -> list:
    """Network by network, each mechanism; a row starts only if it fits before `end` (a
    compile row: if scale.compile_estimate seconds are left)."""
    rows: list = []
    config = TrainConfig(batch_size=scale.batch, threads=scale.threads)
    plan = [(k, m) for k in range(len(nets)) for m in mechanisms]
    for k, mech in plan:
        net, arch, weights = nets[k]
        label = mech_label(mech, device)
        need = scale.compile_estimate if mech == "compile" else scale.row_min
        if left_until(end) < need:
            what = (f"torch.compile is assumed to need ~{need:.0f} s (an estimate: forward and "
                    f"backward, cold cache)" if mech == "compile" else f"a row needs {need:.0f} s")
            rows.append({"network": net, "mechanism": label, "skipped": f"time: {what}; "
                         f"{max(0.0, left_until(end)):.0f} s were left of this section's share"})
            log(f"per-child {net} {label}: skipped ({rows[-1]['skipped']})")
            report.progress(name, rows)
            continue
        fwd = forward_flops(arch)
        data = part(split.train, scale.child_images if fwd < scale.big_gflop * 1e9
                    else scale.child_images_big)
        try:
            model = build(arch, weights)
            res = in_fresh_thread(fit, model, data, epochs=scale.child_epochs, config=config,
                                  mean=split.mean, std=split.std, seed=0, device=device,
                                  step=mech)
            del model
        except Exception as e:  # noqa: BLE001 - a mechanism that fails is a result too
            rows.append({"network": net, "mechanism": label,
                         "error": f"{type(e).__name__}: {e}"[:2500],
                         "traceback": traceback.format_exc(limit=-6)})
            log(f"per-child {net} {label}: FAILED {type(e).__name__}: {e}\n"
                f"{rows[-1]['traceback']}")
            report.progress(name, rows)
            continue
        secs = [r.seconds for r in res.records]
        steady = statistics.median(secs[1:]) if len(secs) > 1 else secs[0]
        ips = res.records[-1].images / steady
        rows.append({"network": net, "mechanism": label, "params": arch.num_params,
                     "images": len(data), "fwd_gflop": fwd / 1e9, "img_s": ips,
                     "tflop_s": 3 * fwd * ips / 1e12,
                     "one_off_s": max(0.0, res.seconds - steady * len(secs)),
                     "epoch_s": secs, "loss": res.records[-1].loss,
                     "settings": dict(res.settings)})
        log(f"per-child {net:>14} {label:>10}: {ips:9.0f} img/s "
            f"{3 * fwd * ips / 1e12:8.3g} TFLOP/s, one-off {rows[-1]['one_off_s']:.2f} s")
        report.progress(name, rows)
    return rows


def per_child_md(rows, peak: float | None) -> str:
    table = []
    for r in rows:
        if "img_s" not in r:
            table.append([r["network"], r["mechanism"], "-", "-", "-", "-", "-", "-", "-",
                          r.get("skipped") or r.get("error", "")[:120]])
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


def step_tasks(models, scale: Scale, epochs: int = 1, **config) -> list[TrainTask]:
    config = TrainConfig(batch_size=scale.batch, threads=scale.threads, **config)
    return [TrainTask(mid, a.to_dict(), w, epochs, config, derive_seed(0, "train", mid),
                      eval_part=None) for mid, a, w in models]


def warm_tasks(split, scale: Scale, k: int, **config) -> list[TrainTask]:
    """k small tasks (widths 8-16-16, other shapes than the measured models') that make an
    executor start its threads or processes and their CUDA handles: part of its start-up."""
    arch = starting_arch(split.channels, split.num_classes, split.image_size,
                         widths=(8, 16, 16))
    config = TrainConfig(batch_size=scale.batch, threads=scale.threads, **config)
    return [TrainTask(f"warm{i}", arch.to_dict(), None, 1, config, i, eval_part=None)
            for i in range(k)]


def parse_key(key: str) -> tuple[str, int, bool | None]:
    """'graph8-nobench' -> ("graph", 8, False): kind, slots or workers, cudnn_benchmark (None:
    the library's default, "-bench": on, "-nobench": off)."""
    base, _, flag = key.partition("-")
    if flag not in ("", "bench", "nobench"):
        raise ValueError(key)
    kind = base.rstrip("0123456789")
    if kind not in ("serial", "streams", "graph", "processes") or \
            (kind == "serial") != (base == "serial"):
        raise ValueError(key)
    return kind, int(base[len(kind):] or 1), {"": None, "bench": True, "nobench": False}[flag]


def executor_config(key: str, device: torch.device, scale: Scale):
    """(label, factory(split, on_epoch=None), TrainConfig overrides) of a configuration key."""
    kind, k, bench = parse_key(key)
    over = {} if bench is None else {"cudnn_benchmark": bench}
    tail = {None: "", True: ", cudnn.benchmark on", False: ", cudnn.benchmark off"}[bench]
    if kind == "serial":
        return (f"serial, eager{tail}",
                lambda s, cb=None: SerialExecutor(s, device, on_epoch=cb), over)
    if kind in ("streams", "graph"):
        graph = kind == "graph"
        what = ("cuda graph" if device.type == "cuda" else "cuda_graph uncaptured") if graph \
            else "eager"
        return (f"streams x{k}, {what}{tail}", lambda s, cb=None: StreamExecutor(
            s, device, concurrency=k, threads=scale.threads, on_epoch=cb, cuda_graph=graph),
            over)
    dev = f"cuda:{torch.cuda.current_device()}" if device.type == "cuda" else device
    return (f"processes x{k}, eager{tail}", lambda s, cb=None: LocalExecutor(
        s, dev, workers=k, threads=scale.threads, on_epoch=cb), over)


def section_aggregate(models, split, device, scale: Scale, keys, images: int, end: float,
                      report: Report, name: str) -> list:
    """Each configuration: made fresh, then the same tasks twice ("first", "again")."""
    sub = dataclasses.replace(split, train=part(split.train, images))
    fwd = {mid: forward_flops(a) for mid, a, _ in models}
    rows: list = []
    base: dict | None = None
    for key in keys:
        label, factory, over = executor_config(key, device, scale)
        est = (2.2 * base["first_s"] if base else 0.0) + \
            (scale.processes_start if key.startswith("processes") else 0.0)
        if left_until(end) < max(est, 0.5):
            rows.append({"key": key, "config": label, "error": f"skipped: time: estimated "
                         f"{est:.0f} s (2.2 x the serial row's first run), "
                         f"{max(0.0, left_until(end)):.0f} s were left of this section's share"})
            log(f"{name} {label}: {rows[-1]['error']}")
            report.progress(name, rows)
            continue
        tasks = step_tasks(models, scale, **over)
        row = {"key": key, "config": label}
        pool = ThreadPoolExecutor(max_workers=1) if key.startswith("serial") else None
        ex = None
        try:
            t0 = time.perf_counter()
            ex = factory(sub)
            warm = warm_tasks(split, scale, parse_key(key)[1], **over)
            _ = pool.submit(ex.run, warm).result() if pool else ex.run(warm)
            sync(device)
            row["startup_s"] = time.perf_counter() - t0
            for run in ("first", "again"):
                sync(device)
                t = time.perf_counter()
                outs = pool.submit(ex.run, tasks).result() if pool else ex.run(tasks)
                sync(device)
                wall = time.perf_counter() - t
                bad = [o for o in outs if not o.ok]
                if bad:
                    for o in bad:   # every failure whole in the log, the first in the row
                        log(f"{name} {label} {run}: {o.model_id} failed: {o.error}")
                    raise RuntimeError(f"{len(bad)} of {len(outs)} failed: {bad[0].error}")
                img = sum(r["images"] for o in outs for r in o.records)
                flops = sum(3 * fwd[o.model_id] * r["images"] for o in outs for r in o.records)
                row.update({f"{run}_s": wall, f"img_s_{run}": img / wall,
                            f"tflop_s_{run}": flops / wall / 1e12})
            row["loss"] = {o.model_id: o.records[-1]["loss"] for o in outs}
        except Exception as e:  # noqa: BLE001
            row = {"key": key, "config": label, "error": f"{type(e).__name__}: {e}"[:2500],
                   "traceback": traceback.format_exc(limit=-6)}
            log(f"{name} {label}: FAILED {type(e).__name__}: {e}")
        finally:
            if ex is not None:
                ex.close()
            if pool is not None:
                pool.shutdown()
        if "img_s_again" in row:
            if base is None and key.startswith("serial"):
                base = row
            if base is not None:
                for run in ("first", "again"):
                    row[f"speedup_{run}"] = row[f"img_s_{run}"] / base[f"img_s_{run}"]
                row["max_loss_diff"] = max(abs(row["loss"][m] - base["loss"][m])
                                           for m in row["loss"])
            log(f"{name} {label:>34}: first {row['img_s_first']:9.0f} img/s "
                f"{row['tflop_s_first']:8.3g} TFLOP/s; again {row['img_s_again']:9.0f} img/s"
                f" (start {row['startup_s']:.1f} s)")
        rows.append(row)
        report.progress(name, rows)
    return rows


def aggregate_md(rows, models, peak: float | None) -> str:
    table = []
    for r in rows:
        if "img_s_again" not in r:
            table.append([r["config"]] + ["-"] * 8 + [r.get("error", "")[:120]])
            continue
        share = f"{100 * r['tflop_s_first'] / peak:.1f}%" if peak else "-"
        sp = {run: f"{r[f'speedup_{run}']:.2f}x" if f"speedup_{run}" in r else "-"
              for run in ("first", "again")}
        table.append([r["config"], f"{r['startup_s']:.1f}", f"{r['first_s']:.2f}",
                      f"{r['img_s_first']:,.0f}", f"{r['tflop_s_first']:.3g}", share,
                      sp["first"], f"{r['img_s_again']:,.0f}", sp["again"],
                      "-" if "max_loss_diff" not in r else f"{r['max_loss_diff']:.2g}"])
    sizes = ", ".join(f"{forward_flops(a) / 1e9:.2f}" for _, a, _ in models)
    return (f"Models (forward GFLOP/img): {sizes}\n\n" + md_table(
        ["configuration", "start s", "first: wall s", "img/s", "TFLOP/s", "of bf16 peak",
         "vs serial", "again: img/s", "vs serial", "max |loss - serial|"], table))


def verdict(first: list, later: list) -> dict:
    """Which measured configuration was fastest ("first" runs) and how the library's CUDA
    default compares; failed-in-3b configurations do not count."""
    failed = {r["key"] for r in later if "img_s_first" not in r
              and not r.get("error", "").startswith("skipped")}
    ok = [r for r in first if "img_s_first" in r and r["key"] not in failed]
    if not ok:
        return {"text": "No configuration of 3a finished: nothing to compare."}
    best = max(ok, key=lambda r: r["img_s_first"])
    default = next((r for r in ok if r["key"] == CUDA_DEFAULT), None)
    text = (f"Fastest in 3a (first runs, not failed in 3b): **{best['config']}**, "
            f"{best['img_s_first']:,.0f} img/s.")
    if default is None:
        text += (f" The library's CUDA default (executor=auto, train_step=auto: "
                 f"{CUDA_DEFAULT}) was not measured or failed here.")
    else:
        ratio = default["img_s_first"] / best["img_s_first"]
        text += (f" The library's CUDA default (executor=auto, train_step=auto: streams x 8 "
                 f"with CUDA graphs) ran {default['img_s_first']:,.0f} img/s, "
                 f"{100 * ratio:.0f}% of that"
                 + ("; it is the fastest." if best is default else
                    "; if that holds in 3b too, the default should change (docs/gpu.md)."))
    return {"best": best["key"], "default": CUDA_DEFAULT, "text": text}


# ----------------------------------------------------------------------------- 4 search
def search_config(data_path: str, scale: Scale, seed: int, device) -> SearchConfig:
    over = dict(dataset=data_path, val=scale.val, snapshot_ensemble=False, seed=seed,
                device=str(device), **scale.search)
    return resolve("table3-c10-s5", overrides=over)


def copy_journal(run_dir: Path, out: Path) -> None:
    """The search's journal as it is now, to out/search-journal.jsonl (atomically)."""
    src = run_dir / "journal.jsonl"
    if src.is_file():
        tmp = out / ".search-journal.jsonl.tmp"
        shutil.copyfile(src, tmp)
        tmp.replace(out / "search-journal.jsonl")


def run_search(config: SearchConfig, split, run_dir: Path, factory, deadline: float,
               out: Path) -> dict:
    """Run or resume the search until it ends or `deadline` (perf_counter) passes; the journal
    is copied to `out` after every event."""
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
        copy_journal(run_dir, out)
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
        copy_journal(run_dir, out)
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
                       "flops": work(m0), "fwd": [fwd[m0["model"]]], "images": [_images(m0)]})
        start = m0["clock"]
    for i in sorted(decided):
        rs = [r for r in trained if r.get("step") == i and r.get("role") in ("child",
                                                                                "incumbent")]
        children_s = made[i] - start if i in made else None
        phases.append({"phase": f"step {i}", "models": len(rs),
                       "wall_s": decided[i]["clock"] - start, "flops": sum(map(work, rs)),
                       "children_s": children_s,
                       "fwd": [fwd[r["model"]] for r in rs], "images": [_images(r) for r in rs]})
        start = decided[i]["clock"]
    final = next((r for r in trained if r.get("role") == "final"), None)
    if final is not None:
        phases.append({"phase": "final", "models": 1, "wall_s": final["clock"] - start,
                       "flops": work(final), "test_accuracy": final.get("test_accuracy"),
                       "fwd": [fwd[final["model"]]], "images": [_images(final)]})
    best = decided[max(decided)]["best"] if decided else (m0 or {}).get("model")
    return {"phases": phases, "models": models, "best": best, "run": run}


def rate_curve(child_rows: list, mech: str):
    """One-model training rate (FLOP/s) as a function of forward FLOPs/img, from section 2's
    rows of step mechanism `mech` (any mechanism if none): log-log interpolation between the
    measured networks; below the smallest, its img/s (launch-bound); above the largest, its
    FLOP rate (compute-bound). (rate, description)."""
    rows = [r for r in child_rows if "tflop_s" in r and r["mechanism"].startswith(mech)] or \
        [r for r in child_rows if "tflop_s" in r]
    pts = sorted((r["fwd_gflop"] * 1e9, r["tflop_s"] * 1e12) for r in rows)
    used = rows[0]["mechanism"].split()[0] if rows else mech

    def rate(f: float) -> float:
        if not pts:
            return float("nan")
        if f <= pts[0][0]:
            return pts[0][1] * f / pts[0][0]
        if f >= pts[-1][0]:
            return pts[-1][1]
        for (f0, r0), (f1, r1) in zip(pts, pts[1:]):
            if f0 <= f <= f1:
                w = math.log(f / f0) / math.log(f1 / f0)
                return math.exp(math.log(r0) + w * (math.log(r1) - math.log(r0)))
        return pts[-1][1]
    return rate, f"section 2's one-model {used} rates, interpolated by FLOPs"


def concurrency_gains(first: list, later: list, first_models, later_models, key: str) -> list:
    """[(median forward FLOPs of a section-3 step, gain of `key` over one model at a time of
    the same mechanism)] from the "first" runs: graph<k> against graph1 (else serial), the
    others against serial."""
    kind, _, _ = parse_key(key)
    out = []
    for rows, models in ((first, first_models), (later, later_models)):
        by = {r["key"]: r for r in rows if "img_s_first" in r}
        ref = by.get("graph1") if kind == "graph" else None
        ref = ref or by.get("serial")
        if key in by and ref is not None and models:
            med = statistics.median(forward_flops(a) for _, a, _ in models)
            out.append((med, by[key]["img_s_first"] / ref["img_s_first"], ref["key"]))
    return out


def train_estimate(fwds, images, n_eval, rate, gains) -> tuple[float, str]:
    """Seconds to train (and evaluate) these models at once: each alone at the one-model
    rate, divided by the concurrency gain of the nearest section-3 step (by median FLOPs);
    never less than the longest one alone."""
    alone = [(3 * f * n + f * n_eval) / rate(f) for f, n in zip(fwds, images)]
    if len(alone) == 1 or not gains:
        how = "" if len(alone) == 1 else "; no concurrency gain measured: one at a time"
        return (max(alone) if len(alone) == 1 else sum(alone)), how
    med = statistics.median(fwds)
    f0, g, ref = min(gains, key=lambda x: abs(math.log(x[0] / med)))
    return max(sum(alone) / g, max(alone)), f"; concurrency gain {g:.2f}x over {ref}"


# Past this many parameters a simulated lineage's parent is not grown further (its children
# would take tens of GB of host memory): later steps are extrapolated, and say so.
SIMULATE_MAX_PARAMS = 1e8


def simulated_child(arch: Arch, weights: dict, config: SearchConfig, i: int, j: int, probe):
    """(arch, weights) of child j of step i as the search makes it (its seed, n_NM)."""
    rng = np.random.default_rng(derive_seed(config.seed, "morph", i, j))
    return apply_random_morphisms(arch, weights, config.n_nm, rng, probe=probe)[:2]


def simulate_lineage(arch: Arch, weights: dict, config: SearchConfig, first_step: int,
                     budget_s: float, pick: str, probe) -> list[dict]:
    """The unfinished steps' models and the final network: children made by the search's own
    procedure (seeds of (run seed, step, child)) from `arch`; child 1 of each step is made
    with the probe batch, as the search makes every child, and timed ("make_one_s"); the
    others without it (the probe changes new weights, not architectures). The next step's
    parent is the child of median FLOPs (pick="median") or the largest ("largest"), made
    again (one child's weights are held at a time). Past `budget_s` seconds, or once a parent
    has SIMULATE_MAX_PARAMS parameters, the later steps repeat the last growth factor
    ("extrapolated")."""
    out, t0 = [], time.perf_counter()
    per_flop = None   # seconds to make one child per forward FLOP of its parent (last timed)
    for i in range(first_step, config.n_steps + 1):
        big = arch.num_params > SIMULATE_MAX_PARAMS
        if (time.perf_counter() - t0 > budget_s or big) and out:
            growth = (sum(out[-1]["fwd"]) / sum(out[-2]["fwd"])) if len(out) > 1 else 1.0
            why = (f" (the parent has over {SIMULATE_MAX_PARAMS:.0e} parameters)" if big
                   else "")
            out.append({"step": i, "fwd": [f * growth for f in out[-1]["fwd"]],
                        "make_one_s": out[-1]["make_one_s"] * growth,
                        "how": "extrapolated" + why})
            continue
        parent = forward_flops(arch)
        left = budget_s - (time.perf_counter() - t0)
        timed = per_flop is None or per_flop * parent < left   # else scaled from the last
        children, make_one = [], float("nan") if per_flop is None else per_flop * parent
        for j in range(1, max(config.n_neigh, 2)):
            t = time.perf_counter()
            a, _ = simulated_child(arch, weights, config, i, j,   # weights dropped: one at a time
                                   probe if j == 1 and timed else None)
            if j == 1 and timed:
                make_one = time.perf_counter() - t
                per_flop = make_one / parent
            children.append((forward_flops(a), j))
        fwd = [c[0] for c in children] + ([parent] if config.n_neigh > 1 else [])
        out.append({"step": i, "fwd": fwd, "make_one_s": make_one,
                    "how": "simulated" if timed else "simulated (making scaled by FLOPs)"})
        children.sort(key=lambda c: c[0])
        j = (children[-1] if pick == "largest" else children[len(children) // 2])[1]
        arch, weights = simulated_child(arch, weights, config, i, j,   # the next parent, again
                                        probe if j == 1 and timed else None)
    if out and out[-1]["how"].startswith("extrapolated"):
        ordered = sorted(out[-1]["fwd"][:-1] or out[-1]["fwd"])
        final = ordered[-1] if pick == "largest" else ordered[len(ordered) // 2]
        out.append({"step": "final", "fwd": [final], "how": "extrapolated"})
    else:
        out.append({"step": "final", "fwd": [forward_flops(arch)], "how": "simulated"})
    return out


def predict(measured: dict, config: SearchConfig, sizes: dict, rate, rate_desc: str,
            gains: list, probe, budget_s: float) -> dict:
    """The whole search's wall time: measured phases, plus estimates of the unfinished ones
    along two simulated lineages (median child wins each step; largest child wins)."""
    base = [dict(p, basis="measured") for p in measured["phases"]]
    for p in base:
        p["tflop_s"] = p["flops"] / p["wall_s"] / 1e12 if p["wall_s"] > 0 else float("nan")
    n_train = config.batch_size * (sizes["train"] // config.batch_size)
    # calibration: measured / estimated, for one model (pretrain) and for a step's models
    k_one, k_step, cal = 1.0, 1.0, []
    m0 = next((p for p in base if p["phase"] == "pretrain"), None)
    if m0 is not None and m0["wall_s"] > 0:
        est, _ = train_estimate(m0["fwd"], m0["images"], sizes["val"], rate, gains)
        if est > 0:   # (NaN without section 2's rates: no calibration then)
            k_one = m0["wall_s"] / est
            cal.append(f"pretrain measured / estimated = {k_one:.2f}")
    done_steps = [p for p in base if p["phase"].startswith("step")]
    if done_steps:
        p = done_steps[-1]
        train_s = p["wall_s"] - (p.get("children_s") or 0.0)
        est, _ = train_estimate(p["fwd"], p["images"], sizes["val"], rate, gains)
        if est > 0 and train_s > 0:
            k_step = train_s / est
            cal.append(f"{p['phase']} training measured / estimated = {k_step:.2f}")
    have = {p["phase"] for p in base}
    if "pretrain" not in have:
        arch = starting_arch(sizes["channels"], sizes["classes"], sizes["image"],
                             widths=config.widths)
        f = forward_flops(arch)
        wall, _ = train_estimate([f], [config.epoch_pretrain * n_train], sizes["val"], rate, [])
        base.append({"phase": "pretrain", "models": 1,
                     "flops": config.epoch_pretrain * n_train * 3 * f + sizes["val"] * f,
                     "wall_s": wall, "basis": f"estimate: {rate_desc}"})
    lineages: dict[str, list] = {"median": [], "largest": []}
    if "final" not in have:
        if measured["best"] is not None:
            arch, weights = measured["run"].load_model(measured["best"])
        else:  # stopped during the pretraining: grow from a fresh model_0
            arch = starting_arch(sizes["channels"], sizes["classes"], sizes["image"],
                                 widths=config.widths)
            weights = weights_of(build(arch, seed=0))
        for pick, rows in lineages.items():
            sim = simulate_lineage(arch, weights, config, len(done_steps) + 1, budget_s / 2,
                                   pick, probe)
            for s in sim:
                if s["step"] == "final":
                    f = s["fwd"][0]
                    n = config.epoch_final * (sizes["train"] + sizes["val"])
                    wall, _ = train_estimate([f], [n], sizes["test"], rate, [])
                    rows.append({"phase": "final", "models": 1,
                                 "flops": 3 * f * n + sizes["test"] * f, "wall_s": wall * k_one,
                                 "basis": f"estimate: {s['how']} {pick}-child winner, "
                                          f"{rate_desc}, x {k_one:.2f} (calibration)"})
                    continue
                fwds = s["fwd"]
                wall, how = train_estimate(fwds, [config.epoch_neigh * n_train] * len(fwds),
                                           sizes["val"], rate, gains)
                making = (max(config.n_neigh, 2) - 1) * s["make_one_s"]
                rows.append({"phase": f"step {s['step']}", "models": len(fwds),
                             "flops": sum(3 * f * config.epoch_neigh * n_train
                                          + f * sizes["val"] for f in fwds),
                             "wall_s": wall * k_step + making, "children_s": making,
                             "basis": f"estimate: {s['how']} children of the {pick} child of "
                                      f"the step before; training from {rate_desc}{how}, "
                                      f"x {k_step:.2f} (calibration); making children: "
                                      f"{max(config.n_neigh, 2) - 1} x {s['make_one_s']:.2f} s "
                                      f"(one child made with the probe batch, "
                                      f"{'timed' if s['how'] == 'simulated' else 'scaled'})"})
    for p in base + lineages["median"] + lineages["largest"]:
        if "tflop_s" not in p:
            p["tflop_s"] = p["flops"] / p["wall_s"] / 1e12 if p["wall_s"] > 0 else float("nan")
        for k in ("fwd", "images"):
            p.pop(k, None)
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
            "climb_tflop_s_measured": climb_tflops, "calibration": cal or
            ["none: no phase finished (factor 1)"]}


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
                      "TFLOP/s", "wall s if the largest child won (estimate)", "basis"], rows)
    est = pred["total_s"] - pred["measured_s"]
    text += (f"\n\n**Whole search (without the snapshot ensemble): {pred['total_s'] / 60:.1f} "
             f"min** = {pred['measured_s'] / 60:.1f} min measured + {est / 60:.1f} min "
             f"estimated as each row says (the median child winning each simulated step); "
             f"estimated {pred['upper_total_s'] / 60:.1f} min if the largest child won every "
             f"simulated step. Calibration: {'; '.join(pred['calibration'])}.")
    if pred["climb_tflop_s_measured"] is not None:
        share = (f", {100 * pred['climb_tflop_s_measured'] / peak:.1f}% of the bf16 ceiling"
                 if peak else "")
        text += (f" Training during the measured climb steps (measured): "
                 f"{pred['climb_tflop_s_measured']:.1f} TFLOP/s{share}.")
    final = next((p for p in measured["phases"] if p["phase"] == "final"), None)
    if final is not None and final.get("test_accuracy") is not None:
        text += (f"\n\nTest error of the found network (measured): "
                 f"{100 * (1 - final['test_accuracy']):.2f}% (paper: "
                 f"{PAPER['test_error_pct']}% on the official CIFAR-10).")
    models = [[m["model"], m["role"], f"{m['params']:,}", f"{m['fwd_gflop']:.3f}", m["epochs"],
               f"{statistics.median(m['epoch_s']):.2f}" if m["epoch_s"] else "-",
               f"{m['seconds']:.1f}",
               "-" if m["val_accuracy"] is None else f"{m['val_accuracy']:.4f}"]
              for m in measured["models"]]
    text += ("\n\nModels trained (measured; epoch s: median, while the step's models trained "
             "at once):\n\n")
    text += md_table(["model", "role", "params", "fwd GFLOP/img", "epochs", "epoch s",
                      "total s", "val acc"], models)
    return text


# ----------------------------------------------------------------------------- main
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path,
                   help="folder for results.json/.md, log.txt, search-journal.jsonl")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    p.add_argument("--data", help=f"archive, .npz or folder (default {DEFAULT_DATA})")
    p.add_argument("--device", default=None,
                   help="default cuda (fails at once without one); smoke: cpu")
    p.add_argument("--budget", type=float, help="seconds for the whole command (default "
                   f"{GPU.budget:.0f}; smoke {SMOKE.budget:.0f})")
    p.add_argument("--sections", default="ceiling,per-child,aggregate,search")
    p.add_argument("--mechanisms", default=None,
                   help="per-child step mechanisms (default eager,cuda_graph,compile on CUDA, "
                        "else eager,cuda_graph)")
    p.add_argument("--compile-estimate", type=float,
                   help=f"seconds a compile row is assumed to need (default "
                        f"{GPU.compile_estimate:.0f}); it starts only if that much is left")
    p.add_argument("--no-processes", action="store_true", help="skip the local executor rows")
    p.add_argument("--configs-first", help="section 3a's configurations, comma-separated "
                   f"(default {','.join(GPU.configs_first)})")
    p.add_argument("--configs-later", help="section 3b's (default "
                   f"{','.join(GPU.configs_later)})")
    p.add_argument("--search-executor", default="auto",
                   help="auto (fastest of section 3) or a configuration key: serial, "
                        "streams<k>, graph<k>, processes<k> (with -bench or -nobench: "
                        "cudnn.benchmark on or off; without: the library's default)")
    p.add_argument("--run-dir", type=Path, help="search run directory (default "
                   "gpu-runs/search-s<seed>, smoke: OUT/search); an existing one is resumed")
    p.add_argument("--search-seconds", type=float,
                   help="stop the search after this long (default: when --budget runs out)")
    p.add_argument("--seed", type=int, default=0)
    for name in ("child-images", "child-epochs", "agg-images"):
        p.add_argument(f"--{name}", type=int)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    scale = SMOKE if args.smoke else GPU
    over = {k: getattr(args, k.replace("-", "_")) for k in ("child-images", "child-epochs",
                                                             "agg-images")}
    scale = dataclasses.replace(scale, **{k.replace("-", "_"): v for k, v in over.items()
                                          if v is not None})
    for name in ("configs_first", "configs_later"):
        if getattr(args, name):
            scale = dataclasses.replace(scale, **{name: tuple(
                v for v in getattr(args, name).split(",") if v)})
    if args.no_processes:
        scale = dataclasses.replace(scale, **{name: tuple(
            k for k in getattr(scale, name) if not k.startswith("processes"))
            for name in ("configs_first", "configs_later")})
    if args.budget is not None:
        scale = dataclasses.replace(scale, budget=args.budget)
    if args.compile_estimate is not None:
        scale = dataclasses.replace(scale, compile_estimate=args.compile_estimate)
    budget = Budget(scale.budget)
    try:   # everything that can fail at once does, before anything is written
        device = resolve_device(args.device or ("cpu" if args.smoke else "cuda"))
        for key in {*scale.configs_first, *scale.configs_later} | (
                set() if args.search_executor == "auto" else {args.search_executor}):
            try:
                parse_key(key)
            except ValueError:
                raise ConfigError(f"unknown configuration {key!r}: serial, streams<k>, "
                                  f"graph<k>, processes<k>, each optionally with -bench or -nobench"
                                  ) from None
        path = data_path(args.data, args.smoke)
    except (ConfigError, NoData) as e:
        print(f"gpu.py: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tee_output(args.out / "log.txt"):
        return _main(args, scale, budget, device, path, argv)


def _main(args, scale: Scale, budget: Budget, device, path, argv) -> int:
    if device.type == "cpu":   # one thread per training in the smoke: robust on a busy machine
        torch.set_num_threads(scale.threads or cpu_count())
    sections = set(args.sections.split(","))
    mechanisms = (args.mechanisms or ("eager,cuda_graph,compile" if device.type == "cuda"
                                      else "eager,cuda_graph")).split(",")
    data_file, split, desc = load_data(path, scale, args.out)
    meta = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None
                                                              else sys.argv[1:])),
            "mode": "smoke (CPU, tiny sizes: checks the code, measures nothing)" if args.smoke
            else "full", "data": desc, **machine(device),
            "scale": dataclasses.asdict(scale), "paper": PAPER}
    report = Report(args.out, meta)
    log(f"{meta['mode']}; {desc}; device {device}; budget {scale.budget:.0f} s")

    peak = None
    if "ceiling" in sections:
        c = section_ceiling(device, scale.matmul)
        peak = c["bf16"]
        report.add("1. ceiling", c, f"Matrix multiply {scale.matmul}^3 (median of 10 after 3 "
                   f"warm-ups): **bf16 {c['bf16']:.3g} TFLOP/s**, fp32 {c['fp32']:.3g} TFLOP/s.")

    nets = networks(split, scale) if sections & {"per-child", "aggregate"} else []
    child_rows: list = []
    if "per-child" in sections:
        name = "2. per-child"
        child_rows = section_per_child(nets, split, device, scale,
                                       [m for m in mechanisms if m != "compile"],
                                       budget.at(scale.share_child), report, name)
        report.add(name, child_rows, (
            f"One model at a time, batch {scale.batch}, {scale.child_epochs} epochs of the "
            f"first `images` training images, each fit in a new thread (cold cuDNN plans); "
            f"img/s is the median of the epochs after the first; one-off s is the rest of "
            f"the fit's time (autotuning, capture, compile).\n\n"
            + per_child_md(child_rows, peak)))

    first_rows: list = []    # 3a: a first step (children of model_0)
    later_rows: list = []    # 3b: a later step (children of the +10 network)
    first_models = step_models(nets, scale, parent=0, step=1) if nets else []
    later_models = step_models(nets, scale, parent=1, step=3) if nets else []
    if "aggregate" in sections:
        what = ("all handed to the executor at once, twice: first (every slot autotunes these "
                "shapes and captures its graphs, as a search step's new children do) and "
                "again; wall time from hand-over to the last outcome (building, weight "
                "transfer, capture included). Start s: making the executor and one small "
                "warm-up task per slot or worker (other shapes), not in the walls")
        end = budget.at(scale.share_agg)
        end_a = time.perf_counter() + 0.65 * max(0.0, left_until(end))
        name = "3a. aggregate: a first step"
        first_rows = section_aggregate(first_models, split, device, scale, scale.configs_first,
                                       scale.agg_images, end_a, report, name)
        report.add(name, first_rows, (
            f"{len(first_models)} models ({len(first_models) - 1} children of model_0, 5 "
            f"morphisms each, and model_0), each one epoch of "
            f"{min(scale.agg_images, len(split.train)):,} images (batch {scale.batch}), "
            f"{what}.\n\n" + aggregate_md(first_rows, first_models, peak)))
        name = "3b. aggregate: a later step"
        later_rows = section_aggregate(later_models, split, device, scale, scale.configs_later,
                                       scale.agg_images_late, end, report, name)
        v = verdict(first_rows, later_rows)
        report.add(name, {"rows": later_rows, "verdict": v}, (
            f"{len(later_models)} models ({len(later_models) - 1} children of the +10 network, "
            f"5 morphisms each, and that network), each one epoch of "
            f"{min(scale.agg_images_late, len(split.train)):,} images, {what}.\n\n"
            + aggregate_md(later_rows, later_models, peak) + f"\n\n{v['text']}"))

    if "per-child" in sections and "compile" in mechanisms:
        # after section 3, so that a slow compile can only shorten the search
        name = "2b. per-child: torch.compile"
        end = budget.t0 + budget.total - scale.reserve - (
            scale.search_min if "search" in sections else 0.0)
        rows = section_per_child(nets[:scale.compile_nets], split, device, scale, ["compile"],
                                 end, report, name)
        report.add(name, rows, (
            f"As section 2, with train.fit's step=\"compile\" (torch.compile; its compile "
            f"time is in the one-off seconds), for the first {scale.compile_nets} network(s) "
            f"only, run after section 3 so that it cannot take that section's time; a row "
            f"starts only if an estimated {scale.compile_estimate:.0f} s (an assumption, not a "
            f"measurement) are left before the search's last {scale.search_min:.0f} s.\n\n"
            + per_child_md(rows, peak)))

    if "search" in sections:
        section_search(args, scale, budget, device, split, data_file, child_rows, first_rows,
                       later_rows, first_models, later_models, peak, report)

    report.data["meta"]["seconds"] = budget.elapsed()
    report.save()
    log(f"done in {budget.elapsed():.0f} s; results in {args.out}/results.md and results.json")
    return 0


def section_search(args, scale, budget, device, split, data_file, child_rows, first_rows,
                   later_rows, first_models, later_models, peak, report) -> None:
    key = args.search_executor
    if key == "auto":
        key = verdict(first_rows, later_rows).get("best") or (
            CUDA_DEFAULT if device.type == "cuda" else
            next((k for k in scale.configs_first if k.startswith("streams")), "serial"))
    label, factory, over = executor_config(key, device, scale)
    kind = parse_key(key)[0]
    config = search_config(data_file, scale, args.seed, device)
    config = config.replace(train_step="cuda_graph" if kind == "graph" else "eager", **over)
    run_dir = args.run_dir or (args.out / "search" if args.smoke
                               else ROOT / "gpu-runs" / f"search-s{args.seed}")
    deadline = budget.t0 + budget.total - scale.reserve
    if args.search_seconds is not None:
        deadline = min(deadline, time.perf_counter() + args.search_seconds)
    log(f"search with {label}: {deadline - time.perf_counter():.0f} s until the time limit")
    try:
        result = run_search(config, split, run_dir, factory, deadline, args.out)
    except Exception as e:  # noqa: BLE001 - report what was measured before it broke
        log(f"search FAILED: {type(e).__name__}: {e}")
        traceback.print_exc()
        result = {"status": f"failed: {type(e).__name__}: {str(e)[:300]}",
                  "seconds_this_call": float("nan"), "run_dir": str(run_dir),
                  "config": config}
        copy_journal(run_dir, args.out)
    config = result["config"]
    sizes = {"train": len(split.train), "val": len(split.val), "test": len(split.test),
             "channels": split.channels, "classes": split.num_classes,
             "image": split.image_size}
    try:
        from morphclimb.nash import probe_batch
        measured = measured_phases(run_dir, sizes)
        rate, rate_desc = rate_curve(child_rows, "cuda_graph" if kind == "graph" else "eager")
        gains = concurrency_gains(first_rows, later_rows, first_models, later_models, key)
        pred = predict(measured, config, sizes, rate, rate_desc, gains,
                       probe_batch(split, config.probe_size, config.seed),
                       budget_s=max(5.0, min(30.0, budget.left() - 10)))
        data = {"executor": label, "status": result["status"], "run_dir": str(run_dir),
                "config": config.to_dict(), "prediction": pred,
                "models": measured["models"], "measured_phases": measured["phases"]}
        text = f"Executor: {label}.\n\n" + search_md(result, pred, measured, peak)
    except Exception as e:  # noqa: BLE001
        data = {"executor": label, "status": result["status"], "run_dir": str(run_dir),
                "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        text = (f"Executor: {label}. Status: {result['status']}. No estimate: "
                f"{type(e).__name__}: {e}")
    report.add("4. search", data, text)


if __name__ == "__main__":
    sys.exit(main())
