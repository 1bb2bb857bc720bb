"""A command that reports success leaves a result that works (issue 37): a checkpoint's
weights are checked when read (they fit the architecture, float32 with int64 BatchNorm
counters, finite; one line naming the tensor otherwise), an export is loaded back before
it counts, predict never prints a NaN probability, and the journal's configuration is the
run's (an edited config.json is refused)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TINY, make_tiny_npz
from morphclimb import journal
from morphclimb.cli import main
from morphclimb.config import SearchConfig
from morphclimb.nash import hill_climb


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    root = tmp_path_factory.mktemp("works")
    npz = str(make_tiny_npz(root / "tiny.npz"))
    hill_climb(SearchConfig(**{**TINY, "dataset": npz, "n_steps": 1}), root / "run")
    img = root / "img.png"
    from PIL import Image
    Image.new("RGB", (8, 8), (200, 30, 30)).save(img)
    return root / "run", img


@pytest.fixture
def run(done, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(done[0], dst)
    return dst


def _one_line(capsys, code, want=2):
    out, err = capsys.readouterr()
    assert code == want, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def _edit_weights(run, change):
    path = run / "models" / "final" / "weights.safetensors"
    w = load_file(str(path))
    change(w)
    save_file(w, str(path))
    return path


def _first_conv(w):
    return next(k for k in sorted(w) if k.endswith(".weight") and w[k].dim() == 4)


DAMAGE = {
    "float16": (lambda w: w.update({(k := _first_conv(w)): w[k].half()}), "is float16, not float32"),
    "float64": (lambda w: w.update({(k := _first_conv(w)): w[k].double()}),
                "is float64, not float32"),
    "int64": (lambda w: w.update({(k := _first_conv(w)): w[k].long()}), "is int64, not float32"),
    "bool": (lambda w: w.update({(k := _first_conv(w)): w[k] > 0}), "is bool, not float32"),
    "nan": (lambda w: w[_first_conv(w)].view(-1).__setitem__(0, float("nan")),
            "holds NaN or infinite values"),
    "inf": (lambda w: w[_first_conv(w)].view(-1).__setitem__(3, float("-inf")),
            "holds NaN or infinite values"),
    "shape": (lambda w: w.update({(k := _first_conv(w)): w[k][:1]}),
              "the weights do not fit the architecture: wrong shape"),
    "extra": (lambda w: w.update({"layers.ghost.weight": torch.zeros(2)}),
              "the weights do not fit the architecture: unexpected ['layers.ghost.weight']"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("argv", [["export", "--format", "safetensors"],
                                  ["export", "--format", "torchscript"], ["predict"],
                                  ["evaluate"]])
def test_weights_that_do_not_work_are_refused_naming_the_tensor(run, done, capsys, damage,
                                                                argv):
    change, needle = DAMAGE[damage]
    path = _edit_weights(run, change)
    args = [argv[0], str(run), *argv[1:]] + ([str(done[1])] if argv[0] == "predict" else [])
    err = _one_line(capsys, main(args))
    assert str(path) in err and needle in err, err
    if damage not in ("shape", "extra"):
        assert "tensor layers." in err
    assert not (run / "export").exists() or not any((run / "export").iterdir())


def test_an_export_that_does_not_load_back_is_refused_and_removed(run, capsys, monkeypatch):
    real = journal.save_checkpoint

    def half(directory, arch, weights, meta=None):   # an exporter that writes float16
        return real(directory, arch, {k: v.half() if v.is_floating_point() else v
                                      for k, v in weights.items()}, meta)
    monkeypatch.setattr(journal, "save_checkpoint", half)
    out = run.parent / "bundle"
    err = _one_line(capsys, main(["export", str(run), "--format", "safetensors", "--out",
                                  str(out)]))
    assert f"export {out} did not load back" in err and "nothing was kept" in err
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["safetensors", "torchscript", "onnx"])
def test_a_good_export_loads_back(run, capsys, fmt):
    assert main(["export", str(run), "--format", fmt]) == 0
    assert list((run / "export").iterdir())


def test_predict_never_prints_nan(run, done, capsys):
    """Finite weights that overflow on an input: an error naming the image, not NaN."""
    def huge(w):
        fc = next(k for k in sorted(w) if k.endswith(".weight") and w[k].dim() == 2)
        w[fc] = torch.full_like(w[fc], 3e38)
    _edit_weights(run, huge)
    err = _one_line(capsys, main(["predict", str(run), str(done[1])]), want=1)
    assert "outputs for" in err and "img.png" in err and "are not finite" in err
    out, _ = capsys.readouterr()
    assert "nan" not in out.lower()


@pytest.mark.parametrize("argv", [["resume"], ["show"], ["evaluate"]])
def test_an_edited_config_json_is_refused(run, capsys, argv):
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "n_steps": 10 ** 12}))
    err = _one_line(capsys, main([argv[0], str(run)]))
    assert "config.json differs from the configuration the run started with" in err
    assert "in n_steps;" in err and "morphclimb resume RUN_DIR --set" in err
    (run / "config.json").write_text(json.dumps(cfg))       # restored: reads as before
    assert main(["show", str(run)]) == 0


def test_config_json_may_point_a_moved_run_at_its_data(run, done, capsys):
    from morphclimb.journal import RunDir
    cfg = json.loads((run / "config.json").read_text())
    moved = run.parent / "moved.npz"
    shutil.copy(cfg["dataset"], moved)
    (run / "config.json").write_text(json.dumps({**cfg, "dataset": str(moved)}))
    assert RunDir.open(run).config()["dataset"] == str(moved)
    assert main(["evaluate", str(run)]) == 0
