"""Runs written by morphclimb before the typed journal still load, resume, report and export.

tests/data/run_v0 was made by the version before events.py/state.py (commit f85079c) on the
tiny dataset of conftest.make_tiny_npz: n_steps 2, n_neigh 3, snapshot ensemble on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import make_tiny_npz
from morphclimb.cli import main
from morphclimb.nash import resume

OLD = Path(__file__).parent / "data" / "run_v0"


@pytest.fixture
def old_run(tmp_path):
    run = tmp_path / "run_v0"
    shutil.copytree(OLD, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["dataset"] = str(make_tiny_npz(tmp_path / "tiny.npz"))   # the same images
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def _summary(results: dict) -> dict:
    vals = {c["model"]: c["val_accuracy"] for s in results["steps"] for c in s["children"]}
    return {"arch": results["final"]["arch"], "test": results["final"]["test_accuracy"],
            "best": [s["best"] for s in results["steps"]], "vals": vals,
            "ensemble": results["snapshot_ensemble"]["test_accuracy"]}


def test_old_run_is_read_by_every_command(old_run, capsys):
    assert main(["show", str(old_run)]) == 0
    assert "final: test error" in capsys.readouterr().out
    assert main(["evaluate", str(old_run)]) == 0
    assert main(["report", str(old_run)]) == 0
    assert main(["export", str(old_run), "--format", "onnx", "--ensemble", "snapshot"]) == 0
    capsys.readouterr()


def test_old_run_killed_mid_step_resumes_to_its_own_result(old_run):
    want = _summary(json.loads((OLD / "results.json").read_text()))
    lines = (old_run / "journal.jsonl").read_text().splitlines(keepends=True)
    cut = next(k for k, x in enumerate(lines) if '"step_decided"' in x)
    (old_run / "journal.jsonl").write_text("".join(lines[: cut - 1]))   # mid step 1
    (old_run / "results.json").unlink()
    res = resume(old_run)
    assert _summary(res.results) == want
