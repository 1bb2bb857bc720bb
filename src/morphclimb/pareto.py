"""A Pareto search's rules (LEMONADE, arXiv 1804.09081) for the climb's engine (nash.Climber).

The population is the non-dominated set of (validation error, size), size being the cheap
objective, parameters or MFLOPs (`objective`), known before any training. Each generation
draws `n_draw` children, each from a parent sampled from the front inversely to the kernel
density of the front's sizes, trains the `n_neigh` of them sampled the same way (where the
front is sparse, more likely), cut early by successive halving when configured (ranked by
non-dominated level, then validation error), and keeps the new front. Children of approximate
morphisms learn from their parent (distillation, worker.Teacher). front.py does the arithmetic;
pareto_strategy.Pareto.rules assembles these rules with the stoppers and the pruner of rules.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .events import FINAL, Event
from .front import inverse_density_weights, levels, nondominated, sample, spread
from .seeds import derive_seed

Record = dict[str, Any]   # a journal record (model_trained, child_made)


def size(rec: Record, objective: str) -> float:
    """The cheap objective of a model_trained or child_made record."""
    return float(rec[objective])


def error(rec: Record) -> float:
    """Validation error in percent of a model_trained record."""
    return 100.0 * (1.0 - rec["val_accuracy"])


def point(rec: Record, objective: str) -> tuple[float, float]:
    return error(rec), size(rec, objective)


def front_of(recs: list[Record], objective: str) -> list[Record]:
    """The non-dominated trained records, the lowest validation error first (then the
    smallest, then the earlier); a model listed twice counts once."""
    seen, uniq = set(), []
    for r in recs:
        if r["event"] == Event.MODEL_TRAINED and r["model"] not in seen:
            seen.add(r["model"])
            uniq.append(r)
    keep = nondominated([point(r, objective) for r in uniq])
    return sorted((uniq[k] for k in keep), key=lambda r: (*point(r, objective),
                                                           uniq.index(r)))


def pareto_ranked(objective: str):
    """Halving's ranking in a Pareto search: non-dominated level first, then validation
    error, then size, then the earlier candidate; failed ones left out."""
    def rank(step: int, recs: list[Record]) -> list[Record]:
        ok = [r for r in recs if r["event"] == Event.MODEL_TRAINED]
        lv = levels([point(r, objective) for r in ok])
        order = sorted(range(len(ok)), key=lambda k: (lv[k], *point(ok[k], objective), k))
        return [ok[k] for k in order]
    return rank


@dataclass(frozen=True)
class Sparse:
    """LEMONADE's proposer: parents from the whole front, sampled with probability inverse
    to the density of the front's sizes (Eq. 1); of the n_draw children drawn, n_neigh are
    trained, sampled without replacement the same way (Eq. 2). No parent trains on: the
    front's members stay as they were trained."""

    n_neigh: int
    n_draw: int
    objective: str
    seed: int

    @property
    def n_children(self) -> int:
        return self.n_draw

    with_incumbent = False

    def parents(self, step: int, kept: list[Record]) -> list[Record]:
        return list(kept)

    def parent_of(self, step: int, parents: list[Record]) -> list[Record]:
        """The parent of each child of `step`, drawn with replacement."""
        sizes = [size(r, self.objective) for r in parents]
        rng = np.random.default_rng(derive_seed(self.seed, "parents", step))
        p = inverse_density_weights(sizes, sizes)
        return [parents[k] for k in sample(rng, p, self.n_draw, replace=True)]

    def to_train(self, step: int, children: list[Record], parents: list[Record]) -> list[str]:
        """The ids of the children (child_made records) that are trained."""
        if len(children) <= self.n_neigh:
            return [r["model"] for r in children]
        rng = np.random.default_rng(derive_seed(self.seed, "accept", step))
        p = inverse_density_weights([size(r, self.objective) for r in parents],
                                    [size(r, self.objective) for r in children])
        return [children[k]["model"] for k in sample(rng, p, self.n_neigh, replace=False)]


@dataclass(frozen=True)
class KeepFront:
    """Keep the non-dominated set of the front so far and the step's trained candidates."""

    objective: str
    strategy = "pareto"     # named in step_decided records (readers speak of a front)

    def select(self, step: int, recs: list[Record], previous: list[Record] = ()
               ) -> list[Record]:
        return front_of(list(previous) + list(recs), self.objective)


# ------------------------------------------------------------------ the front a run hands out
def final_id(member: str, best: str) -> str:
    """The model id of a front member's final training (train + validation, tested): the
    most accurate member's is the run's `final`, every other member's final-<member>."""
    return FINAL if member == best else f"{FINAL}-{member}"


def final_members(front: list[Record], k: int, objective: str) -> list[Record]:
    """The front members that get a final training: all of them (k = 0), or k spread evenly
    over log size; the most accurate (front[0]) always, and first."""
    picked = [front[n] for n in spread([size(r, objective) for r in front], k)]
    if front[0] not in picked:      # equal sizes aside, spread takes the largest: the best
        picked[-1] = front[0]
    return [front[0]] + [r for r in picked if r is not front[0]]


def current_front(state) -> list[Record]:
    """The front as the journal stands: the last decided step's kept models, else the first
    front (model_0 and the extra starts trained so far, the non-dominated ones)."""
    if state.decided:
        return [state.trained[m] for m in state.kept(max(state.decided))]
    return first_front(state)


def first_front(state) -> list[Record]:
    """Generation 0: the non-dominated of the start networks (role pretrain: model_0 and a
    Pareto search's extra starts) by the run's objective, the most accurate first."""
    objective = ((state.started or {}).get("config") or {}).get("objective", "params")
    return front_of([r for r in state.trained.values() if r.get("role") == "pretrain"],
                    objective)


def front_results(state, objective: str) -> dict:
    """results.json's account of a Pareto search: the front (smallest first) with each
    member's final training where it had one, and the front after every generation."""
    def entry(r: Record) -> dict:
        return {"id": r["model"], "val_error": round(error(r), 4), "params": r["params"],
                "mflops": r["mflops"], "step": r["step"], "epochs": r["lineage"]}
    front = current_front(state)
    finals = {r["parent"]: r for r in state.trained.values()
              if r.get("role") == "final" and "parent" in r}
    members = []
    for r in sorted(front, key=lambda r: (size(r, objective), error(r))):
        f = finals.get(r["model"])
        members.append({**entry(r), "model": f["model"] if f else None,
                        "test_error": None if f is None or f.get("test_accuracy") is None
                        else round(100.0 * (1.0 - f["test_accuracy"]), 4)})
    gens = [{"step": 0, "front": sorted((entry(r) for r in first_front(state)),
                                         key=lambda e: e[objective])}]
    gens += [{"step": i, "front": sorted((entry(state.trained[m]) for m in state.kept(i)),
                                         key=lambda e: e[objective])}
             for i in sorted(state.decided)]
    return {"strategy": "pareto", "objective": objective, "front": members,
            "generations": gens}


def member_final(state, member: str) -> str | None:
    """The model id of `member`'s final training (train + validation, tested), None when it
    had none (a front member beyond front_final, or any other model)."""
    return next((r["model"] for r in state.trained.values()
                 if r.get("role") == "final" and r.get("parent") == member), None)

