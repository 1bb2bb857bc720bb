"""NASH (Algorithm 1): hill climbing with network morphisms, journaled so that it resumes."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import preprocess, restore
from .augment import probe_images
from .budget import mflops, size_problem
from .build import build
from .config import (
    EXEC_KEYS,
    RESUME_KEYS,
    TRAIN_KEYS,
    SearchConfig,
    canonical_keys,
    retrain_is_answer,
)
from .data.load import load_split
from .device import check_resources
from .errors import ConfigError, RunDirError, TrainingError, retry_hint
from .events import (
    BASELINE,
    FINAL,
    MODEL0,
    REFERENCE,
    RETRAIN,
    Event,
    child_id,
    incumbent_id,
)
from .executors import make_executor
from .forecast import after_climb_costs, final_deadline, final_epochs, plan_final, time_model
from .halving import halving
from .journal import RunDir
from .morphisms import APPROXIMATE, apply_random_morphisms
from .rules import Rules, nash_rules, ranked
from .seeds import derive_seed
from .spec import Arch
from .startpoint import load_start, start_ids, start_of
from .state import RunState
from .strategy import strategy_of
from .train import TrainConfig
from .warmstart import shrink_perturb
from .worker import Teacher, TrainOutcome, TrainTask, trained_epochs

__all__ = ["Climber", "SearchResult", "attach", "hill_climb", "load_split", "ranked", "resume",
           "search"]

Callback = Callable[[dict[str, Any]], None]


@dataclass
class SearchResult:
    """The outcome of a search: the run's answer (architecture, weights, test accuracy), the
    climb's history and results.json.

    The answer is the model `show`, `evaluate`, `export` and `predict` use by default
    (results.json's "model", named by `model_id`): the search's final model (`final`), or
    its architecture retrained from scratch (`retrain`) where final_model says so."""

    run_dir: Path
    arch: Arch
    weights: dict[str, torch.Tensor]
    test_accuracy: float
    history: list[dict[str, Any]]
    results: dict[str, Any] = field(repr=False)
    model_id: str = FINAL

    @property
    def model(self) -> torch.nn.Module:
        """The run's answer as a network (eval mode, CPU)."""
        return build(self.arch, self.weights).eval()

    @property
    def test_error(self) -> float:
        """Test error in percent."""
        return 100.0 * (1.0 - self.test_accuracy)


# TRAIN_KEYS (TrainConfig's fields), EXEC_KEYS, RESUME_KEYS: config.py (the CLI's help reads
# them without importing torch)


def train_config(c: SearchConfig, sgdr: bool = True) -> TrainConfig:
    """The trainer settings of a search config (SGDR on unless asked otherwise)."""
    return TrainConfig(**{k: getattr(c, k) for k in TRAIN_KEYS}, sgdr=sgdr)


def final_weights(c: SearchConfig, arch: Arch, weights: dict) -> dict:
    """The winner's weights as its final training starts: shrunk and perturbed when the
    config asks (final_shrink, final_perturb; the fresh weights seeded from the run seed)."""
    return shrink_perturb(arch, weights, c.final_shrink, c.final_perturb,
                          derive_seed(c.seed, "perturb", FINAL))


def probe_batch(split, size: int, seed: int) -> torch.Tensor | None:
    """A fixed batch of normalised training images for new BatchNorm statistics."""
    if size == 0:
        return None
    rng = np.random.default_rng(derive_seed(seed, "probe"))
    idx = np.sort(rng.choice(len(split.train.y), size=min(size, len(split.train.y)),
                             replace=False))
    return probe_images(split.train.x[idx], split.mean, split.std)


def trained_or_raise(model_id: str, rec: dict) -> dict:
    """The model_trained record of `model_id`, or TrainingError with its failure's reason
    (and, where the run's final training failed, that the run has no answer yet)."""
    if rec["event"] != Event.MODEL_TRAINED:
        why = (rec.get("reason") or "").strip().splitlines() or ["no reason given"]
        none = "; the run has no answer yet" if model_id == FINAL else ""
        raise TrainingError(f"training {model_id} failed: {why[0]}{none}; "
                            f"{retry_hint(why[0])}")
    return rec


class Climber:
    """One run of Algorithm 1 over a run directory; completed trainings are never redone.

    `state` is the run as replayed from its journal; every record the climber writes is
    applied to it, so the search and every reader see one account of the run.

    The climber is the engine: it makes candidates, trains them through the executor,
    journals and resumes. What it trains and keeps, and when it stops, it asks its `rules`
    (rules.py; NASH's by default).
    """

    rules: Rules = nash_rules(SearchConfig())   # replaced in __init__ by the config's

    def __init__(self, config: SearchConfig, run: RunDir, split, executor, dataset_info: dict,
                 callback: Callback | None = None, t0: float | None = None,
                 rules: Rules | None = None):
        self.c, self.run, self.split, self.executor = config, run, split, executor
        self.strategy = strategy_of(config)   # what differs between searches (strategy.py)
        self.rules = self.strategy.rules(config) if rules is None else rules
        self.info = preprocess.record(dataset_info, split)   # what inference needs, too
        self.emit = callback or (lambda event: None)
        self.state: RunState = run.state()
        self.clock0 = self.state.clock
        self.t0 = time.perf_counter() if t0 is None else t0   # this session's start
        self.probe = probe_batch(split, config.probe_size, config.seed)
        self.pending: dict[str, TrainTask] = {}
        self.redo: set[str] = set()   # journaled models trained again (vanished checkpoints)
        self.redo_errors: dict[str, str] = {}

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
             part: str = "train", eval_part: str | None = "val",
             teacher: Teacher | None = None, config: SearchConfig | None = None,
             **meta) -> TrainTask:
        """A training task with its seed derived from (run seed, model id), trained with the
        settings of `config` (default: the run's now; restore.py passes those in force when
        the model was first trained)."""
        c = self.c if config is None else config
        return TrainTask(model_id, arch.to_dict(), weights, epochs, train_config(c, sgdr),
                         derive_seed(self.c.seed, "train", model_id), part=part,
                         eval_part=eval_part, init_seed=derive_seed(self.c.seed, "init", model_id),
                         meta=dict(meta, lineage=meta.get("lineage", 0) + epochs),
                         step=c.train_step, teacher=teacher)

    def teacher_for(self, child: str, parent: str, parent_arch: Arch, parent_w
                    ) -> Teacher | None:
        """The parent as teacher of `child` when the child was made with an approximate
        morphism (its child_made record says) and distill_weight > 0; None otherwise (every
        child of NASH's exact morphisms: they start computing what the parent computes)."""
        made = self.state.made.get(child)
        if made is None or self.c.distill_weight == 0:
            return None
        if not any(m.get("op") in APPROXIMATE for m in made.get("morphisms", ())):
            return None
        return Teacher(parent, parent_arch.to_dict(), parent_w, self.c.distill_weight,
                       self.c.distill_temperature)

    def train_all(self, tasks: list[TrainTask], guard: Callable[[], bool] | None = None
                  ) -> dict[str, dict] | None:
        """Train the tasks not yet in the journal; returns model id -> its journal record.

        `guard` is asked before each batch (a time budget); when it says no, None.
        """
        todo = [t for t in tasks
                if self.state.outcome(t.model_id) is None or t.model_id in self.redo]
        self.pending = {t.model_id: t for t in todo}
        # one at a time where the executor runs one at a time (progress shows what runs now)
        batches = [[t] for t in todo] if self.executor.one_at_a_time else [todo]
        for batch in (b for b in batches if b):
            if guard is not None and not guard():
                return None
            for t in batch:
                deadline = {} if t.deadline is None else {"deadline": t.deadline}
                self.emit({"event": Event.TRAIN_START, "model": t.model_id,
                           "epochs": t.epochs, **deadline, **t.meta})
            self.executor.run(batch, self._done)
        return {t.model_id: self.state.outcome(t.model_id) for t in tasks}

    def _done(self, out: TrainOutcome) -> None:
        task = self.pending[out.model_id]
        if out.model_id in self.redo:   # a vanished checkpoint trained again (restore.py)
            self._restored(task, out)
            return
        if not out.ok:
            self.log({"event": Event.CHILD_FAILED, "model": out.model_id, "reason": out.error,
                      **task.meta})
            return
        arch = Arch.from_dict(task.arch)
        path = self.run.save_model(out.model_id, arch, out.weights)
        metrics = {f"{task.eval_part}_{k}": v for k, v in (out.eval or {}).items()}
        distill = {} if task.teacher is None else {"distill": task.teacher.record()}
        epochs = trained_epochs(task, out)
        meta = dict(task.meta)
        if epochs != task.epochs:     # re-planned by its deadline: the lineage as trained
            meta["lineage"] = meta.get("lineage", task.epochs) - task.epochs + epochs
        if task.deadline is not None:
            meta["deadline"] = round(task.deadline, 3)
        if out.replans:
            meta["replans"] = out.replans
        self.log({"event": Event.MODEL_TRAINED, "model": out.model_id, "checkpoint": path,
                  "params": arch.num_params, "mflops": mflops(arch),
                  "epochs": epochs, "part": task.part,
                  "seconds": out.seconds, "curves": out.records, **metrics, **distill,
                  **meta})

    def _restored(self, task: TrainTask, out: TrainOutcome) -> None:
        if not out.ok:
            self.redo_errors[out.model_id] = out.error or "no reason"
            return
        path = self.run.save_model(out.model_id, Arch.from_dict(task.arch), out.weights)
        self.log(restore.restored_record(task, out, self.state.trained[out.model_id], path))

    def ensure(self, model_id: str) -> None:
        """Train `model_id` again if the journal has it but its checkpoint vanished."""
        if model_id in self.state.trained and restore.vanished(self.run, model_id):
            restore.restore(self, model_id)

    def load_model(self, model_id: str) -> tuple[Arch, dict[str, torch.Tensor]]:
        """Arch and weights of a trained model (its checkpoint restored if it vanished)."""
        self.ensure(model_id)
        return self.run.load_model(model_id)

    def load_arch(self, model_id: str) -> Arch:
        """The architecture of a trained model (rebuilt from the journal if it vanished)."""
        if model_id in self.state.trained and not (
                self.run.model_dir(model_id) / "arch.json").is_file():
            return Arch.from_dict(restore.initial_task(self, model_id).arch)
        return self.run.load_arch(model_id)

    def train_one(self, model_id: str, arch: Arch, weights, epochs: int, **kw) -> dict:
        """Train a single model (or fetch it from the journal); raise if it failed."""
        return self.train_task(self.task(model_id, arch, weights, epochs, **kw))

    def train_task(self, task: TrainTask) -> dict:
        """Train one task (or fetch it from the journal); raise if it failed."""
        return trained_or_raise(task.model_id, self.train_all([task])[task.model_id])

    # ------------------------------------------------------------------ Algorithm 1
    def pretrain(self) -> dict:
        """model_0: the starting network trained epoch_pretrain epochs.

        With `start` (another run's network, or a user's arch.json with weights) model_0 is
        that network as it is (evaluated, not trained); without weights it is trained
        epoch_pretrain epochs from fresh weights, like the paper's model_0. A Pareto search's
        `extra_starts` are trained alike, together with it, as start_1, start_2, ...
        """
        tasks = []
        for mid in start_ids(self.c):   # model_0, then a Pareto search's extra starts
            if mid not in self.state.trained:
                arch, w, _ = start_of(self.c, self.split, mid)
                tasks.append(self.task(mid, arch, w, 0 if w is not None
                                       else self.c.epoch_pretrain, role="pretrain", step=0))
        if tasks:
            for mid, rec in self.train_all(tasks).items():
                trained_or_raise(mid, rec)
        return self.state.trained[MODEL0]

    def start_info(self) -> dict:
        """Where the climb starts (run_started's "start"): model_0's, with "extra" listing
        a Pareto search's extra_starts, each as start_1, start_2, ... in order."""
        info = load_start(self.c, self.split)[2]
        if self.c.extra_starts:
            info = {**info, "extra": [{"model": m, **start_of(self.c, self.split, m)[2]}
                                      for m in start_ids(self.c)[1:]]}
        return info

    def starts(self) -> list[dict]:
        """The climb's first parents: model_0, or a Pareto search's first front (model_0
        and its extra_starts, the non-dominated ones, the most accurate first)."""
        from .pareto import front_of
        return front_of([self.state.trained[m] for m in start_ids(self.c)], self.c.objective)

    def step(self, i: int, parents: list[dict]) -> dict | None:
        """One step of the climb from `parents` (NASH: the one current best); returns the
        new best's record (the first the selector keeps).

        The proposer says how many children are drawn, each one's parent, which are trained
        and whether the parent trains on beside them (NASH: n_neigh - 1 children plus the
        current best, as in Algorithm 1; with n_neigh = 1, the paper's "random networks"
        baseline, one child, always accepted); the pruner may cut candidates early
        (successive halving); the selector decides. Returns None when a stopper (the time
        budget) ends the climb here (journaled as climb_stopped).
        """
        best = parents[0]
        if i in self.state.decided:
            return self.state.trained[self.state.decided[i]["best"]]
        self.emit({"event": Event.STEP_START, "step": i, "n_steps": self.c.n_steps})
        propose, sgdr = self.rules.proposer, self.c.sgdr_climb
        loaded = {}

        def parent_model(rec: dict):
            if rec["model"] not in loaded:
                loaded[rec["model"]] = self.load_model(rec["model"])
            return loaded[rec["model"]]

        taken = {}
        for p in parents:
            taken.setdefault(_key(self.load_arch(p["model"])),
                             "its parent" if len(parents) == 1 else f"parent {p['model']}")
        tasks = []
        for j, sampled in enumerate(propose.parent_of(i, parents), start=1):
            cid = child_id(i, j)
            # a resumed step keeps the parent its journal recorded
            pid = (self.state.made.get(cid) or self.state.trained.get(cid) or {}).get("parent")
            par = self.state.trained[pid] if pid in self.state.trained else sampled
            parent_arch, parent_w = parent_model(par)
            meta = dict(role="child", step=i, child=j, n_neigh=self.c.n_neigh,
                        parent=par["model"], lineage=par.get("lineage", 0),
                        **self.strategy.child_meta(propose))
            if cid in self.state.trained:
                taken.setdefault(_key(self.load_arch(cid)), cid)
                tasks.append(self.task(cid, parent_arch, None, 0))
                continue
            made = self.make_child(i, j, parent_arch, parent_w, par, taken)
            if made is None:
                if self.state.outcome(cid) is None:
                    self.log({"event": Event.CHILD_FAILED, "model": cid, "reason":
                              f"no acceptable child in {MAX_DRAWS} draws of morphisms "
                              "(size limits or duplicates)", **meta})
                tasks.append(self.task(cid, parent_arch, None, 0))
                continue
            arch, w = made
            taken.setdefault(_key(arch), cid)
            teacher = self.teacher_for(cid, par["model"], parent_arch, parent_w)
            tasks.append(self.task(cid, arch, w, self.c.epoch_neigh, sgdr=sgdr,
                                   teacher=teacher, **meta))
        drawn = [self.state.made[t.model_id] for t in tasks if t.model_id in self.state.made]
        chosen = set(propose.to_train(i, drawn, parents))
        cut = [r["model"] for r in drawn if r["model"] not in chosen]   # never trained
        tasks = [t for t in tasks if t.model_id not in cut]
        if propose.with_incumbent:
            parent_arch, parent_w = parent_model(best)
            tasks.append(self.task(incumbent_id(i), parent_arch, parent_w, self.c.epoch_neigh,
                                   sgdr=sgdr, role="incumbent", step=i, child=self.c.n_neigh,
                                   n_neigh=self.c.n_neigh, parent=best["model"],
                                   lineage=best.get("lineage", 0)))
        ahead = None
        if self.rules.pruner is not None:
            halved = halving(self, i, tasks, best)
            if halved is None:
                return None
            tasks, cut = halved[0], cut + halved[1]
            ahead = self.rules.pruner.rungs[-1:] or None
        recs = self.train_all(tasks, self.guard(i, tasks, best, ahead))
        if recs is None:
            return None
        return self.decide(i, best, [recs[t.model_id] for t in tasks], cut, parents)

    def guard(self, i: int, tasks: list[TrainTask], best: dict, rungs=None):
        """The stoppers' check before each batch of step i's `tasks` (`rungs`: with halving,
        the rungs still ahead): the time budget's. A stopper's reason is journaled here
        (climb_stopped), once; after it nothing more trains in the climb."""
        def go() -> bool:
            if self.state.stopped is not None:
                return False
            why = self.rules.stop(self, i, tasks, best, rungs)
            if why is not None:
                self.log({"event": Event.CLIMB_STOPPED, **why})
            return why is None
        return go

    def make_child(self, i: int, j: int, parent_arch: Arch, parent_w, best: dict,
                   taken: dict[str, str]):
        """Child j of step i: (arch, weights), redrawn while it breaks a size limit or
        repeats its parent or an earlier child; None when no draw is acceptable.

        Draw 0 uses the seed every earlier version used; draw d > 0 its own. A resumed run
        takes the draw its journal recorded (child_made's "draw").
        """
        cid = child_id(i, j)
        rec = self.state.made.get(cid)
        draws = [rec.get("draw", 0)] if rec is not None else range(MAX_DRAWS)
        # approximate morphisms (LEMONADE) only when asked: NASH's call is as it always was
        approximate = {"approximate": True} if self.c.approximate else {}
        for d in draws:
            keys = ("morph", i, j) if d == 0 else ("morph", i, j, d)
            rng = np.random.default_rng(derive_seed(self.c.seed, *keys))
            arch, w, applied = apply_random_morphisms(parent_arch, parent_w, self.c.n_nm, rng,
                                                      probe=self.probe, **approximate)
            if rec is not None:
                return arch, w
            why = size_problem(arch, self.c.max_params, self.c.max_mflops,
                               self.c.min_params, self.c.min_mflops)
            if why is None and _key(arch) in taken:
                why = f"same architecture as {taken[_key(arch)]}"
            if why is None:
                self.log({"event": Event.CHILD_MADE, "model": cid, "step": i, "child": j,
                          "parent": best["model"], "morphisms": applied, "draw": d,
                          "params": arch.num_params, "mflops": mflops(arch)})
                return arch, w
            if not any(r["step"] == i and r["child"] == j and r["draw"] == d
                       for r in self.state.redrawn):
                self.log({"event": Event.CHILD_REDRAWN, "model": cid, "step": i, "child": j,
                          "draw": d, "reason": why, "morphisms": applied})
        return None

    def decide(self, i: int, best: dict, recs: list[dict], cut: list[str] = (),
               parents: list[dict] = ()) -> dict:
        """Keep what the selector keeps (NASH: the best child by validation accuracy, then
        loss; the incumbent stays on ties; a Pareto search: the non-dominated set of its
        `parents`, the front so far, and the candidates); returns the first kept, the run's
        new best.

        `cut`: candidates never trained or stopped by the pruner before the last rung
        (listed, never chosen).
        """
        ok = [r for r in recs if r["event"] == Event.MODEL_TRAINED]
        if not ok:
            first = next((r.get("reason") for r in recs if r.get("reason")), "") or ""
            first = first.strip().splitlines()[0] if first.strip() else "no reason"
            raise TrainingError(f"step {i}: every candidate failed (first: {first}); "
                                f"{retry_hint(first)}")
        kept = self.rules.selector.select(i, ok, list(parents))
        winner = kept[0]
        self.log({"event": Event.STEP_DECIDED, "step": i, "best": winner["model"],
                  "kept": [r["model"] for r in kept],
                  **({"strategy": tag} if (tag := getattr(self.rules.selector, "strategy",
                                                          None)) else {}),
                  "previous": best["model"], "val_accuracy": winner["val_accuracy"],
                  "params": winner["params"],
                  "candidates": [r["model"] for r in recs] + list(cut)})
        return winner

    def finish(self, best: dict, model_id: str = FINAL, config: SearchConfig | None = None
               ) -> dict:
        """Final training on train + validation, then the one evaluation on the test set
        (`config`: the training settings to use, as in `task`)."""
        arch, w = self.run.load_model(best["model"])
        task = self.task(model_id, arch, final_weights(self.c, arch, w), final_epochs(self),
                         part="train_full", eval_part="test", role="final",
                         parent=best["model"], lineage=best.get("lineage", 0), config=config)
        if self.c.final_lr is not None:
            task = dataclasses.replace(task, config=dataclasses.replace(
                task.config, lr_start=self.c.final_lr))
        if self.state.final_plan is not None:   # the plan: end by the budget (re-planned)
            done = self.state.trained.get(model_id)
            if model_id in self.redo and done is not None:   # restoring: as it ran
                if "deadline" in done:    # (a plan's final journaled before re-plans: plain)
                    task = dataclasses.replace(task, replans=done.get("replans", []))
            else:
                task = dataclasses.replace(task, deadline=final_deadline(self, model_id),
                                           min_epochs=self.c.epoch_final)
        return self.train_task(task)

    def climb(self) -> dict:
        """Run (or resume) Algorithm 1 up to and including the final training."""
        if self.state.started is None:
            self.log({"event": Event.RUN_STARTED, "config": self.c.to_dict(),
                      "dataset": self.info, "start": self.start_info()})
        elif preprocess.recorded(self.state.dataset):
            self.log({"event": Event.RUN_RESUMED})
        else:   # a run made before morphclimb recorded mean/std: record them now
            self.log({"event": Event.RUN_RESUMED, "dataset": self.info})
        self.pretrain()
        kept, i = self.starts(), 1
        best = kept[0]
        while self.rules.go_on(self, i):     # NASH: up to n_steps
            won = self.step(i, self.rules.proposer.parents(i, kept))
            if won is None:          # a stopper (the time budget) ended the climb before step i
                break
            best = won
            kept = [self.state.trained[m] for m in self.state.kept(i)]
            if self.c.keep_weights == "best":
                self.drop_losers(i)
            i += 1
        if self.c.final_share is not None and FINAL not in self.state.trained:
            plan_final(self, self.to_finish(kept))
        final = self.final(best)
        self.finish_front(kept)   # the other models the strategy finishes (NASH: none)
        return final

    def to_finish(self, kept: list[dict]) -> list[dict]:
        """The models that get a final training, the strategy says: NASH's winner, or a
        Pareto search's front members (front_final), the most accurate first."""
        return self.strategy.to_finish(kept, self.c)

    def finish_front(self, front: list[dict]) -> None:
        """A Pareto search's final trainings of the front members that get one (front_final;
        the most accurate, the run's `final`, is trained first, by `final`)."""
        from .pareto import final_id
        for m in self.to_finish(front)[1:]:
            mid = final_id(m["model"], front[0]["model"])
            if mid in self.state.trained:
                self.ensure(mid)
                continue
            self.ensure(m["model"])
            self.finish(m, mid)

    def final(self, best: dict) -> dict:
        """The final model's record: trained by `finish`, or the journal's (its checkpoint
        trained again if it vanished)."""
        done = self.state.trained.get(FINAL)
        if done is None:
            self.ensure(best["model"])   # finish reads the winner's weights
            return self.finish(best)
        self.ensure(FINAL)
        return done

    def follow_up(self, final: dict) -> dict[str, str]:
        """The jobs configured after the climb (baseline, retrain, snapshot ensemble, the
        equal-time reference).

        Under a time budget a job that is predicted not to fit in what is left is skipped;
        returns the skipped jobs with the reason (journaled with run_finished). A job whose
        training fails is journaled as failed (child_failed, its role the job's) and the
        others still run: results.json's climb.failed says which and why
        (results.failed_jobs), and the run's answer falls back to the final model where the
        retraining that was to be it failed.
        """
        from .followups import (
            answer_clock,
            run_baseline,
            run_reference,
            run_retrain,
            run_snapshot_ensemble,
        )
        jobs = [("baseline", self.c.baseline, BASELINE in self.state.trained, run_baseline),
                ("retrain", self.c.retrain or retrain_is_answer(
                    self.c.final_model, final["epochs"], final.get("lineage", 0)),
                 RETRAIN in self.state.trained, run_retrain),
                ("snapshots", self.c.snapshot_ensemble, self.state.ensemble() is not None,
                 run_snapshot_ensemble),
                ("reference", self.c.reference is not None, REFERENCE in self.state.trained,
                 run_reference)]
        skipped = {}
        for name, wanted, done, job in jobs:
            if not wanted:
                continue
            if self.c.time_budget is not None and not done:
                best = self.state.trained[final["parent"]]
                cost = after_climb_costs(self, time_model(self), best,
                                         len(self.state.decided)).get(name, 0.0)
                if name == "reference":      # as long as the search: planned for only if
                    cost = answer_clock(self)   # it fits after the rest
                left = self.c.time_budget - self.clock()
                if cost > left:
                    later = {"retrain": "retrain", "reference": "reference",
                             "snapshots": "ensemble"}.get(name)
                    skipped[name] = (f"time budget: needs ~{cost:.0f}s, "
                                     f"{max(left, 0):.0f}s left" + (
                                         f"; `morphclimb {later} {self.run.path}` trains it "
                                         "afterwards" if later else ""))
                    continue
            try:
                job(self)
            except TrainingError:   # journaled as failed (child_failed, which results.json's
                continue            # climb.failed reports); the answer and the rest stand
        return skipped

    def drop_losers(self, i: int) -> None:
        """Delete the weights of step i's candidates that were not kept (idempotent)."""
        kept = set(self.state.kept(i))
        for m, r in self.state.trained.items():
            if r.get("step") == i and r.get("role") in ("child", "incumbent") and m not in kept:
                self.run.drop_weights(m)

    def retry_failed(self, changes: dict[str, Any]) -> list[str]:
        """Journal that the failed trainings not yet part of a decision are to run again."""
        settled = {m for d in self.state.decided.values() for m in d["candidates"]}
        again = sorted(m for m in self.state.failed if m not in settled)
        if again:
            self.log({"event": Event.FAILURES_RETRIED, "models": again, "changes": changes})
        return again


MAX_DRAWS = 50   # draws of morphisms per child before it is given up


def rules_for(c: SearchConfig) -> Rules:
    """The rules of the config's strategy: NASH's hill climbing or the Pareto search's."""
    return strategy_of(c).rules(c)


def _key(arch: Arch) -> str:
    """Identity of an architecture for spotting duplicates."""
    return json.dumps(arch.to_dict(), sort_keys=True)


def open_run(out: str | Path | None, config: SearchConfig, resume: bool) -> RunDir:
    """Create (or, when resuming, open) the run directory, and become its only writer."""
    if resume:
        run = RunDir.open(out)
    else:
        run = RunDir.create(new_run_path(out, config), config.to_dict())
    run.lock()
    return run


def new_run_path(out: str | Path | None, config: SearchConfig) -> Path:
    """Where a new run goes: `out`, by default runs/<dataset>-<time>-s<seed>."""
    if out is not None:
        return Path(out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.dataset}-{stamp}-s{config.seed}"


def check_extras(config: SearchConfig) -> None:
    """MissingDependencyError (naming the extra to install) when the config asks for an
    optional dependency that is not installed; checked before anything is written."""
    if config.executor == "ray":
        from .extras import require
        require("ray", "executor 'ray'")


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
    t0 = time.perf_counter()   # a time budget counts the whole command, data loading included
    check_extras(config)
    if not resume:   # a run directory that cannot be created stops the search before any work
        from .paths import check_creatable
        out = check_creatable(new_run_path(out, config), "run directory")
    device = resolve_device(config.device)
    check_resources(config.workers, config.threads, device)
    ds, split = load_split(config, progress)
    # everything that can be checked is checked before the run directory exists
    if not resume:
        names = ["the starting network"] + [f"extra start {e}" for e in config.extra_starts]
        for mid, name in zip(start_ids(config), names):
            why = size_problem(start_of(config, split, mid)[0], config.max_params,
                               config.max_mflops)
            if why:
                raise ConfigError(f"{name} breaks the size limits: {why}")
    if config.tensorboard:
        from .tensorboard import TensorBoardLogger, check_available
        check_available()
    run = open_run(out, config, resume)
    try:
        if config.tensorboard:
            callback = TensorBoardLogger(run.path / "tensorboard", callback)
        with make_executor(config, split, device, on_epoch) as ex:
            climber = Climber(config, run, split, ex, dataset_info(ds), callback, t0)
            if changes:
                climber.log({"event": Event.CONFIG_CHANGED, "changes": changes})
            if retry_failed:
                climber.retry_failed(changes or {})
            final = climber.climb()
            skipped = climber.follow_up(final)
            if climber.state.finished is None:
                climber.log({"event": Event.RUN_FINISHED, "model": final["model"],
                             "skipped": skipped})
        if hasattr(callback, "close"):
            callback.close()
        results = collect_results(run)
    finally:
        run.unlock()
    return search_result(run, results)


def search_result(run: RunDir, results: dict[str, Any]) -> SearchResult:
    """The SearchResult of a finished run: its answer (results.json's "model", as the CLI's
    readers take it by default), with that model's own test accuracy."""
    answer = results["model"]
    arch, weights = run.load_model(answer)
    return SearchResult(run.path, arch, weights, run.state().trained[answer]["test_accuracy"],
                        results["steps"], results, model_id=answer)


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
    overrides = canonical_keys(overrides)
    allowed = set(EXEC_KEYS) | set(RESUME_KEYS)
    bad = set(overrides) - allowed
    if bad:
        raise RunDirError(f"resume may only change {', '.join(sorted(allowed))}; not "
                          f"{', '.join(sorted(bad))}")
    new = cfg.replace(**overrides)
    changes = {k: v for k, v in overrides.items()
               if k in RESUME_KEYS and k not in EXEC_KEYS and getattr(cfg, k) != v}
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
        check_extras(self.config)
        ds, self.split = load_split(self.config)
        self.device = resolve_device(self.config.device)
        check_resources(self.config.workers, self.config.threads, self.device)
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
