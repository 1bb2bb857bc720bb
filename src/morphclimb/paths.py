"""Creating the folders a command writes into, with one-line errors that say what could not be
created and why (RunDirError, exit status 2), instead of the system's bare words."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import RunDirError


def cannot_create(what: str, path: str | Path, e: OSError) -> RunDirError:
    """The error for failing to create `what` at `path` because of `e`."""
    return RunDirError(f"cannot create {what} {path}: {reason(e, Path(path))}")


def reason(e: OSError, path: Path) -> str:
    """Why an OSError stopped a creation at `path`, naming the culprit where it can."""
    if e.errno == errno.ENOTDIR:
        blocker = _file_above(path)
        if blocker is not None:
            return f"{blocker} is a file, not a folder"
    if e.errno in (errno.EACCES, errno.EPERM):
        target = Path(e.filename) if e.filename else path
        if _exists(target):
            return f"permission denied on {target}"
        where = _existing_above(target)
        return f"permission denied (you may not write in {where})" if where else \
            "permission denied"
    if e.errno == errno.EROFS:
        return "the file system is read-only"
    if e.errno == errno.EEXIST:
        return f"{e.filename or path} exists and is not a folder"
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    return (e.strerror or str(e)).lower()


def make_dir(path: str | Path, what: str) -> Path:
    """Create folder `path` (and its parents) unless it exists; RunDirError saying what could
    not be created and why."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(f"cannot create {what} {p}: {p} is a file, not a folder") from None
    except OSError as e:
        raise cannot_create(what, p, e) from e
    return p


def check_creatable(path: str | Path, what: str) -> Path:
    """Check, creating nothing, that `path` (a file or folder to be written) can be created:
    the nearest folder above it that exists is a folder this process may write in.

    For checks before work whose result would be lost (a search, predictions, an ensemble);
    the creation itself still reports its own failure (`make_dir`).
    """
    p = Path(path)
    for above in (p.parent, *p.parent.parents):
        try:
            st = os.stat(above)
        except (FileNotFoundError, NotADirectoryError):
            continue            # not there yet (or below a file: found further up)
        except OSError as e:
            raise cannot_create(what, p, e) from e
        if not stat.S_ISDIR(st.st_mode):
            raise RunDirError(f"cannot create {what} {p}: {above} is a file, not a folder")
        if not os.access(above, os.W_OK | os.X_OK):
            raise RunDirError(f"cannot create {what} {p}: permission denied (you may not "
                              f"write in {above})")
        return p
    return p


def _file_above(path: Path) -> Path | None:
    """The nearest existing non-folder among `path` and the folders above it."""
    for above in (path, *path.parents):
        try:
            st = os.stat(above)
        except OSError:
            continue
        return None if stat.S_ISDIR(st.st_mode) else above
    return None


def _existing_above(path: Path) -> Path | None:
    """The nearest existing folder above `path`."""
    for above in path.parents:
        try:
            if os.path.isdir(above):
                return above
        except OSError:
            continue
    return None


def _exists(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True
