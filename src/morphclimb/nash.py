"""NASH (Algorithm 1): hill climbing with network morphisms, journaled so that it resumes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .build import build
from .config import SearchConfig
from .errors import RunDirError, TrainingError
from .executors import make_executor
from .journal import RunDir
from .morphisms import apply_random_morphisms
from .spec import Arch
from .train import TrainConfig
from .worker import TrainOutcome, TrainTask, derive_seed
from .zoo import starting_arch

Callback = Callable[[dict[str, Any]], None]


@dataclass
class SearchResult:
    """The outcome of a search: final architecture and weights, test metrics and history."""

    run_dir: Path
    arch: Arch
    weights: dict[str, torch.Tensor]
    test_accuracy: float
    history: list[dict[str, Any]]
    results: dict[str, Any] = field(repr=False)

    @property
    def model(self) -> torch.nn.Module:
        """The final trained network (eval mode, CPU)."""
        return build(self.arch, self.weights).eval()

    @property
    def test_error(self) -> float:
        """Test error in percent."""
        return 100.0 * (1.0 - self.test_accuracy)


def train_config(c: SearchConfig, sgdr: bool = True) -> TrainConfig:
    """The trainer settings of a search config (SGDR on unless asked otherwise)."""
    return TrainConfig(batch_size=c.batch_size, lr_start=c.lr_start, lr_end=c.lr_end,
                       momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay,
                       sgdr=sgdr, augment=c.augment, crop_pad=c.crop_pad, bf16=c.bf16,
                       channels_last=c.channels_last, threads=c.threads,
                       eval_batch_size=c.eval_batch_size)


def load_split(c: SearchConfig, progress: bool = False):
    """Load the configured dataset and split it (train / validation / test)."""
    from .data import Dataset, load_dataset
    from .data.core import stratified_indices
    ds = load_dataset(c.dataset, root=c.data_root, progress=progress)
    if c.subset is not None and c.subset < len(ds.train):
        rng = np.random.default_rng(derive_seed(c.split_seed, "subset"))
        _, keep = stratified_indices(ds.train.y, ds.num_classes, c.subset, rng, ds.classes,
                                     f"dataset {ds.name!r}")
        ds = Dataset(f"{ds.name}-subset{c.subset}", ds.train.subset(keep), ds.test, ds.classes)
    val = int(c.val) if c.val is not None and c.val >= 1 else c.val
    return ds, ds.split(val=val, seed=c.split_seed)


def probe_batch(split, size: int, seed: int) -> torch.Tensor | None:
    """A fixed batch of normalised training images for new BatchNorm statistics."""
    if size == 0:
        return None
    rng = np.random.default_rng(derive_seed(seed, "probe"))
    idx = np.sort(rng.choice(len(split.train.y), size=min(size, len(split.train.y)),
                             replace=False))
    x = torch.from_numpy(split.train.x[idx]).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(split.mean).view(1, -1, 1, 1)
    std = torch.tensor(split.std).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


class Climber:
    """One run of Algorithm 1 over a run directory; completed trainings are never redone."""

    def __init__(self, config: SearchConfig, run: RunDir, split, executor, dataset_info: dict,
                 callback: Callback | None = None):
        self.c, self.run, self.split, self.executor = config, run, split, executor
        self.info = dataset_info
        self.emit = callback or (lambda event: None)
        self.trained = {r["model"]: r for r in run.records("model_trained")}
        self.failed = {r["model"]: r for r in run.records("child_failed")}
        self.made = {r["model"]: r for r in run.records("child_made")}
        self.decided = {r["step"]: r for r in run.records("step_decided")}
        clocks = [r.get("clock", 0.0) for r in run.records()]
        self.clock0 = max(clocks, default=0.0)
        self.t0 = time.perf_counter()
        self.probe = probe_batch(split, config.probe_size, config.seed)

    def clock(self) -> float:
        """Search wall time in seconds, summed over sessions (downtime excluded)."""
        return self.clock0 + time.perf_counter() - self.t0

    def log(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append to the journal and tell the callback."""
        rec = self.run.journal.append({**record, "clock": self.clock()})
        self.emit(rec)
        return rec

    # ------------------------------------------------------------------ training
    def task(self, model_id: str, arch: Arch, weights, epochs: int, *, sgdr: bool = True,
             part: str = "train", eval_part: str | None = "val", **meta) -> TrainTask:
        """A training task with its seed derived from (run seed, model id)."""
        return TrainTask(model_id, arch.to_dict(), weights, epochs, train_config(self.c, sgdr),
                         derive_seed(self.c.seed, "train", model_id), part=part,
                         eval_part=eval_part, init_seed=derive_seed(self.c.seed, "init", model_id),
                         meta=dict(meta, lineage=meta.get("lineage", 0) + epochs))

    def train_all(self, tasks: list[TrainTask]) -> dict[str, dict]:
        """Train the tasks not yet in the journal; returns model id -> its journal record."""
        todo = [t for t in tasks if t.model_id not in self.trained and t.model_id not in self.failed]
        self.pending = {t.model_id: t for t in todo}
        # one at a time when serial (so progress shows what runs now), else all at once
        batches = [[t] for t in todo] if getattr(self.executor, "name", "") == "serial" else [todo]
        for batch in (b for b in batches if b):
            for t in batch:
                self.emit({"event": "train_start", "model": t.model_id, "epochs": t.epochs,
                           **t.meta})
            self.executor.run(batch, self._done)
        return {t.model_id: self.trained.get(t.model_id) or self.failed[t.model_id]
                for t in tasks}

    def _done(self, out: TrainOutcome) -> None:
        task = self.pending[out.model_id]
        if not out.ok:
            self.failed[out.model_id] = self.log({"event": "child_failed", "model": out.model_id,
                                                  "reason": out.error, **task.meta})
            return
        arch = Arch.from_dict(task.arch)
        path = self.run.save_model(out.model_id, arch, out.weights)
        metrics = {f"{task.eval_part}_{k}": v for k, v in (out.eval or {}).items()}
        self.trained[out.model_id] = self.log({
            "event": "model_trained", "model": out.model_id, "checkpoint": path,
            "params": arch.num_params, "epochs": task.epochs, "part": task.part,
            "seconds": out.seconds, "curves": out.records, **metrics, **task.meta})

    def train_one(self, model_id: str, arch: Arch, weights, epochs: int, **kw) -> dict:
        """Train a single model (or fetch it from the journal); raise if it failed."""
        rec = self.train_all([self.task(model_id, arch, weights, epochs, **kw)])[model_id]
        if rec["event"] != "model_trained":
            raise TrainingError(f"training {model_id} failed: {rec.get('reason')}")
        return rec

    # ------------------------------------------------------------------ Algorithm 1
    def pretrain(self) -> dict:
        """model_0: the starting network trained epoch_pretrain epochs."""
        arch = starting_arch(self.split.channels, self.split.num_classes, self.split.image_size,
                             widths=self.c.widths)
        return self.train_one("m0", arch, None, self.c.epoch_pretrain, role="pretrain", step=0)

    def step(self, i: int, best: dict) -> dict:
        """One hill-climbing step from `best`; returns the new best's record.

        With n_neigh > 1: n_neigh - 1 children plus the current best trained further, as in
        Algorithm 1. With n_neigh = 1 (the paper's "random networks" baseline): one child,
        always accepted, no model selection.
        """
        if i in self.decided:
            return self.trained[self.decided[i]["best"]]
        self.emit({"event": "step_start", "step": i, "n_steps": self.c.n_steps})
        parent_arch, parent_w = self.run.load_model(best["model"])
        tasks, sgdr = [], self.c.sgdr_climb
        for j in range(1, max(self.c.n_neigh, 2)):
            cid = f"s{i:02d}c{j}"
            if cid in self.trained or cid in self.failed:
                tasks.append(self.task(cid, parent_arch, None, 0))
                continue
            rng = np.random.default_rng(derive_seed(self.c.seed, "morph", i, j))
            arch, w, applied = apply_random_morphisms(parent_arch, parent_w, self.c.n_nm, rng,
                                                      probe=self.probe)
            if cid not in self.made:
                self.made[cid] = self.log({"event": "child_made", "model": cid, "step": i,
                                           "child": j, "parent": best["model"],
                                           "morphisms": applied, "params": arch.num_params})
            t = self.task(cid, arch, w, self.c.epoch_neigh, sgdr=sgdr, role="child", step=i,
                          child=j, n_neigh=self.c.n_neigh, parent=best["model"],
                          lineage=best.get("lineage", 0))
            tasks.append(t)
        inc = self.task(f"s{i:02d}inc", parent_arch, parent_w, self.c.epoch_neigh, sgdr=sgdr,
                        role="incumbent", step=i, child=self.c.n_neigh,
                        n_neigh=self.c.n_neigh, parent=best["model"],
                        lineage=best.get("lineage", 0))
        if self.c.n_neigh > 1:
            tasks.append(inc)
        recs = self.train_all(tasks)
        return self.decide(i, best, [recs[t.model_id] for t in tasks])

    def decide(self, i: int, best: dict, recs: list[dict]) -> dict:
        """Move to the best child by validation accuracy; the incumbent stays on ties."""
        ok = [r for r in recs if r["event"] == "model_trained"]
        if not ok:
            raise TrainingError(f"step {i}: every child failed; see the journal")
        has_incumbent = recs[-1]["model"].endswith("inc")
        incumbent = recs[-1] if has_incumbent and recs[-1]["event"] == "model_trained" else None

        def score(r):
            return (r["val_accuracy"], -r["val_loss"])

        winner = max(ok[:-1] if incumbent else ok, key=score, default=incumbent)
        if incumbent is not None and score(incumbent) >= score(winner):
            winner = incumbent
        self.decided[i] = self.log({
            "event": "step_decided", "step": i, "best": winner["model"],
            "previous": best["model"], "val_accuracy": winner["val_accuracy"],
            "params": winner["params"], "candidates": [r["model"] for r in recs]})
        return winner

    def finish(self, best: dict) -> dict:
        """Final training on train + validation, then the one evaluation on the test set."""
        arch, w = self.run.load_model(best["model"])
        return self.train_one("final", arch, w, self.c.epoch_final, part="train_full",
                              eval_part="test", role="final", parent=best["model"],
                              lineage=best.get("lineage", 0))

    def climb(self) -> dict:
        """Run (or resume) Algorithm 1 up to and including the final training."""
        if not self.run.records("run_started"):
            self.log({"event": "run_started", "config": self.c.to_dict(), "dataset": self.info})
        else:
            self.log({"event": "run_resumed"})
        best = self.pretrain()
        for i in range(1, self.c.n_steps + 1):
            best = self.step(i, best)
            if self.c.keep_weights == "best":
                self.drop_losers(i)
        return self.finish(best)

    def drop_losers(self, i: int) -> None:
        """Delete the weights of step i's candidates that lost (idempotent)."""
        d = self.decided[i]
        for m in d["candidates"]:
            if m != d["best"] and m in self.trained:
                self.run.drop_weights(m)


def open_run(out: str | Path | None, config: SearchConfig, resume: bool) -> RunDir:
    """Create (or, when resuming, open) the run directory."""
    if resume:
        return RunDir.open(out)
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{config.dataset}-{stamp}-s{config.seed}"
    return RunDir.create(out, config.to_dict())


def hill_climb(config: SearchConfig, out: str | Path | None = None, *, resume: bool = False,
               callback: Callback | None = None, on_epoch=None,
               progress: bool = False) -> SearchResult:
    """Run NASH as configured into run directory `out` (or resume it); returns the result.

    `progress=True` shows a download bar when a dataset has to be fetched (the CLI's choice).
    """
    from .data import dataset_info
    from .device import resolve_device
    from .results import collect_results
    device = resolve_device(config.device)
    ds, split = load_split(config, progress)
    run = open_run(out, config, resume)
    if config.tensorboard:
        from .tensorboard import TensorBoardLogger
        callback = TensorBoardLogger(run.path / "tensorboard", callback)
    with make_executor(config, split, device, on_epoch) as ex:
        climber = Climber(config, run, split, ex, dataset_info(ds), callback)
        final = climber.climb()
        if config.baseline:
            from .extras import run_baseline
            run_baseline(climber)
        if config.retrain:
            from .extras import run_retrain
            run_retrain(climber)
        if config.snapshot_ensemble:
            from .ensemble import run_snapshot_ensemble
            run_snapshot_ensemble(climber)
        if not run.records("run_finished"):
            climber.log({"event": "run_finished", "model": final["model"]})
    if hasattr(callback, "close"):
        callback.close()
    results = collect_results(run)
    arch, weights = run.load_model(final["model"])
    return SearchResult(run.path, arch, weights, final["test_accuracy"], results["steps"],
                        results)


def resume(run_dir: str | Path, callback: Callback | None = None, on_epoch=None,
           **overrides) -> SearchResult:
    """Continue a killed search from its run directory (finished work is not redone)."""
    run = RunDir.open(run_dir)
    cfg = SearchConfig.from_dict(run.config())
    if overrides:
        allowed = {"device", "executor", "workers", "ray_address", "threads", "keep_weights"}
        bad = set(overrides) - allowed
        if bad:
            raise RunDirError(f"resume may only change {sorted(allowed)}, not {sorted(bad)}")
        cfg = cfg.replace(**overrides)
    return hill_climb(cfg, run_dir, resume=True, callback=callback, on_epoch=on_epoch)


class attach:
    """Context manager: a Climber over an existing run (for retrain, ensembles, evaluation)."""

    def __init__(self, run_dir: str | Path, overrides: dict | None = None,
                 callback: Callback | None = None, on_epoch=None):
        from .data import dataset_info
        from .device import resolve_device
        self.run = RunDir.open(run_dir)
        cfg = SearchConfig.from_dict(self.run.config())
        self.config = cfg.replace(**(overrides or {}))
        ds, self.split = load_split(self.config)
        self.device = resolve_device(self.config.device)
        self.executor = make_executor(self.config, self.split, self.device, on_epoch)
        self.climber = Climber(self.config, self.run, self.split, self.executor,
                               dataset_info(ds), callback)

    def __enter__(self) -> Climber:
        return self.climber

    def __exit__(self, *exc) -> None:
        self.executor.close()


def search(preset: str | None = "demo", *, dataset: str | None = None,
           out: str | Path | None = None, config: str | Path | None = None,
           callback: Callback | None = None, **overrides) -> SearchResult:
    """Run a NASH search like `morphclimb search` does: preset, config file, then overrides."""
    from .config import resolve
    if dataset is not None:
        overrides["dataset"] = dataset
    return hill_climb(resolve(preset, config, overrides), out, callback=callback)
