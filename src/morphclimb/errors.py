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


RETRY_HINT = ("to go on, change the training settings and retry the failed trainings: "
              "`morphclimb resume RUN_DIR --retry-failed --set lr_start=...`")


def failure_kind(reason: str) -> str:
    """What kind of failure a training's reason tells: "memory" (refused before allocating,
    or out of memory while training), "divergence" (a NaN or infinite loss) or "other"."""
    r = reason.lower()
    if "out of memory" in r or "can't allocate" in r or "memoryerror" in r:
        return "memory"
    if "diverged" in r or "became nan" in r or "became inf" in r:
        return "divergence"
    return "other"


def retry_hint(reason: str) -> str:
    """How to go on after a training failed for `reason`, by the failure's kind: a smaller
    batch for memory, a lower learning rate for a divergence, else the retry alone."""
    kind = failure_kind(reason)
    if kind == "memory":
        return ("to go on with less memory, retry the failed trainings with a smaller batch: "
                "`morphclimb resume RUN_DIR --retry-failed --set batch_size=...` (or give the "
                "search a max_params that fits)")
    if kind == "divergence":
        return RETRY_HINT
    return ("to go on once the cause is fixed, retry the failed trainings: "
            "`morphclimb resume RUN_DIR --retry-failed`")
