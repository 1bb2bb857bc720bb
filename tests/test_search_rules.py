"""The rules that decide a search's result, each tested so that the test fails when the rule is
ignored (issue 21: bugs planted in these places passed every other test; see docs/mutation.md).

Expected values are worked out here from the rule as documented, not read back from the code
under test: which candidate wins given its records, how many candidates a rung keeps, the
learning rates a no-SGDR climb trains with, what a stopped climb predicted.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics

import numpy as np
import pytest
import safetensors.torch
import torch

import morphclimb.journal as journal
import morphclimb.nash as nash
from conftest import TINY
from morphclimb.build import build
from morphclimb.config import SearchConfig
from morphclimb.ensemble import ensemble_across_runs, ensemble_proba, evaluate_members
from morphclimb.journal import RunDir
from morphclimb.morphisms import apply_morphism
from morphclimb.nash import Climber, hill_climb, load_split, ranked, resume
from morphclimb.state import RunState
from morphclimb.train import predict_proba
from test_limits import cfg, summary  # the same tiny config and results summary

LR = SearchConfig().lr_start      # 0.05: the lr every run below starts its cycles at


def passes(epochs, n_train, n_eval):
    """Training-pass equivalents, as budget.py's docstring defines them: an evaluation costs a
    third of a training pass per image."""
    return epochs * n_train + n_eval / 3


# ------------------------------------------------------------------ the step decision
def _rec(model, acc, loss, **kw):
    return {"event": "model_trained", "model": model, "val_accuracy": acc, "val_loss": loss,
            "params": 10, **kw}


def _decide(recs, step=1, logged=None):
    c = Climber.__new__(Climber)
    c.state = RunState()
    c.log = logged.append if logged is not None else (lambda rec: rec)
    return c.decide(step, {"model": "m0"}, recs)["model"]


@pytest.mark.parametrize("recs, winner", [
    # accuracy first, whatever the loss
    ([_rec("s01c1", 0.61, 9.0), _rec("s01inc", 0.60, 0.1)], "s01c1"),
    # a child that ties the incumbent on accuracy with a lower loss wins ...
    ([_rec("s01c1", 0.60, 0.50), _rec("s01inc", 0.60, 0.70)], "s01c1"),
    ([_rec("s01inc", 0.60, 0.70), _rec("s01c1", 0.60, 0.50)], "s01c1"),
    # ... with a higher loss it loses ...
    ([_rec("s01c1", 0.60, 0.90), _rec("s01inc", 0.60, 0.70)], "s01inc"),
    # ... and on a tie of both the incumbent stays, wherever it is listed
    ([_rec("s01c1", 0.60, 0.70), _rec("s01c2", 0.60, 0.70), _rec("s01inc", 0.60, 0.70)],
     "s01inc"),
    # among children tied on both, the earlier one
    ([_rec("s01c2", 0.60, 0.70), _rec("s01c1", 0.60, 0.70), _rec("s01inc", 0.5, 0.1)],
     "s01c2"),
    # a failed candidate never wins, however it is scored
    ([{"event": "child_failed", "model": "s01c1", "val_accuracy": 1.0, "val_loss": 0.0},
      _rec("s01inc", 0.1, 2.0)], "s01inc"),
])
def test_step_decision_accuracy_then_loss_then_incumbent(recs, winner):
    assert _decide(recs) == winner


def test_ranked_orders_rung_candidates_like_the_step_decision():
    # rung records carry the candidate they continue; the incumbent's rung model counts as it
    recs = [_rec("s02c1r1", 0.5, 0.6, candidate="s02c1"),
            _rec("s02incr1", 0.5, 0.6, candidate="s02inc"),
            _rec("s02c2r1", 0.5, 0.4, candidate="s02c2"),
            _rec("s02c3r1", 0.7, 0.9, candidate="s02c3"),
            {"event": "child_failed", "model": "s02c4r1"}]
    assert [r["model"] for r in ranked(2, recs)] == ["s02c3r1", "s02c2r1", "s02incr1",
                                                      "s02c1r1"]
    # the incumbent of another step gets no preference
    assert [r["model"] for r in ranked(3, recs[:2])] == ["s02c1r1", "s02incr1"]


def test_the_step_decision_is_journaled():
    logged = []
    recs = [_rec("s02c1", 0.5, 0.5), {"event": "child_failed", "model": "s02c2"},
            _rec("s02inc", 0.6, 0.5)]
    assert _decide(recs, step=2, logged=logged) == "s02inc"
    (d,) = logged
    assert d == {"event": "step_decided", "step": 2, "best": "s02inc", "kept": ["s02inc"],
                 "previous": "m0", "val_accuracy": 0.6, "params": 10,
                 "candidates": ["s02c1", "s02c2", "s02inc"]}


def test_a_step_where_every_candidate_failed_names_the_first_reason():
    from morphclimb.errors import TrainingError
    recs = [{"event": "child_failed", "model": "s01c1", "reason": "diverged\ntraceback"},
            {"event": "child_failed", "model": "s01inc", "reason": "other"}]
    with pytest.raises(TrainingError, match=r"step 1: every candidate failed \(first: "
                                            r"diverged\); to go on"):
        _decide(recs)
    recs = [{"event": "child_failed", "model": "s01c1"},
            {"event": "child_failed", "model": "s01inc", "reason": ""}]
    with pytest.raises(TrainingError, match=r"^step 1: every candidate failed \(first: "
                                            r"no reason\); to go on"):
        _decide(recs)


def test_the_trainer_settings_default_to_sgdr():
    from morphclimb.nash import train_config
    c = SearchConfig(sgdr_climb=False, lr_start=0.2)
    assert train_config(c).sgdr is True and train_config(c, sgdr=False).sgdr is False
    assert train_config(c).lr_start == 0.2


def test_a_time_budget_counts_the_data_loading(tiny_npz, tmp_path, monkeypatch):
    """hill_climb's clock starts before the data is loaded: 100 s of loading are on it."""
    import time
    from types import SimpleNamespace
    calls = []

    def perf_counter():          # the command starts at 0; loading the data takes 100 s
        calls.append(1)
        return 0.0 if len(calls) == 1 else 100.0

    monkeypatch.setattr(nash, "time", SimpleNamespace(perf_counter=perf_counter,
                                                      strftime=time.strftime))
    out = tmp_path / "run"
    hill_climb(cfg(tiny_npz, n_steps=0), out)
    started = RunDir.open(out).records("run_started")[0]
    assert started["clock"] == 100.0


# ------------------------------------------------------------------ SGDR on and off
@pytest.mark.parametrize("sgdr", [True, False])
def test_the_climb_trains_with_sgdr_or_a_constant_lr(tiny_npz, tmp_path, sgdr):
    out = tmp_path / "run"
    hill_climb(cfg(tiny_npz, n_steps=1, epoch_neigh=2, epoch_final=2, sgdr_climb=sgdr), out)
    st = RunDir.open(out).state()
    # the lr at the end of epoch 1 and 2 of a 2-epoch cycle: halfway down the cosine, then 0
    cosine = [LR * 0.5 * (1 + math.cos(math.pi / 2)), 0.0]
    climb = [r for r in st.trained.values() if r["role"] in ("child", "incumbent")]
    assert len(climb) == 3
    for r in climb:
        lrs = [c["lr"] for c in r["curves"]]
        assert lrs == pytest.approx(cosine if sgdr else [LR, LR], abs=1e-12), r["model"]
    # model_0 and the final training always follow SGDR (the paper's ablation is the climb's)
    assert [c["lr"] for c in st.trained["final"]["curves"]] == pytest.approx(cosine, abs=1e-12)
    assert [c["lr"] for c in st.trained["m0"]["curves"]] == pytest.approx([0.0], abs=1e-12)


# ------------------------------------------------------------------ successive halving
def test_halving_keeps_the_ceiling_of_n_over_eta(tiny_npz, tmp_path, monkeypatch):
    """The recommended rungs=[1,1,2], eta=2 with 5 candidates: 5 -> 3 -> 2 (not 5 -> 2 -> 1),
    each rung going on from the weights the last one left, and (without SGDR) every rung at
    the constant lr."""
    started = {}                      # model id -> the weights its training started from
    real = nash.Climber.train_all

    def spy(self, tasks, guard=None):
        started.update({t.model_id: t.weights for t in tasks})
        return real(self, tasks, guard)

    monkeypatch.setattr(nash.Climber, "train_all", spy)
    out = tmp_path / "run"
    hill_climb(cfg(tiny_npz, n_steps=1, n_neigh=5, epoch_neigh=4, rungs=(1, 1, 2), eta=2,
                   sgdr_climb=False), out)
    run = RunDir.open(out)
    st = run.state()
    for m in st.trained:
        if m.endswith(("r2", "r3")):  # from the previous rung's trained weights
            w = run.load_model(m[:-1] + str(int(m[-1]) - 1))[1]
            assert started[m] is not None and all(torch.equal(started[m][k], w[k]) for k in w)
    m0 = run.load_model("m0")[1]      # rung 1 of the incumbent: the parent's weights
    assert all(torch.equal(started["s01incr1"][k], m0[k]) for k in m0)
    assert all(started[f"s01c{j}r1"] is not None for j in range(1, 5))
    cands = ["s01c1", "s01c2", "s01c3", "s01c4", "s01inc"]
    r1, r2 = st.rungs[(1, 1)], st.rungs[(1, 2)]
    assert sorted(r1["kept"] + r1["cut"]) == sorted(f"{c}r1" for c in cands)
    assert (len(r1["kept"]), len(r1["cut"])) == (3, 2)               # ceil(5 / 2) = 3
    assert (r1["epochs"], r2["epochs"]) == (1, 1)
    assert sorted(m[:-1] + "1" for m in r2["kept"] + r2["cut"]) == sorted(r1["kept"])
    assert (len(r2["kept"]), len(r2["cut"])) == (2, 1)               # ceil(3 / 2) = 2
    assert (1, 3) not in st.rungs                                    # the last rung decides
    last = sorted(m[:-1] + "3" for m in r2["kept"])
    d = st.decided[1]
    assert d["best"] in last
    assert sorted(d["candidates"]) == sorted(last + r1["cut"] + r2["cut"])
    # each rung keeps the best by accuracy, then loss, the incumbent first on ties
    for rung in (r1, r2):
        recs = [st.trained[m] for m in rung["kept"] + rung["cut"]]
        order = sorted(recs, key=lambda r: (-r["val_accuracy"], r["val_loss"],
                                            r["candidate"] != "s01inc",
                                            cands.index(r["candidate"])))
        assert rung["kept"] == [r["model"] for r in order[:len(rung["kept"])]]
    # epochs: 5 candidates x 1 + 3 x 1 + 2 x 2; the winner grew by epoch_neigh
    step = [r for r in st.trained.values() if r.get("step") == 1
            and r["role"] in ("child", "incumbent")]
    assert sorted(r["epochs"] for r in step) == [1] * 8 + [2] * 2
    assert st.trained[d["best"]]["lineage"] - st.trained["m0"]["lineage"] == 4
    for r in step:
        assert [c["lr"] for c in r["curves"]] == [LR] * r["epochs"], r["model"]


HALVING = dict(n_steps=1, n_neigh=3, epoch_neigh=2, rungs=(1, 1), eta=2)


@pytest.mark.parametrize("kill_at", ["s01c2r1", "rung 1"])
def test_halving_resumed_in_a_rung_ends_as_an_uninterrupted_run(tiny_npz, tmp_path, kill_at):
    """Killed inside rung 1 (after s01c2r1) or between the rungs: the resumed step trains
    nothing twice, decides each rung once, and every model carries the lineage and epochs of
    the uninterrupted run."""
    hill_climb(cfg(tiny_npz, **HALVING), tmp_path / "full")

    def kill(e):
        if (e["event"] == "model_trained" and e["model"] == kill_at) or (
                e["event"] == "rung_decided" and kill_at == f"rung {e['rung']}"):
            raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        hill_climb(cfg(tiny_npz, **HALVING), out, callback=kill)
    resume(out)
    assert summary(out) == summary(tmp_path / "full")
    recs = RunDir.open(out).records()
    trained = [r["model"] for r in recs if r["event"] == "model_trained"]
    assert len(trained) == len(set(trained))
    assert [(r["step"], r["rung"]) for r in recs if r["event"] == "rung_decided"] == [(1, 1)]
    want = RunDir.open(tmp_path / "full").state().trained
    got = RunDir.open(out).state().trained
    assert sorted(got) == sorted(want)
    for m, r in got.items():
        assert (r["lineage"], r["epochs"]) == (want[m]["lineage"], want[m]["epochs"]), m


def test_halving_leaves_out_a_child_with_no_acceptable_draw(tiny_npz, tmp_path, monkeypatch):
    real = nash.apply_random_morphisms
    calls = []

    def second_child_never_changes(arch, weights, n, rng, probe=None):
        calls.append(1)       # draw 1: child 1; the next MAX_DRAWS: child 2's, all rejected
        if 1 < len(calls) <= 1 + nash.MAX_DRAWS:
            return arch, weights, []
        return real(arch, weights, n, rng, probe=probe)

    monkeypatch.setattr(nash, "apply_random_morphisms", second_child_never_changes)
    hill_climb(cfg(tiny_npz, **{**HALVING, "n_neigh": 4}), tmp_path / "run")
    st = RunDir.open(tmp_path / "run").state()
    assert "no acceptable child" in st.failed["s01c2"]["reason"]
    assert not any(m.startswith("s01c2r") for m in st.trained)
    r1 = st.rungs[(1, 1)]
    assert sorted(r1["kept"] + r1["cut"]) == ["s01c1r1", "s01c3r1", "s01incr1"]
    assert len(r1["kept"]) == 2                                      # ceil(3 / 2)
    assert "s01c2" in st.decided[1]["candidates"]


# ------------------------------------------------------------------ time budget
@pytest.mark.parametrize("halving", ["none", "1-1-2", "1-1"])
def test_a_stopped_climb_journals_the_cost_it_predicted(tiny_npz, tmp_path, halving):
    """The prediction that stops a climb, recomputed from budget.py's documented model: one
    measured training (model_0) gives seconds per pass and MFLOP; 15 % margin."""
    kw = {"none": dict(n_neigh=3, epoch_neigh=2, final_model="retrain"),
          "1-1-2": dict(n_neigh=5, epoch_neigh=4, rungs=(1, 1, 2), eta=2,
                        final_model="auto"),     # final 2 of 3 epochs: no retraining
          "1-1": dict(n_neigh=2, epoch_neigh=2, rungs=(1, 1), eta=2,
                      snapshot_ensemble=True)}[halving]     # no snapshots after 0 steps
    c = cfg(tiny_npz, n_steps=1, epoch_final=2, time_budget=0.01, **kw)
    out = tmp_path / "run"
    hill_climb(c, out)
    st = RunDir.open(out).state()
    _, split = load_split(c)
    n_train, n_val = len(split.train), len(split.val)
    n_full, n_test = len(split.train_full), len(split.test)
    m0 = st.trained["m0"]
    per_mflop_pass = 1.15 * m0["seconds"] / passes(1, n_train, n_val) / m0["mflops"]
    sizes = [r["mflops"] for r in st.made.values()] + [m0["mflops"]]   # children + incumbent
    assert len(sizes) == c.n_neigh
    if halving == "1-1-2":   # 5 candidates 1 epoch, ceil(5/2) = 3 of them 1 more, 2 of them 2
        want = statistics.mean(sizes) * (8 * passes(1, n_train, n_val)
                                         + 2 * passes(2, n_train, n_val))
    elif halving == "1-1":   # 2 candidates 1 epoch, ceil(2/2) = 1 of them 1 more
        want = statistics.mean(sizes) * 3 * passes(1, n_train, n_val)
    else:
        want = sum(sizes) * passes(2, n_train, n_val)
    got = st.stopped["predicted"]
    assert got["step 1"] == pytest.approx(per_mflop_pass * want, rel=1e-9)
    assert got["final"] == pytest.approx(per_mflop_pass * m0["mflops"]
                                         * passes(2, n_full, n_test), rel=1e-9)
    if halving == "none":      # final_model=retrain: m0's epochs and the final's, from scratch
        assert got.pop("retrain") == pytest.approx(per_mflop_pass * m0["mflops"]
                                                   * passes(1 + 2, n_full, n_test), rel=1e-9)
    assert set(got) == {"step 1", "final"}
    assert st.trained["final"]["parent"] == "m0"
    assert st.stopped["step"] == 1 and st.stopped["steps_run"] == 0
    assert st.stopped["reason"].startswith("time budget 0s: step 1 and what follows needs ~")


@pytest.mark.parametrize("stop_at", [2, 3])
def test_a_later_stop_predicts_the_jobs_after_the_climb(tiny_npz, tmp_path, monkeypatch,
                                                        stop_at):
    """Stopped before step 3 of a run with the baseline, the retraining and the snapshot
    ensemble configured: each job's predicted cost follows from the time model fitted to the
    trainings so far (budget.TimeModel), the winner's lineage and the steps done."""
    from morphclimb.budget import TimeModel
    late = {"on": False}
    real = nash.Climber.clock
    monkeypatch.setattr(nash.Climber, "clock",
                        lambda self: real(self) + (1e6 if late["on"] else 0.0))

    def after_step_2(e):
        if e["event"] == "step_decided" and e["step"] == stop_at - 1:
            late["on"] = True

    c = cfg(tiny_npz, n_steps=3, epoch_final=2, time_budget=3600, baseline=True, retrain=True,
            snapshot_ensemble=True)
    out = tmp_path / "run"
    hill_climb(c, out, callback=after_step_2)
    st = RunDir.open(out).state()
    assert st.stopped["step"] == stop_at and st.stopped["steps_run"] == stop_at - 1
    assert st.stopped["reason"].startswith(
        f"time budget 3600s: step {stop_at} and what follows needs ~")
    _, split = load_split(c)
    n_train, n_val = len(split.train), len(split.val)
    n_full, n_test = len(split.train_full), len(split.test)
    model = TimeModel([(r["mflops"], passes(r["epochs"], n_train, n_val), r["seconds"])
                       for r in st.trained.values()
                       if r["role"] in ("pretrain", "child", "incumbent")])   # before the stop
    best = st.trained[st.decided[stop_at - 1]["best"]]
    lineage = best["lineage"] + 2                       # its epochs, then the final training
    assert lineage == c.epoch_pretrain + (stop_at - 1) * c.epoch_neigh + c.epoch_final
    got = st.stopped["predicted"]
    final = model.seconds(best["mflops"], passes(2, n_full, n_test))
    assert got["final"] == pytest.approx(final, rel=1e-9)
    # with step stop_at done, one snapshot member per step before it (the final model is
    # step stop_at's best): stop_at - 1 of them (issue 31: the count was one short)
    assert got.pop("snapshots") == pytest.approx((stop_at - 1) * final, rel=1e-9)
    assert set(got) == {f"step {stop_at}", "final", "baseline", "retrain"}
    assert got["retrain"] == pytest.approx(
        model.seconds(best["mflops"], passes(lineage, n_full, n_test)), rel=1e-9)
    assert got["baseline"] == pytest.approx(
        model.seconds(st.trained["m0"]["mflops"], passes(lineage, n_full, n_test)), rel=1e-9)


def test_a_resumed_run_counts_the_time_spent_before_the_kill(tiny_npz, tmp_path, monkeypatch):
    """Session 1 has (as its clock says) run 10^6 s when it is killed; a resume under a one-hour
    budget must stop the climb at once, not start counting from zero."""
    spent = {"s": 0.0}
    real = nash.Climber.clock
    monkeypatch.setattr(nash.Climber, "clock", lambda self: real(self) + spent["s"])

    def kill(e):
        if e["event"] == "train_start" and e["model"] == "s01c2":
            spent["s"] = 1e6            # passed the budget check for s01c2 before this
        if e["event"] == "model_trained" and e["model"] == "s01c2":
            raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        hill_climb(cfg(tiny_npz, time_budget=3600), out, callback=kill)
    assert RunDir.open(out).state().clock >= 1e6
    spent["s"] = 0.0                    # the resumed session's own clock is honest
    resume(out)
    st = RunDir.open(out).state()
    resumed = next(r for r in RunDir.open(out).records() if r["event"] == "run_resumed")
    assert resumed["clock"] >= 1e6                       # the search clock goes on
    assert st.stopped is not None and st.stopped["step"] == 1
    assert "the rest of step 1" in st.stopped["reason"]
    assert not st.decided and "s01inc" not in st.trained
    assert st.trained["final"]["parent"] == "m0"


# ------------------------------------------------------------------ children
def test_a_child_equal_to_an_earlier_child_is_redrawn(tiny_npz, tmp_path, monkeypatch):
    real = nash.apply_random_morphisms
    made = []

    def second_repeats_first(arch, weights, n, rng, probe=None):
        if len(made) == 1:      # the second draw of the step: child 1's network again
            made.append(made[0])
            return made[0]
        made.append(real(arch, weights, n, rng, probe=probe))
        return made[-1]

    monkeypatch.setattr(nash, "apply_random_morphisms", second_repeats_first)
    out = tmp_path / "run"
    hill_climb(cfg(tiny_npz, n_steps=1), out)
    st = RunDir.open(out).state()
    assert [(r["model"], r["draw"]) for r in st.redrawn] == [("s01c2", 0)]
    assert st.redrawn[0]["reason"] == "same architecture as s01c1"
    assert st.made["s01c2"]["draw"] == 1
    run = RunDir.open(out)
    archs = {json.dumps(run.load_arch(m).to_dict(), sort_keys=True)
             for m in ("m0", "s01c1", "s01c2")}
    assert len(archs) == 3


def test_each_child_carries_n_nm_morphisms(tiny_npz, tmp_path, monkeypatch):
    probes = []
    real = nash.apply_random_morphisms

    def spy(arch, weights, n, rng, probe=None):
        probes.append(probe)
        return real(arch, weights, n, rng, probe=probe)

    monkeypatch.setattr(nash, "apply_random_morphisms", spy)
    out = tmp_path / "run"
    hill_climb(cfg(tiny_npz, n_steps=1, n_nm=3), out)
    # new BatchNorms start from the statistics of probe_size training images
    assert probes and all(p is not None and p.shape == (16, 3, 8, 8) for p in probes)
    assert TINY["probe_size"] == 16
    run = RunDir.open(out)
    st = run.state()
    arch0, w0 = run.load_model("m0")
    assert sorted(st.made) == ["s01c1", "s01c2"]
    for cid, rec in st.made.items():
        assert len(rec["morphisms"]) == 3, cid
        arch, w = arch0, w0        # the journaled morphisms, replayed, give the child
        for m in rec["morphisms"]:
            arch, w = apply_morphism(arch, w, m, np.random.default_rng(0))
        assert arch.to_dict() == run.load_arch(cid).to_dict(), cid


# ------------------------------------------------------------------ ensembles
def test_an_ensemble_of_identical_runs_equals_the_single_model(tiny_npz, tmp_path):
    a = tmp_path / "a"
    hill_climb(cfg(tiny_npz, n_steps=1), a)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    final = RunDir.open(a).state().trained["final"]
    ens = ensemble_across_runs([a, b])
    assert ens["test_accuracy"] == final["test_accuracy"]
    assert ens["params"] == 2 * final["params"]
    c = cfg(tiny_npz, n_steps=1)
    _, split = load_split(c)
    arch, w = RunDir.open(a).load_model("final")
    one = predict_proba(build(arch, w).eval(), split.test.x, mean=split.mean, std=split.std)
    two = ensemble_proba([build(arch, w).eval(), build(arch, w).eval()], split.test.x,
                         split.mean, split.std)
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-7)
    # members that differ: the plain mean of their probabilities
    arch0, w0 = RunDir.open(a).load_model("m0")
    zero = predict_proba(build(arch0, w0).eval(), split.test.x, mean=split.mean, std=split.std)
    mixed = ensemble_proba([build(arch0, w0).eval(), build(arch, w).eval()], split.test.x,
                           split.mean, split.std)
    assert np.abs(zero - one).max() > 1e-3
    np.testing.assert_allclose(mixed, (zero + one) / 2, rtol=0, atol=1e-7)
    members = evaluate_members(RunDir.open(a), ["final", "final"], split.test, split.mean,
                               split.std, None)
    assert members["test_accuracy"] == final["test_accuracy"]
    assert members["test_loss"] == pytest.approx(final["test_loss"], rel=1e-5)


# ------------------------------------------------------------------ a kill mid-checkpoint
@pytest.mark.parametrize("where", ["weights", "arch"])
def test_a_kill_while_writing_a_checkpoint_is_redone_on_resume(tiny_npz, tmp_path,
                                                               monkeypatch, where):
    """Killed while s01c2's checkpoint is half written (inside the weights file, or after the
    weights and before arch.json): the journal has no record of it, so the resume trains it
    again and the run ends as an uninterrupted one."""
    full = tmp_path / "full"
    hill_climb(cfg(tiny_npz, n_steps=1), full)
    real_save, real_write = safetensors.torch.save_file, journal._atomic_write
    victim = "models/s01c2/"

    def torn_save(tensors, path, metadata=None):
        if victim in path:
            with open(path, "wb") as f:
                f.write(b"\x00" * 10)           # half a file, then the kill
            raise KeyboardInterrupt
        return real_save(tensors, path, metadata=metadata)

    def killed_before_arch(path, data):
        if victim in str(path) and path.name == "arch.json":
            raise KeyboardInterrupt
        return real_write(path, data)

    if where == "weights":   # journal.py imports save_file when it writes (or at the top)
        monkeypatch.setattr(safetensors.torch, "save_file", torn_save)
        if hasattr(journal, "save_file"):
            monkeypatch.setattr(journal, "save_file", torn_save)
    else:
        monkeypatch.setattr(journal, "_atomic_write", killed_before_arch)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        hill_climb(cfg(tiny_npz, n_steps=1), out)
    assert "s01c2" not in RunDir.open(out).state().trained
    monkeypatch.undo()
    resume(out)
    assert summary(out) == summary(full)
    assert not list(out.rglob("*.tmp"))
    trained = [r["model"] for r in RunDir.open(out).records("model_trained")]
    assert trained.count("s01c2") == 1 and len(trained) == len(set(trained))
    arch, w = RunDir.open(out).load_model("s01c2")
    ref_arch, ref_w = RunDir.open(full).load_model("s01c2")
    assert arch.to_dict() == ref_arch.to_dict()
    assert all(torch.equal(w[k], ref_w[k]) for k in ref_w)


# ------------------------------------------------------------------ redraws (nash.make_child)
def _redraw_run(npz, out, **kw):
    from morphclimb.model0 import starting_arch
    m0 = starting_arch(3, 4, 8, widths=TINY["widths"]).num_params
    hill_climb(cfg(npz, max_params=m0 + 120, n_neigh=4, **kw), out)   # deeper fits, wider not
    return RunDir.open(out)


def _redraws_are_each_draw_once(run):
    """Each child's rejected draws are journaled once each, 0 .. its accepted draw - 1."""
    st = run.state()
    seen = [(r["step"], r["child"], r["draw"]) for r in st.redrawn]
    assert len(seen) == len(set(seen)), "a rejected draw journaled twice"
    for m, r in st.made.items():
        got = sorted(d for s, j, d in seen if (s, j) == (r["step"], r["child"]))
        assert got == list(range(r["draw"])), m
    return seen


def test_every_rejected_draw_is_journaled_once_also_after_a_resume(tiny_npz, tmp_path):
    run = _redraw_run(tiny_npz, tmp_path / "full")
    seen = _redraws_are_each_draw_once(run)
    steps = {s for s, _, _ in seen}
    assert steps == {1, 2} and sum(d > 0 for _, _, d in seen) > 0   # both steps, draws >= 1
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "full", killed)
    (killed / "results.json").unlink()
    lines = (killed / "journal.jsonl").read_text().splitlines()
    k = max(i for i, x in enumerate(lines) if '"child_redrawn"' in x and '"step": 2' in x)
    (killed / "journal.jsonl").write_text("\n".join(lines[:k]) + "\n")   # in step 2's draws
    resume(killed)
    assert _redraws_are_each_draw_once(RunDir.open(killed)) == seen
    # a child no draw fitted fails once, with its reason, also when resumed after it failed
    failed = [r for r in run.records("child_failed")]
    assert failed and all(r["reason"] == "no acceptable child in 50 draws of morphisms (size "
                          "limits or duplicates)" for r in failed)
    again = tmp_path / "again"
    shutil.copytree(tmp_path / "full", again)
    (again / "results.json").unlink()
    lines = (again / "journal.jsonl").read_text().splitlines()
    k = max(i for i, x in enumerate(lines) if '"child_failed"' in x)
    (again / "journal.jsonl").write_text("\n".join(lines[: k + 1]) + "\n")
    resume(again)
    assert [r["model"] for r in RunDir.open(again).records("child_failed")] == \
        [r["model"] for r in failed]


def test_a_redrawn_child_has_its_own_documented_seed(tiny_npz, tmp_path):
    from morphclimb.morphisms import apply_random_morphisms
    from morphclimb.seeds import derive_seed
    run = _redraw_run(tiny_npz, tmp_path / "run")
    st = run.state()
    checked = 0
    for m, r in st.made.items():
        parent_arch, parent_w = run.load_model(r["parent"])
        keys = ("morph", r["step"], r["child"]) + ((r["draw"],) if r["draw"] else ())
        rng = np.random.default_rng(derive_seed(TINY.get("seed", 0), *keys))
        arch, _, _ = apply_random_morphisms(parent_arch, parent_w, TINY["n_nm"], rng)
        assert arch.to_dict() == run.load_arch(m).to_dict(), m
        checked += r["draw"] > 0
    assert checked > 0
    for r in st.redrawn:                   # each rejected draw's morphisms, as journaled
        parent = st.decided[r["step"] - 1]["best"] if r["step"] > 1 else "m0"   # NASH
        parent_arch, parent_w = run.load_model(parent)
        keys = ("morph", r["step"], r["child"]) + ((r["draw"],) if r["draw"] else ())
        rng = np.random.default_rng(derive_seed(0, *keys))
        assert apply_random_morphisms(parent_arch, parent_w, TINY["n_nm"], rng)[2] == \
            r["morphisms"]


def test_each_step_is_announced_to_the_callback(tiny_npz, tmp_path):
    seen = []
    hill_climb(cfg(tiny_npz), tmp_path / "run", callback=seen.append)
    starts = [e for e in seen if e["event"] == "step_start"]
    assert [(e["step"], e["n_steps"]) for e in starts] == [(1, 2), (2, 2)]
    kids = [e for e in seen if e["event"] == "train_start" and e.get("role") == "child"]
    st = RunDir.open(tmp_path / "run").state()
    want = [(i, j, 3, st.decided[i - 1]["best"] if i > 1 else "m0")
            for i in (1, 2) for j in (1, 2)]          # n_neigh 3: two children a step
    assert [(e["step"], e["child"], e["n_neigh"], e["parent"]) for e in kids] == want
    assert not any("drawn" in e for e in kids)      # a Pareto search's field, not NASH's
    inc = [e for e in seen if e["event"] == "train_start" and e.get("role") == "incumbent"]
    assert [(e["step"], e["child"], e["n_neigh"], e["parent"]) for e in inc] == [
        (i, 3, 3, st.decided[i - 1]["best"] if i > 1 else "m0") for i in (1, 2)]
    for e in kids:                                  # the journal says the same
        r = st.trained[e["model"]]
        assert (r["step"], r["child"], r["n_neigh"], r["parent"]) == (
            e["step"], e["child"], e["n_neigh"], e["parent"])


def test_an_old_child_made_record_without_its_draw_is_draw_0(tiny_npz, tmp_path):
    run = _redraw_run(tiny_npz, tmp_path / "full")
    st = run.state()
    child = next(m for m, r in st.made.items() if r["draw"] == 0 and r["step"] == 1)
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "full", killed)
    (killed / "results.json").unlink()
    recs = [json.loads(x) for x in (killed / "journal.jsonl").read_text().splitlines()]
    k = next(i for i, r in enumerate(recs) if r["event"] == "child_made" and r["model"] == child)
    del recs[k]["draw"]                               # as runs before redraws wrote it
    (killed / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[:k + 1]))
    shutil.rmtree(killed / "models" / child)
    resume(killed)
    assert RunDir.open(killed).load_arch(child).to_dict() == run.load_arch(child).to_dict()
    assert RunDir.open(killed).state().trained[child]["val_accuracy"] == \
        st.trained[child]["val_accuracy"]


def test_max_mflops_redraws_and_nothing_trained_exceeds(tiny_npz, tmp_path):
    from morphclimb.budget import mflops
    from morphclimb.model0 import starting_arch
    limit = mflops(starting_arch(3, 4, 8, widths=TINY["widths"])) * 1.05
    hill_climb(cfg(tiny_npz, max_mflops=limit, n_neigh=4), tmp_path / "run")
    st = RunDir.open(tmp_path / "run").state()
    assert all(r["mflops"] <= limit for r in st.made.values())
    assert any("max_mflops" in r["reason"] for r in st.redrawn)


def test_the_last_rung_is_predicted_as_one_rung_of_its_survivors(tiny_npz, tmp_path,
                                                                 monkeypatch):
    """With halving and a time budget, the check before the last rung predicts that rung's
    epochs for the candidates that survived the one before, and nothing more."""
    from morphclimb import forecast

    class PerPass:                       # one second per image pass, whatever the network
        def seconds(self, mflops, passes):
            return passes

    monkeypatch.setattr(forecast, "time_model", lambda climber: PerPass())
    late = {"on": False}
    real = nash.Climber.clock
    monkeypatch.setattr(nash.Climber, "clock",
                        lambda self: real(self) + (1e9 if late["on"] else 0.0))

    def after_rung_1(e):
        if e["event"] == "rung_decided":
            late["on"] = True

    hill_climb(cfg(tiny_npz, n_neigh=4, epoch_neigh=3, rungs=(1, 2), eta=2,
                   time_budget=1e8), tmp_path / "run", callback=after_rung_1)
    st = RunDir.open(tmp_path / "run").state()
    kept = st.rungs[(1, 1)]["kept"]
    assert len(kept) == 2 and st.stopped["step"] == 1
    n_train, n_val = 154, 38                       # the tiny set's split
    assert st.stopped["predicted"]["step 1"] == pytest.approx(
        len(kept) * passes(2, n_train, n_val))      # rung 2: 2 epochs, for the 2 survivors


LOWER_LR = ("to go on, change the training settings and retry the failed trainings: "
            "`morphclimb resume RUN_DIR --retry-failed --set lr_start=...`")
SMALLER_BATCH = ("to go on with less memory, retry the failed trainings with a smaller batch: "
                 "`morphclimb resume RUN_DIR --retry-failed --set batch_size=...` (or give "
                 "the search a max_params that fits)")
RETRY = ("to go on once the cause is fixed, retry the failed trainings: "
         "`morphclimb resume RUN_DIR --retry-failed`")
NO_ANSWER = "; the run has no answer yet"


@pytest.mark.parametrize("failing, reason, said, hint", [
    ("m0", "TrainingError: the loss became nan\nat epoch 1", "TrainingError: the loss became nan",
     LOWER_LR),
    ("final", "TrainingError: training diverged: the loss became inf at epoch 2\nat epoch 1",
     "TrainingError: training diverged: the loss became inf at epoch 2" + NO_ANSWER, LOWER_LR),
    ("m0", "TrainingError: out of memory: training needs about 39.4 GiB (batch 128, 9 "
     "parameters); 3.0 GiB are free", "TrainingError: out of memory: training needs about "
     "39.4 GiB (batch 128, 9 parameters); 3.0 GiB are free", SMALLER_BATCH),
    ("final", "RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate",
     "RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate"
     + NO_ANSWER, SMALLER_BATCH),
    ("m0", "", "no reason given", RETRY),          # a failure without words still says one
    ("final", "\n  \n", "no reason given" + NO_ANSWER, RETRY),
    ("m0", "ValueError: a bad image\n", "ValueError: a bad image", RETRY),
])
def test_a_failed_pretraining_or_final_training_says_why_and_how_to_go_on(
        tiny_npz, tmp_path, monkeypatch, failing, reason, said, hint):
    """model_0's and the final training's failures end the search with one line: the model,
    the first line of its reason, and how to go on by the failure's kind (a lower learning
    rate for a divergence, a smaller batch for memory, else the retry alone)."""
    import morphclimb.worker as worker
    from morphclimb.errors import TrainingError
    real = worker.run_task

    def run_task(task, *a, **k):
        if task.model_id == failing:
            return worker.failed_outcome(task, reason)
        return real(task, *a, **k)
    monkeypatch.setattr(worker, "run_task", run_task)
    with pytest.raises(TrainingError) as err:
        hill_climb(cfg(tiny_npz, n_steps=1), tmp_path / "run")
    assert str(err.value) == f"training {failing} failed: {said}; {hint}"


def test_the_budget_check_before_each_rung_counts_the_rungs_still_ahead(tiny_npz, tmp_path,
                                                                        monkeypatch):
    """rungs [1, 1, 2], eta 2, 5 candidates, trained one at a time: before each training the
    time budget predicts the rest of the step from the rungs still ahead: in rung 1 the
    untrained candidates' 1 epoch, then ceil(n/2) of them 1 more and ceil(n/4) 2 more; in
    rung 2 the rest of it and rung 3; in rung 3 only its own 2 epochs (not rung 2 again)."""
    import morphclimb.forecast as forecast
    events = []
    real_model = forecast.time_model

    def time_model(climber):
        events.append(("model", real_model(climber)))
        return events[-1][1]

    def fits(left, costs):
        events.append(("costs", dict(costs)))
        return True, ""                       # never stops: every check is seen
    monkeypatch.setattr(forecast, "time_model", time_model)
    monkeypatch.setattr(forecast, "fits", fits)
    c = cfg(tiny_npz, n_steps=1, n_neigh=5, epoch_neigh=4, rungs=(1, 1, 2), eta=2,
            time_budget=1e6)
    out = tmp_path / "run"
    hill_climb(c, out)
    st = RunDir.open(out).state()
    _, split = load_split(c)
    n_train, n_val = len(split.train), len(split.val)
    checks, model = [], None
    for kind, x in events:
        if kind == "model":
            model = x
        elif "step 1" in x:
            checks.append((model, x["step 1"]))
    trained = [m for m in st.trained if m.startswith("s01")]      # in training order
    rungs = {k: [m for m in trained if m.endswith(f"r{k}")] for k in (1, 2, 3)}
    assert [len(v) for v in rungs.values()] == [5, 3, 2]

    def rest(n, ahead):       # image passes of n candidates through the rungs ahead
        total = 0.0
        for epochs in ahead:
            total += n * passes(epochs, n_train, n_val)
            n = math.ceil(n / 2)
        return total
    want = [(ids[j:], rest(len(ids) - j, (1, 1, 2)[k - 1:]))
            for k, ids in rungs.items() for j in range(len(ids))]
    assert len(checks) == len(want) == 10
    for (m, got), (todo, n_passes) in zip(checks, want, strict=True):
        size = statistics.mean(st.trained[t]["mflops"] for t in todo)
        assert got == pytest.approx(m.seconds(size, n_passes), rel=1e-9), todo
