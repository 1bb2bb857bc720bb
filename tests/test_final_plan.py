"""A time budget's plan for the answer (issue 22): `final_share` reserves a share of the budget
for the final training, whose epochs then fill what the climb left (journaled once)."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import TINY
from morphclimb import forecast
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
    monkeypatch.setattr(forecast, "time_model", lambda climber: Linear())


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
