"""load_dataset: one entry point for every data source, and dataset_info for journals."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .arrays import load_mini_cifar10, load_npz
from .cifar import CIFAR_SOURCES, load_cifar
from .core import Dataset, Split
from .folder import load_folder

KNOWN_SOURCES = ("mini-cifar10", *CIFAR_SOURCES)
DATA_ENV = "MORPHCLIMB_DATA"


def default_root() -> Path:
    """Where downloads and caches go: $MORPHCLIMB_DATA, else ~/.cache/morphclimb."""
    return Path(os.environ.get(DATA_ENV) or "~/.cache/morphclimb").expanduser()


def load_dataset(source: str | Path = "mini-cifar10", root: str | Path | None = None,
                 download: bool = True, progress: bool = False) -> Dataset:
    """Load a dataset by name ('mini-cifar10', 'cifar10', 'cifar100') or from a path.

    A path may be an image-folder tree (root/train/<class>/*, root/test/<class>/*) or an .npz
    file. `root` is where CIFAR files live (and are downloaded to when `download`) and where
    caches go for read-only trees; it defaults to default_root(). `progress` shows a download
    bar on stderr; otherwise nothing is printed.
    """
    root = Path(root).expanduser() if root is not None else default_root()
    name = str(source)
    is_name = isinstance(source, str)  # a Path is always a path, even one called "cifar10"
    if is_name and name == "mini-cifar10":
        return load_mini_cifar10()
    if is_name and name in CIFAR_SOURCES:
        return load_cifar(name, root, download=download, progress=progress)
    path = Path(name).expanduser()
    looks_like_path = isinstance(source, Path) or any(s in name for s in ("/", os.sep, "~")) \
        or name.lower().endswith(".npz") or path.exists()
    if not looks_like_path:
        raise DataError(f"unknown dataset {name!r}; known names: {', '.join(KNOWN_SOURCES)} "
                        f"(or give a path to an image-folder tree or an .npz file)")
    if path.is_dir():
        return load_folder(path, cache_dir=root)
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DataError(f"{path}: unsupported file type {path.suffix!r}; expected an .npz "
                            f"file or an image-folder directory")
        return load_npz(path)
    raise DataError(f"no such file or directory: {path}")


def load_split(c, progress: bool = False, download: bool = True) -> tuple[Dataset, Split]:
    """The dataset a search config names, and its train / validation / test split.

    `c` is a SearchConfig (dataset, data_root, subset, val, split_seed are read). With
    `download=False` missing CIFAR files are a DataError instead of a download.
    """
    import numpy as np

    from ..seeds import derive_seed
    from .core import check_classification, stratified_indices
    ds = load_dataset(c.dataset, root=c.data_root, download=download, progress=progress)
    if c.subset is not None and c.subset < len(ds.train):
        check_classification(ds)
        rng = np.random.default_rng(derive_seed(c.split_seed, "subset"))
        _, keep = stratified_indices(ds.train.y, ds.num_classes, c.subset, rng, ds.classes,
                                     f"dataset {ds.name!r}")
        kept = np.bincount(ds.train.y[keep], minlength=ds.num_classes)
        if not kept.all():
            k = int(np.flatnonzero(kept == 0)[0])
            raise DataError(f"dataset {ds.name!r}: subset={c.subset} keeps no training image "
                            f"of class {ds.classes[k]!r} (it has "
                            f"{int(np.count_nonzero(ds.train.y == k))}); every class needs one, "
                            f"so pick a larger subset (the {ds.num_classes} classes' shares "
                            f"are kept)")
        ds = Dataset(f"{ds.name}-subset{c.subset}", ds.train.subset(keep), ds.test, ds.classes)
    val = int(c.val) if c.val is not None and c.val >= 1 else c.val
    return ds, ds.split(val=val, seed=c.split_seed)


def dataset_info(ds: Dataset | Split) -> dict:
    """A JSON-ready summary (name, sizes, classes, image size) of a Dataset or a Split."""
    info = {"name": ds.name, "num_classes": ds.num_classes, "classes": list(ds.classes),
            "image_size": list(ds.image_size), "channels": ds.channels}
    if isinstance(ds, Split):
        info["sizes"] = {"train": len(ds.train), "val": len(ds.val), "test": len(ds.test)}
        info["mean"], info["std"] = list(ds.mean), list(ds.std)
    else:
        info["sizes"] = {"train": len(ds.train), "test": len(ds.test)}
    return info
