"""Official CIFAR-10/100 "python version" files: reading them, and downloading the archives."""

from __future__ import annotations

import codecs
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .core import Dataset, ImageData, check_labels
from .fetch import fetch_archive


@dataclass(frozen=True)
class CifarSource:
    """Where an official CIFAR archive lives and what it unpacks to."""

    url: str
    md5: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: bytes
    names_key: bytes


CIFAR_SOURCES: dict[str, CifarSource] = {
    "cifar10": CifarSource(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a", folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_file="test_batch",
        meta_file="batches.meta", label_key=b"labels", names_key=b"label_names"),
    "cifar100": CifarSource(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85", folder="cifar-100-python",
        train_files=("train",), test_file="test", meta_file="meta",
        label_key=b"fine_labels", names_key=b"fine_label_names"),
}


def load_cifar(name: str, root: str | Path, *, download: bool = True, progress: bool = False,
               url: str | None = None, md5: str | None = None) -> Dataset:
    """Load official CIFAR-10 ('cifar10') or CIFAR-100 ('cifar100') python files under `root`.

    If the folder is absent and `download` is true, fetch the official archive (or `url`,
    checked against `md5`) into `root` and unpack it there.
    """
    if name not in CIFAR_SOURCES:
        raise DataError(f"unknown CIFAR variant {name!r}; known: {sorted(CIFAR_SOURCES)}")
    src = CIFAR_SOURCES[name]
    root = Path(root).expanduser()
    folder = root / src.folder
    if not folder.is_dir():
        if not download:
            raise DataError(f"{name}: folder {folder} not found; pass download=True or unpack "
                            f"{src.url} into {root}")
        fetch_archive(url or src.url, md5 or src.md5, root, src.folder, progress=progress)
    return read_cifar_folder(name, folder)


def read_cifar_folder(name: str, folder: str | Path) -> Dataset:
    """Read an unpacked official CIFAR folder (e.g. cifar-10-batches-py/)."""
    src = CIFAR_SOURCES[name]
    folder = Path(folder)
    meta = _read_pickle(folder / src.meta_file)
    if src.names_key not in meta:
        raise DataError(f"{folder / src.meta_file}: no {src.names_key!r} entry "
                        f"(found keys {sorted(meta)})")
    classes = tuple(_text(c) for c in meta[src.names_key])
    parts = [_read_batch(folder / f, src.label_key) for f in src.train_files]
    train = ImageData(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))
    test = _read_batch(folder / src.test_file, src.label_key)
    for fname, part in zip((*src.train_files, src.test_file), (*parts, test), strict=True):
        check_labels(part.y, len(classes), str(folder / fname))
    return Dataset(name=name, train=train, test=test, classes=classes)


def _read_batch(path: Path, label_key: bytes) -> ImageData:
    """One pickled batch: b'data' (N x 3072 uint8, channel-planar) and labels."""
    batch = _read_pickle(path)
    for key in (b"data", label_key):
        if key not in batch:
            raise DataError(f"{path}: no {key!r} entry (found keys {sorted(batch)})")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: b'data' is a {data.dtype} array of shape {data.shape}; "
                        f"expected uint8 of shape (N, 3072)")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype,
                                                                          np.integer):
        raise DataError(f"{path}: {label_key!r} holds {labels.shape} {labels.dtype} values for "
                        f"{len(data)} images; expected one integer label per image")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return ImageData(np.ascontiguousarray(x), labels.astype(np.int64))


_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays, lists, dicts and strings (no code)."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _read_pickle(path: Path) -> dict:
    """Read one official CIFAR pickle (a dict with bytes keys); DataError if missing/corrupt."""
    if not path.is_file():
        raise DataError(f"missing file {path} (expected the official CIFAR python-version "
                        f"files in {path.parent})")
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means a corrupt file
        raise DataError(f"corrupt file {path}: cannot unpickle it ({type(e).__name__}: {e})") \
            from e
    if not isinstance(obj, dict):
        raise DataError(f"corrupt file {path}: expected a pickled dict, got "
                        f"{type(obj).__name__}")
    return obj


def _text(name) -> str:
    """A class name from the meta file (bytes in the official files)."""
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)
