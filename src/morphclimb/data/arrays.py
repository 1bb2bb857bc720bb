""".npz datasets (raw or encoded images) and the bundled mini CIFAR-10."""

from __future__ import annotations

import functools
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .core import Dataset, ImageData, check_labels, stratified_indices
from .images import decode_packed

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
MINI_CIFAR10 = BUNDLED_DIR / "mini_cifar10.npz"
HOLDOUT_FRACTION = 1 / 6  # test share held out when an .npz has no x_test/y_test
HOLDOUT_SEED = 0


def load_npz(path: str | Path, name: str | None = None) -> Dataset:
    """Load a dataset from an .npz file (see docs/data.md for the keys).

    Images are `x` (N, H, W, C) uint8, or `x_encoded` (image files back to back, uint8) with
    `x_offsets` (N + 1); labels `y`. Optional: the same for `_test`, and `classes`. Without
    test arrays a stratified 1/6 of the images (seed 0) is held out as the test set.
    """
    path = Path(path).expanduser()
    arrays = _read_npz(path)
    x = _images(arrays, "x", path)
    y = _labels(arrays, "y", len(x), path)
    has_test = any(k in arrays for k in ("x_test", "x_test_encoded", "y_test"))
    if has_test:
        x_test = _images(arrays, "x_test", path)
        y_test = _labels(arrays, "y_test", len(x_test), path)
    classes = _classes(arrays, path, y, y_test if has_test else y)
    check_labels(y, len(classes), f"{path} (y)")
    if has_test:
        check_labels(y_test, len(classes), f"{path} (y_test)")
        train, test = ImageData(x, y), ImageData(x_test, y_test)
    else:
        keep, held = holdout(y, classes, f"{path} (no test arrays; holding out a test set)")
        train, test = ImageData(x[keep], y[keep]), ImageData(x[held], y[held])
    return Dataset(name=name or path.stem, train=train, test=test, classes=classes)


def holdout(y: np.ndarray, classes: tuple[str, ...], where: str) -> tuple[np.ndarray, ...]:
    """(keep, held) indices: a stratified 1/6 (at least one image) held out, seed 0."""
    count = max(1, round(len(y) * HOLDOUT_FRACTION))
    rng = np.random.default_rng(HOLDOUT_SEED)
    return stratified_indices(y, len(classes), count, rng, classes, where)


def load_mini_cifar10() -> Dataset:
    """The bundled mini CIFAR-10 (decoded once per process, a fresh copy on every call)."""
    ds = _bundled()
    return Dataset(name=ds.name, classes=ds.classes,
                   train=ImageData(ds.train.x.copy(), ds.train.y.copy()),
                   test=ImageData(ds.test.x.copy(), ds.test.y.copy()))


@functools.lru_cache(maxsize=1)
def _bundled() -> Dataset:
    """Decode the bundled file once; the cached arrays are made read-only."""
    if not MINI_CIFAR10.is_file():
        raise DataError(f"the bundled dataset {MINI_CIFAR10} is missing; reinstall morphclimb "
                        f"or run scripts/make_mini_cifar.py")
    ds = load_npz(MINI_CIFAR10, name="mini-cifar10")
    for arr in (ds.train.x, ds.train.y, ds.test.x, ds.test.y):
        arr.flags.writeable = False
    return ds


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file (never unpickling objects)."""
    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"corrupt file {path}: cannot read it as .npz ({e})") from e


def _images(arrays: dict, key: str, path: Path) -> np.ndarray:
    """Raw `key` (N, H, W, C uint8) or packed `key_encoded` + `key_offsets`, decoded."""
    if key in arrays:
        x = arrays[key]
        if x.dtype != np.uint8 or x.ndim != 4:
            raise DataError(f"{path}: {key!r} is a {x.dtype} array of shape {x.shape}; expected "
                            f"uint8 of shape (N, H, W, C) (add a channel axis for grey images)")
        return np.ascontiguousarray(x)
    enc, off = f"{key}_encoded", f"{key}_offsets"
    if enc not in arrays or off not in arrays:
        raise DataError(f"{path}: no {key!r} array (nor {enc!r} + {off!r}); found "
                        f"{sorted(arrays)}")
    data, offsets = arrays[enc], arrays[off]
    if data.dtype != np.uint8 or data.ndim != 1:
        raise DataError(f"{path}: {enc!r} is a {data.dtype} array of shape {data.shape}; "
                        f"expected 1-D uint8 (image files back to back)")
    if (offsets.ndim != 1 or not np.issubdtype(offsets.dtype, np.integer) or len(offsets) < 2
            or offsets[0] != 0 or offsets[-1] != len(data) or np.any(np.diff(offsets) <= 0)):
        raise DataError(f"{path}: {off!r} must be increasing integers from 0 to len({enc}) "
                        f"= {len(data)}, one more than the number of images")
    return decode_packed(data, offsets.astype(np.int64), f"{path}:{enc}")


def _labels(arrays: dict, key: str, n: int, path: Path) -> np.ndarray:
    """Labels `key`: 1-D integers, one per image."""
    if key not in arrays:
        raise DataError(f"{path}: no {key!r} array; found {sorted(arrays)}")
    y = arrays[key]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != n:
        raise DataError(f"{path}: {key!r} is a {y.dtype} array of shape {y.shape}; expected "
                        f"{n} integer labels (one per image)")
    return y.astype(np.int64)


def _classes(arrays: dict, path: Path, *labels: np.ndarray) -> tuple[str, ...]:
    """Class names from `classes`, or '0'..'K-1' from the largest label."""
    if "classes" not in arrays:
        top = max((int(y.max()) for y in labels if len(y)), default=-1)
        return tuple(str(c) for c in range(max(top + 1, 1)))
    names = arrays["classes"]
    if names.ndim != 1 or names.dtype.kind not in "US" or len(names) == 0:
        raise DataError(f"{path}: 'classes' is a {names.dtype} array of shape {names.shape}; "
                        f"expected a 1-D array of class-name strings")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
