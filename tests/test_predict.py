"""`morphclimb predict`: image files of other sizes, JPEGs and grey images for an RGB model get
the same probabilities as the same images evaluated through the image-folder dataset path."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import TINY
from morphclimb.build import build
from morphclimb.cli import main
from morphclimb.data import load_dataset
from morphclimb.errors import ConfigError, DataError, RunDirError
from morphclimb.journal import RunDir
from morphclimb.predict import image_files, load_images, predict
from morphclimb.train import predict_proba

SIZE = 8
CLASSES = ("blue", "green", "red")


def _pattern(rng, label, h, w):
    """A learnable RGB image: one strong colour channel per class, plus noise."""
    x = rng.integers(0, 90, size=(h, w, 3))
    x[:, :, 2 - label] += 130
    return np.clip(x, 0, 255).astype(np.uint8)


def _originals(folder, rng):
    """Images to predict: PNG and JPEG, RGB and grey, of the run's size and of other sizes.

    Returns [(path, label)]; names sort in creation order."""
    folder.mkdir(parents=True)
    kinds = [("png", "RGB", (SIZE, SIZE)), ("jpg", "RGB", (SIZE, SIZE)),
             ("png", "RGB", (13, 11)), ("jpeg", "RGB", (24, 20)), ("png", "L", (SIZE, SIZE)),
             ("jpg", "L", (17, 9)), ("png", "L", (5, 6)), ("jpg", "RGB", (4, 4))]
    out = []
    for i in range(12):
        label = i % len(CLASSES)
        ext, mode, (w, h) = kinds[i % len(kinds)]
        im = Image.fromarray(_pattern(rng, label, h, w)).convert(mode)
        path = folder / f"img{i:02d}.{ext}"
        im.save(path, quality=90) if ext != "png" else im.save(path)
        out.append((path, label))
    return out


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A tiny finished search (with a snapshot ensemble) on an image-folder tree whose test/
    holds the originals as a user would prepare them: resized with Pillow to the run's size."""
    from morphclimb.config import SearchConfig
    from morphclimb.nash import hill_climb
    root = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    tree = root / "tree"
    for i in range(96):
        label = i % len(CLASSES)
        d = tree / "train" / CLASSES[label]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_pattern(rng, label, SIZE, SIZE)).save(d / f"{i:03d}.png")
    originals = _originals(root / "originals", rng)
    for path, label in originals:
        d = tree / "test" / CLASSES[label]
        d.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            if im.size == (SIZE, SIZE):
                shutil.copy(path, d / path.name)  # the very same bytes (JPEGs too)
            else:
                im.resize((SIZE, SIZE)).save(d / (path.stem + ".png"))
    cfg = SearchConfig(dataset=str(tree), snapshot_ensemble=True,
                       **{**TINY, "batch_size": 16, "probe_size": 8, "n_neigh": 2})
    hill_climb(cfg, root / "run")
    return root / "run", tree, originals


def _dataset_order(tree, originals):
    """Indices into `originals` in the order the folder dataset lists its test images."""
    by_name = {(CLASSES[label], p.stem): i for i, (p, label) in enumerate(originals)}
    listing = sorted((CLASSES[label], f.name) for label in range(len(CLASSES))
                     for f in (tree / "test" / CLASSES[label]).iterdir())
    return [by_name[(c, name.rsplit(".", 1)[0])] for c, name in listing]


def test_predict_matches_the_dataset_path(folder_run):
    run_dir, tree, originals = folder_run
    paths = [p for p, _ in originals]
    pred = predict(run_dir, paths, device="cpu")
    assert pred.classes == CLASSES and pred.members == ["final"]
    assert pred.probabilities.shape == (len(paths), len(CLASSES))
    ds = load_dataset(tree)
    assert ds.channels == 3 and ds.image_size == (SIZE, SIZE)
    order = _dataset_order(tree, originals)
    # the pixels the model sees are the dataset's, bit for bit (grey -> RGB, JPEG decoding)
    x = load_images([paths[i] for i in order], (SIZE, SIZE), 3)
    np.testing.assert_array_equal(x, ds.test.x)
    run = RunDir(run_dir)
    from morphclimb.export import export_meta
    meta = export_meta(run, ["final"])
    ref = predict_proba(build(*run.load_model("final")), ds.test.x, mean=meta["mean"],
                        std=meta["std"], device="cpu")
    got = pred.probabilities[order]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    assert (got.argmax(1) == ref.argmax(1)).all()
    # and `evaluate` on the run's test set agrees with predict's top classes and probabilities
    from morphclimb.commands import evaluate_run
    r = evaluate_run(run_dir, "final", "test", "cpu")
    labels = np.array([originals[i][1] for i in order])
    assert r["n"] == len(paths)
    assert r["accuracy"] == pytest.approx(float((got.argmax(1) == labels).mean()))
    nll = -np.log(got[np.arange(len(labels)), labels]).mean()
    assert r["loss"] == pytest.approx(float(nll), abs=1e-5)


def test_snapshot_ensemble_averages_members(folder_run):
    run_dir, _, originals = folder_run
    paths = [p for p, _ in originals[:5]]
    pred = predict(run_dir, paths, ensemble="snapshot", device="cpu")
    run = RunDir(run_dir)
    members = run.records("ensemble_evaluated")[-1]["members"]
    assert pred.members == members and len(members) >= 2
    singles = [predict(run_dir, paths, model=m, device="cpu").probabilities for m in members]
    np.testing.assert_allclose(pred.probabilities, np.mean(singles, axis=0), atol=1e-6)


def test_cli_prints_top_classes_and_writes_csv_and_json(folder_run, tmp_path, capsys):
    run_dir, _, originals = folder_run
    folder = originals[0][0].parent
    assert image_files([folder]) == sorted(p for p, _ in originals)
    assert main(["predict", str(run_dir), str(folder), "--top", "2", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(originals)
    first = lines[0].split(": ", 1)
    assert first[0] == str(originals[0][0]) and len(first[1].split(", ")) == 2
    pred = predict(run_dir, [folder], device="cpu")
    out_csv, out_json = tmp_path / "p.csv", tmp_path / "sub" / "p.json"
    assert main(["predict", str(run_dir), str(folder), "--out", str(out_csv)]) == 0
    rows = list(csv.reader(out_csv.open()))
    assert rows[0] == ["image", "class_1", "probability_1", "class_2", "probability_2",
                       "class_3", "probability_3"]
    assert [r[0] for r in rows[1:]] == pred.images
    assert [r[1] for r in rows[1:]] == [CLASSES[j] for j in pred.probabilities.argmax(1)]
    assert main(["predict", str(run_dir), str(originals[2][0]), "--ensemble", "snapshot",
                 "--top", "9", "--out", str(out_json)]) == 0
    doc = json.loads(out_json.read_text())
    assert doc["classes"] == list(CLASSES) and len(doc["members"]) >= 2
    (p,) = doc["predictions"]
    assert p["image"] == str(originals[2][0]) and len(p["top"]) == len(CLASSES)
    assert sum(p["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert p["top"][0]["probability"] == max(p["probabilities"])
    capsys.readouterr()
    # an existing file is kept unless --force
    before = out_csv.read_text()
    assert main(["predict", str(run_dir), str(folder), "--out", str(out_csv), "--top", "1"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and out_csv.read_text() == before
    assert main(["predict", str(run_dir), str(folder), "--out", str(out_csv), "--top", "1",
                 "--force"]) == 0
    assert next(csv.reader(out_csv.open())) == ["image", "class_1", "probability_1"]


def test_errors_are_one_line(folder_run, tmp_path, capsys):
    run_dir, _, originals = folder_run
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    listing = sorted(p.name for p in run_dir.rglob("*"))
    cases = [
        ([str(bad)], "broken.png"),
        ([str(tmp_path / "missing.jpg")], "missing.jpg"),
        ([str(tmp_path)], "broken.png"),  # a folder holding an unreadable image
        ([str(originals[0][0]), "--model", "../final"], "path separators"),
        ([str(originals[0][0]), "--model", "nope"], "no model 'nope'"),
        ([str(originals[0][0]), "--top", "0"], "--top"),
        ([str(originals[0][0]), "--out", str(tmp_path / "p.txt")], ".csv or .json"),
        ([str(originals[0][0]), "--out", str(run_dir / "p.csv")], "inside the run directory"),
    ]
    for extra, needle in cases:
        assert main(["predict", str(run_dir), *extra]) == 2, extra
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("morphclimb: error:")
        assert needle in err and "Traceback" not in err, (extra, err)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="has no images"):
        predict(run_dir, [empty])
    with pytest.raises(RunDirError, match="not a morphclimb run directory"):
        predict(tmp_path, [originals[0][0]])
    with pytest.raises(ConfigError, match="unknown ensemble 'bagging'"):
        predict(run_dir, [originals[0][0]], ensemble="bagging")
    assert sorted(p.name for p in run_dir.rglob("*")) == listing  # nothing written in the run
