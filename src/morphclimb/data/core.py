"""In-memory datasets: ImageData (one part), Dataset (train + test) and Split (train/val/test)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import DataError

CIFAR_NAMES = ("cifar10", "cifar100")
CIFAR_VAL = 10_000  # the paper's split: 40,000 train / 10,000 validation of CIFAR's 50,000
DEFAULT_VAL_FRACTION = 0.2
_STAT_CHUNK = 2048  # images per chunk when computing channel statistics


@dataclass(frozen=True)
class ImageData:
    """Images (uint8, N x H x W x C, C-contiguous) with int64 labels (N,)."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
            raise DataError(f"images must be a uint8 array of shape (N, H, W, C), got "
                            f"{_describe(x)}")
        if not isinstance(y, np.ndarray) or y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"labels must be a 1-D integer array, got {_describe(y)}")
        if len(x) != len(y):
            raise DataError(f"{len(x)} images but {len(y)} labels")
        object.__setattr__(self, "x", np.ascontiguousarray(x))
        object.__setattr__(self, "y", np.ascontiguousarray(y, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.y)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return (self.x.shape[1], self.x.shape[2])

    @property
    def channels(self) -> int:
        """Number of channels C."""
        return self.x.shape[3]

    def subset(self, idx) -> ImageData:
        """The images at `idx` (an index array, boolean mask or slice), as a new ImageData."""
        return ImageData(self.x[idx], self.y[idx])

    @staticmethod
    def concat(a: ImageData, b: ImageData) -> ImageData:
        """`a` followed by `b`; both must have the same image shape."""
        if a.x.shape[1:] != b.x.shape[1:]:
            raise DataError(f"cannot concatenate images of shape {a.x.shape[1:]} and "
                            f"{b.x.shape[1:]}")
        return ImageData(np.concatenate([a.x, b.x]), np.concatenate([a.y, b.y]))


class _Shaped:
    """num_classes, image_size and channels, read off `classes` and the `train` part."""

    classes: tuple[str, ...]
    train: ImageData

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return self.train.image_size

    @property
    def channels(self) -> int:
        """Number of channels C."""
        return self.train.channels


@dataclass(frozen=True)
class Dataset(_Shaped):
    """A named dataset: the official training set, the test set and the class names."""

    name: str
    train: ImageData
    test: ImageData
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise DataError(f"dataset {self.name!r}: class names must be non-empty and "
                            f"unique, got {list(self.classes)}")
        if self.train.x.shape[1:] != self.test.x.shape[1:]:
            raise DataError(f"dataset {self.name!r}: train images have shape "
                            f"{self.train.x.shape[1:]} but test images {self.test.x.shape[1:]}")
        for part, data in (("train", self.train), ("test", self.test)):
            check_labels(data.y, len(self.classes), f"dataset {self.name!r} ({part})")

    def split(self, val: int | float | None = None, seed: int = 0) -> Split:
        """Split the training set into train/val, stratified by class and seeded.

        `val` is a count (int) or a fraction in (0, 1); None means 10,000 for 'cifar10' and
        'cifar100' (the paper's 40,000/10,000 split) and 0.2 for every other dataset.
        """
        check_classification(self)
        if val is None:
            val = CIFAR_VAL if self.name in CIFAR_NAMES else DEFAULT_VAL_FRACTION
        rng = np.random.default_rng(seed)
        train_idx, val_idx = stratified_indices(self.train.y, self.num_classes, val, rng,
                                                self.classes, f"dataset {self.name!r}")
        train = self.train.subset(train_idx)
        mean, std = channel_stats(train.x)
        return Split(train=train, val=self.train.subset(val_idx), test=self.test,
                     classes=self.classes, mean=mean, std=std, name=self.name)


@dataclass(frozen=True)
class Split(_Shaped):
    """What a search uses: train/val/test parts and per-channel mean/std (0..1 scale) of train."""

    train: ImageData
    val: ImageData
    test: ImageData
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = ""

    @cached_property
    def train_full(self) -> ImageData:
        """Train + val together, for the final training of the best model (built once)."""
        return ImageData.concat(self.train, self.val)


def check_classification(ds: Dataset) -> None:
    """DataError unless `ds` makes a classification worth searching: at least 2 classes, every
    class among the training images (labels 0..k-1, each used; so the test set has no class
    that training lacks) and a test set that is not empty.

    A search on one class, or with a class it never sees, would report a meaningless error;
    `split` (every search's way to its data) refuses it before anything is written.
    """
    where = f"dataset {ds.name!r}"
    k = len(ds.classes)
    if k < 2:
        raise DataError(f"{where} has a single class ({ds.classes[0]!r}); a classification "
                        f"needs at least 2 classes (with one, every model scores 100%)")
    counts = np.bincount(ds.train.y, minlength=k)
    absent = np.flatnonzero(counts == 0)
    if len(absent):
        c = int(absent[0])
        n_test = int(np.count_nonzero(ds.test.y == c))
        also = f" but {n_test} test image{'s' * (n_test != 1)}" if n_test else ""
        raise DataError(f"{where}: class {ds.classes[c]!r} has 0 training images{also} "
                        f"(label {c}); every class needs training images (labels must run "
                        f"0..{k - 1}, each used; {len(absent)} of the {k} classes have none)")
    if len(ds.test) == 0:
        raise DataError(f"{where} has no test images; the search's result is measured on them")


def check_labels(y: np.ndarray, num_classes: int, where: str) -> None:
    """Raise DataError naming `where` if a label lies outside [0, num_classes)."""
    if len(y) == 0:
        return
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{where}: label {int(y[i])} at index {i} is out of range "
                        f"[0, {num_classes}) ({len(bad)} labels out of range)")


def stratified_indices(y: np.ndarray, num_classes: int, val: int | float,
                       rng: np.random.Generator, classes=None, where: str = "data"
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) index arrays: disjoint, stratified by class, drawn with `rng`."""
    n = len(y)
    n_val = _val_count(val, n, where)
    counts = np.bincount(y, minlength=num_classes)
    per_class = _allocate(counts, n_val)
    names = classes if classes is not None else [str(c) for c in range(num_classes)]
    short = np.flatnonzero(counts - per_class < 1)
    if len(short):
        c = int(short[0])
        raise DataError(f"{where}: class {names[c]!r} has {counts[c]} training images, which "
                        f"leaves none for training after holding out {per_class[c]} "
                        f"(val={val!r}); every class needs at least one training image")
    order = np.argsort(y, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    val_parts = []
    for c in range(num_classes):
        members = order[starts[c]:starts[c + 1]]
        val_parts.append(rng.permutation(members)[:per_class[c]])
    val_idx = np.sort(np.concatenate(val_parts)).astype(np.int64)
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask).astype(np.int64), val_idx


def _val_count(val: int | float, n: int, where: str) -> int:
    """The number of held-out images that `val` (count or fraction) asks for out of `n`."""
    if isinstance(val, bool) or not isinstance(val, (int, float, np.integer, np.floating)):
        raise DataError(f"{where}: val must be an int count or a float fraction, got {val!r}")
    if isinstance(val, (float, np.floating)):
        if not 0.0 < val < 1.0:
            raise DataError(f"{where}: val fraction must lie in (0, 1), got {val}")
        count = int(round(val * n))
    else:
        count = int(val)
    if not 1 <= count < n:
        raise DataError(f"{where}: val={val!r} asks for {count} of {n} training images; it must "
                        f"leave at least one image on each side (pass a smaller count or a "
                        f"fraction such as val=0.2)")
    return count


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split `total` across classes in proportion to `counts` (largest remainder, exact sum)."""
    quota = counts * (total / counts.sum())
    alloc = np.floor(quota).astype(np.int64)
    rest = total - int(alloc.sum())
    if rest > 0:  # extra images go first to classes that can spare one, largest remainder first
        spare = alloc + 1 < counts
        order = np.lexsort((-(quota - alloc), ~spare))
        alloc[order[:rest]] += 1
    return alloc


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 images, on the 0..1 scale."""
    channels = x.shape[-1]
    hist = np.zeros((channels, 256), dtype=np.int64)
    for start in range(0, len(x), _STAT_CHUNK):
        chunk = x[start:start + _STAT_CHUNK].reshape(-1, channels)
        for c in range(channels):
            hist[c] += np.bincount(chunk[:, c], minlength=256)
    levels = np.arange(256, dtype=np.float64) / 255.0
    total = np.maximum(hist.sum(axis=1), 1)
    mean = hist @ levels / total
    var = hist @ (levels ** 2) / total - mean ** 2
    std = np.sqrt(np.maximum(var, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _describe(a) -> str:
    """A short description of an array-like for error messages."""
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__
