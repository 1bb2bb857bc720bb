"""An image-folder tree packed as a tar archive, decoded straight into an .npz file.

`archive_to_npz("gpu-data/cifar10-jpeg.tar.gz")` reads every `<top>/train/<class>/<file>` and
`<top>/test/<class>/<file>` image of the archive from the archive itself (nothing is unpacked
to disk), decodes it as an image-folder dataset decodes its files (data.images.decode), and
writes `x`, `y`, `x_test`, `y_test` and `classes` to an .npz beside the archive, which
`load_dataset` reads like any other .npz. The order is the image-folder loader's: classes
sorted by name, files sorted by name within a class. The .npz records the archive's size and
SHA-256 and is rebuilt only when they change. The archive is read once, front to back, in the
calling process; the images are decoded in a pool of processes, one per usable core (CIFAR-10's
60,000 JPEGs: seconds on a many-core machine). Nothing here prints.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import secrets
import tarfile
import warnings
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DataError
from .folder import EXTENSIONS
from .images import decode, stack

FORMAT = "morphclimb.archive-npz/1"
CHUNK = 1000   # images per task of the decoding pool


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def default_npz(archive: str | Path) -> Path:
    """Where archive_to_npz writes by default: the archive's name with .npz (x.tar.gz -> x.npz)."""
    p = Path(archive)
    name = p.name
    for suffix in (".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar"):
        if name.endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".npz")
    return p.with_name(name + ".npz")


def _read(tar: tarfile.TarFile, where: Path) -> dict[str, dict[str, list]]:
    """part ("train"/"test") -> class -> [(file name, "archive:member", bytes)], in one pass
    over the archive (a compressed archive is read front to back once)."""
    parts: dict[str, dict[str, list]] = {"train": {}, "test": {}}
    for m in tar:
        if not m.isfile():
            continue
        path = PurePosixPath(m.name)
        if not path.name.lower().endswith(EXTENSIONS) or path.name.startswith("."):
            continue
        names = path.parts
        for k in range(len(names) - 2):
            if names[k] in parts and k + 3 == len(names):
                f = tar.extractfile(m)
                parts[names[k]].setdefault(names[k + 1], []).append(
                    (names[k + 2], f"{where}:{m.name}", f.read()))
                break
    if not parts["train"]:
        raise DataError(f"{where}: no images under train/<class>/ in the archive (expected "
                        f"[top/]train/<class>/*.png|jpg and [top/]test/<class>/*)")
    if parts["test"] and sorted(parts["test"]) != sorted(parts["train"]):
        raise DataError(f"{where}: test/ and train/ hold different class folders: "
                        f"{sorted(parts['test'])} vs {sorted(parts['train'])}")
    return parts


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _decode_chunk(items: list[tuple[bytes, str]]) -> list[np.ndarray]:
    """Decode (bytes, where) pairs (in a worker process, or here)."""
    return [decode(data, where) for data, where in items]


def _context():
    """The multiprocessing context of the decoding pool: fork where there is one (nothing to
    import again in the workers, as torch's DataLoader does), else the platform's default."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def _decode_all(items: list[tuple[bytes, str]], workers: int) -> list[np.ndarray]:
    """Decode every item, in order; with workers > 1 in that many processes."""
    if workers <= 1 or len(items) < 2 * CHUNK:
        return _decode_chunk(items)
    chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    with warnings.catch_warnings():   # Python 3.12+ warns about fork with threads running;
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        with _context().Pool(min(workers, len(chunks))) as pool:   # the workers only decode
            decoded = pool.map(_decode_chunk, chunks)
    return [a for chunk in decoded for a in chunk]


def decode_archive(archive: str | Path, workers: int | None = None) -> dict[str, np.ndarray]:
    """Decode an archive's image-folder tree: {"x", "y", "x_test", "y_test", "classes"}.

    The archive is read in this process, once, front to back; the images are decoded in
    `workers` processes (default: one per usable core; 1: here, in this process).
    """
    archive = Path(archive)
    if not archive.is_file():
        raise DataError(f"no such archive: {archive}")
    if workers is None:
        workers = _cores()
    try:
        with tarfile.open(archive, "r:*") as tar:
            parts = _read(tar, archive)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read archive {archive}: {e}") from e
    classes = sorted(parts["train"])
    order = []   # (part, label, file name, where, bytes) in the image-folder loader's order
    for part in ("train", "test"):
        for label, name in enumerate(classes):
            for _, where, data in sorted(parts[part].get(name, []), key=lambda t: t[0]):
                order.append((part, label, where, data))
    arrays = _decode_all([(data, where) for _, _, where, data in order], workers)
    out: dict[str, np.ndarray] = {"classes": np.array(classes)}
    for part, key in (("train", "x"), ("test", "x_test")):
        idx = [i for i, o in enumerate(order) if o[0] == part]
        if part == "test" and not idx:
            continue
        out[key] = stack([arrays[i] for i in idx], [order[i][2] for i in idx])
        out["y" + key[1:]] = np.array([order[i][1] for i in idx], dtype=np.int64)
    return out


def archive_to_npz(archive: str | Path, out: str | Path | None = None,
                   workers: int | None = None) -> Path:
    """Decode `archive` into an .npz (default: beside it, see default_npz) unless an up-to-date
    one is there already; returns the .npz path. `workers`: decoding processes (default one
    per usable core; see decode_archive). Written atomically (a temporary file, then
    renamed), so a killed run never leaves a half-written file behind."""
    archive = Path(archive)
    if not archive.is_file():
        raise DataError(f"no such archive: {archive}")
    out = Path(out) if out is not None else default_npz(archive)
    size, digest = archive.stat().st_size, sha256_file(archive)
    if out.is_file():
        try:
            with np.load(out, allow_pickle=False) as npz:
                if (str(npz["format"]) == FORMAT and int(npz["source_size"]) == size
                        and str(npz["source_sha256"]) == digest):
                    return out
        except Exception:  # noqa: BLE001 - unreadable or foreign: rebuilt below
            pass
    arrays = decode_archive(archive, workers)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            np.savez(f, format=np.array(FORMAT), source_size=np.array(size),
                     source_sha256=np.array(digest), **arrays)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
