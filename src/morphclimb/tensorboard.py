"""TensorBoard logging of a search: per-model training curves, children, the best per step.

Layout under `log_dir`: `models/<model id>/` holds one model's curves (tags `train/loss`,
`train/accuracy`, `train/lr` against the epochs its weights have received in total, and
`eval/val_accuracy` or `eval/test_accuracy` at its last epoch), so TensorBoard overlays models
as runs; `search/` holds `search/best_val_accuracy` and `search/best_params` per step (0 is
model_0), `children/val_accuracy` per trained child (in the order they finished),
`step_<i>/val_accuracy` per child index, and `result/*` test accuracies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .events import Event

Callback = Callable[[dict[str, Any]], None]


def check_available():
    """The SummaryWriter class, or ConfigError when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # tensorboard is an optional dependency
        from .errors import ConfigError
        raise ConfigError("tensorboard=true needs the tensorboard package: "
                          "pip install 'morphclimb[tensorboard]'") from e
    return SummaryWriter


def _writer(path: Path):
    return check_available()(log_dir=str(path))


class TensorBoardLogger:
    """A search callback that writes TensorBoard event files and forwards every event."""

    def __init__(self, log_dir: str | Path, callback: Callback | None = None):
        self.log_dir = Path(log_dir)
        self.callback = callback
        self.search = _writer(self.log_dir / "search")
        self.n_children = 0

    def __call__(self, event: dict[str, Any]) -> None:
        kind = Event(event["event"])
        if kind is Event.MODEL_TRAINED:
            self._model(event)
        elif kind is Event.STEP_DECIDED:
            self._best(event["step"], event["val_accuracy"], event["params"], event)
        elif kind is Event.ENSEMBLE_EVALUATED:
            self._scalar(f"result/{event.get('kind', 'ensemble')}_ensemble_test_accuracy",
                         event["test_accuracy"], 0, event)
        if kind in (Event.MODEL_TRAINED, Event.STEP_DECIDED, Event.ENSEMBLE_EVALUATED,
                    Event.RUN_FINISHED):
            self.search.flush()
        if self.callback is not None:
            self.callback(event)

    def _scalar(self, tag: str, value: Any, step: int, event: dict[str, Any]) -> None:
        if isinstance(value, (int, float)) and math.isfinite(value):
            self.search.add_scalar(tag, value, step, walltime=event.get("time"))

    def _best(self, step: int, acc: float, params: int, event: dict[str, Any]) -> None:
        self._scalar("search/best_val_accuracy", acc, step, event)
        self._scalar("search/best_params", params, step, event)

    def _model(self, r: dict[str, Any]) -> None:
        role = r.get("role")
        if role == "pretrain":
            self._best(0, r.get("val_accuracy"), r["params"], r)
        if role in ("child", "incumbent") and r.get("val_accuracy") is not None:
            self.n_children += 1
            self._scalar("children/val_accuracy", r["val_accuracy"], self.n_children, r)
            self._scalar(f"step_{r.get('step', 0):02d}/val_accuracy", r["val_accuracy"],
                         r.get("child") or 0, r)
        if role in ("final", "baseline", "retrain") and r.get("test_accuracy") is not None:
            self._scalar(f"result/{role}_test_accuracy", r["test_accuracy"], 0, r)
        self._curves(r)

    def _curves(self, r: dict[str, Any]) -> None:
        curves = r.get("curves") or []
        first = r.get("lineage", len(curves)) - r.get("epochs", len(curves))
        w = _writer(self.log_dir / "models" / r["model"])
        try:
            for c in curves:
                step = first + int(c.get("epoch", 0))
                for key in ("loss", "accuracy", "lr"):
                    if isinstance(c.get(key), (int, float)):
                        w.add_scalar(f"train/{key}", c[key], step)
            end = first + len(curves)
            for part in ("val", "test"):
                for key in ("accuracy", "loss"):
                    if isinstance(r.get(f"{part}_{key}"), (int, float)):
                        w.add_scalar(f"eval/{part}_{key}", r[f"{part}_{key}"], end)
        finally:
            w.close()

    def close(self) -> None:
        """Flush and close the event files."""
        self.search.close()
