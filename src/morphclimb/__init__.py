"""morphclimb: Neural Architecture Search by Hill-climbing (NASH) with exact network morphisms."""

from .build import Network, build, load_weights, weights_of
from .config import PRESETS, SearchConfig
from .data import Dataset, ImageData, Split, dataset_info, load_dataset
from .errors import (
    ArchError,
    ConfigError,
    DataError,
    MorphclimbError,
    MorphismError,
    RunDirError,
    TrainingError,
)
from .model0 import starting_arch
from .morphisms import REGISTRY, apply_morphism, apply_random_morphisms, deeper, skip, wider
from .nash import SearchResult, hill_climb, resume, search
from .spec import Arch, Node
from .train import TrainConfig, evaluate, fit, predict_proba, sgdr_lr

__version__ = "0.1.0"

__all__ = [
    "PRESETS", "REGISTRY", "Arch", "ArchError", "ConfigError", "DataError", "Dataset",
    "ImageData", "MorphclimbError", "MorphismError", "Network", "Node", "RunDirError",
    "SearchConfig", "SearchResult", "Split", "TrainConfig", "TrainingError", "apply_morphism",
    "apply_random_morphisms", "build", "dataset_info", "deeper", "evaluate", "fit",
    "hill_climb", "load_dataset", "load_weights", "predict_proba", "resume", "search",
    "sgdr_lr", "skip", "starting_arch", "weights_of", "wider",
]
