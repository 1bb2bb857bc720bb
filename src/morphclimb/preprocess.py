"""What inference needs from a run, recorded when the run starts: the class names, the image
size and channel count the networks read, and the input normalisation (the per-channel mean and
std of the training part, on the 0..1 scale).

A search writes them into its run_started journal record (`dataset`: the dataset's summary with
`classes`, `image_size`, `channels`, plus `mean` and `std`), so `predict`, `export` and
`evaluate --data` never read the training data: a run copied to another machine, or whose
dataset was moved or deleted, still classifies images. A run directory is untrusted data:
`check` validates what it reads (types, lengths, ranges, finite numbers) and every problem is a
one-line RunDirError. Runs made before morphclimb recorded mean and std fall back to their
dataset (never downloading it); resuming such a run once where its data is records them (in its
run_resumed record). Nothing here prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import DataError, RunDirError

MAX_SIDE = 16384          # largest image side accepted from a run's record
MAX_CLASSES = 100_000
MAX_NAME = 1000           # longest class name accepted
FIELDS = ("classes", "image_size", "channels", "mean", "std")


@dataclass(frozen=True)
class Preprocess:
    """How a run's networks read images: uint8 (H, W, C) of `image_size` and `channels`,
    normalised as (x/255 - mean)/std per channel; their outputs are `classes`, in order.

    `source` says where it came from: "run" (recorded in the run) or "dataset" (recomputed
    from the dataset of a run made before morphclimb recorded it)."""

    classes: tuple[str, ...]
    image_size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = "run"

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """The recorded fields, JSON-ready (floats round-trip exactly through JSON)."""
        return {"classes": list(self.classes), "image_size": list(self.image_size),
                "channels": self.channels, "mean": list(self.mean), "std": list(self.std)}


def from_split(split, source: str = "run") -> Preprocess:
    """The preprocessing of a Split (what training and evaluation use)."""
    h, w = split.image_size
    return Preprocess(tuple(split.classes), (int(h), int(w)), int(split.channels),
                      tuple(float(m) for m in split.mean), tuple(float(s) for s in split.std),
                      source)


def record(info: dict[str, Any], split) -> dict[str, Any]:
    """`info` (a dataset summary for the run_started record) with the split's preprocessing."""
    return {**info, **from_split(split).to_dict()}


def recorded(info: Any) -> bool:
    """Whether a journaled dataset summary carries the preprocessing (runs before it did not:
    they lack mean and std)."""
    return isinstance(info, dict) and ("mean" in info or "std" in info)


def _int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check(info: Any, where: str) -> Preprocess:
    """The preprocessing recorded in `info` (a run's dataset summary), validated; a one-line
    RunDirError naming `where` and the field otherwise."""
    def bad(field: str, want: str) -> RunDirError:
        got = repr(info.get(field) if isinstance(info, dict) else info)
        got = got if len(got) <= 80 else got[:77] + "..."
        return RunDirError(f"{where}: the recorded {field} must be {want}, got {got}")

    if not isinstance(info, dict):
        raise RunDirError(f"{where}: the recorded dataset summary must be a JSON object, got "
                          f"{type(info).__name__}")
    missing = [k for k in FIELDS if k not in info]
    if missing:
        raise RunDirError(f"{where}: the recorded dataset summary lacks {', '.join(missing)}")
    classes = info["classes"]
    if (not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES
            or not all(isinstance(c, str) and len(c) <= MAX_NAME for c in classes)
            or len(set(classes)) != len(classes)):
        raise bad("classes", f"a list of 1 to {MAX_CLASSES:,} unique names (strings of at most "
                  f"{MAX_NAME} characters)")
    if "num_classes" in info and info["num_classes"] != len(classes):
        raise bad("num_classes", f"the number of class names ({len(classes)})")
    size = info["image_size"]
    if not isinstance(size, list) or len(size) != 2 or not all(_int(v, 1, MAX_SIDE)
                                                               for v in size):
        raise bad("image_size", f"[height, width], whole numbers from 1 to {MAX_SIDE}")
    channels = info["channels"]
    if not _int(channels, 1, 4):
        raise bad("channels", "a whole number from 1 to 4")
    mean, std = info["mean"], info["std"]
    if not isinstance(mean, list) or len(mean) != channels or not all(
            _number(v) and 0.0 <= v <= 1.0 for v in mean):
        raise bad("mean", f"{channels} finite numbers from 0 to 1 (one per channel)")
    if not isinstance(std, list) or len(std) != channels or not all(
            _number(v) and 0.0 < v <= 1.0 for v in std):
        raise bad("std", f"{channels} finite numbers above 0 and at most 1 (one per channel)")
    return Preprocess(tuple(classes), (size[0], size[1]), channels,
                      tuple(float(v) for v in mean), tuple(float(v) for v in std))


def of_run(run) -> Preprocess:
    """The preprocessing of a run (a journal.RunDir): as recorded when it started (or resumed),
    else, for a run made before morphclimb recorded it, recomputed from its dataset (read
    without downloading); DataError in one line naming what is missing when that fails."""
    state = run.state()
    info = state.dataset
    if recorded(info):
        return check(info, f"{run.path / 'journal.jsonl'}")
    from .config import SearchConfig
    from .data.load import load_split
    cfg = SearchConfig.from_dict(state.config(run.config()))
    try:
        _, split = load_split(cfg, download=False)
    except DataError as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{run.path} was made by an earlier morphclimb that did not record "
                        f"its input normalisation (mean/std), so it needs its dataset "
                        f"{cfg.dataset!r}, which cannot be read ({why}): put the dataset back, "
                        f"or run `morphclimb resume {run.path}` once where it is to record "
                        f"them in the run") from e
    return from_split(split, source="dataset")


def check_fits(arch, pre: Preprocess, where: str) -> None:
    """RunDirError unless network `arch` reads `pre`'s images and predicts its classes."""
    problem = arch.data_mismatch(pre.channels, pre.image_size, pre.num_classes,
                                 "the run records")
    if problem:
        raise RunDirError(f"{where} {problem}")


def check_same_data(pre: Preprocess, split, dataset: str) -> None:
    """DataError unless the dataset read now has the classes and image shape the run recorded
    (a dataset replaced at the same path would be scored against the wrong classes)."""
    now = from_split(split)
    for field in ("classes", "image_size", "channels"):
        if getattr(now, field) != getattr(pre, field):
            have = getattr(now, field)
            text = repr(list(have) if isinstance(have, tuple) else have)
            text = text if len(text) <= 80 else text[:77] + "..."
            raise DataError(f"dataset {dataset!r} has changed since the run was made: its "
                            f"{field} is now {text}, not the recorded "
                            f"{getattr(pre, field)!r:.80}")
