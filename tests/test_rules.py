"""The climb's rules (rules.py) through their protocols, and the engine asking them: NASH's
rules decide exactly as the climber did before they were split out of it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from conftest import TINY
from morphclimb.config import SearchConfig
from morphclimb.journal import RunDir
from morphclimb.nash import hill_climb
from morphclimb.rules import (
    Halving,
    Incumbent,
    KeepBest,
    Rules,
    StepLimit,
    TimeBudget,
    nash_rules,
    ranked,
)
from morphclimb.state import RunState


def _rec(model, acc, loss=1.0, **kw):
    return {"event": "model_trained", "model": model, "val_accuracy": acc, "val_loss": loss,
            "params": 10, **kw}


FAILED = {"event": "child_failed", "model": "s01c3", "reason": "nan"}


# ------------------------------------------------------------------ Selector: KeepBest
@pytest.mark.parametrize("recs, kept", [
    ([_rec("s01c1", 0.60, 0.5), _rec("s01inc", 0.60, 0.7)], ["s01c1"]),   # tie, lower loss
    ([_rec("s01c1", 0.60, 0.9), _rec("s01inc", 0.60, 0.7)], ["s01inc"]),  # tie, higher loss
    ([_rec("s01c1", 0.6, 0.7), _rec("s01c2", 0.6, 0.7), _rec("s01inc", 0.6, 0.7)],
     ["s01inc"]),                                                          # full tie
    ([_rec("s01c2", 0.6, 0.7), _rec("s01c1", 0.6, 0.7)], ["s01c2"]),      # earlier child
    ([_rec("s01c1", 0.61, 9.0), _rec("s01inc", 0.60, 0.1)], ["s01c1"]),   # accuracy first
    ([FAILED, _rec("s01inc", 0.1, 2.0)], ["s01inc"]),                      # failed never kept
    ([FAILED], []),
])
def test_keep_best_keeps_the_one_ranked_first(recs, kept):
    assert [r["model"] for r in KeepBest().select(1, recs)] == kept


def test_keep_best_prefers_only_this_steps_incumbent():
    recs = [_rec("s02c1", 0.6, 0.7), _rec("s01inc", 0.6, 0.7)]
    assert [r["model"] for r in KeepBest().select(2, recs)] == ["s02c1"]
    assert [r["model"] for r in KeepBest().select(1, recs)] == ["s01inc"]


# ------------------------------------------------------------------ Pruner: Halving
@pytest.mark.parametrize("n, eta, survivors", [(1, 2, 1), (2, 2, 1), (3, 2, 2), (4, 2, 2),
                                              (5, 2, 3), (4, 3, 2), (7, 3, 3), (2, 5, 1)])
def test_halving_keeps_ceil_n_over_eta(n, eta, survivors):
    pruner = Halving((1, 1), eta)
    assert pruner.survivors(n) == survivors
    recs = [_rec(f"s01c{k}r1", 0.1 * k, candidate=f"s01c{k}") for k in range(1, n + 1)]
    kept = pruner.keep(1, recs)
    assert [r["model"] for r in kept] == [f"s01c{k}r1" for k in range(n, n - survivors, -1)]


def test_halving_counts_failed_candidates_but_never_keeps_them():
    recs = [_rec("s01c1r1", 0.5), {"event": "child_failed", "model": "s01c2r1"},
            {"event": "child_failed", "model": "s01c3r1"}, _rec("s01incr1", 0.5,
                                                                 candidate="s01inc")]
    kept = Halving((1, 1), 2).keep(1, recs)           # ceil(4 / 2) = 2 places, 2 trained
    assert [r["model"] for r in kept] == ["s01incr1", "s01c1r1"]   # the incumbent on ties
    assert [r["model"] for r in Halving((1, 1), 4).keep(1, recs)] == ["s01incr1"]


def test_halving_ranks_like_the_step_decision():
    recs = [_rec("s01c1r1", 0.5, 0.6, candidate="s01c1"), _rec("s01c2r1", 0.5, 0.4),
            _rec("s01c3r1", 0.7, 0.9)]
    assert Halving((1, 1), 1).keep(1, recs) == ranked(1, recs)


# ------------------------------------------------------------------ Proposer and Stoppers
@pytest.mark.parametrize("n_neigh, children, incumbent", [(1, 1, False), (2, 1, True),
                                                           (3, 2, True), (8, 7, True)])
def test_incumbent_proposer(n_neigh, children, incumbent):
    p = Incumbent(n_neigh)
    assert (p.n_children, p.with_incumbent) == (children, incumbent)
    kept = [{"model": "s01c2"}, {"model": "s01c1"}]
    assert p.parents(2, kept) == kept[:1]
    made = [{"model": "s02c1"}, {"model": "s02c2"}]
    assert p.to_train(2, made, kept[:1]) == ["s02c1", "s02c2"]
    assert p.parent_of(2, kept[:1]) == [kept[0]] * p.n_children


def test_step_limit_stops_after_n_steps():
    s = StepLimit(3)
    assert [s.go_on(None, i) for i in range(1, 6)] == [True, True, True, False, False]
    assert s.stop(None, 1, [], {}) is None
    assert not Rules(Incumbent(3), KeepBest(), None, (s,)).go_on(None, 4)
    assert not Rules(Incumbent(3), KeepBest(), None, (StepLimit(0),)).go_on(None, 1)


def test_nash_rules_from_the_config():
    r = nash_rules(SearchConfig(n_steps=4, n_neigh=5))
    assert r.pruner is None and r.stoppers == (StepLimit(4),)
    assert isinstance(r.proposer, Incumbent) and r.proposer.n_neigh == 5
    assert isinstance(r.selector, KeepBest)
    r = nash_rules(SearchConfig(n_steps=2, epoch_neigh=3, rungs=(1, 2), eta=3, time_budget=60))
    assert r.pruner == Halving((1, 2), 3)
    assert r.stoppers == (StepLimit(2), TimeBudget(60))


def test_kept_of_old_journals_is_their_best():
    st = RunState()
    st.apply({"event": "step_decided", "step": 1, "best": "s01c2", "previous": "m0",
              "val_accuracy": 0.5, "params": 10, "candidates": ["s01c1", "s01c2"]})
    assert st.kept(1) == ["s01c2"]
    st.apply({"event": "step_decided", "step": 2, "best": "s02c1", "kept": ["s02c1", "s02inc"],
              "previous": "s01c2", "val_accuracy": 0.6, "params": 10,
              "candidates": ["s02c1", "s02inc"]})
    assert st.kept(2) == ["s02c1", "s02inc"]


# ------------------------------------------------------------------ the engine asks the rules
def tiny(npz, **kw) -> SearchConfig:
    return SearchConfig(**{**TINY, "dataset": npz, **kw})


def _decisions(out) -> list:
    recs = [json.loads(x) for x in (out / "journal.jsonl").read_text().splitlines()]
    keys = ("event", "step", "rung", "best", "kept", "cut", "candidates")
    return [{k: r[k] for k in keys if k in r} for r in recs
            if r["event"] in ("step_decided", "rung_decided")]


# the decisions of the tiny searches as the climber made them before its rules were split out
# (same seed, same journal: events, models and metrics were compared record by record)
PLAIN = [
    {"event": "step_decided", "step": 1, "best": "s01c2", "kept": ["s01c2"],
     "candidates": ["s01c1", "s01c2", "s01inc"]},
    {"event": "step_decided", "step": 2, "best": "s02c2", "kept": ["s02c2"],
     "candidates": ["s02c1", "s02c2", "s02inc"]},
]
HALVED = [
    {"event": "rung_decided", "step": 1, "rung": 1, "kept": ["s01c2r1", "s01c1r1"],
     "cut": ["s01incr1"]},
    {"event": "step_decided", "step": 1, "best": "s01c2r2", "kept": ["s01c2r2"],
     "candidates": ["s01c1r2", "s01c2r2", "s01incr1"]},
    {"event": "rung_decided", "step": 2, "rung": 1, "kept": ["s02c2r1", "s02incr1"],
     "cut": ["s02c1r1"]},
    {"event": "step_decided", "step": 2, "best": "s02c2r2", "kept": ["s02c2r2"],
     "candidates": ["s02c2r2", "s02incr2", "s02c1r1"]},
]


@pytest.mark.parametrize("kw, want", [({}, PLAIN),
                                      (dict(rungs=[1, 1], eta=2, epoch_neigh=2), HALVED)])
def test_tiny_search_decides_as_before(tiny_npz, tmp_path, kw, want):
    hill_climb(tiny(tiny_npz, **kw), tmp_path / "run")
    assert _decisions(tmp_path / "run") == want


class KeepTwo:
    """A selector that keeps the two best (a stand-in for a Pareto rule)."""

    def select(self, step, recs, previous=()):
        return ranked(step, recs)[:2]


@dataclass(frozen=True)
class SkipFirstChild(Incumbent):
    """A proposer that trains every drawn child but the first."""

    def to_train(self, step, children, parents):
        return [r["model"] for r in children[1:]]


def test_the_climber_asks_its_rules(tiny_npz, tmp_path, monkeypatch):
    def rules(c):
        return Rules(SkipFirstChild(c.n_neigh), KeepTwo(), None, (StepLimit(1),))
    import morphclimb.rules as rules_module
    monkeypatch.setattr(rules_module, "nash_rules", rules)   # what NASH's strategy assembles
    out = tmp_path / "run"
    hill_climb(tiny(tiny_npz, n_steps=2, n_neigh=4, keep_weights="best"), out)
    st = RunDir.open(out).state()
    assert list(st.decided) == [1]                        # the stopper's one step
    d = st.decided[1]
    assert d["kept"][0] == d["best"] and len(d["kept"]) == 2
    assert "s01c1" in d["candidates"] and "s01c1" not in st.trained   # listed, not trained
    assert st.trained["final"]["parent"] == d["best"]
    run = RunDir.open(out)
    for m in ("s01c2", "s01c3", "s01inc"):               # keep_weights=best keeps the kept
        has = (run.model_dir(m) / "weights.safetensors").is_file()
        assert has == (m in d["kept"]), m


def test_a_stopper_returns_its_reason_and_the_engine_journals_it_once(tiny_npz, tmp_path,
                                                                      monkeypatch):
    """Stoppers only answer (issue 32): the engine writes climb_stopped, once, with the
    stopper's fields, and trains nothing more of the climb."""
    asked = []

    class AtStep2:
        def go_on(self, climber, step):
            return True

        def stop(self, climber, step, tasks, best, ahead=None):
            asked.append(step)
            return {"step": step, "steps_run": step - 1, "reason": "enough"} if step == 2 \
                else None

    def rules(c):
        return Rules(Incumbent(c.n_neigh), KeepBest(), None, (StepLimit(3), AtStep2()))
    import morphclimb.rules as rules_module
    monkeypatch.setattr(rules_module, "nash_rules", rules)
    hill_climb(tiny(tiny_npz, n_steps=3), tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    stopped = run.records("climb_stopped")
    assert [(r["step"], r["steps_run"], r["reason"]) for r in stopped] == [(2, 1, "enough")]
    assert sorted(run.state().decided) == [1] and asked.count(2) == 1
    assert not any(r.get("step") == 2 for r in run.state().trained.values())
    assert "final" in run.state().trained
