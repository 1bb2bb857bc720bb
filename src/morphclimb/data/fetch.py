"""Downloading an archive with an md5 check, and unpacking it without escaping the target dir."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from ..errors import DataError

CHUNK = 1 << 20
TIMEOUT_S = 60.0


def fetch_archive(url: str, md5: str, root: str | Path, folder: str, *,
                  progress: bool = False) -> Path:
    """Download `url` into `root` (unless there already), check its md5, unpack `folder`."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create data directory {root}: {e}") from e
    name = Path(urllib.parse.urlparse(url).path).name or f"{folder}.tar.gz"
    archive = root / name
    if archive.is_file():
        got = file_md5(archive)
        if got != md5:
            raise DataError(f"checksum mismatch for existing file {archive}: expected md5 {md5}, "
                            f"got {got}; delete it to download it again")
    else:
        download(url, archive, md5, progress=progress)
    return extract_tar(archive, root, folder)


def download(url: str, dest: str | Path, md5: str, *, progress: bool = False) -> Path:
    """Stream `url` to `dest`, verifying its md5; a tqdm bar on stderr only if `progress`."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.md5()
    bar = None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(part, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            if progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name)
            received = 0
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                f.write(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise DataError(f"download of {url} stopped after {received} of {total} bytes")
    except (OSError, http.client.HTTPException, ValueError) as e:
        part.unlink(missing_ok=True)
        if isinstance(e, DataError):
            raise
        raise DataError(f"could not download {url} to {dest}: {e}; download it by hand and put "
                        f"it at {dest}") from e
    finally:
        if bar is not None:
            bar.close()
    got = digest.hexdigest()
    if got != md5:
        part.unlink(missing_ok=True)
        raise DataError(f"checksum mismatch for {url}: expected md5 {md5}, got {got} "
                        f"(the download was discarded)")
    os.replace(part, dest)
    return dest


def file_md5(path: str | Path) -> str:
    """The md5 hex digest of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def extract_tar(archive: str | Path, root: str | Path, folder: str) -> Path:
    """Unpack `archive` and move its top-level `folder` to `root/folder` (all or nothing)."""
    archive, root = Path(archive), Path(root)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(member, tmp, archive)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tar.extractall(tmp, members=members)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise DataError(f"cannot unpack {archive}: {e} (the archive is truncated or "
                            f"corrupt; delete it to download it again)") from e
        if not (tmp / folder).is_dir():
            raise DataError(f"archive {archive} has no top-level folder {folder}/")
        os.replace(tmp / folder, root / folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / folder


def _check_member(member: tarfile.TarInfo, dest: Path, archive: Path) -> None:
    """Reject members that are links/devices or that would land outside `dest`."""
    if not (member.isfile() or member.isdir()):
        raise DataError(f"archive {archive}: member {member.name!r} is not a regular file or "
                        f"folder (links and devices are refused)")
    target = os.path.realpath(os.path.join(dest, member.name))
    if os.path.isabs(member.name) or os.path.commonpath([target, os.path.realpath(dest)]) \
            != os.path.realpath(dest):
        raise DataError(f"archive {archive}: member {member.name!r} would be written outside "
                        f"{dest}; refusing to unpack it")
