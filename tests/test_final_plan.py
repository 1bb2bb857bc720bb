"""A time budget's plan for the answer (issue 22): `final_share` reserves a share of the budget
for the final training, whose epochs then fill what the climb left (journaled once)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY
from morphclimb import forecast, worker
from morphclimb.budget import EVAL_SHARE
from morphclimb.config import SearchConfig
from morphclimb.errors import ConfigError
from morphclimb.journal import RunDir
from morphclimb.nash import hill_climb, resume

PER_PASS = 1.0     # the fake speed: one second per image pass, whatever the network


class Linear:
    def seconds(self, mflops, passes):
        return PER_PASS * passes


@pytest.fixture
def fake_speed(monkeypatch):
    """The fake speed, and the plan alone: the final's deadline is given but not followed
    (no re-plans by the real clock, whose seconds the fake's are not)."""
    monkeypatch.setattr(forecast, "time_model", lambda climber: Linear())
    monkeypatch.setattr(worker, "_replanner", lambda task, start: None)


def cfg(npz, **kw) -> SearchConfig:
    return SearchConfig(**{**TINY, "dataset": npz, **kw})


@pytest.mark.parametrize("kw, message", [
    (dict(final_share=0.5), "final_share needs time_budget"),
    (dict(final_share=1.0, time_budget=60), r"final_share must be in \(0, 1\), got 1.0"),
    (dict(final_share=0.0, time_budget=60), r"final_share must be in \(0, 1\), got 0.0"),
])
def test_final_share_is_checked(kw, message):
    with pytest.raises(ConfigError, match=message):
        SearchConfig(**kw)


def test_the_share_is_kept_free_and_the_final_fills_the_rest(tiny_npz, tmp_path, fake_speed):
    # a step predicts 3 trainings x (154 + 38 / 3) image passes: ~500 "seconds"; the final
    # ~208; a budget of 1,000 fits every step (the real clock hardly moves), unless 90% of it
    # is the final training's
    free = hill_climb(cfg(tiny_npz, time_budget=1000), tmp_path / "free").results
    assert free["climb"]["steps_run"] == TINY["n_steps"]
    hill_climb(cfg(tiny_npz, time_budget=1000, final_share=0.9), tmp_path / "plan")
    st = RunDir.open(tmp_path / "plan").state()
    assert st.stopped["step"] == 1 and "final ~900s" in st.stopped["reason"]
    plan, final = st.final_plan, st.trained["final"]
    n_full, n_test = 192, 48                      # the tiny set: train + validation, test
    assert plan["seconds_per_epoch"] == PER_PASS * n_full
    want = int((plan["seconds_left"] - PER_PASS * EVAL_SHARE * n_test) // (PER_PASS * n_full))
    assert plan["epochs"] == want == final["epochs"] > TINY["epoch_final"]
    assert final["lineage"] == TINY["epoch_pretrain"] + want
    assert plan["members"] == ["m0"]


def test_a_plan_never_shortens_the_final(tiny_npz, tmp_path, fake_speed):
    hill_climb(cfg(tiny_npz, time_budget=10, final_share=0.5, epoch_final=2), tmp_path / "r")
    st = RunDir.open(tmp_path / "r").state()
    assert st.final_plan["epochs"] == 2 == st.trained["final"]["epochs"]


def test_a_resumed_run_keeps_its_plan(tiny_npz, tmp_path, fake_speed, monkeypatch):
    out = tmp_path / "run"
    hill_climb(cfg(tiny_npz, time_budget=1000, final_share=0.9), out)
    killed = tmp_path / "killed"
    shutil.copytree(out, killed)
    (killed / "results.json").unlink()
    (killed / ".lock").unlink(missing_ok=True)
    lines = (killed / "journal.jsonl").read_text().splitlines()
    k = next(i for i, x in enumerate(lines) if '"final_planned"' in x)
    (killed / "journal.jsonl").write_text("\n".join(lines[: k + 1]) + "\n")   # dies after it
    # on resume the machine seems 3 times slower: the journaled plan holds all the same
    monkeypatch.setattr(Linear, "seconds", lambda self, mflops, passes: 3 * passes)
    resume(killed)
    recs = RunDir.open(killed).records()
    plans = [r for r in recs if r["event"] == "final_planned"]
    assert len(plans) == 1
    a = json.loads((out / "results.json").read_text())["final"]
    b = json.loads((killed / "results.json").read_text())["final"]
    assert a["epochs"] == b["epochs"] == plans[0]["epochs"]
    assert a["test_accuracy"] == b["test_accuracy"]


def test_with_a_long_final_the_search_model_is_the_answer(tiny_npz, tmp_path, fake_speed):
    out = tmp_path / "run"
    res = hill_climb(cfg(tiny_npz, time_budget=2000, final_share=0.9, final_model="auto"),
                     out).results
    st = RunDir.open(out).state()
    share = st.trained["final"]["epochs"] / st.trained["final"]["lineage"]
    assert share > 0.6 and "retrain" not in st.trained and res["model"] == "final"
    assert f"the final training is {100 * share:.0f}% of the answer's" in res["model_why"]


class Slow:
    """The fitted time model, three times too pessimistic: the plan's first guess is short."""

    def __init__(self, model):
        self.model = model

    def seconds(self, mflops, passes):
        return 3 * self.model.seconds(mflops, passes)


BUDGET = 4.0


@pytest.fixture(scope="module")
def replanned(tmp_path_factory):
    """A real-clock run whose plan underestimates the final training's speed threefold."""
    from conftest import make_tiny_npz
    root = tmp_path_factory.mktemp("replan")
    npz = str(make_tiny_npz(root / "tiny.npz"))
    with pytest.MonkeyPatch.context() as mp:
        real = forecast.time_model
        mp.setattr(forecast, "time_model", lambda climber: Slow(real(climber)))
        hill_climb(cfg(npz, time_budget=BUDGET, final_share=0.5), root / "run",
                   callback=EVENTS.append)
    return root / "run"


EVENTS: list[dict] = []    # what the replanned run told its callback (the CLI's progress)


def test_the_final_re_plans_to_fill_the_budget_at_its_own_speed(replanned):
    st = RunDir.open(replanned).state()
    plan, final = st.final_plan, st.trained["final"]
    assert 0 < final["deadline"] <= BUDGET
    assert final["replans"] and final["replans"][0][0] == 1     # re-planned from epoch 1 on
    assert final["epochs"] == len(final["curves"]) == final["replans"][-1][1]
    assert final["epochs"] > 2 * plan["epochs"]                  # the plan was 3x too short
    parent = st.trained[final["parent"]]
    assert final["lineage"] == parent.get("lineage", 0) + final["epochs"]
    assert final["curves"][-1]["lr"] == pytest.approx(TINY.get("lr_end", 0.0), abs=1e-3)
    assert final["clock"] < 1.5 * BUDGET      # it ended near the budget, not 3x before it
    start = [e for e in EVENTS if e["event"] == "train_start" and e["model"] == "final"]
    assert [(e["epochs"], round(e["deadline"], 3)) for e in start] == [
        (plan["epochs"], final["deadline"])]
    assert all("deadline" not in e for e in EVENTS
               if e["event"] == "train_start" and e["model"] != "final")


def test_a_replanned_final_is_restored_by_replaying_its_plan(replanned, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(replanned, run)
    (run / ".lock").unlink(missing_ok=True)
    shutil.rmtree(run / "models" / "final")
    resume(run)
    restored = RunDir.open(run).records("model_restored")
    final = RunDir.open(run).state().trained["final"]
    assert [(r["model"], r["epochs"], r["matches"]) for r in restored] == [
        ("final", final["epochs"], True)]
    a = load_file(str(replanned / "models" / "final" / "weights.safetensors"))
    b = load_file(str(run / "models" / "final" / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_without_final_share_a_time_budget_sets_no_deadline(tiny_npz, tmp_path):
    hill_climb(cfg(tiny_npz, time_budget=1000), tmp_path / "r")
    final = RunDir.open(tmp_path / "r").state().trained["final"]
    assert "deadline" not in final and "replans" not in final
    assert final["epochs"] == TINY["epoch_final"] == len(final["curves"])


def test_after_a_replanned_final_the_jobs_are_costed_on_its_epochs(replanned):
    from morphclimb.budget import image_passes
    from morphclimb.nash import attach
    with attach(replanned, {"baseline": True}) as climber:
        st = climber.state
        final = st.trained["final"]
        assert final["epochs"] != st.final_plan["epochs"]
        best = st.trained[final["parent"]]
        costs = forecast.after_climb_costs(climber, Linear(), best, len(st.decided))
        n_full, n_test = len(climber.split.train_full), len(climber.split.test)
        assert costs["final"] == PER_PASS * image_passes(final["epochs"], n_full, n_test)
        assert costs["baseline"] == PER_PASS * image_passes(final["lineage"], n_full, n_test)


def test_the_baseline_trains_as_long_as_the_answer(replanned, tmp_path):
    # a plan's answer trained more epochs than the config's total: so does the baseline
    from morphclimb.followups import run_baseline
    from morphclimb.nash import attach
    run = tmp_path / "run"
    shutil.copytree(replanned, run)
    (run / ".lock").unlink(missing_ok=True)
    with attach(run) as climber:
        lineage = climber.state.trained["final"]["lineage"]
        assert lineage > SearchConfig(**TINY).total_epochs
        assert run_baseline(climber)["epochs"] == lineage


def test_the_deadline_is_shared_among_the_final_trainings_still_to_run(monkeypatch):
    # two front members, an epoch of b three times an epoch of a: a gets a quarter of what is
    # left (less both test evaluations); once a's final is trained, b gets all that is left
    # (less its own evaluation)
    from types import SimpleNamespace
    sizes = {"a": 1.0, "b": 3.0}
    monkeypatch.setattr(forecast, "mflops", lambda arch: arch)
    monkeypatch.setattr(forecast, "time_model", lambda climber: SimpleNamespace(
        seconds=lambda m, passes: m * passes / 100))
    state = SimpleNamespace(final_plan={"members": ["a", "b"]}, trained={})
    split = SimpleNamespace(train_full=range(200), test=range(60))   # an eval: 20 passes
    climber = SimpleNamespace(state=state, split=split, c=SimpleNamespace(time_budget=100.0),
                              clock=lambda: 40.0, load_arch=sizes.get)
    evals = (1.0 + 3.0) * EVAL_SHARE * 60 / 100                     # 0.8 s
    assert forecast.final_deadline(climber, "final") == pytest.approx((60 - evals) / 4)
    assert forecast.final_deadline(climber, "final-b") == pytest.approx((60 - evals) * 3 / 4)
    state.trained["final"] = {}
    climber.clock = lambda: 70.0
    assert forecast.final_deadline(climber, "final-b") == pytest.approx(30 - 3 * 0.2)
    climber.clock = lambda: 130.0                                    # past the budget
    assert forecast.final_deadline(climber, "final-b") == 0.0


def test_a_pareto_search_plans_every_members_final_to_end_by_the_budget(tmp_path):
    import json

    from conftest import make_tiny_npz
    from morphclimb import starting_arch
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    small = tmp_path / "small.json"    # smaller than model_0: always on the first front
    small.write_text(json.dumps(starting_arch(3, 4, 8, widths=(2, 4, 4)).to_dict()))
    budget = 5.0    # the climb stops before step 1: the first front's members are finished
    hill_climb(cfg(npz, strategy="pareto", n_steps=1, n_neigh=2, n_draw=4, front_final=0,
                   epoch_pretrain=4,
                   extra_starts=(str(small), "resnet8"), time_budget=budget,
                   final_share=0.5), tmp_path / "run")
    st = RunDir.open(tmp_path / "run").state()
    finals = [r for r in st.trained.values() if r.get("role") == "final"]
    assert len(finals) == len(st.final_plan["members"]) >= 2
    for r in finals:
        assert r["deadline"] >= 0 and r["epochs"] == len(r["curves"]) >= TINY["epoch_final"]
    assert finals[0]["deadline"] < finals[0]["clock"] < budget     # a share, not all of it
    assert finals[-1]["clock"] < 1.5 * budget


def test_results_show_and_the_report_say_what_the_plan_gave_the_final(replanned, capsys,
                                                                      tmp_path):
    from morphclimb.cli import main
    from morphclimb.results import final_plan_text
    st = RunDir.open(replanned).state()
    final = st.trained["final"]
    res = json.loads((replanned / "results.json").read_text())
    assert res["climb"]["final_plan"] == {
        "epochs_planned": st.final_plan["epochs"], "seconds_left": st.final_plan["seconds_left"],
        "deadline_s": final["deadline"], "epochs": final["epochs"],
        "replans": len(final["replans"]), "seconds": final["seconds"]}
    line = final_plan_text(res["climb"]["final_plan"])
    assert line == (f"final training: planned at {st.final_plan['epochs']} epoch(s) for the "
                    f"~{st.final_plan['seconds_left']:.0f}s the climb left; re-planned "
                    f"{len(final['replans'])} time(s) as it ran to end within "
                    f"{final['deadline']:.0f}s: trained {final['epochs']} epoch(s) in "
                    f"{final['seconds']:.0f}s")
    assert main(["show", str(replanned)]) == 0
    assert line in capsys.readouterr().out
    run = tmp_path / "run"                    # what search / resume print at their end
    shutil.copytree(replanned, run)
    (run / ".lock").unlink(missing_ok=True)
    assert main(["resume", str(run), "--quiet"]) == 0
    assert line in capsys.readouterr().out
    from morphclimb.report import build_report
    build_report([replanned], replanned.parent / "report")
    assert line + "." in (replanned.parent / "report" / "report.html").read_text()


def test_a_plan_without_a_deadline_says_so_in_one_line():
    from morphclimb.results import final_plan_text
    assert final_plan_text({"epochs_planned": 47, "seconds_left": 1401.6, "epochs": 47}) == (
        "final training: planned at 47 epoch(s) for the ~1402s the climb left; trained 47 "
        "epoch(s)")


def test_a_plans_final_journaled_before_re_plans_is_restored_plainly(tiny_npz, tmp_path,
                                                                     fake_speed, monkeypatch):
    # fake_speed trains the final without re-plans (a plain cosine over the planned epochs),
    # as runs journaled before re-plans existed did; without its "deadline" the journal is
    # one of those: restoring it must train it plainly again, not replay a re-planned run
    out = tmp_path / "run"
    hill_climb(cfg(tiny_npz, time_budget=1000, final_share=0.9), out)
    lines = [json.loads(x) for x in (out / "journal.jsonl").read_text().splitlines()]
    for r in lines:
        if r.get("model") == "final":
            r.pop("deadline", None)
    (out / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    before = load_file(str(out / "models" / "final" / "weights.safetensors"))
    shutil.rmtree(out / "models" / "final")
    (out / ".lock").unlink(missing_ok=True)
    monkeypatch.undo()          # restored by today's code, re-plans and all
    resume(out)
    restored = RunDir.open(out).records("model_restored")
    assert [(r["model"], r["matches"]) for r in restored] == [("final", True)]
    after = load_file(str(out / "models" / "final" / "weights.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
