"""An image-folder tree packed as a tar archive, decoded straight into an .npz file.

`archive_to_npz("gpu-data/cifar10-jpeg.tar.gz")` reads every `<top>/train/<class>/<file>` and
`<top>/test/<class>/<file>` image of the archive from the archive itself (nothing is unpacked
to disk), decodes it as an image-folder dataset decodes its files (data.images.decode), and
writes `x`, `y`, `x_test`, `y_test` and `classes` to an .npz beside the archive, which
`load_dataset` reads like any other .npz. The order is the image-folder loader's: classes
sorted by name, files sorted by name within a class. The .npz records the archive's size and
SHA-256 and is rebuilt only when they change. Nothing here prints.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DataError
from .folder import EXTENSIONS
from .images import decode, stack

FORMAT = "morphclimb.archive-npz/1"


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


def _members(tar: tarfile.TarFile, where: Path) -> dict[str, dict[str, list]]:
    """part ("train"/"test") -> class -> [(file name, member)], from the archive's listing."""
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
                parts[names[k]].setdefault(names[k + 1], []).append((names[k + 2], m))
                break
    if not parts["train"]:
        raise DataError(f"{where}: no images under train/<class>/ in the archive (expected "
                        f"[top/]train/<class>/*.png|jpg and [top/]test/<class>/*)")
    if parts["test"] and sorted(parts["test"]) != sorted(parts["train"]):
        raise DataError(f"{where}: test/ and train/ hold different class folders: "
                        f"{sorted(parts['test'])} vs {sorted(parts['train'])}")
    return parts


def decode_archive(archive: str | Path) -> dict[str, np.ndarray]:
    """Decode an archive's image-folder tree: {"x", "y", "x_test", "y_test", "classes"}."""
    archive = Path(archive)
    if not archive.is_file():
        raise DataError(f"no such archive: {archive}")
    try:
        with tarfile.open(archive, "r:*") as tar:
            parts = _members(tar, archive)
            classes = sorted(parts["train"])
            out: dict[str, np.ndarray] = {"classes": np.array(classes)}
            for part, key in (("train", "x"), ("test", "x_test")):
                arrays, names, labels = [], [], []
                for label, name in enumerate(classes):
                    for _, member in sorted(parts[part].get(name, []), key=lambda t: t[0]):
                        f = tar.extractfile(member)
                        where = f"{archive}:{member.name}"
                        arrays.append(decode(f.read(), where))
                        names.append(where)
                        labels.append(label)
                if part == "test" and not arrays:
                    continue
                out[key] = stack(arrays, names)
                out["y" + key[1:]] = np.array(labels, dtype=np.int64)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read archive {archive}: {e}") from e
    return out


def archive_to_npz(archive: str | Path, out: str | Path | None = None) -> Path:
    """Decode `archive` into an .npz (default: beside it, see default_npz) unless an up-to-date
    one is there already; returns the .npz path. Written atomically (a temporary file, then
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
    arrays = decode_archive(archive)
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
