"""Image-folder trees (root/train/<class>/*.png|jpg|jpeg, root/test/<class>/*), with a cache."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import numpy as np

from ..errors import DataError
from .arrays import holdout
from .core import Dataset, ImageData
from .images import decode, stack

EXTENSIONS = (".png", ".jpg", ".jpeg")
CACHE_NAME = ".morphclimb-cache.npz"
CACHE_VERSION = "1"

Listing = list[tuple[str, int, int, int]]  # (path relative to root, label, size, mtime_ns)


def load_folder(root: str | Path, cache_dir: str | Path | None = None) -> Dataset:
    """Load an image-folder tree; decoded arrays are cached in root/.morphclimb-cache.npz.

    Classes are the sorted folder names under root/train; root/test must have the same ones
    (without root/test a stratified 1/6 of train, seed 0, is held out). If the tree is not
    writable the cache goes to `cache_dir`/folders/ instead, or is skipped.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"no such directory: {root}")
    train_dir, test_dir = root / "train", root / "test"
    if not train_dir.is_dir():
        raise DataError(f"no train/ folder in {root}; expected {root}/train/<class>/*.png "
                        f"(or .jpg/.jpeg) and {root}/test/<class>/*")
    classes = _class_dirs(train_dir)
    if not classes:
        raise DataError(f"{train_dir} has no class folders")
    train = _listing(root, "train", classes)
    test: Listing = []
    if test_dir.is_dir():
        _check_same_classes(classes, _class_dirs(test_dir), train_dir, test_dir)
        test = _listing(root, "test", classes)
    key = _key(train, test, classes)
    places = [root / CACHE_NAME]
    if cache_dir is not None:
        digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
        places.append(Path(cache_dir).expanduser() / "folders" / f"{root.name}-{digest}.npz")
    cached = _read_cache(places, key)
    if cached is None:
        cached = _decode_all(root, train, test)
        _write_cache(places, key, cached)
    x, y, x_test, y_test = cached
    if not test:
        keep, held = holdout(y, classes, f"{root} (no test/ folder; holding out a test set)")
        x, y, x_test, y_test = x[keep], y[keep], x[held], y[held]
    return Dataset(name=root.name, train=ImageData(x, y), test=ImageData(x_test, y_test),
                   classes=classes)


def _class_dirs(folder: Path) -> tuple[str, ...]:
    """Sorted names of the (non-hidden) sub-folders."""
    return tuple(sorted(d.name for d in os.scandir(folder)
                        if d.is_dir() and not d.name.startswith(".")))


def _check_same_classes(train: tuple, test: tuple, train_dir: Path, test_dir: Path) -> None:
    """DataError unless train/ and test/ hold the same class folders."""
    if train != test:
        missing, extra = sorted(set(train) - set(test)), sorted(set(test) - set(train))
        raise DataError(f"{test_dir} must have the same class folders as {train_dir}: missing "
                        f"{missing}, extra {extra}")


def _listing(root: Path, part: str, classes: tuple[str, ...]) -> Listing:
    """Image files of root/part/<class>/, sorted; DataError for an empty class folder."""
    out: Listing = []
    for label, name in enumerate(classes):
        folder = root / part / name
        files = sorted((e.name, e.stat()) for e in os.scandir(folder)
                       if e.is_file() and e.name.lower().endswith(EXTENSIONS)
                       and not e.name.startswith("."))
        if not files:
            raise DataError(f"class folder {folder} has no images (*.png, *.jpg, *.jpeg)")
        out += [(f"{part}/{name}/{f}", label, st.st_size, st.st_mtime_ns) for f, st in files]
    return out


def _key(train: Listing, test: Listing, classes: tuple[str, ...]) -> str:
    """A hash of the file listing (names, labels, sizes, mtimes): the cache's validity key."""
    digest = hashlib.sha256(CACHE_VERSION.encode())
    digest.update(repr((classes, train, test)).encode())
    return digest.hexdigest()


def _decode_all(root: Path, train: Listing, test: Listing) -> tuple[np.ndarray, ...]:
    """Decode every image once: (x, y, x_test, y_test)."""
    names = [root / rel for rel, *_ in train + test]
    arrays = [decode(p, p) for p in names]
    x_all = stack(arrays, names)
    y_all = np.array([label for _, label, *_ in train + test], dtype=np.int64)
    n = len(train)
    return x_all[:n], y_all[:n], x_all[n:], y_all[n:]


def _read_cache(places: list[Path], key: str) -> tuple[np.ndarray, ...] | None:
    """The cached arrays from the first valid cache file with this key, else None."""
    for place in places:
        if not place.is_file():
            continue
        try:
            with np.load(place, allow_pickle=False) as npz:
                if str(npz["key"]) == key:
                    return tuple(npz[k] for k in ("x", "y", "x_test", "y_test"))
        except Exception:  # noqa: BLE001 - an unreadable cache is simply rebuilt
            continue
    return None


def _write_cache(places: list[Path], key: str, arrays: tuple[np.ndarray, ...]) -> Path | None:
    """Write the cache to the first writable place (atomically); None if none is writable."""
    x, y, x_test, y_test = arrays
    for place in places:
        tmp = None
        try:
            place.parent.mkdir(parents=True, exist_ok=True)
            tmp = place.with_name(f".{place.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
            with open(tmp, "xb") as f:  # "x" honours the umask, unlike mkstemp's 0600
                np.savez(f, key=np.array(key), x=x, y=y, x_test=x_test, y_test=y_test)
            os.replace(tmp, place)
            return place
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
    return None
