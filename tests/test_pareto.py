"""The Pareto search (issue 17): the front's arithmetic against brute force, LEMONADE's
sampling rules, and a tiny search whose front is non-dominated, comes from the journal and
survives a kill at any record."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import numpy as np
import pytest

from conftest import TINY, make_tiny_npz
from morphclimb import front as F
from morphclimb.config import SearchConfig
from morphclimb.errors import ConfigError
from morphclimb.events import FINAL, MODEL0
from morphclimb.journal import RunDir
from morphclimb.nash import hill_climb, resume, rules_for
from morphclimb.pareto import (
    KeepFront,
    Sparse,
    final_members,
    front_of,
    pareto_ranked,
)


# ------------------------------------------------------------------ arithmetic
def _brute_front(points):
    return [i for i, p in enumerate(points)
            if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)]


@pytest.mark.parametrize("seed", range(20))
def test_nondominated_and_levels_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    pts = [tuple(map(float, p)) for p in rng.integers(0, 6, size=(int(rng.integers(1, 15)), 2))]
    assert F.nondominated(pts) == _brute_front(pts)
    lv = F.levels(pts)
    left = list(range(len(pts)))
    for level in itertools.count():
        if not left:
            break
        front = [left[k] for k in _brute_front([pts[i] for i in left])]
        assert sorted(i for i in range(len(pts)) if lv[i] == level) == sorted(front)
        left = [i for i in left if i not in front]


def test_dominance_is_strict():
    assert F.dominates((1, 2), (1, 3)) and not F.dominates((1, 3), (1, 3))
    assert not F.dominates((0, 4), (1, 3)) and F.nondominated([(1, 1), (1, 1)]) == [0, 1]


def test_hypervolume_by_hand():
    assert F.hypervolume([(1, 1)], (3, 3)) == 4
    # two rectangles 2x1 and 1x2 overlapping in 1x1: 3
    assert F.hypervolume([(1, 2), (2, 1)], (3, 3)) == 3
    assert F.hypervolume([(1, 2), (2, 1), (2.5, 2.5)], (3, 3)) == 3   # a dominated point
    assert F.hypervolume([(4, 1)], (3, 3)) == 0                        # beyond the reference
    assert F.hypervolume([(1, 2), (3, 1)], (5, 10)) == 4 * 8 + 2 * 1   # not a square
    assert F.hypervolume([(6, 1)], (5, 10)) == 0 == F.hypervolume([(1, 11)], (5, 10))


@pytest.mark.parametrize("seed", range(5))
def test_hypervolume_against_a_grid(seed):
    rng = np.random.default_rng(seed)
    pts = [tuple(p) for p in rng.uniform(0, 10, size=(6, 2))]
    g = (np.arange(2000) + 0.5) / 200          # cell centres of a 0.005 grid over [0, 10]
    covered = np.zeros((2000, 2000), bool)
    for a, b in pts:
        covered |= (g[:, None] >= a) & (g[None, :] >= b)
    assert F.hypervolume(pts, (10, 10)) == pytest.approx(covered.sum() * 0.005 ** 2, abs=0.2)


def test_density_is_a_gaussian_kde_in_log_size():
    members = [100.0, 1000.0, 10000.0]
    logs = np.log(members)
    h = 1.06 * logs.std(ddof=1) * 3 ** -0.2
    x = 500.0
    want = np.mean(np.exp(-0.5 * ((np.log(x) - logs) / h) ** 2)) / (h * math.sqrt(2 * math.pi))
    assert F.density(members, [x])[0] == pytest.approx(want)
    grid = np.linspace(-10, 30, 40001)         # integrates to 1 over log size
    assert np.trapezoid(F.density(members, np.exp(grid)), grid) == pytest.approx(1, abs=1e-6)
    two = [100.0, 1000.0]                       # two members: Scott's rule already
    h2 = 1.06 * np.log(two).std(ddof=1) * 2 ** -0.2
    assert F.density(two, [100.0])[0] == pytest.approx(
        (1 + math.exp(-0.5 * (math.log(10) / h2) ** 2)) / (2 * h2 * math.sqrt(2 * math.pi)))
    one = F.density([50.0], [50.0])[0]         # one member: the bandwidth floor
    assert one == pytest.approx(1 / (F.MIN_BANDWIDTH * math.sqrt(2 * math.pi)))


def test_inverse_density_favours_sparse_sizes():
    members = [1000.0, 1010.0, 1020.0, 100000.0]
    p = F.inverse_density_weights(members, members)
    assert p.sum() == pytest.approx(1) and p[3] > 2 * p[0]


def test_sample_without_replacement_is_distinct_and_weighted():
    rng = np.random.default_rng(0)
    p = np.array([0.0, 0.5, 0.25, 0.25])
    for _ in range(50):
        got = F.sample(rng, p, 2, replace=False)
        assert len(set(got)) == 2 and 0 not in got
    assert sorted(F.sample(rng, p, 9, replace=False)) == [0, 1, 2, 3]
    draws = F.sample(np.random.default_rng(1), p, 4000, replace=True)
    assert np.bincount(draws, minlength=4)[1] / 4000 == pytest.approx(0.5, abs=0.03)


def test_spread_takes_both_ends_and_even_steps():
    sizes = [10.0, 100.0, 1000.0, 10000.0, 20.0, 9000.0]
    assert F.spread(sizes, 2) == [0, 3]
    assert F.spread(sizes, 3) == [0, 2, 3]
    assert F.spread(sizes, 0) == [0, 4, 1, 2, 5, 3] == F.spread(sizes, 6)
    assert F.spread([1000.0, 10.0, 100.0], 2) == [1, 0]      # smallest first, not by index


# ------------------------------------------------------------------ the rules
def _rec(model, err, params, **kw):
    return {"event": "model_trained", "model": model, "val_accuracy": 1 - err / 100,
            "params": params, "mflops": params / 100, **kw}


def test_keep_front_keeps_the_non_dominated_of_old_and_new():
    old = [_rec("m0", 50, 1000), _rec("a", 40, 4000)]
    new = [_rec("b", 45, 500), _rec("c", 41, 5000), _rec("d", 30, 9000),
           {"event": "child_failed", "model": "e"}]
    kept = KeepFront("params").select(1, new, old)
    assert [r["model"] for r in kept] == ["d", "a", "b"]   # most accurate first
    assert [r["model"] for r in KeepFront("mflops").select(1, new, old)] == ["d", "a", "b"]
    assert front_of(old + old, "params") == [old[1], old[0]]   # a member counts once


def test_halving_ranks_by_level_then_error():
    recs = [_rec("a", 40, 4000), _rec("b", 45, 500), _rec("c", 41, 5000), _rec("d", 46, 600)]
    for order in (recs, recs[::-1], [recs[2], recs[0], recs[3], recs[1]]):
        assert [r["model"] for r in pareto_ranked("params")(1, order)] == ["a", "b", "c", "d"]


def test_sparse_proposer_samples_inversely_to_density():
    crowd = [_rec(f"c{k}", 40 + k, 1000 + k) for k in range(5)]
    lone = _rec("lone", 20, 100000)
    p = Sparse(n_neigh=2, n_draw=3000, objective="params", seed=0)
    parents = p.parent_of(1, crowd + [lone])
    assert parents == Sparse(2, 3000, "params", 0).parent_of(1, crowd + [lone])   # seeded
    assert parents != Sparse(2, 3000, "params", 1).parent_of(1, crowd + [lone])
    share = sum(r is lone for r in parents) / len(parents)
    sizes = [r["params"] for r in crowd + [lone]]
    want = F.inverse_density_weights(sizes, sizes)[-1]
    assert want > 0.4                        # one of six members, drawn about half the time
    assert share == pytest.approx(want, abs=0.03)
    children = [{"model": f"k{i}", "params": 1000 + i} for i in range(6)] + \
        [{"model": "far", "params": 30000}]
    picks = [Sparse(2, 7, "params", s).to_train(1, children, crowd) for s in range(40)]
    assert all(len(set(x)) == 2 for x in picks)
    assert sum("far" in x for x in picks) > 30     # the sparse child nearly always trained
    assert Sparse(8, 8, "params", 0).to_train(1, children, crowd) == [c["model"] for c in
                                                                       children]
    # as many children as are trained: all of them, in their order (nothing drawn)
    assert Sparse(7, 7, "params", 0).to_train(1, children, crowd) == [c["model"] for c in
                                                                       children]


def test_sparse_draws_from_its_own_documented_streams():
    """Parents come from derive_seed(seed, "parents", step), the trained children from
    derive_seed(seed, "accept", step): fixed so that a run's draws never change between
    versions, and different for every step."""
    from morphclimb.seeds import derive_seed
    crowd = [_rec(f"c{k}", 40 + k, 1000 * 2 ** k) for k in range(6)]
    children = [{"model": f"k{i}", "params": int(1500 * 1.4 ** i)} for i in range(9)]
    sizes = [r["params"] for r in crowd]
    p = Sparse(n_neigh=3, n_draw=12, objective="params", seed=5)
    for step in (1, 2):
        rng = np.random.default_rng(derive_seed(5, "parents", step))
        want = F.sample(rng, F.inverse_density_weights(sizes, sizes), 12, replace=True)
        assert p.parent_of(step, crowd) == [crowd[k] for k in want]
        rng = np.random.default_rng(derive_seed(5, "accept", step))
        w = F.inverse_density_weights(sizes, [c["params"] for c in children])
        assert p.to_train(step, children, crowd) == [
            children[k]["model"] for k in F.sample(rng, w, 3, replace=False)]
    assert p.parent_of(1, crowd) != p.parent_of(2, crowd)
    assert p.to_train(1, children, crowd) != p.to_train(2, children, crowd)


def test_final_ids_name_the_member():
    from morphclimb.pareto import final_id
    assert final_id("s02c3", "s02c3") == FINAL
    assert final_id("s01c1", "s02c3") == f"{FINAL}-s01c1"


def test_rules_follow_the_config():
    r = rules_for(SearchConfig(strategy="pareto", n_neigh=3, objective="mflops", seed=7,
                               rungs=(1, 2), epoch_neigh=3, eta=2, time_budget=60))
    assert r.proposer == Sparse(3, 12, "mflops", 7) and r.selector == KeepFront("mflops")
    assert r.pruner.rungs == (1, 2) and r.pruner.eta == 2
    assert [type(s).__name__ for s in r.stoppers] == ["StepLimit", "TimeBudget"]
    assert rules_for(SearchConfig(strategy="pareto", n_draw=5, n_neigh=2)).proposer.n_draw == 5
    assert type(rules_for(SearchConfig()).selector).__name__ == "KeepBest"


@pytest.mark.parametrize("kw, message", [
    (dict(strategy="lemonade"), "strategy must be one of nash, pareto"),
    (dict(objective="latency"), "objective must be one of params, mflops"),
    (dict(n_draw=2, n_neigh=3), "n_draw must be 0 (4 x n_neigh) or at least n_neigh (3)"),
    (dict(n_draw=-1), "n_draw must be 0"),
    (dict(front_final=-1), "front_final must be >= 0"),
    (dict(strategy="pareto", final_model="auto"), "a Pareto search hands out its front"),
    (dict(start_model="s01c1"), "start_model needs start"),
])
def test_bad_pareto_settings(kw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchConfig(**kw)


def test_nash_configs_do_not_mention_the_pareto_keys():
    d = SearchConfig().to_dict()
    assert not {"strategy", "objective", "n_draw", "front_final", "start_model"} & set(d)
    assert SearchConfig(strategy="pareto").to_dict()["strategy"] == "pareto"


def test_final_members_spread_and_best_first():
    front = [_rec("big", 20, 10000), _rec("mid", 30, 1000), _rec("small", 40, 100),
             _rec("tiny", 50, 10)]
    assert [r["model"] for r in final_members(front, 0, "params")] == \
        ["big", "tiny", "small", "mid"]
    assert [r["model"] for r in final_members(front, 2, "params")] == ["big", "tiny"]
    assert [r["model"] for r in final_members(front, 1, "params")] == ["big"]


# ------------------------------------------------------------------ a tiny Pareto search
PARETO = dict(TINY, strategy="pareto", approximate=True, n_steps=2, n_neigh=3, n_draw=6)


@pytest.fixture(scope="module")
def pareto_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("pareto")
    npz = str(make_tiny_npz(d / "tiny.npz"))
    hill_climb(SearchConfig(**{**PARETO, "dataset": npz}), d / "run")
    return npz, d / "run"


def _points(recs):
    return [(100 * (1 - r["val_accuracy"]), r["params"]) for r in recs]


def test_the_front_is_the_non_dominated_set_of_everything_trained(pareto_run):
    _, out = pareto_run
    st = RunDir.open(out).state()
    climb = [r for r in st.trained.values() if r.get("role") in ("pretrain", "child")]
    want = {climb[i]["model"] for i in _brute_front(_points(climb))}
    res = json.loads((out / "results.json").read_text())
    assert {m["id"] for m in res["front"]} == want
    pts = [(m["val_error"], m["params"]) for m in res["front"]]
    assert _brute_front(pts) == list(range(len(pts)))
    assert [m["params"] for m in res["front"]] == sorted(m["params"] for m in res["front"])


def test_each_generation_trains_n_neigh_of_n_draw(pareto_run):
    _, out = pareto_run
    run = RunDir.open(out)
    made, st = run.records("child_made"), run.state()
    for i in (1, 2):
        assert sum(r["step"] == i for r in made) == PARETO["n_draw"]
        trained = [r for r in st.trained.values() if r.get("step") == i and
                   r.get("role") == "child"]
        assert len(trained) == PARETO["n_neigh"]
        assert not [r for r in st.trained.values() if r.get("role") == "incumbent"]
        d = st.decided[i]
        assert len(d["candidates"]) == PARETO["n_draw"]
        prev = st.kept(i - 1) if i > 1 else [MODEL0]
        for r in trained:                      # each child's parent is on the previous front
            assert r["parent"] in prev


def test_front_numbers_come_from_the_journal(pareto_run):
    _, out = pareto_run
    st = RunDir.open(out).state()
    res = json.loads((out / "results.json").read_text())
    for m in res["front"]:
        rec = st.trained[m["id"]]
        assert m["val_error"] == round(100 * (1 - rec["val_accuracy"]), 4)
        assert (m["params"], m["mflops"]) == (rec["params"], rec["mflops"])
        fin = st.trained[m["model"]]
        assert fin["parent"] == m["id"] and fin["part"] == "train_full"
        assert m["test_error"] == round(100 * (1 - fin["test_accuracy"]), 4)
    best = min(res["front"], key=lambda m: (m["val_error"], m["params"]))
    assert best["model"] == FINAL == res["model"]
    assert res["final"]["test_error"] == best["test_error"]
    finals = [r["clock"] for r in st.trained.values() if r.get("role") == "final"]
    assert len(finals) > 1 and res["search_clock_s"] == max(finals) > st.trained[FINAL]["clock"]
    gens = res["generations"]
    assert [g["step"] for g in gens] == [0, 1, 2]
    assert {e["id"] for e in gens[-1]["front"]} == {m["id"] for m in res["front"]}


def test_front_results_are_rebuilt_from_the_journal_field_by_field(pareto_run):
    """results.json's front and generations, recomputed here from the journal, hold each
    member's own records: its id, validation error, size, step, lineage epochs and the final
    training whose parent it is (or none)."""
    from morphclimb.pareto import front_results
    from morphclimb.results import collect_results
    _, out = pareto_run
    run = RunDir.open(out)
    st = run.state()
    res = collect_results(run, write=False)
    assert {k: res[k] for k in ("front", "generations", "strategy", "objective")} == {
        k: json.loads((out / "results.json").read_text())[k]
        for k in ("front", "generations", "strategy", "objective")}

    def entry(m):
        r = st.trained[m]
        return {"id": m, "val_error": round(100 * (1 - r["val_accuracy"]), 4),
                "params": r["params"], "mflops": r["mflops"], "step": r.get("step", 0),
                "epochs": r.get("lineage", 0)}

    finals = {r["parent"]: r for r in st.trained.values()
              if r.get("role") == "final" and "parent" in r}
    last = st.kept(max(st.decided))
    want = sorted(last, key=lambda m: (st.trained[m]["params"],
                                       1 - st.trained[m]["val_accuracy"]))
    assert res["front"] == [
        {**entry(m), "model": finals[m]["model"],
         "test_error": round(100 * (1 - finals[m]["test_accuracy"]), 4)} for m in want]
    assert any(e["step"] > 0 and e["epochs"] > PARETO["epoch_pretrain"] for e in res["front"])
    assert res["generations"] == [{"step": 0, "front": [entry(MODEL0)]}] + [
        {"step": i, "front": sorted((entry(m) for m in st.kept(i)), key=lambda e: e["params"])}
        for i in sorted(st.decided)]
    assert (res["strategy"], res["objective"]) == ("pareto", "params")
    by_mflops = front_results(st, "mflops")
    assert [e["id"] for e in by_mflops["front"]] == sorted(
        last, key=lambda m: (st.trained[m]["mflops"], 1 - st.trained[m]["val_accuracy"]))
    assert by_mflops["objective"] == "mflops"
    for g in by_mflops["generations"][1:]:
        assert [e["mflops"] for e in g["front"]] == sorted(e["mflops"] for e in g["front"])


def test_front_results_order_by_the_objective_asked_for():
    """Three members whose order by parameters (a, b, c) is not their order by MFLOPs
    (b, c, a): the front and each generation follow the objective."""
    from morphclimb.pareto import front_results
    from morphclimb.state import RunState

    def trained(m, err, params, mflops, step, **kw):
        return {"event": "model_trained", "model": m, "val_accuracy": 1 - err / 100,
                "params": params, "mflops": mflops, "step": step, "lineage": 4 * (step + 1),
                "role": "child" if step else "pretrain", **kw}

    st = RunState.replay([
        trained(MODEL0, 60.0, 5, 0.5, 0),
        trained("a", 30.0, 10, 3.0, 1), trained("b", 20.123456, 20, 1.0, 1),
        trained("c", 10.0, 30, 2.0, 1),
        trained("d", 50.0, 40, 4.0, 1, parent="a"),    # a's child (not kept): not a's final
        {"event": "step_decided", "step": 1, "best": "c", "kept": ["c", "b", "a"]},
        {**trained("final-b", 15.0, 20, 1.0, 1, test_accuracy=0.8123456), "role": "final",
         "parent": "b"}])
    for objective, order in (("params", ["a", "b", "c"]), ("mflops", ["b", "c", "a"])):
        res = front_results(st, objective)
        assert [m["id"] for m in res["front"]] == order
        assert [m["id"] for m in res["generations"][1]["front"]] == order
        assert [m["id"] for m in res["generations"][0]["front"]] == [MODEL0]
        b = next(m for m in res["front"] if m["id"] == "b")
        assert (b["model"], b["test_error"], b["val_error"], b["epochs"], b["step"]) == (
            "final-b", 18.7654, 20.1235, 8, 1)
        assert all(m["model"] is None and m["test_error"] is None
                   for m in res["front"] if m["id"] != "b")


def test_member_final_and_current_front_read_the_journal(pareto_run):
    from morphclimb.pareto import current_front, member_final
    from morphclimb.state import RunState
    _, out = pareto_run
    run = RunDir.open(out)
    st = run.state()
    for m in st.kept(max(st.decided)):
        f = member_final(st, m)
        assert f is not None and st.trained[f]["parent"] == m and st.trained[f]["role"] == \
            "final"
    loser = next(m for m, r in st.trained.items()
                 if r.get("role") == "child" and m not in st.kept(max(st.decided)))
    assert member_final(st, loser) is None and member_final(st, "nobody") is None
    assert [r["model"] for r in current_front(st)] == st.kept(max(st.decided))
    recs = run.records()
    first = next(i for i, r in enumerate(recs) if r["event"] == "step_decided")
    assert [r["model"] for r in current_front(RunState.replay(recs[:first]))] == [MODEL0]
    assert [r["model"] for r in current_front(RunState.replay(recs[:first + 1]))] == \
        st.kept(1)
    assert current_front(RunState.replay(recs[:1])) == []


def test_approximate_children_learn_from_their_parent(pareto_run):
    _, out = pareto_run
    st = RunDir.open(out).state()
    from morphclimb.morphisms import APPROXIMATE
    for m, r in st.trained.items():
        if r.get("role") != "child":
            continue
        approx = any(x["op"] in APPROXIMATE for x in st.made[m]["morphisms"])
        assert ("distill" in r) == approx, m
        if approx:
            assert r["distill"]["teacher"] == r["parent"]


def test_front_final_limits_the_final_trainings(tmp_path):
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    res = hill_climb(SearchConfig(**{**PARETO, "dataset": npz, "front_final": 1,
                                     "n_steps": 1}), tmp_path / "run").results
    tested = [m for m in res["front"] if m["model"] is not None]
    assert [m["model"] for m in tested] == [FINAL]
    assert all(m["test_error"] is None for m in res["front"] if m["model"] is None)


@pytest.mark.parametrize("cut", ["child_made", "model_trained", "step_decided", "final"])
def test_a_killed_pareto_search_resumes_to_the_same_front(pareto_run, tmp_path, cut):
    npz, out = pareto_run
    lines = (out / "journal.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    hits = [k for k, r in enumerate(recs) if r["event"] == cut or
            (cut == "final" and r.get("role") == "final" and r["event"] == "model_trained")]
    k = hits[len(hits) // 2] if cut != "final" else hits[0]
    a, b = killed_and_resumed(out, tmp_path / "killed", k)
    assert b["front"] == a["front"] and b["generations"] == a["generations"]


def killed_and_resumed(out, killed, k):
    """A copy of run `out` killed before journal record k, resumed: both runs' results."""
    lines = (out / "journal.jsonl").read_text().splitlines()
    shutil.copytree(out, killed)
    (killed / "results.json").unlink()
    (killed / "journal.jsonl").write_text("\n".join(lines[:k]) + "\n")   # dies before k
    resume(killed)
    return (json.loads((out / "results.json").read_text()),
            json.loads((killed / "results.json").read_text()))


# ------------------------------------------------------------------ with the other features
def _front(out):
    return json.loads((out / "results.json").read_text())["front"]


def test_halving_cuts_by_level_and_rungs_keep_distilling(tmp_path):
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    out = tmp_path / "run"
    hill_climb(SearchConfig(**{**PARETO, "dataset": npz, "n_steps": 1, "n_neigh": 4,
                               "epoch_neigh": 2, "rungs": (1, 1), "eta": 2}), out)
    st = RunDir.open(out).state()
    rung = st.rungs[(1, 1)]
    recs = [st.trained[m] for m in rung["kept"] + rung["cut"]]
    assert rung["kept"] == [r["model"] for r in pareto_ranked("params")(1, recs)][:2]
    for m in rung["kept"]:                     # the survivor's second rung, still distilled
        first, second = st.trained[m], st.trained[m.replace("r1", "r2")]
        assert first.get("distill") == second.get("distill")
    assert any("distill" in st.trained[m] for m in rung["kept"] + rung["cut"])
    assert {m["id"] for m in _front(out)} <= {m.replace("r1", "r2") for m in rung["kept"]} | {
        MODEL0}


def test_size_limits_hold_for_every_child(tmp_path):
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    out = tmp_path / "run"
    free = hill_climb(SearchConfig(**{**PARETO, "dataset": npz, "n_steps": 1}),
                      tmp_path / "free").results
    limit = free["model0"]["params"]          # nothing may grow past model_0
    hill_climb(SearchConfig(**{**PARETO, "dataset": npz, "max_params": limit}), out)
    st = RunDir.open(out).state()
    assert st.made and all(r["params"] <= limit for r in st.made.values())
    assert all(m["params"] <= limit for m in _front(out))


@pytest.mark.parametrize("unit", ["params", "mflops"])
def test_a_size_floor_holds_for_every_child_but_not_the_start(pareto_run, tmp_path, unit):
    """min_params / min_mflops: shrinking children under it are drawn again; the start may
    be under it."""
    npz, free = pareto_run
    free_st = RunDir.open(free).state()
    start = free_st.trained[MODEL0][unit]
    floor = start + 1 if unit == "params" else start * 1.001   # model_0 is under it
    assert any(r[unit] < floor for r in free_st.made.values())   # the floor binds
    out = tmp_path / "run"
    res = hill_climb(SearchConfig(**{**PARETO, "dataset": npz, f"min_{unit}": floor}),
                     out).results
    st = RunDir.open(out).state()
    assert st.made and all(r[unit] >= floor for r in st.made.values())
    floored = sum(f"min_{unit}" in r["reason"] for r in st.redrawn)
    assert floored and res["climb"]["redrawn_over_limits"] == floored
    assert st.trained[MODEL0][unit] == start and res["model0"]["params"] == \
        free_st.trained[MODEL0]["params"]
    assert all(m[unit] >= floor for m in _front(out) if m["id"] != MODEL0)


def test_a_budget_stops_between_generations_and_the_front_is_finished(tmp_path, monkeypatch):
    from morphclimb import forecast, nash
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    late = {"on": False}
    real = nash.Climber.clock
    monkeypatch.setattr(nash.Climber, "clock",
                        lambda self: real(self) + (1e6 if late["on"] else 0.0))

    class OneSecond:                            # every training predicted to take 1 s
        def seconds(self, mflops, passes):
            return 1.0

    monkeypatch.setattr(forecast, "time_model", lambda climber: OneSecond())

    def after_step_1(e):
        if e["event"] == "step_decided":
            late["on"] = True

    out = tmp_path / "run"
    hill_climb(SearchConfig(**{**PARETO, "dataset": npz, "time_budget": 3600}), out,
               callback=after_step_1)
    st = RunDir.open(out).state()
    assert st.stopped["step"] == 2 and list(st.decided) == [1]
    front = st.kept(1)
    assert {m["id"] for m in _front(out)} == set(front)
    assert all(any(r.get("role") == "final" and r["parent"] == m for r in st.trained.values())
               for m in front)
    # what the budget planned for after the climb: a final training per member
    assert st.stopped["predicted"] == {"step 2": 3.0, "final": float(len(front))}
    assert len(front) > 1


@pytest.mark.parametrize("executor", ["local", "streams", "ray"])
def test_every_executor_finds_the_same_front(pareto_run, tmp_path, executor):
    """The same children, distilled alike, trained to the same front under each executor."""
    if executor == "ray":
        ray = pytest.importorskip("ray")
        assert not ray.is_initialized()
    npz, out = pareto_run
    hill_climb(SearchConfig(**{**PARETO, "dataset": npz, "executor": executor, "workers": 2}),
               tmp_path / executor)
    assert _front(tmp_path / executor) == _front(out)

    def distilled(run):
        return {m: (r["distill"], r["val_accuracy"])
                for m, r in RunDir.open(run).state().trained.items() if r.get("distill")}

    assert distilled(out) and distilled(tmp_path / executor) == distilled(out)
    if executor == "ray":
        assert not ray.is_initialized()      # the local cluster it started is shut down


def test_a_pareto_search_can_start_from_a_run(pareto_run, tmp_path):
    npz, out = pareto_run
    new = tmp_path / "again"
    hill_climb(SearchConfig(**{**PARETO, "dataset": npz, "start": str(out), "n_steps": 1}),
               new)
    st = RunDir.open(new).state()
    assert st.started["start"]["model"] == FINAL
    assert RunDir.open(new).load_arch(MODEL0).to_dict() == \
        RunDir.open(out).load_arch(FINAL).to_dict()


def test_vanished_member_checkpoints_are_trained_again(pareto_run, tmp_path):
    import torch
    from safetensors.torch import load_file
    _, out = pareto_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    (run / ".lock").unlink(missing_ok=True)
    other = next(m for m in _front(out) if m["model"] not in (None, FINAL))
    gone = [other["model"], other["id"]]        # a member's final and the model it came from
    for m in gone:
        shutil.rmtree(run / "models" / m)
    resume(run)
    restored = {r["model"]: r for r in RunDir.open(run).records("model_restored")}
    assert set(restored) == set(gone) and all(r["matches"] for r in restored.values())
    for m in gone:
        a = load_file(str(out / "models" / m / "weights.safetensors"))
        b = load_file(str(run / "models" / m / "weights.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), m


def test_progress_and_show_speak_of_the_front(pareto_run):
    import io

    from morphclimb.cli_progress import Progress
    from morphclimb.commands import show_run
    _, out = pareto_run
    buf = io.StringIO()
    p = Progress(stream=buf, tty=False)
    p.n_steps = 2
    for r in RunDir.open(out).records():
        if r["event"] in ("step_decided", "model_trained"):
            p.event(r)
        if r["event"] == "model_trained" and r.get("role") == "child":
            p.event({**r, "event": "train_start"})
    text = buf.getvalue()
    st = RunDir.open(out).state()
    d = st.decided[2]
    assert (f"step 2: front of {len(d['kept'])}, the most accurate {d['best']} (val acc "
            f"{100 * d['val_accuracy']:.2f}%") in text
    child = next(r for r in st.trained.values() if r.get("role") == "child")
    assert (f"child {child['child']} of {PARETO['n_draw']} drawn ({child['model']}, from "
            f"{child['parent']})") in text
    shown = show_run(out)
    assert f"step 2: front of {len(d['kept'])}, the most accurate {d['best']}" in shown
    assert "moved to" not in shown and "a Pareto search: the front's most accurate" in shown


def test_a_pareto_decision_names_its_strategy():
    from morphclimb.nash import Climber
    from morphclimb.state import RunState
    for strategy, tagged in (("pareto", True), ("nash", False)):
        c = Climber.__new__(Climber)
        c.state, logged = RunState(), []
        c.log = logged.append
        c.rules = rules_for(SearchConfig(strategy=strategy))
        old = _rec("m0", 50, 1000, val_loss=1.0)
        c.decide(1, old, [_rec("s01c1", 40, 4000, val_loss=1.0),
                          _rec("s01c2", 60, 500, val_loss=1.0)], (), [old])
        assert ("strategy" in logged[-1]) == tagged
        if tagged:
            assert logged[-1]["strategy"] == "pareto"
            assert logged[-1]["kept"] == ["s01c1", "m0", "s01c2"]


def test_members_finals_resume_after_one_of_them(tmp_path):
    """Killed after the first member's final training, with the next member's checkpoint
    gone: the resumed run keeps the first, restores the member and trains the next."""
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    out = tmp_path / "full"
    res = hill_climb(SearchConfig(**{**PARETO, "dataset": npz}), out).results
    best = min(res["front"], key=lambda m: (m["val_error"], m["params"]))["id"]
    for m in res["front"]:
        assert m["model"] == ("final" if m["id"] == best else f"final-{m['id']}")
    lines = (out / "journal.jsonl").read_text().splitlines()
    finals = [k for k, x in enumerate(lines) if '"model_trained"' in x and '"role": "final"' in x]
    assert len(finals) >= 3, "the tiny search's front should have three members"
    second = json.loads(lines[finals[2]])["parent"]      # the member trained last
    killed = tmp_path / "killed"
    shutil.copytree(out, killed)
    (killed / "results.json").unlink()
    (killed / "journal.jsonl").write_text("\n".join(lines[: finals[1] + 1]) + "\n")
    shutil.rmtree(killed / "models" / second)
    again = resume(killed).results
    assert again["front"] == res["front"]
    st = RunDir.open(killed).state()
    assert second in st.restored
    trained = [r["model"] for r in RunDir.open(killed).records("model_trained")]
    assert len(trained) == len(set(trained)), "a finished final training was redone"


def test_a_resumed_generation_keeps_the_parents_its_journal_names(pareto_run, tmp_path,
                                                                  monkeypatch):
    """Killed in generation 2 after its children were drawn: on resume the children keep
    the parents child_made recorded, whatever the proposer would draw now."""
    from morphclimb import pareto
    npz, out = pareto_run
    lines = (out / "journal.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    k = next(i for i, r in enumerate(recs) if r["event"] == "model_trained"
             and r.get("step") == 2 and r.get("role") == "child")    # its first training
    killed = tmp_path / "killed"
    shutil.copytree(out, killed)
    (killed / "results.json").unlink()
    (killed / "journal.jsonl").write_text("\n".join(lines[:k]) + "\n")
    monkeypatch.setattr(pareto.Sparse, "parent_of",
                        lambda self, step, parents: [parents[-1]] * self.n_draw)
    resume(killed)
    a = RunDir.open(out).state()
    b = RunDir.open(killed).state()
    for m, r in a.trained.items():
        if r.get("step") == 2 and r.get("role") == "child":
            assert b.trained[m]["parent"] == r["parent"] == a.made[m]["parent"], m
            assert b.trained[m]["drawn"] == PARETO["n_draw"]     # child j of n drawn
            if "distill" in r:                                    # taught by its own parent
                assert b.trained[m]["distill"]["teacher"] == r["parent"]
    assert any("distill" in r for m, r in b.trained.items() if r.get("step") == 2)
    assert _front(killed) == _front(out)


def test_a_child_repeating_one_of_several_parents_names_that_parent(tmp_path, monkeypatch):
    """With a front of several parents, a child equal to a parent is redrawn and the reason
    names the parent ("same architecture as parent ID"); with one parent, "its parent"."""
    from morphclimb import nash
    real = nash.apply_random_morphisms
    seen = set()

    def first_draw_repeats_its_parent(arch, weights, n, rng, probe=None, **kw):
        key = json.dumps(arch.to_dict(), sort_keys=True)
        if key not in seen:            # each parent's first child: the parent itself
            seen.add(key)
            return arch, weights, []
        return real(arch, weights, n, rng, probe=probe, **kw)

    monkeypatch.setattr(nash, "apply_random_morphisms", first_draw_repeats_its_parent)
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    for seed in range(8):   # the first seed whose front after step 1 has several members
        seen.clear()
        hill_climb(SearchConfig(**{**PARETO, "dataset": npz, "seed": seed}),
                   tmp_path / f"run{seed}")
        st = RunDir.open(tmp_path / f"run{seed}").state()
        if len(st.kept(1)) > 1:
            break
    assert len(st.kept(1)) > 1            # step 2 draws from several parents
    reasons = {(r["step"], st.made[r["model"]]["parent"]): r["reason"] for r in st.redrawn}
    assert reasons[(1, "m0")] == "same architecture as its parent"
    step2 = {p: why for (i, p), why in reasons.items() if i == 2}
    assert step2 and all(why == f"same architecture as parent {p}" for p, why in step2.items())
