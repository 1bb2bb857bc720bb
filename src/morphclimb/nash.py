"""NASH (Algorithm 1): hill climbing with network morphisms, journaled so that it resumes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .augment import probe_images
from .build import build
from .config import SearchConfig
from .data.load import load_split
from .errors import RunDirError, TrainingError
from .events import FINAL, MODEL0, Event, child_id, incumbent_id
from .executors import make_executor
from .journal import RunDir
from .morphisms import apply_random_morphisms
from .seeds import derive_seed
from .spec import Arch
from .state import RunState
from .train import TrainConfig
from .worker import TrainOutcome, TrainTask
from .zoo import starting_arch

__all__ = ["Climber", "SearchResult", "attach", "hill_climb", "load_split", "resume", "search"]

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


TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "sgdr")
EXEC_KEYS = ("device", "executor", "workers", "ray_address", "threads", "keep_weights")


def train_config(c: SearchConfig, sgdr: bool = True) -> TrainConfig:
    """The trainer settings of a search config (SGDR on unless asked otherwise)."""
    return TrainConfig(**{k: getattr(c, k) for k in TRAIN_KEYS}, sgdr=sgdr)


def probe_batch(split, size: int, seed: int) -> torch.Tensor | None:
    """A fixed batch of normalised training images for new BatchNorm statistics."""
    if size == 0:
        return None
    rng = np.random.default_rng(derive_seed(seed, "probe"))
    idx = np.sort(rng.choice(len(split.train.y), size=min(size, len(split.train.y)),
                             replace=False))
    return probe_images(split.train.x[idx], split.mean, split.std)


class Climber:
    """One run of Algorithm 1 over a run directory; completed trainings are never redone.

    `state` is the run as replayed from its journal; every record the climber writes is
    applied to it, so the search and every reader see one account of the run.
    """

    def __init__(self, config: SearchConfig, run: RunDir, split, executor, dataset_info: dict,
                 callback: Callback | None = None):
        self.c, self.run, self.split, self.executor = config, run, split, executor
        self.info = dataset_info
        self.emit = callback or (lambda event: None)
        self.state: RunState = run.state()
        self.clock0 = self.state.clock
        self.t0 = time.perf_counter()
        self.probe = probe_batch(split, config.probe_size, config.seed)
        self.pending: dict[str, TrainTask] = {}

    def clock(self) -> float:
        """Search wall time in seconds, summed over sessions (downtime excluded)."""
        return self.clock0 + time.perf_counter() - self.t0

    def log(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append to the journal, fold into the state and tell the callback."""
        rec = self.run.journal.append({**record, "clock": self.clock()})
        self.state.apply(rec)
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
        todo = [t for t in tasks if self.state.outcome(t.model_id) is None]
        self.pending = {t.model_id: t for t in todo}
        # one at a time where the executor runs one at a time (progress shows what runs now)
        batches = [[t] for t in todo] if self.executor.one_at_a_time else [todo]
        for batch in (b for b in batches if b):
            for t in batch:
                self.emit({"event": Event.TRAIN_START, "model": t.model_id,
                           "epochs": t.epochs, **t.meta})
            self.executor.run(batch, self._done)
        return {t.model_id: self.state.outcome(t.model_id) for t in tasks}

    def _done(self, out: TrainOutcome) -> None:
        task = self.pending[out.model_id]
        if not out.ok:
            self.log({"event": Event.CHILD_FAILED, "model": out.model_id, "reason": out.error,
                      **task.meta})
            return
        arch = Arch.from_dict(task.arch)
        path = self.run.save_model(out.model_id, arch, out.weights)
        metrics = {f"{task.eval_part}_{k}": v for k, v in (out.eval or {}).items()}
        self.log({"event": Event.MODEL_TRAINED, "model": out.model_id, "checkpoint": path,
                  "params": arch.num_params, "epochs": task.epochs, "part": task.part,
                  "seconds": out.seconds, "curves": out.records, **metrics, **task.meta})

    def train_one(self, model_id: str, arch: Arch, weights, epochs: int, **kw) -> dict:
        """Train a single model (or fetch it from the journal); raise if it failed."""
        rec = self.train_all([self.task(model_id, arch, weights, epochs, **kw)])[model_id]
        if rec["event"] != Event.MODEL_TRAINED:
            raise TrainingError(f"training {model_id} failed: "
                                f"{(rec.get('reason') or '').splitlines()[0]}; {RETRY_HINT}")
        return rec

    # ------------------------------------------------------------------ Algorithm 1
    def pretrain(self) -> dict:
        """model_0: the starting network trained epoch_pretrain epochs."""
        arch = starting_arch(self.split.channels, self.split.num_classes, self.split.image_size,
                             widths=self.c.widths)
        return self.train_one(MODEL0, arch, None, self.c.epoch_pretrain, role="pretrain",
                              step=0)

    def step(self, i: int, best: dict) -> dict:
        """One hill-climbing step from `best`; returns the new best's record.

        With n_neigh > 1: n_neigh - 1 children plus the current best trained further, as in
        Algorithm 1. With n_neigh = 1 (the paper's "random networks" baseline): one child,
        always accepted, no model selection.
        """
        if i in self.state.decided:
            return self.state.trained[self.state.decided[i]["best"]]
        self.emit({"event": Event.STEP_START, "step": i, "n_steps": self.c.n_steps})
        parent_arch, parent_w = self.run.load_model(best["model"])
        tasks, sgdr = [], self.c.sgdr_climb
        for j in range(1, max(self.c.n_neigh, 2)):
            cid = child_id(i, j)
            if cid in self.state.trained:
                tasks.append(self.task(cid, parent_arch, None, 0))
                continue
            rng = np.random.default_rng(derive_seed(self.c.seed, "morph", i, j))
            arch, w, applied = apply_random_morphisms(parent_arch, parent_w, self.c.n_nm, rng,
                                                      probe=self.probe)
            if cid not in self.state.made:
                self.log({"event": Event.CHILD_MADE, "model": cid, "step": i, "child": j,
                          "parent": best["model"], "morphisms": applied,
                          "params": arch.num_params})
            t = self.task(cid, arch, w, self.c.epoch_neigh, sgdr=sgdr, role="child", step=i,
                          child=j, n_neigh=self.c.n_neigh, parent=best["model"],
                          lineage=best.get("lineage", 0))
            tasks.append(t)
        if self.c.n_neigh > 1:
            tasks.append(self.task(incumbent_id(i), parent_arch, parent_w, self.c.epoch_neigh,
                                   sgdr=sgdr, role="incumbent", step=i, child=self.c.n_neigh,
                                   n_neigh=self.c.n_neigh, parent=best["model"],
                                   lineage=best.get("lineage", 0)))
        recs = self.train_all(tasks)
        return self.decide(i, best, [recs[t.model_id] for t in tasks])

    def decide(self, i: int, best: dict, recs: list[dict]) -> dict:
        """Move to the best child by validation accuracy; the incumbent stays on ties."""
        ok = [r for r in recs if r["event"] == Event.MODEL_TRAINED]
        if not ok:
            first = next((r.get("reason") for r in recs if r.get("reason")), "") or ""
            raise TrainingError(f"step {i}: every candidate failed (first: "
                                f"{first.splitlines()[0] if first else 'no reason'}); "
                                f"{RETRY_HINT}")
        incumbent = next((r for r in ok if r["model"] == incumbent_id(i)), None)

        def score(r):
            return (r["val_accuracy"], -r["val_loss"])

        children = [r for r in ok if r is not incumbent]
        winner = max(children, key=score, default=incumbent)
        if incumbent is not None and score(incumbent) >= score(winner):
            winner = incumbent
        self.log({"event": Event.STEP_DECIDED, "step": i, "best": winner["model"],
                  "previous": best["model"], "val_accuracy": winner["val_accuracy"],
                  "params": winner["params"], "candidates": [r["model"] for r in recs]})
        return winner

    def finish(self, best: dict) -> dict:
        """Final training on train + validation, then the one evaluation on the test set."""
        arch, w = self.run.load_model(best["model"])
        return self.train_one(FINAL, arch, w, self.c.epoch_final, part="train_full",
                              eval_part="test", role="final", parent=best["model"],
                              lineage=best.get("lineage", 0))

    def climb(self) -> dict:
        """Run (or resume) Algorithm 1 up to and including the final training."""
        if self.state.started is None:
            self.log({"event": Event.RUN_STARTED, "config": self.c.to_dict(),
                      "dataset": self.info})
        else:
            self.log({"event": Event.RUN_RESUMED})
        best = self.pretrain()
        for i in range(1, self.c.n_steps + 1):
            best = self.step(i, best)
            if self.c.keep_weights == "best":
                self.drop_losers(i)
        return self.finish(best)

    def drop_losers(self, i: int) -> None:
        """Delete the weights of step i's candidates that lost (idempotent)."""
        d = self.state.decided[i]
        for m in d["candidates"]:
            if m != d["best"] and m in self.state.trained:
                self.run.drop_weights(m)

    def retry_failed(self, changes: dict[str, Any]) -> list[str]:
        """Journal that the failed trainings not yet part of a decision are to run again."""
        settled = {m for d in self.state.decided.values() for m in d["candidates"]}
        again = sorted(m for m in self.state.failed if m not in settled)
        if again:
            self.log({"event": Event.FAILURES_RETRIED, "models": again, "changes": changes})
        return again


RETRY_HINT = ("to go on, change the training settings and retry the failed trainings: "
              "`morphclimb resume RUN_DIR --retry-failed --set lr_start=...`")


def open_run(out: str | Path | None, config: SearchConfig, resume: bool) -> RunDir:
    """Create (or, when resuming, open) the run directory, and become its only writer."""
    if resume:
        run = RunDir.open(out)
    else:
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / f"{config.dataset}-{stamp}-s{config.seed}"
        run = RunDir.create(out, config.to_dict())
    run.lock()
    return run


def hill_climb(config: SearchConfig, out: str | Path | None = None, *, resume: bool = False,
               callback: Callback | None = None, on_epoch=None, progress: bool = False,
               retry_failed: bool = False, changes: dict[str, Any] | None = None
               ) -> SearchResult:
    """Run NASH as configured into run directory `out` (or resume it); returns the result.

    `progress=True` shows a download bar when a dataset has to be fetched (the CLI's choice).
    When resuming, `changes` (training settings changed on resume) are journaled, and
    `retry_failed` journals that failed trainings run again (see `resume`).
    """
    from .data import dataset_info
    from .device import resolve_device
    from .results import collect_results
    device = resolve_device(config.device)
    ds, split = load_split(config, progress)
    # everything that can be checked is checked before the run directory exists
    starting_arch(split.channels, split.num_classes, split.image_size, widths=config.widths)
    if config.tensorboard:
        from .tensorboard import TensorBoardLogger, check_available
        check_available()
    run = open_run(out, config, resume)
    try:
        if config.tensorboard:
            callback = TensorBoardLogger(run.path / "tensorboard", callback)
        with make_executor(config, split, device, on_epoch) as ex:
            climber = Climber(config, run, split, ex, dataset_info(ds), callback)
            if changes:
                climber.log({"event": Event.CONFIG_CHANGED, "changes": changes})
            if retry_failed:
                climber.retry_failed(changes or {})
            final = climber.climb()
            from .followups import run_baseline, run_retrain, run_snapshot_ensemble
            if config.baseline:
                run_baseline(climber)
            if config.retrain:
                run_retrain(climber)
            if config.snapshot_ensemble:
                run_snapshot_ensemble(climber)
            if climber.state.finished is None:
                climber.log({"event": Event.RUN_FINISHED, "model": final["model"]})
        if hasattr(callback, "close"):
            callback.close()
        results = collect_results(run)
    finally:
        run.unlock()
    arch, weights = run.load_model(final["model"])
    return SearchResult(run.path, arch, weights, final["test_accuracy"], results["steps"],
                        results)


def run_config(run: RunDir) -> SearchConfig:
    """A run's effective config: config.json with the changes journaled on resume."""
    return SearchConfig.from_dict(run.state().config(run.config()))


def resume(run_dir: str | Path, callback: Callback | None = None, on_epoch=None, *,
           retry_failed: bool = False, **overrides) -> SearchResult:
    """Continue a killed search from its run directory (finished work is not redone).

    `overrides` may change where it runs (device, executor, workers, ray_address, threads,
    keep_weights) and the training settings (lr_start, batch_size, ...): those apply to the
    trainings still to come and are journaled (config_changed), so the run stays an honest
    record. `retry_failed=True` trains again the failed models of the steps not yet decided
    (journaled as failures_retried), the way forward when every candidate of a step failed.
    """
    run = RunDir.open(run_dir)
    cfg = run_config(run)
    allowed = set(EXEC_KEYS) | set(TRAIN_KEYS)
    bad = set(overrides) - allowed
    if bad:
        raise RunDirError(f"resume may only change {', '.join(sorted(allowed))}; not "
                          f"{', '.join(sorted(bad))}")
    new = cfg.replace(**overrides)
    changes = {k: v for k, v in overrides.items()
               if k in TRAIN_KEYS and k not in EXEC_KEYS and getattr(cfg, k) != v}
    return hill_climb(new, run_dir, resume=True, callback=callback, on_epoch=on_epoch,
                      retry_failed=retry_failed, changes=changes)


class attach:
    """Context manager: a Climber over an existing run (for retrain, ensembles, evaluation)."""

    def __init__(self, run_dir: str | Path, overrides: dict | None = None,
                 callback: Callback | None = None, on_epoch=None):
        from .data import dataset_info
        from .device import resolve_device
        self.run = RunDir.open(run_dir)
        self.config = run_config(self.run).replace(**(overrides or {}))
        ds, self.split = load_split(self.config)
        self.device = resolve_device(self.config.device)
        self.run.lock()
        self.executor = make_executor(self.config, self.split, self.device, on_epoch)
        self.climber = Climber(self.config, self.run, self.split, self.executor,
                               dataset_info(ds), callback)

    def __enter__(self) -> Climber:
        return self.climber

    def __exit__(self, *exc) -> None:
        self.executor.close()
        self.run.unlock()


def search(preset: str | None = "demo", *, dataset: str | None = None,
           out: str | Path | None = None, config: str | Path | None = None,
           callback: Callback | None = None, **overrides) -> SearchResult:
    """Run a NASH search like `morphclimb search` does: preset, config file, then overrides."""
    from .config import resolve
    if dataset is not None:
        overrides["dataset"] = dataset
    return hill_climb(resolve(preset, config, overrides), out, callback=callback)
