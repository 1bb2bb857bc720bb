"""Past the paper: size limits and redraws, start points, time budgets, successive halving."""

from __future__ import annotations

import json

import pytest
import torch

import morphclimb.nash as nash
from conftest import TINY
from morphclimb.budget import TimeModel, size_problem
from morphclimb.cli import main
from morphclimb.config import SearchConfig, resolve
from morphclimb.errors import ConfigError
from morphclimb.journal import RunDir
from morphclimb.model0 import starting_arch
from morphclimb.nash import hill_climb, resume
from morphclimb.seeds import derive_seed


def cfg(npz, **kw):
    return SearchConfig.from_dict({**TINY, "dataset": npz, **kw})


def summary(out):
    r = json.loads((out / "results.json").read_text())
    vals = {c["model"]: c["val_accuracy"] for s in r["steps"] for c in s["children"]}
    return {"arch": r["final"]["arch"], "test": r["final"]["test_accuracy"],
            "best": [s["best"] for s in r["steps"]], "vals": vals}


# ------------------------------------------------------------------ size limits and redraws
def test_max_params_redraws_and_nothing_trained_exceeds(tiny_npz, tmp_path):
    m0 = starting_arch(3, 4, 8, widths=TINY["widths"]).num_params
    limit = m0 + 120   # room for a deeper 3x3 conv on the 8-channel maps, not for widening
    hill_climb(cfg(tiny_npz, max_params=limit, n_neigh=4), tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    st = run.state()
    assert all(r["params"] <= limit for r in st.trained.values() if r["role"] != "baseline")
    assert st.redrawn and all("max_params" in r["reason"] or "same architecture" in r["reason"]
                              for r in st.redrawn)
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["climb"]["redrawn"] == len(st.redrawn) > 0
    assert res["climb"]["redrawn_over_limits"] > 0
    drawn = {r["model"]: r["draw"] for r in st.made.values()}
    assert any(d > 0 for d in drawn.values())


def test_limits_refuse_a_too_large_start_before_the_run(tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["search", "--dataset", tiny_npz, "--set", "max_params=100", "--out", str(out)])
    assert code == 2 and "starting network breaks the size limits" in capsys.readouterr().err
    assert not out.exists()
    a = starting_arch(widths=(32, 64, 128))
    assert "max_mflops" in size_problem(a, None, 1.0) and size_problem(a, 10**9, 1e6) is None


def test_a_child_equal_to_its_parent_is_redrawn(tiny_npz, tmp_path, monkeypatch):
    real = nash.apply_random_morphisms
    calls = []

    def first_one_unchanged(arch, weights, n, rng, probe=None):
        calls.append(1)
        if len(calls) == 1:
            return arch, weights, []
        return real(arch, weights, n, rng, probe=probe)

    monkeypatch.setattr(nash, "apply_random_morphisms", first_one_unchanged)
    hill_climb(cfg(tiny_npz, n_steps=1), tmp_path / "run")
    st = RunDir.open(tmp_path / "run").state()
    assert [(r["model"], r["draw"]) for r in st.redrawn] == [("s01c1", 0)]
    assert "same architecture as its parent" in st.redrawn[0]["reason"]
    assert st.made["s01c1"]["draw"] == 1
    archs = [json.dumps(RunDir.open(tmp_path / "run").load_arch(m).to_dict(), sort_keys=True)
             for m in ("s01c1", "s01c2", "m0")]
    assert len(set(archs)) == 3


def test_long_ids_get_their_own_seeds():
    old = __import__("numpy").random.SeedSequence([0, int.from_bytes(b"train", "little"),
                                                   int.from_bytes(b"s01c1", "little")])
    assert derive_seed(0, "train", "s01c1") == int(old.generate_state(1)[0] & 0x7FFFFFFF)
    assert derive_seed(0, "s01c12r1x") != derive_seed(0, "s01c12r1y")


# ------------------------------------------------------------------ start points
def test_start_from_a_run_begins_with_its_final_network(tiny_npz, tmp_path, capsys):
    a = tmp_path / "a"
    hill_climb(cfg(tiny_npz, n_steps=1), a)
    b = tmp_path / "b"
    assert main(["search", "--dataset", tiny_npz, "--start", str(a), "--out", str(b), "-q",
                 *sum((["--set", f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"]
                       for k, v in {**TINY, "n_steps": 1}.items()), [])]) == 0
    ra, rb = RunDir.open(a), RunDir.open(b)
    arch_a, w_a = ra.load_model("final")
    arch_b, w_b = rb.load_model("m0")
    assert arch_a.to_dict() == arch_b.to_dict()
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    st = rb.state()
    assert st.trained["m0"]["epochs"] == 0                       # taken as it is
    assert st.started["start"] == {"kind": "run", "source": str(a), "model": "final"}
    capsys.readouterr()
    shown = main(["show", str(b)])
    assert shown == 0 and f"started from {a}" in capsys.readouterr().out


def test_start_from_a_hand_written_arch(tiny_npz, tmp_path, capsys):
    arch = starting_arch(3, 4, 8, widths=(6, 6, 6)).to_dict()
    f = tmp_path / "mine.json"
    f.write_text(json.dumps(arch))
    res = hill_climb(cfg(tiny_npz, n_steps=1, start=str(f)), tmp_path / "run")
    st = RunDir.open(tmp_path / "run").state()
    assert st.trained["m0"]["epochs"] == TINY["epoch_pretrain"]   # no weights: pretrained
    assert RunDir.open(tmp_path / "run").load_arch("m0").to_dict() == arch
    assert 0 <= res.test_accuracy <= 1
    # with its weights (as `show --arch` and a checkpoint give them): taken as they are
    w = tmp_path / "w.safetensors"
    import shutil
    shutil.copy(tmp_path / "run" / "models" / "final" / "weights.safetensors", w)
    assert main(["show", str(tmp_path / "run"), "--arch"]) == 0
    (tmp_path / "final.json").write_text(capsys.readouterr().out)
    hill_climb(cfg(tiny_npz, n_steps=0, start=str(tmp_path / "final.json"),
                   start_weights=str(w)), tmp_path / "run2")
    w2 = RunDir.open(tmp_path / "run2").load_model("m0")[1]
    w1 = RunDir.open(tmp_path / "run").load_model("final")[1]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


@pytest.mark.parametrize("damage, needle", [
    (lambda a: {**a, "output": "nope"}, "nope"),
    (lambda a: {**a, "nodes": a["nodes"][:3]}, "output 'fc' is not a node id"),
    (lambda a: "not an arch", "must be a JSON object"),
])
def test_bad_start_arch_is_one_line(tiny_npz, tmp_path, capsys, damage, needle):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(damage(starting_arch(3, 4, 8, widths=(4, 4, 4)).to_dict())))
    out = tmp_path / "run"
    assert main(["search", "--dataset", tiny_npz, "--start", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err and not out.exists()
    assert str(f) in err


def test_start_must_fit_the_data(tiny_npz, tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps(starting_arch(3, 10, 32).to_dict()))
    with pytest.raises(ConfigError, match="reads 3-channel 32x32 images"):
        hill_climb(cfg(tiny_npz, start=str(f)), tmp_path / "run")
    with pytest.raises(ConfigError, match="start_weights needs start"):
        cfg(tiny_npz, start_weights="w.safetensors")


# ------------------------------------------------------------------ time budget
def test_time_model_fits_overhead_and_size():
    m = TimeModel([(1.0, 1000, 2.0), (3.0, 1000, 4.0), (5.0, 2000, 12.0)])
    assert m.a == pytest.approx(1e-3) and m.b == pytest.approx(1e-3)
    assert m.seconds(2.0, 1000) == pytest.approx(1.15 * 3.0)
    assert not TimeModel([]).ready
    assert resolve("demo", sets=["time_budget=2h"]).time_budget == 7200
    assert resolve("demo", sets=["time_budget=90s"]).time_budget == 90
    with pytest.raises(ConfigError, match="time_budget"):
        resolve("demo", sets=["time_budget=soon"])


def test_a_tiny_budget_stops_the_climb_but_trains_the_final(tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    hill_climb(cfg(tiny_npz, time_budget=0.01, baseline=True), out)
    st = RunDir.open(out).state()
    assert st.stopped["step"] == 1 and "time budget" in st.stopped["reason"]
    assert not st.decided and "final" in st.trained and st.finished
    assert "baseline" not in st.trained                # the job after it no longer fits
    res = json.loads((out / "results.json").read_text())
    assert res["climb"]["steps_run"] == 0 and "final" in res["climb"]["stopped"]
    assert "time budget" in res["climb"]["skipped"]["baseline"]
    resume(out)                                   # stays stopped: the record is the truth
    assert not RunDir.open(out).state().decided
    assert main(["show", str(out)]) == 0
    assert "climb stopped after 0 of 2 steps" in capsys.readouterr().out


def test_a_large_budget_changes_nothing(tiny_npz, tmp_path):
    hill_climb(cfg(tiny_npz), tmp_path / "free")
    hill_climb(cfg(tiny_npz, time_budget=3600), tmp_path / "budget")
    assert summary(tmp_path / "free") == summary(tmp_path / "budget")
    assert RunDir.open(tmp_path / "budget").state().stopped is None


# ------------------------------------------------------------------ successive halving
HALVING = dict(n_neigh=4, epoch_neigh=2, rungs=(1, 1), eta=2)


def test_halving_rungs_are_journaled(tiny_npz, tmp_path):
    hill_climb(cfg(tiny_npz, **HALVING), tmp_path / "run")
    st = RunDir.open(tmp_path / "run").state()
    for i in (1, 2):
        rung = st.rungs[(i, 1)]
        assert len(rung["kept"]) == 2 and len(rung["cut"]) == 2
        assert sorted(rung["kept"] + rung["cut"]) == sorted(
            f"{c}r1" for c in (f"s0{i}c1", f"s0{i}c2", f"s0{i}c3", f"s0{i}inc"))
        scores = rung["scores"]
        assert min(scores[m] for m in rung["kept"]) >= max(scores[m] for m in rung["cut"])
        d = st.decided[i]
        assert d["best"] in [m[:-1] + "2" for m in rung["kept"]]
        assert sorted(d["candidates"]) == sorted([m[:-1] + "2" for m in rung["kept"]]
                                                 + rung["cut"])
        best = st.trained[d["best"]]
        parent = st.trained[d["previous"]]
        assert best["lineage"] - parent["lineage"] == 2     # the winner had epoch_neigh epochs
        # image-epochs of the step: 4 candidates x 1 + 2 survivors x 1 = 6 of 8
        assert sum(r["epochs"] for r in st.trained.values() if r.get("step") == i
                   and r["role"] in ("child", "incumbent")) == 6
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    cut = [c for c in res["steps"][0]["children"] if c["cut_at_rung"] == 1]
    assert len(cut) == 2 and all(c["morphisms"] or c["role"] == "incumbent" for c in cut)


def test_halving_ties_keep_the_incumbent_first(tiny_npz, tmp_path, monkeypatch):
    real = nash.Climber.train_all

    def flat(self, tasks, guard=None):
        out = real(self, tasks, guard)
        for r in out.values():                          # every candidate scores the same
            if r.get("rung") == 1:
                r["val_accuracy"], r["val_loss"] = 0.5, 1.0
        return out

    monkeypatch.setattr(nash.Climber, "train_all", flat)
    hill_climb(cfg(tiny_npz, n_steps=1, **HALVING), tmp_path / "run")
    rung = RunDir.open(tmp_path / "run").state().rungs[(1, 1)]
    assert rung["kept"] == ["s01incr1", "s01c1r1"]      # incumbent first, then child order


def test_halving_resumes_identically_after_a_kill_in_each_rung(tiny_npz, tmp_path):
    hill_climb(cfg(tiny_npz, **HALVING), tmp_path / "full")
    want = summary(tmp_path / "full")
    kills = [lambda e: e.get("model") == "s01c2r1" and e["event"] == "model_trained",  # rung 1
             lambda e: e.get("rung") == 2 and e["event"] == "model_trained",            # rung 2
             lambda e: e["event"] == "rung_decided" and e["step"] == 2]                 # between
    for k, kill in enumerate(kills):
        out = tmp_path / f"killed{k}"

        def stop(e, kill=kill):
            if kill(e):
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            hill_climb(cfg(tiny_npz, **HALVING), out, callback=stop)
        resume(out)
        assert summary(out) == want
        recs = RunDir.open(out).records()
        trained = [r["model"] for r in recs if r["event"] == "model_trained"]
        assert len(trained) == len(set(trained))


def test_halving_is_the_same_under_the_local_executor(tiny_npz, tmp_path):
    hill_climb(cfg(tiny_npz, n_steps=1, **HALVING), tmp_path / "serial")
    hill_climb(cfg(tiny_npz, n_steps=1, executor="local", workers=2, **HALVING),
               tmp_path / "local")
    assert summary(tmp_path / "serial") == summary(tmp_path / "local")


def test_halving_in_progress_and_report(tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["search", "--dataset", tiny_npz, "--out", str(out)]
    for k, v in {**TINY, **HALVING, "n_steps": 1}.items():
        args += ["--set", f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "step 1 rung 1 (1 epoch(s)): kept" in err and "; cut " in err
    assert main(["report", str(out)]) == 0
    html = (out / "report" / "report.html").read_text()
    assert "cut by successive halving" in html and "rung 1: s01" in html


def test_halving_settings_are_checked():
    with pytest.raises(ConfigError, match="adding up to epoch_neigh"):
        resolve("demo", sets=["rungs=[1,1]"])        # the demo's epoch_neigh is 3
    with pytest.raises(ConfigError, match="eta must be"):
        resolve("demo", sets=["eta=1"])
    assert resolve("demo", sets=["rungs=[1,2]"]).rungs == (1, 2)


def test_a_budget_can_stop_the_climb_inside_a_step(tiny_npz, tmp_path, monkeypatch):
    late = {"on": False}
    real = nash.Climber.clock
    monkeypatch.setattr(nash.Climber, "clock",
                        lambda self: real(self) + (1e6 if late["on"] else 0.0))

    def after_first_child(e):
        if e["event"] == "model_trained" and e["model"] == "s01c1":
            late["on"] = True           # from now on the budget is spent

    hill_climb(cfg(tiny_npz, time_budget=3600), tmp_path / "run", callback=after_first_child)
    st = RunDir.open(tmp_path / "run").state()
    assert "the rest of step 1" in st.stopped["reason"] and not st.decided
    assert "s01c1" in st.trained and "s01c2" not in st.trained
    assert st.trained["final"]["parent"] == "m0"       # the climb's best so far: model_0


# ------------------------------------------------------------------ the retrained model as the run's
def test_final_model_retrain_is_what_the_run_hands_out(tiny_npz, tmp_path, capsys):
    from morphclimb.commands import evaluate_run
    from morphclimb.export import member_ids
    out = tmp_path / "run"
    hill_climb(cfg(tiny_npz, n_steps=1, final_model="retrain"), out)
    run = RunDir.open(out)
    st = run.state()
    assert "retrain" in st.trained and "final" in st.trained      # the paper's result stays
    res = json.loads((out / "results.json").read_text())
    assert res["model"] == "retrain" and res["final"]["model"] == "final"
    assert member_ids(run) == ["retrain"] and evaluate_run(out)["model"] == "retrain"
    assert evaluate_run(out, "final")["model"] == "final"
    assert main(["show", str(out), "--arch"]) == 0
    assert json.loads(capsys.readouterr().out) == run.load_arch("retrain").to_dict()
    plain = tmp_path / "plain"
    hill_climb(cfg(tiny_npz, n_steps=1), plain)
    assert json.loads((plain / "results.json").read_text())["model"] == "final"
    with pytest.raises(ConfigError, match="final_model"):
        cfg(tiny_npz, final_model="best")
