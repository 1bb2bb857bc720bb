"""Export a run's final model (or snapshot ensemble) to ONNX, TorchScript or safetensors.

Every exported model takes RAW images: a uint8 tensor of shape (N, H, W, C) with values
0..255, channels in the training data's order (RGB for CIFAR), exactly what the dataset
arrays hold. It normalises them with the run's training mean/std itself and returns class
probabilities (N, classes) as float32 (softmax; the uniform average over ensemble members).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .augment import normalizer
from .build import build
from .errors import ConfigError, RunDirError
from .journal import RunDir, no_link
from .preprocess import check_fits, of_run

FORMATS = ("onnx", "torchscript", "safetensors")
META_FORMAT = "morphclimb.export/1"
INPUT = "uint8 images (N, H, W, C), values 0..255, channel order of the training data"
OUTPUT = "float32 class probabilities (N, classes): softmax, averaged over ensemble members"
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ""}


class RawImageClassifier(nn.Module):
    """Members plus input normalisation: uint8 (N, H, W, C) in, averaged softmax out."""

    def __init__(self, members: list[nn.Module], mean, std):
        super().__init__()
        self.members = nn.ModuleList(members)
        scale, shift = normalizer(mean, std, len(tuple(mean)), "cpu")
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # augment.to_float's arithmetic, written so that ONNX and TorchScript can trace it
        x = images.permute(0, 3, 1, 2).to(torch.float32) * self.scale - self.shift
        probs = torch.softmax(self.members[0](x), dim=1)
        for m in self.members[1:]:
            probs = probs + torch.softmax(m(x), dim=1)
        return probs / len(self.members)


def member_ids(run: RunDir, model: str | None = None, ensemble: str | None = None
               ) -> list[str]:
    """The model ids to export: one model (default: the run's model, `final` unless
    final_model=retrain), or the members of the run's snapshot ensemble."""
    if ensemble is None:
        return [run.pick_model(model)]
    if ensemble != "snapshot":
        raise ConfigError(f"unknown ensemble {ensemble!r}; the only one is 'snapshot'")
    rec = run.state().ensemble("snapshot")
    if rec is None:
        raise RunDirError(f"{run.path} has no snapshot ensemble; build it with "
                          f"`morphclimb ensemble {run.path}` first")
    return list(rec["members"])


def export_meta(run: RunDir, members: list[str]) -> dict[str, Any]:
    """Input/output convention, normalisation constants and class names of an export, as the
    run recorded them when it started (the training data is not read; see preprocess.py)."""
    pre = of_run(run)
    for mid in members:
        check_fits(run.load_arch(mid), pre, f"model {mid} of {run.path}")
    h, w = pre.image_size
    return {"format": META_FORMAT, "input": INPUT, "output": OUTPUT,
            "input_shape": ["N", h, w, pre.channels], "mean": list(pre.mean),
            "std": list(pre.std), "classes": list(pre.classes),
            "members": members, "run_dir": str(run.path)}


def wrap(run: RunDir, members: list[str], meta: dict[str, Any]) -> RawImageClassifier:
    """The members' networks (float32, eval mode) wrapped to take raw images."""
    nets = []
    for mid in members:
        arch, weights = run.load_model(mid)
        nets.append(build(arch, weights, dtype=torch.float32))
    return RawImageClassifier(nets, meta["mean"], meta["std"]).eval()


def _example(meta: dict[str, Any]) -> torch.Tensor:
    _, h, w, c = meta["input_shape"]
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, h, w, c), dtype=torch.uint8, generator=gen)


def _onnx(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    import onnx
    torch.onnx.export(model, (_example(meta),), str(path), input_names=["images"],
                      output_names=["probabilities"], opset_version=17, dynamo=False,
                      dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}})
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "morphclimb", json.dumps(meta)
    onnx.save(proto, str(path))


def _torchscript(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(model, (_example(meta),))
    torch.jit.save(traced, str(path), _extra_files={"morphclimb.json": json.dumps(meta)})


def _safetensors(run: RunDir, members: list[str], meta: dict[str, Any], path: Path) -> None:
    from . import journal
    models = [(mid, *run.load_model(mid)) for mid in members]   # checked before any write
    path.mkdir(parents=True, exist_ok=True)
    for mid, arch, weights in models:
        journal.save_checkpoint(path / mid, arch, weights, {"model": mid})
    (path / "export.json").write_text(json.dumps(meta, indent=1))


def export_run(run_dir: str | Path, fmt: str, *, model: str | None = None,
               ensemble: str | None = None, out: str | Path | None = None,
               force: bool = False) -> Path:
    """Export a run's model (or snapshot ensemble) to `fmt`; returns the written path.

    The default path is `<run>/export/<model or snapshot-ensemble>` plus .onnx or .pt
    (a folder for safetensors: export.json + one arch.json/weights.safetensors per member).
    An existing file or folder at `out` is never overwritten unless `force`.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":   # an optional dependency: checked before anything is written
        from .extras import require
        require("onnx", "export --format onnx")
    run = RunDir.open(run_dir)
    members = member_ids(run, model, ensemble)
    meta = export_meta(run, members)
    name = f"{ensemble}-ensemble" if ensemble else members[0]
    if out is None:
        no_link(run.path / "export")
        path = run.path / "export" / (name + SUFFIX[fmt])
    else:
        path = Path(out)
        if path.exists() and not force:
            raise RunDirError(f"{path} already exists; pick another --out or pass --force to "
                              "overwrite it")
    from .paths import cannot_create, check_creatable, make_dir
    make_dir(check_creatable(path, "export").parent, "export folder")
    model_ = None if fmt == "safetensors" else wrap(run, members, meta)
    try:
        if model_ is None:
            _safetensors(run, members, meta, path)
        else:
            with warnings.catch_warnings():  # torch marks both exporters used as deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                (_onnx if fmt == "onnx" else _torchscript)(model_, meta, path)
    except OSError as e:
        raise cannot_create("export", path, e) from e
    check_export(fmt, path, model_ if model_ is not None else wrap(run, members, meta), meta)
    return path


def check_export(fmt: str, path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Load what export wrote back with its own loader and classify the example batch: the
    same probabilities as the run's networks (finite, summing to 1), else RunDirError (the
    broken file is removed). ONNX, which has no loader here, is checked by onnx's checker."""
    import shutil
    x = _example(meta)
    with torch.no_grad():
        want = model(x)
    try:
        if fmt == "safetensors":
            loaded = load_safetensors_export(path)[0]
        elif fmt == "torchscript":
            with warnings.catch_warnings():   # torch marks torch.jit as deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                loaded = torch.jit.load(str(path))
        else:
            import onnx
            onnx.checker.check_model(str(path))
            loaded = None
        if loaded is not None:
            with torch.no_grad():
                got = loaded(x)
            if not (torch.isfinite(got).all() and torch.allclose(got, want, atol=1e-5)):
                raise RunDirError("its probabilities differ from the run's model's")
    except Exception as e:  # noqa: BLE001 - any loader's failure means a broken export
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        said = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RunDirError(f"export {path} did not load back ({said[:200]}); nothing was "
                          "kept") from e


def load_safetensors_export(path: str | Path) -> tuple[RawImageClassifier, dict[str, Any]]:
    """Rebuild a safetensors export as a RawImageClassifier (and return its metadata)."""
    from .journal import load_checkpoint
    p = Path(path)
    meta_path = p / "export.json"
    if not meta_path.is_file():
        raise RunDirError(f"{p} is not a morphclimb safetensors export (no export.json)")
    meta = json.loads(meta_path.read_text())
    nets = []
    for mid in meta["members"]:
        arch, weights = load_checkpoint(p / mid)
        nets.append(build(arch, weights, dtype=torch.float32))
    return RawImageClassifier(nets, meta["mean"], meta["std"]).eval(), meta


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata stored in any export (ONNX metadata, TorchScript extra file, export.json)."""
    p = Path(path)
    if p.is_dir():
        return json.loads((p / "export.json").read_text())
    if not p.is_file():
        raise RunDirError(f"{p} is not an export (no such file or folder)")
    import zipfile
    if not zipfile.is_zipfile(p):  # TorchScript archives are zip files; ONNX is protobuf
        import onnx
        props = {e.key: e.value for e in onnx.load(str(p), load_external_data=False).metadata_props}
        return json.loads(props["morphclimb"])
    extra = {"morphclimb.json": ""}
    torch.jit.load(str(p), _extra_files=extra)
    return json.loads(extra["morphclimb.json"])
