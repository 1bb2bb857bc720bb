"""Runs written by morphclimb before the typed journal still load, resume, report, export and
predict; without their dataset they say in one line what is missing.

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


def _png(tmp_path) -> Path:
    """One image of the tiny dataset's pattern (class c1), as a PNG file."""
    import numpy as np
    from PIL import Image
    z = np.load(make_tiny_npz(tmp_path / "new.npz", seed=3))
    path = tmp_path / "img.png"
    Image.fromarray(z["x_test"][int(np.flatnonzero(z["y_test"] == 1)[0])]).save(path)
    return path


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert len(cap.err.strip().splitlines()) == 1, cap.err
    return cap.err


def test_old_run_predicts_with_its_data(old_run, tmp_path, capsys):
    """An old run (no mean/std recorded) normalises with its dataset's, as it always did."""
    from morphclimb.predict import predict
    img = _png(tmp_path)
    assert main(["predict", str(old_run), str(img)]) == 0
    assert capsys.readouterr().out.startswith(f"{img}: c")
    data = tmp_path / "labelled" / "c1"
    data.mkdir(parents=True)
    shutil.copy(img, data / "a.png")
    assert main(["evaluate", str(old_run), "--data", str(data.parent)]) == 0
    assert "(1 images)" in capsys.readouterr().out
    assert main(["export", str(old_run), "--format", "safetensors", "--out",
                 str(tmp_path / "e")]) == 0
    assert predict(old_run, [img]).probabilities.shape == (1, 4)


def test_old_run_without_its_data_says_what_is_missing(tmp_path, capsys):
    run = tmp_path / "run_v0"
    shutil.copytree(OLD, run)   # its dataset, /tmp/oldrun_tiny.npz, is not there
    dataset = json.loads((run / "config.json").read_text())["dataset"]
    assert not Path(dataset).exists()
    img = _png(tmp_path)
    assert main(["show", str(run)]) == 0
    assert main(["report", str(run)]) == 0
    capsys.readouterr()
    for argv in (["predict", str(run), str(img)],
                 ["export", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")],
                 ["evaluate", str(run), "--data", str(tmp_path)]):
        err = _one_line_error(capsys, argv)
        assert "mean/std" in err and dataset in err and "resume" in err
    assert not (tmp_path / "m.onnx").exists()


def test_old_cifar_run_without_its_files_never_downloads(tmp_path, capsys, monkeypatch):
    import morphclimb.data.cifar as cifar

    def no_download(*a, **k):
        raise AssertionError("a download was started")
    monkeypatch.setattr(cifar, "fetch_archive", no_download)
    run = tmp_path / "run_v0"
    shutil.copytree(OLD, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg.update(dataset="cifar10", data_root=str(tmp_path / "empty"))
    (run / "config.json").write_text(json.dumps(cfg))
    err = _one_line_error(capsys, ["predict", str(run), str(_png(tmp_path))])
    assert "'cifar10'" in err and "mean/std" in err


def test_resuming_an_old_run_records_what_inference_needs(old_run, tmp_path):
    """Resumed once where its data is, an old run then predicts without it."""
    from morphclimb.journal import RunDir
    from morphclimb.predict import predict
    img = _png(tmp_path)
    want = predict(old_run, [img], ensemble="snapshot").probabilities
    resume(old_run)
    rec = RunDir(old_run).records("run_resumed")[-1]["dataset"]
    assert len(rec["mean"]) == 3 and rec["classes"] == ["c0", "c1", "c2", "c3"]
    Path(json.loads((old_run / "config.json").read_text())["dataset"]).unlink()
    assert (predict(old_run, [img], ensemble="snapshot").probabilities == want).all()
