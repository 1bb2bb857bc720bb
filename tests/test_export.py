"""Exports take raw uint8 images and give the trained model's probabilities (round trips)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphclimb.build import build
from morphclimb.cli import main
from morphclimb.errors import ConfigError, RunDirError
from morphclimb.export import export_run, load_safetensors_export, read_meta
from morphclimb.journal import RunDir
from morphclimb.train import predict_proba
from test_report import finished_run  # noqa: F401  (the shared tiny search)

pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")


def _images(run_dir):
    meta_cfg = RunDir(run_dir).config()
    return np.load(meta_cfg["dataset"])["x_test"][:20]


def _reference(run_dir, members, meta, x):
    run = RunDir(run_dir)
    probs = [predict_proba(build(*run.load_model(m)), x, mean=meta["mean"], std=meta["std"])
             for m in members]
    return np.mean(probs, axis=0)


def _run_export(path, fmt, x):
    if fmt == "onnx":
        import onnxruntime as ort
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].type == "tensor(uint8)"
        return sess.run(None, {"images": x})[0]
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(path))(torch.from_numpy(x)).numpy()
    model, _ = load_safetensors_export(path)
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors"])
@pytest.mark.parametrize("ensemble", [None, "snapshot"])
def test_export_round_trip(finished_run, tmp_path, fmt, ensemble):  # noqa: F811
    path = export_run(finished_run, fmt, ensemble=ensemble, out=tmp_path / f"m-{fmt}")
    meta = read_meta(path)
    want = ["final"] if ensemble is None else RunDir(finished_run).records(
        "ensemble_evaluated")[-1]["members"]
    assert meta["members"] == want and len(want) >= (2 if ensemble else 1)
    assert meta["classes"] == ["c0", "c1", "c2", "c3"] and meta["input_shape"][1:] == [8, 8, 3]
    x = _images(finished_run)
    ref = _reference(finished_run, want, meta, x)
    got = _run_export(path, fmt, x)
    assert got.shape == (20, 4)
    tol = 0.0 if fmt == "safetensors" else 1e-4
    assert np.abs(got - ref).max() <= tol
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert np.abs(_run_export(path, fmt, x[:3]) - ref[:3]).max() <= max(tol, 1e-6)  # any batch


def test_export_cli_and_errors(finished_run, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "f.onnx"
    assert main(["export", str(finished_run), "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file() and "uint8" in capsys.readouterr().out
    assert main(["export", str(finished_run), "--format", "onnx", "--model", "nope"]) == 2
    with pytest.raises(ConfigError, match="unknown export format 'pickle'"):
        export_run(finished_run, "pickle")
    with pytest.raises(RunDirError, match="not a morphclimb run directory"):
        export_run(tmp_path, "onnx")
    run2 = tmp_path / "copy"
    run2.mkdir()
    (run2 / "config.json").write_text((finished_run / "config.json").read_text())
    with pytest.raises(RunDirError, match="no snapshot ensemble"):
        export_run(run2, "onnx", ensemble="snapshot")
