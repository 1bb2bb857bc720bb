"""What crosses to a worker and back: the split as workers see it, a task run there, its outcome."""

from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import TrainingError
from ..worker import TrainOutcome, TrainTask, run_task

HOOK_ENV = "MORPHCLIMB_WORKER_HOOK"   # "module:function" called with each task in the worker
DIED_TWICE = "worker died twice"
OnDone = Callable[[TrainOutcome], None]
OnEpoch = Callable[[str, dict], None]


@dataclasses.dataclass(frozen=True)
class Part:
    """One data part as a worker sees it: uint8 images x (N, H, W, C) and int64 labels y."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


class WorkerSplit:
    """A split rebuilt from packed arrays; train and val are views of one train+val buffer."""

    def __init__(self, arrays: dict[str, Any]):
        n = int(arrays["n_train"])
        tv_x, tv_y = arrays["trainval_x"], arrays["trainval_y"]
        self.train_full = Part(tv_x, tv_y)
        self.train, self.val = Part(tv_x[:n], tv_y[:n]), Part(tv_x[n:], tv_y[n:])
        self.test = Part(arrays["test_x"], arrays["test_y"])
        self.mean, self.std = tuple(arrays["mean"]), tuple(arrays["std"])


def pack_split(split) -> dict[str, Any]:
    """The arrays a worker needs: train+val images in one buffer (train first), test, stats."""
    return {"trainval_x": np.concatenate([split.train.x, split.val.x]),
            "trainval_y": np.concatenate([split.train.y, split.val.y]).astype(np.int64),
            "n_train": len(split.train.y), "test_x": np.ascontiguousarray(split.test.x),
            "test_y": np.asarray(split.test.y, dtype=np.int64),
            "mean": [float(m) for m in split.mean], "std": [float(s) for s in split.std]}


def _apply_hook(task: TrainTask) -> TrainTask:
    """Test/debug hook: $MORPHCLIMB_WORKER_HOOK="module:function" may replace the task."""
    spec = os.environ.get(HOOK_ENV)
    if not spec:
        return task
    module, _, name = spec.partition(":")
    new = getattr(importlib.import_module(module), name)(task)
    return task if new is None else new


def execute(task: TrainTask, split, device: str, callback=None) -> tuple:
    """Run one task in a worker: ("ok", outcome) or ("raise", exception, traceback text)."""
    try:
        return ("ok", run_task(_apply_hook(task), split, device, callback))
    except Exception as e:  # noqa: BLE001 - re-raised in the parent, as the serial executor would
        tb = traceback.format_exc()
        try:
            pickle.dumps(e)
        except Exception:  # noqa: BLE001
            e = TrainingError(f"{type(e).__name__}: {e}")
        return ("raise", e, tb)


def failed(task: TrainTask, reason: str, **meta) -> TrainOutcome:
    """A failed outcome for `task` that never produced one (its worker died)."""
    return TrainOutcome(task.model_id, False, None, [], None, 0.0, error=reason,
                        meta={**task.meta, **meta})


def result(task: TrainTask, message: tuple, **meta) -> TrainOutcome:
    """The outcome in a worker's message; a task that raised becomes a failed outcome (as
    under the serial executor: one child's failure never ends the search)."""
    if message[0] == "raise":
        _, exc, tb = message
        return failed(task, f"{type(exc).__name__}: {exc}\n{tb}"[:2000], **meta)
    out = message[1]
    out.meta.update(meta)
    return out


def with_threads(task: TrainTask, threads: int | None) -> TrainTask:
    """`task` with its thread count set to `threads` unless its config fixes one."""
    if threads is None or task.config.threads is not None:
        return task
    return dataclasses.replace(task, config=dataclasses.replace(task.config, threads=threads))
