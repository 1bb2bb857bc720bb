"""A run stands on its own: moved to another path with its dataset deleted, it still predicts,
exports (every format), shows, reports, and evaluates labelled images the user names
(`evaluate --data`); what inference needs was recorded when it started, and what it reads
from its journal is checked like all run-directory data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import morphclimb.data.load as data_load
from conftest import TINY, make_tiny_npz
from morphclimb.build import build
from morphclimb.cli import main
from morphclimb.commands import evaluate_run
from morphclimb.errors import DataError
from morphclimb.export import read_meta
from morphclimb.journal import RunDir
from morphclimb.predict import predict
from morphclimb.preprocess import of_run
from morphclimb.train import predict_proba
from test_export import _run_export

pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")


def _new_images(folder: Path, labels: tuple[int, ...], seed: int, per_class: int = 5
                ) -> list[tuple[Path, int]]:
    """Images the run never saw (the tiny dataset's pattern, another seed), as PNG files in
    folder/c<k>/; returns [(path, label)] in sorted order."""
    folder.mkdir(parents=True)
    npz = make_tiny_npz(folder.parent / f".{folder.name}.npz", seed=seed)
    with np.load(npz) as f:
        z = {k: f[k] for k in ("x_test", "y_test")}
    npz.unlink()
    out = []
    for k in labels:
        (folder / f"c{k}").mkdir(parents=True)
        for i in np.flatnonzero(z["y_test"] == k)[:per_class]:
            path = folder / f"c{k}" / f"{i:03d}.png"
            Image.fromarray(z["x_test"][i]).save(path)
            out.append((path, k))
    return sorted(out)


def _reference(run_dir, members, split, paths) -> np.ndarray:
    """The members' averaged probabilities, normalised with the training split's own mean/std
    (computed from the data while it still existed)."""
    x = np.stack([np.asarray(Image.open(p)) for p in paths])
    run = RunDir(run_dir)
    return np.mean([predict_proba(build(*run.load_model(m)), x, mean=split.mean, std=split.std)
                    for m in members], axis=0)


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """A tiny finished search (snapshot ensemble on), then its dataset deleted and its run
    directory moved elsewhere."""
    from morphclimb.config import SearchConfig
    from morphclimb.nash import hill_climb
    root = tmp_path_factory.mktemp("standalone")
    (root / "data").mkdir()
    cfg = SearchConfig(dataset=str(make_tiny_npz(root / "data" / "tiny.npz")),
                       snapshot_ensemble=True, **TINY)
    hill_climb(cfg, root / "run")
    _, split = data_load.load_split(cfg)
    new = _new_images(root / "new", (1, 3), seed=7)          # a subset of the classes
    tree = _new_images(root / "tree" / "test", (0, 2), seed=8)
    _new_images(root / "tree" / "train", (0,), seed=9)        # ignored: test/ is scored
    shutil.rmtree(root / "data")
    (root / "elsewhere").mkdir()
    run = Path(shutil.move(str(root / "run"), str(root / "elsewhere" / "run")))
    members = RunDir(run).records("ensemble_evaluated")[-1]["members"]
    return SimpleNamespace(run=run, split=split, new=new, new_dir=root / "new", tree=tree,
                           tree_dir=root / "tree", members=members, dataset=cfg.dataset)


@pytest.fixture
def no_data_reads(monkeypatch):
    """Any attempt to load a dataset fails the test."""
    def refuse(*a, **k):
        raise AssertionError("the dataset was read")
    monkeypatch.setattr(data_load, "load_dataset", refuse)
    monkeypatch.setattr(data_load, "load_split", refuse)


def test_run_records_what_inference_needs(moved):
    info = RunDir(moved.run).records("run_started")[0]["dataset"]
    assert info["mean"] == list(moved.split.mean) and info["std"] == list(moved.split.std)
    assert info["classes"] == ["c0", "c1", "c2", "c3"]
    assert info["image_size"] == [8, 8] and info["channels"] == 3
    pre = of_run(RunDir(moved.run))
    assert pre.source == "run" and pre.mean == moved.split.mean and pre.std == moved.split.std


def test_predict_files_and_folders_without_the_dataset(moved, tmp_path, capsys, no_data_reads):
    assert not Path(moved.dataset).exists()
    paths = [p for p, _ in moved.new]
    files = predict(moved.run, [str(p) for p in paths[:3]])
    np.testing.assert_allclose(files.probabilities,
                               _reference(moved.run, ["final"], moved.split, paths[:3]),
                               atol=1e-6, rtol=0)
    folder = predict(moved.run, [moved.new_dir], ensemble="snapshot")
    assert folder.images == [str(p) for p in paths]
    np.testing.assert_allclose(folder.probabilities,
                               _reference(moved.run, moved.members, moved.split, paths),
                               atol=1e-6, rtol=0)
    assert folder.classes == ("c0", "c1", "c2", "c3")
    out = tmp_path / "p.json"
    assert main(["predict", str(moved.run), str(moved.new_dir), "--out", str(out)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(paths) + 1
    assert len(json.loads(out.read_text())["predictions"]) == len(paths)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors"])
def test_export_every_format_without_the_dataset(moved, tmp_path, capsys, fmt, no_data_reads):
    out = tmp_path / f"m-{fmt}"
    assert main(["export", str(moved.run), "--format", fmt, "--ensemble", "snapshot",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    meta = read_meta(out)
    assert meta["mean"] == list(moved.split.mean) and meta["std"] == list(moved.split.std)
    assert meta["classes"] == ["c0", "c1", "c2", "c3"] and meta["input_shape"][1:] == [8, 8, 3]
    paths = [p for p, _ in moved.new]
    x = np.stack([np.asarray(Image.open(p)) for p in paths])
    want = _reference(moved.run, moved.members, moved.split, paths)
    assert np.abs(_run_export(out, fmt, x) - want).max() <= 1e-4


def test_show_and_report_without_the_dataset(moved, tmp_path, capsys, no_data_reads):
    assert main(["show", str(moved.run)]) == 0
    assert "final: test error" in capsys.readouterr().out
    assert main(["show", str(moved.run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dataset"]["mean"] == list(moved.split.mean)
    assert main(["report", str(moved.run), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.html").is_file()


@pytest.mark.parametrize("which", ["classes", "test_tree"])
def test_evaluate_scores_a_labelled_folder(moved, capsys, which, no_data_reads):
    images, folder = (moved.new, moved.new_dir) if which == "classes" else (
        moved.tree, moved.tree_dir)
    paths, labels = [p for p, _ in images], np.array([k for _, k in images])
    ref = _reference(moved.run, ["final"], moved.split, paths)
    r = evaluate_run(moved.run, data=folder)
    assert r["n"] == len(paths) and r["on"] == str(folder)
    assert r["accuracy"] == pytest.approx(float((ref.argmax(1) == labels).mean()))
    nll = -np.log(ref[np.arange(len(labels)), labels]).mean()
    assert r["loss"] == pytest.approx(float(nll), rel=1e-4)
    assert main(["evaluate", str(moved.run), "--data", str(folder)]) == 0
    assert f"final on {folder} ({len(paths)} images)" in capsys.readouterr().out


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1, cap.err
    return cap.err


def test_evaluate_data_errors_are_one_line(moved, tmp_path, capsys):
    run = str(moved.run)
    bad = tmp_path / "bad"
    shutil.copytree(moved.new_dir, bad)
    (bad / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(bad / "dog" / "x.png")
    err = _one_line_error(capsys, ["evaluate", run, "--data", str(bad)])
    assert "'dog'" in err and "c0, c1, c2, c3" in err
    shutil.rmtree(bad / "dog")
    (bad / "c0").mkdir()
    assert "c0 has no images" in _one_line_error(capsys, ["evaluate", run, "--data", str(bad)])
    assert "no such folder" in _one_line_error(capsys, ["evaluate", run, "--data",
                                                        str(tmp_path / "nope")])
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "x.png")
    assert "no class folders" in _one_line_error(capsys, ["evaluate", run, "--data",
                                                          str(tmp_path / "flat")])
    assert "give one of them" in _one_line_error(
        capsys, ["evaluate", run, "--data", str(moved.new_dir), "--part", "val"])
    err = _one_line_error(capsys, ["evaluate", run])   # its own test set: needs the dataset
    assert moved.dataset in err and "--data" in err


def _damage(run: Path, change) -> None:
    lines = (run / "journal.jsonl").read_text().splitlines(keepends=True)
    rec = json.loads(lines[0])
    change(rec["dataset"])
    lines[0] = json.dumps(rec) + "\n"
    (run / "journal.jsonl").write_text("".join(lines))


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


@pytest.mark.parametrize("change, needle", [
    (_set("mean", [0.5, float("nan"), 0.5]), "mean"),
    (_set("mean", [0.5, 0.5]), "mean"),
    (_set("mean", "0.5"), "mean"),
    (_set("std", [0.2, 0.0, 0.2]), "std"),
    (_set("std", [0.2, 0.2, float("inf")]), "std"),
    (_set("std", [0.2, True, 0.2]), "std"),
    (lambda d: d.pop("std"), "lacks std"),
    (_set("classes", "c0"), "classes"),
    (_set("classes", ["c0", "c0", "c1", "c2"]), "classes"),
    (_set("classes", ["c0", 1, "c2", "c3"]), "classes"),
    (_set("classes", ["c0", "c1", "c2"]), "num_classes"),
    (lambda d: (d.__setitem__("classes", ["a", "b", "c"]), d.pop("num_classes")),
     "predicts 4 outputs per image; the run records 3 classes"),
    (_set("image_size", [0, 8]), "image_size"),
    (_set("image_size", [8, 8, 8]), "image_size"),
    (_set("image_size", [16, 16]), "reads 3-channel 8x8 images"),
    (_set("channels", True), "channels"),
    (_set("channels", 7), "channels"),
    (lambda d: d.clear(), "did not record its input normalisation"),   # as an old run
])
def test_recorded_preprocessing_is_checked(moved, tmp_path, capsys, change, needle):
    run = tmp_path / "run"
    shutil.copytree(moved.run, run)
    _damage(run, change)
    image = str(moved.new[0][0])
    assert needle in _one_line_error(capsys, ["predict", str(run), image])
    assert needle in _one_line_error(capsys, ["export", str(run), "--format", "safetensors",
                                              "--out", str(tmp_path / "e")])
    assert needle in _one_line_error(capsys, ["evaluate", str(run), "--data",
                                              str(moved.new_dir)])
    assert not (tmp_path / "e").exists()


def test_a_bad_record_is_not_silently_replaced_by_the_dataset(moved, tmp_path):
    """A run that records mean/std uses them or fails; it never falls back to the data."""
    run = tmp_path / "run"
    shutil.copytree(moved.run, run)
    _damage(run, _set("std", None))
    with pytest.raises(Exception, match="std") as e:
        of_run(RunDir(run))
    assert not isinstance(e.value, DataError)


def test_evaluate_on_its_own_test_set_checks_the_data_is_the_same(moved, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(moved.run, run)
    cfg_path = run / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dataset"] = str(make_tiny_npz(tmp_path / "same.npz"))      # the same images again
    cfg_path.write_text(json.dumps(cfg))
    want = RunDir(run).records("model_trained")
    want = next(r for r in want if r["model"] == "final")["test_accuracy"]
    assert evaluate_run(run)["accuracy"] == pytest.approx(want)
    cfg["dataset"] = str(make_tiny_npz(tmp_path / "other.npz", classes=3))
    cfg_path.write_text(json.dumps(cfg))
    err = _one_line_error(capsys, ["evaluate", str(run)])
    assert "has changed since the run was made" in err and "classes" in err
