"""Class probabilities of a run's model (or snapshot ensemble) for image files.

Each file is decoded exactly as an image-folder dataset decodes it (`data.images.decode`),
resized to the run's image size with Pillow's bicubic filter (`data.images.resize`: the same
as resizing the file with Pillow's defaults first), and converted to the run's channel count
as a dataset mixing channel counts converts its images (`data.images.convert_channels`: a grey
image becomes RGB for an RGB model). It is then normalised with the run's training mean/std
and classified by `train.predict_proba`; an ensemble averages its members' probabilities.
The image size, channels, mean/std and class names are those the run recorded when it
started (preprocess.py): the training data is never read. `labelled_images` loads a user's
labelled folder tree the same way, for `evaluate --data`. Nothing here prints, and nothing is
written into the run directory.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.core import ImageData
from .data.folder import EXTENSIONS as FOLDER_EXTENSIONS  # what folders are searched for
from .errors import ConfigError, DataError

OUT_FORMATS = (".csv", ".json")


@dataclass(frozen=True)
class Predictions:
    """Probabilities (N, classes) for `images`, with the class names and what predicted them."""

    run_dir: str
    members: list[str]
    classes: tuple[str, ...]
    images: list[str]
    probabilities: np.ndarray
    image_size: tuple[int, int]
    channels: int

    def top(self, k: int = 3) -> list[list[tuple[str, float]]]:
        """The k most probable (class name, probability) of every image, most probable first."""
        k = check_top(k, len(self.classes))
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [[(self.classes[j], float(p[j])) for j in row]
                for row, p in zip(order, self.probabilities, strict=True)]

    def to_json(self, k: int = 3) -> dict:
        """A JSON-ready dict: the run, its members and classes, and each image's top k and
        full probability vector."""
        return {"run_dir": self.run_dir, "members": self.members, "classes": list(self.classes),
                "image_size": list(self.image_size), "channels": self.channels,
                "predictions": [
                    {"image": name, "top": [{"class": c, "probability": p} for c, p in top],
                     "probabilities": [float(v) for v in probs]}
                    for name, top, probs in zip(self.images, self.top(k), self.probabilities,
                                                strict=True)]}

    def to_csv(self, k: int = 3) -> str:
        """CSV text: image, then class_i and probability_i for the top k (i = 1..k)."""
        k = check_top(k, len(self.classes))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image"] + [f"{h}_{i}" for i in range(1, k + 1)
                                for h in ("class", "probability")])
        for name, top in zip(self.images, self.top(k), strict=True):
            w.writerow([name] + [v for c, p in top for v in (c, f"{p:.6f}")])
        return buf.getvalue()


def check_top(k: int, num_classes: int | None = None) -> int:
    """`k` capped at the number of classes; ConfigError unless it is at least 1."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"--top must be a whole number of at least 1, got {k!r}")
    return k if num_classes is None else min(k, num_classes)


def image_files(inputs: list[str | Path]) -> list[Path]:
    """The image files named by `inputs`: files as given, folders walked (sorted, recursively)
    for *.png, *.jpg and *.jpeg, skipping hidden files and folders."""
    if not inputs:
        raise DataError("no images given")
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = []
            for folder, dirs, files in os.walk(p):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [Path(folder) / f for f in files if not f.startswith(".")
                          and f.lower().endswith(FOLDER_EXTENSIONS)]
            if not found:
                raise DataError(f"folder {p} has no images (*.png, *.jpg, *.jpeg)")
            out += sorted(found, key=lambda f: f.relative_to(p).parts)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"no such image file or folder: {p}")
    return out


def load_image(path: str | Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file as uint8 (H, W, C) of the given size and channel count (see module doc)."""
    from .data.images import convert_channels, decode, resize
    try:
        arr = decode(path, path)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever else a malformed file raises: name it
        raise DataError(f"cannot read image {path}: {e}") from e
    return convert_channels(resize(arr, size), channels)


def load_images(paths: list[Path], size: tuple[int, int], channels: int) -> np.ndarray:
    """`load_image` of every path, stacked to uint8 (N, H, W, C)."""
    out = np.empty((len(paths), *size, channels), dtype=np.uint8)
    for i, p in enumerate(paths):
        out[i] = load_image(p, size, channels)
    return out


def predict(run_dir: str | Path, inputs: list[str | Path], *, model: str | None = None,
            ensemble: str | None = None, device=None) -> Predictions:
    """Probabilities of a run's model (or `ensemble='snapshot'`) for image files or folders."""
    from .build import build
    from .device import resolve_device
    from .ensemble import ensemble_proba
    from .export import export_meta, member_ids
    from .journal import RunDir
    from .nash import run_config
    run = RunDir.open(run_dir)
    members = member_ids(run, model, ensemble)
    paths = image_files(inputs)
    meta = export_meta(run, members)   # recorded in the run: the training data is not read
    _, h, w, c = meta["input_shape"]
    x = load_images(paths, (h, w), c)
    dev = resolve_device(device or run_config(run).device)
    nets = [build(*run.load_model(m)).eval() for m in members]
    probs = ensemble_proba(nets, x, meta["mean"], meta["std"], dev).astype(np.float32)
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():   # finite weights can still overflow: never print NaN as a probability
        from .errors import TrainingError
        raise TrainingError(f"the model's outputs for {paths[int(np.argmax(bad))]} are not "
                            f"finite ({int(bad.sum())} of {len(paths)} images): its weights "
                            "overflow on these inputs")
    return Predictions(str(run.path), members, tuple(meta["classes"]),
                       [str(p) for p in paths], probs, (h, w), c)


def labelled_images(path: str | Path, classes: tuple[str, ...], size: tuple[int, int],
                    channels: int) -> tuple[ImageData, list[Path]]:
    """A labelled folder tree of new images, PATH/<class>/*.png|jpg|jpeg (or
    PATH/test/<class>/*), each image loaded as `predict` loads it (`load_image`) and labelled
    by matching its folder's name to `classes`: any subset of the classes may be present, an
    unknown folder name is a one-line DataError. Returns the images and their files."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder; expected a folder tree "
                        f"{root}/<class>/*.png|jpg|jpeg (or {root}/test/<class>/*)")
    base = root / "test" if (root / "test").is_dir() else root
    folders = sorted(e.name for e in os.scandir(base)
                     if e.is_dir() and not e.name.startswith("."))
    if not folders:
        raise DataError(f"--data {base} has no class folders; expected "
                        f"{base}/<class>/*.png|jpg|jpeg")
    index = {c: k for k, c in enumerate(classes)}
    unknown = [f for f in folders if f not in index]
    if unknown:
        known = ", ".join(classes[:20]) + (f", ... ({len(classes)} in all)"
                                           if len(classes) > 20 else "")
        raise DataError(f"--data {base}: {len(unknown)} folder(s) name no class of the run: "
                        f"{', '.join(repr(u) for u in unknown[:5])}"
                        f"{', ...' if len(unknown) > 5 else ''}; the run's classes are {known}")
    paths: list[Path] = []
    labels: list[int] = []
    for name in folders:
        folder = base / name
        files = sorted(e.name for e in os.scandir(folder) if e.is_file()
                       and not e.name.startswith(".")
                       and e.name.lower().endswith(FOLDER_EXTENSIONS))
        if not files:
            raise DataError(f"--data: class folder {folder} has no images (*.png, *.jpg, "
                            "*.jpeg)")
        paths += [folder / f for f in files]
        labels += [index[name]] * len(files)
    x = load_images(paths, size, channels)
    return ImageData(x, np.array(labels, dtype=np.int64)), paths


def check_out(path: str | Path, run_dir: str | Path, force: bool = False) -> Path:
    """Where `write` may put predictions: .csv or .json, outside the run directory, and not an
    existing file unless `force`."""
    p = Path(path)
    if p.suffix.lower() not in OUT_FORMATS:
        raise ConfigError(f"--out {p}: the file name must end with .csv or .json")
    run = Path(run_dir).resolve()
    target = p.resolve()
    if target == run or run in target.parents:
        raise ConfigError(f"--out {p} lies inside the run directory {run_dir}; write it "
                          "elsewhere (nothing is written into a run directory)")
    if p.is_dir():
        raise ConfigError(f"--out {p} is a folder; give a file name ending with .csv or .json")
    if p.exists() and not force:
        raise ConfigError(f"{p} already exists; pass --force to overwrite it")
    from .paths import check_creatable
    return check_creatable(p, "predictions file")


def write(pred: Predictions, path: str | Path, k: int = 3, force: bool = False) -> Path:
    """Write predictions as CSV or JSON (by the file's extension); returns the path."""
    p = check_out(path, pred.run_dir, force)
    text = pred.to_csv(k) if p.suffix.lower() == ".csv" else json.dumps(pred.to_json(k),
                                                                        indent=1) + "\n"
    from .paths import cannot_create
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    except OSError as e:
        raise cannot_create("predictions file", p, e) from e
    return p
