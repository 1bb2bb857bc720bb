"""The exception tree of morphclimb: every user mistake raises a MorphclimbError subclass."""

from __future__ import annotations


class MorphclimbError(Exception):
    """Base class of every error morphclimb raises on purpose."""


class ArchError(MorphclimbError, ValueError):
    """A malformed architecture spec (the message names the node and the problem)."""


class MorphismError(MorphclimbError, ValueError):
    """A morphism that cannot be applied where it was asked to be."""


class ConfigError(MorphclimbError, ValueError):
    """A bad search configuration (unknown key, wrong type, value out of range)."""


class DataError(MorphclimbError, ValueError):
    """Bad or missing data: missing file, corrupt file, inconsistent images or labels."""


class RunDirError(MorphclimbError):
    """A run directory that is missing, unwritable or inconsistent."""


class TrainingError(MorphclimbError, RuntimeError):
    """Training failed (diverged to NaN/inf, ran out of memory, or raised)."""


class MissingDependencyError(MorphclimbError, ImportError):
    """An optional dependency (one of pyproject's extras) is not installed; the message names
    the extra to install."""
