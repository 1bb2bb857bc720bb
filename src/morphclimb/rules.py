"""The climb's rules, apart from its engine: what varies between hill climbing (NASH) and, later,
a Pareto search (LEMONADE), as small protocols the engine (`nash.Climber`) asks.

In the manner of Optuna's sampler / pruner / study loop, a step of the engine is: the
`Proposer` names the parents and which drawn children get trained; the `Pruner` (successive
halving, optional) cuts candidates early, rung by rung; the `Selector` says which trained
candidates are kept; the `Stopper`s say when the climb ends. The engine does the rest (making
children, training through the executor, the journal, resuming) and never decides anything
itself. NASH's rules are below and `nash_rules` assembles them from a config.

Records here are journal records (`model_trained`, `child_failed`); failed ones are never kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .context import SearchContext
from .events import Event, incumbent_id
from .forecast import budget_stop

Record = dict[str, Any]


# ------------------------------------------------------------------ the protocols
class Proposer(Protocol):
    """Which parents step i starts from and which of its drawn children are trained."""

    n_children: int          # children drawn per step
    with_incumbent: bool     # whether the parent trains on beside its children, as a candidate

    def parents(self, step: int, kept: list[Record]) -> list[Record]:
        """The parents of `step`, chosen among the models the previous step kept."""

    def parent_of(self, step: int, parents: list[Record]) -> list[Record]:
        """The parent of each of the n_children children of `step`, in order."""

    def to_train(self, step: int, children: list[Record], parents: list[Record]) -> list[str]:
        """The ids of the drawn children (their child_made records) that get trained; the
        others are listed as cut."""


class Pruner(Protocol):
    """Cuts candidates early: each candidate trains rungs[0] epochs, the survivors rungs[1]
    more, and so on; the last rung's survivors go to the `Selector`."""

    rungs: tuple[int, ...]

    def keep(self, step: int, recs: list[Record]) -> list[Record]:
        """The candidates of a rung (not the last) that go on, best first."""

    def survivors(self, n: int) -> int:
        """How many of n candidates go on from a rung (what time predictions assume)."""


class Selector(Protocol):
    """Who is kept after a step: the first of the list is the one the run calls its best."""

    def select(self, step: int, recs: list[Record], previous: list[Record] = ()
               ) -> list[Record]:
        """The kept models among the step's candidates `recs` and the models the step
        started from (`previous`), best first (empty only when every candidate failed)."""


class Stopper(Protocol):
    """When the climb ends. `climber` is the engine (its config, state, clock, journal)."""

    def go_on(self, climber: SearchContext, step: int) -> bool:
        """Whether `step` is begun at all."""

    def stop(self, climber: SearchContext, step: int, tasks: list, best: Record, ahead=None
             ) -> Record | None:
        """None when the next trainings of `step` (`tasks`; `ahead`: halving's rungs still
        to train) may start; else why not (the climb_stopped record's fields: step,
        steps_run, reason, ...), which the engine journals."""


@dataclass(frozen=True)
class Rules:
    """One search's rules, as the engine asks them."""

    proposer: Proposer
    selector: Selector
    pruner: Pruner | None = None
    stoppers: tuple[Stopper, ...] = field(default_factory=tuple)

    def go_on(self, climber, step: int) -> bool:
        return all(s.go_on(climber, step) for s in self.stoppers)

    def stop(self, climber: SearchContext, step: int, tasks: list, best: Record, ahead=None
             ) -> Record | None:
        """The first stopper's reason to stop before the next trainings, or None."""
        return next((why for s in self.stoppers
                     if (why := s.stop(climber, step, tasks, best, ahead)) is not None), None)


# ------------------------------------------------------------------ NASH's rules
def ranked(i: int, recs: list[Record]) -> list[Record]:
    """Step i's trained candidates, best first: highest validation accuracy, then lowest
    validation loss; on a tie the incumbent (the current best stays unless beaten), then the
    earlier child. Failed ones are left out. Both a step's decision and halving's cuts use it."""
    def key(pos_rec):
        pos, r = pos_rec
        incumbent = incumbent_id(i) in (r["model"], r.get("candidate"))
        return (-r["val_accuracy"], r["val_loss"], not incumbent, pos)
    ok = [(pos, r) for pos, r in enumerate(recs) if r["event"] == Event.MODEL_TRAINED]
    return [r for _, r in sorted(ok, key=key)]


@dataclass(frozen=True)
class Incumbent:
    """NASH's proposer: the one current best is the parent; max(n_neigh, 2) - 1 children are
    drawn and all trained; with n_neigh > 1 the parent trains on as a candidate too (with
    n_neigh = 1, the paper's "random networks" baseline, the one child is always taken)."""

    n_neigh: int

    @property
    def n_children(self) -> int:
        return max(self.n_neigh, 2) - 1

    @property
    def with_incumbent(self) -> bool:
        return self.n_neigh > 1

    def parents(self, step: int, kept: list[Record]) -> list[Record]:
        return kept[:1]

    def parent_of(self, step: int, parents: list[Record]) -> list[Record]:
        return [parents[0]] * self.n_children

    def to_train(self, step: int, children: list[Record], parents: list[Record]) -> list[str]:
        return [r["model"] for r in children]


@dataclass(frozen=True)
class Halving:
    """Successive halving: a rung keeps the best ceil(n / eta) of its n candidates (failed
    ones counted in n, never kept), ranked by `rank` (NASH: as the step decision ranks)."""

    rungs: tuple[int, ...]
    eta: int
    rank: Callable[[int, list[Record]], list[Record]] | None = field(default=None, compare=False)

    def survivors(self, n: int) -> int:
        return max(1, math.ceil(n / self.eta))

    def keep(self, step: int, recs: list[Record]) -> list[Record]:
        return (self.rank or ranked)(step, recs)[: self.survivors(len(recs))]


class KeepBest:
    """NASH's decision: keep the one best by validation accuracy, then lowest validation
    loss; the incumbent stays on ties (`ranked`)."""

    def select(self, step: int, recs: list[Record], previous: list[Record] = ()
               ) -> list[Record]:
        return ranked(step, recs)[:1]   # the previous best is a candidate (the incumbent)


@dataclass(frozen=True)
class StepLimit:
    """Stop after n_steps steps."""

    n_steps: int

    def go_on(self, climber, step: int) -> bool:
        return step <= self.n_steps

    def stop(self, climber, step: int, tasks: list, best: Record, ahead=None) -> None:
        return None


@dataclass(frozen=True)
class TimeBudget:
    """Stop when a step's trainings, then the final training and the jobs after it, are
    predicted not to fit in what is left of the budget (forecast.py predicts)."""

    seconds: float

    def go_on(self, climber, step: int) -> bool:
        return True

    def stop(self, climber: SearchContext, step: int, tasks: list, best: Record, ahead=None
             ) -> Record | None:
        return budget_stop(climber, step, tasks, best, ahead, self.seconds)


def nash_rules(c) -> Rules:
    """NASH's rules for search config `c` (a SearchConfig)."""
    stoppers: list[Stopper] = [StepLimit(c.n_steps)]
    if c.time_budget is not None:
        stoppers.append(TimeBudget(c.time_budget))
    pruner = Halving(tuple(c.rungs), c.eta) if c.rungs else None
    return Rules(Incumbent(c.n_neigh), KeepBest(), pruner, tuple(stoppers))
