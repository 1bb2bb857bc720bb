"""morphclimb: Neural Architecture Search by Hill-climbing (NASH) with exact network morphisms.

The public names below are imported on first use (PEP 562), so that `import morphclimb` and
the command's help, argument errors and `show` do not pay for importing torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module (relative to this package) that defines it
_LAZY = {
    **dict.fromkeys(("Network", "build", "load_weights", "weights_of"), ".build"),
    **dict.fromkeys(("PRESETS", "SearchConfig"), ".config"),
    **dict.fromkeys(("Dataset", "ImageData", "Split", "dataset_info", "load_dataset"), ".data"),
    **dict.fromkeys(("ArchError", "ConfigError", "DataError", "MissingDependencyError",
                     "MorphclimbError", "MorphismError", "RunDirError", "TrainingError"),
                    ".errors"),
    "starting_arch": ".model0",
    **dict.fromkeys(("REGISTRY", "apply_morphism", "apply_random_morphisms", "deeper", "skip",
                     "wider"), ".morphisms"),
    **dict.fromkeys(("SearchResult", "hill_climb", "resume", "search"), ".nash"),
    **dict.fromkeys(("Arch", "Node"), ".spec"),
    **dict.fromkeys(("TrainConfig", "evaluate", "fit", "predict_proba", "sgdr_lr"), ".train"),
}

__all__ = [
    "PRESETS", "REGISTRY", "Arch", "ArchError", "ConfigError", "DataError", "Dataset",
    "ImageData", "MissingDependencyError", "MorphclimbError", "MorphismError", "Network", "Node",
    "RunDirError", "SearchConfig", "SearchResult", "Split", "TrainConfig", "TrainingError",
    "apply_morphism", "apply_random_morphisms", "build", "dataset_info", "deeper", "evaluate",
    "fit", "hill_climb", "load_dataset", "load_weights", "predict_proba", "resume", "search",
    "sgdr_lr", "skip", "starting_arch", "weights_of", "wider",
]
assert sorted(__all__) == sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'morphclimb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value   # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """This package's module type: importing the submodule `build` must not replace the
    function `morphclimb.build` (Python sets a package's attribute to each submodule it
    imports; the eager imports this package used to make rebound the name afterwards)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == f".{name}":
            return   # `morphclimb.build` stays (or lazily becomes) the function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:   # what type checkers and IDEs see
    from .build import Network, build, load_weights, weights_of
    from .config import PRESETS, SearchConfig
    from .data import Dataset, ImageData, Split, dataset_info, load_dataset
    from .errors import (
        ArchError,
        ConfigError,
        DataError,
        MissingDependencyError,
        MorphclimbError,
        MorphismError,
        RunDirError,
        TrainingError,
    )
    from .model0 import starting_arch
    from .morphisms import (
        REGISTRY,
        apply_morphism,
        apply_random_morphisms,
        deeper,
        skip,
        wider,
    )
    from .nash import SearchResult, hill_climb, resume, search
    from .spec import Arch, Node
    from .train import TrainConfig, evaluate, fit, predict_proba, sgdr_lr
