"""morphclimb: Neural Architecture Search by Hill-climbing (NASH) with exact network morphisms."""

from .build import Network, build, load_weights, weights_of
from .errors import (ArchError, ConfigError, DataError, MorphclimbError, MorphismError,
                     RunDirError, TrainingError)
from .morphisms import REGISTRY, apply_morphism, apply_random_morphisms, deeper, skip, wider
from .spec import Arch, Node
from .zoo import starting_arch

__version__ = "0.1.0"

__all__ = [
    "Arch", "ArchError", "ConfigError", "DataError", "MorphclimbError", "MorphismError",
    "Network", "Node", "REGISTRY", "RunDirError", "TrainingError", "apply_morphism",
    "apply_random_morphisms", "build", "deeper", "load_weights", "skip", "starting_arch",
    "weights_of", "wider",
]
