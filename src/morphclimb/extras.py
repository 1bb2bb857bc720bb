"""Optional dependencies (pyproject's extras): which extra brings each module, and the one-line
error that names the extra to install when one is missing (MissingDependencyError, exit 2)."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# top-level module -> the extra of pyproject.toml that installs it
EXTRAS = {"onnx": "export", "onnxruntime": "export", "onnxscript": "export", "ray": "ray",
          "tensorboard": "tensorboard"}


def missing(module: str, purpose: str) -> MissingDependencyError:
    """The error for `module` not being installed when `purpose` needs it."""
    top = module.split(".")[0]
    extra = EXTRAS.get(top)
    how = f"pip install 'morphclimb[{extra}]'" if extra else f"pip install {top}"
    return MissingDependencyError(f"{purpose} needs {top}, which is not installed: {how}")


def require(module: str, purpose: str) -> ModuleType:
    """Import `module`, or raise MissingDependencyError naming the extra that brings it.

    Called before a command writes anything, so a missing extra leaves nothing behind.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise missing(module, purpose) from e


def from_import_error(e: ImportError) -> MissingDependencyError | None:
    """The one-line error for an ImportError of an optional module (None: not one of them)."""
    top = (getattr(e, "name", None) or "").split(".")[0]
    return missing(top, "this command") if top in EXTRAS else None
