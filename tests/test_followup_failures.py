"""A failure after the climb never costs the user the answer (issue 37): a follow-up job
(baseline, retraining, snapshot ensemble, equal-time reference) that fails is journaled as
failed, results.json and the answer are written, the other jobs still run, and the command
ends with exit status 1 and how to train it again or go without it."""

from __future__ import annotations

import json

import pytest

from conftest import TINY
from morphclimb import followups, worker
from morphclimb.cli import main
from morphclimb.journal import RunDir

DIVERGED = ("TrainingError: training diverged: the loss became nan at epoch 1, step 4 of 4 "
            "(try a lower lr_start)")


def _sets(npz, **kw):
    args = ["--dataset", npz, "--quiet"]
    for k, v in {**TINY, **kw}.items():
        args += ["--set", f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"]
    return args


@pytest.fixture
def failing(monkeypatch):
    """fail(model_id, reason): that model's training fails (as a diverged one does)."""
    monkeypatch.setattr(followups, "seconds_per_image", lambda *a, **k: 0.002)
    real = worker.run_task
    fails = {}

    def run_task(task, *a, **k):
        if task.model_id in fails:
            return worker.failed_outcome(task, fails[task.model_id])
        return real(task, *a, **k)
    monkeypatch.setattr(worker, "run_task", run_task)
    return fails


JOBS = {   # job -> (its failing model, the setting that goes without it)
    "reference": ("reference", "reference=null"),
    "baseline": ("baseline", "baseline=false"),
    "snapshots": ("snap01", "snapshot_ensemble=false"),
    "retrain": ("retrain", "retrain=false"),
}


@pytest.mark.parametrize("job", sorted(JOBS))
def test_a_failed_follow_up_keeps_the_answer_and_says_how_to_go_on(job, tiny_npz, tmp_path,
                                                                    failing, capsys):
    model, skip = JOBS[job]
    failing[model] = DIVERGED
    out = tmp_path / "run"
    every = dict(reference="resnet8", baseline=True, snapshot_ensemble=True, retrain=True,
                 final_model="search")
    assert main(["search", *_sets(tiny_npz, **every), "--out", str(out)]) == 1
    text = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["model"] == "final" and "test_error" in res["final"]
    assert res["climb"]["failed"] == {job: f"training {model} failed: {DIVERGED}"}
    st = RunDir.open(out).state()
    assert st.failed[model]["reason"].startswith(DIVERGED) and st.finished is not None
    for other, (m, _) in JOBS.items():      # the other jobs still ran
        if other != job:
            assert m in st.trained, other
    assert (st.ensemble("snapshot") is None) == (job == "snapshots")
    assert f"{job} failed: training {model} failed: {DIVERGED}; the run's answer (final) " \
           "stands" in text
    assert f"`morphclimb resume {out} --retry-failed --set lr_start=...`" in text
    assert f"`morphclimb resume {out} --set {skip}`" in text
    # resume repeats the failure (exit 1, nothing retrained) until told what to do
    assert main(["resume", str(out), "--quiet"]) == 1
    assert [r["model"] for r in RunDir.open(out).records("child_failed")] == [model]
    # going without it is journaled like any change, and ends cleanly
    failing.clear()
    assert main(["resume", str(out), "--quiet", "--set", skip]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["climb"]["failed"] == {} and model not in RunDir.open(out).state().trained
    key, value = skip.split("=")
    changed = RunDir.open(out).state().config_changes
    assert key in changed and changed[key] in (None, False)


def test_a_failed_follow_up_trains_again_with_retry_failed(tiny_npz, tmp_path, failing,
                                                           capsys):
    failing["reference"] = DIVERGED
    out = tmp_path / "run"
    assert main(["search", *_sets(tiny_npz, reference="resnet8"), "--out", str(out)]) == 1
    failing.clear()
    assert main(["resume", str(out), "--quiet", "--retry-failed"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["climb"]["failed"] == {} and "answer_minus_reference" in res["reference"]
    assert "reference" in RunDir.open(out).state().trained


def test_a_failed_retraining_that_was_the_answer_falls_back_to_the_final_model(
        tiny_npz, tmp_path, failing, capsys):
    failing["retrain"] = ("TrainingError: out of memory: training needs about 39.4 GiB "
                          "(batch 32, 9 parameters); 3.0 GiB are free")
    out = tmp_path / "run"
    assert main(["search", *_sets(tiny_npz, final_model="retrain"), "--out", str(out)]) == 1
    text = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["model"] == "final" and set(res["climb"]["failed"]) == {"retrain"}
    assert "the retrained network was to be the run's answer, which falls back to final" in text
    assert f"`morphclimb resume {out} --retry-failed --set batch_size=...`" in text
    assert f"`morphclimb resume {out} --set final_model=search`" in text
    assert main(["evaluate", str(out)]) == 0          # the answer works
    assert capsys.readouterr().out.startswith("final on test")
    failing.clear()
    assert main(["resume", str(out), "--quiet", "--set", "final_model=search"]) == 0
    assert json.loads((out / "results.json").read_text())["climb"]["failed"] == {}
