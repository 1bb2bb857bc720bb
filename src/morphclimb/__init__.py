"""morphclimb: Neural Architecture Search by Hill-climbing (NASH) with exact network morphisms."""

from .build import Network, build, load_weights, weights_of
from .errors import (ArchError, ConfigError, DataError, MorphclimbError, MorphismError,
                     RunDirError, TrainingError)
from .spec import Arch, Node
from .zoo import starting_arch

__version__ = "0.1.0"

__all__ = [
    "Arch", "ArchError", "ConfigError", "DataError", "MorphclimbError", "MorphismError",
    "Network", "Node", "RunDirError", "TrainingError", "build", "load_weights",
    "starting_arch", "weights_of",
]
