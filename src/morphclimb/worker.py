"""Training one model as a pure function of its inputs, so any executor can run it anywhere."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .build import build, weights_of
from .device import resolve_device
from .errors import TrainingError
from .seeds import derive_seed  # noqa: F401  (its old home; kept for imports)
from .spec import Arch
from .train import Distill, TrainConfig, eval_settings, evaluate, fit

# build() seeds and restores the process-wide CPU generator around a network's initialisation;
# tasks trained in threads of one process (parallel.streams) build one at a time.
_BUILD_LOCK = threading.Lock()


@dataclass
class Teacher:
    """A trained network a task's model learns from as well (distillation, docs/distill.md):
    its id (for the journal), architecture and weights, and the loss's weight and temperature.
    Crosses to workers with its task, like the task's own weights."""

    model_id: str
    arch: dict[str, Any]
    weights: dict[str, torch.Tensor]
    weight: float
    temperature: float

    def record(self) -> dict[str, Any]:
        """What the journal says of it (model_trained's "distill")."""
        return {"teacher": self.model_id, "weight": self.weight,
                "temperature": self.temperature}


@dataclass
class TrainTask:
    """Everything needed to train one model: architecture, weights, data part, schedule, seed."""

    model_id: str
    arch: dict[str, Any]
    weights: dict[str, torch.Tensor] | None   # None: fresh weights from `init_seed`
    epochs: int
    config: TrainConfig
    seed: int
    part: str = "train"                     # "train" or "train_full" (train + validation)
    eval_part: str | None = "val"           # evaluated after training (None: no evaluation)
    init_seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    step: str = "eager"                     # how fit runs a step: eager, cuda_graph, compile, auto
    teacher: Teacher | None = None          # distil from this network while training
    # A training to end within `deadline` seconds of the task's start (a time budget's final
    # training): its first epoch runs at lr_start and measures its speed, then its epochs are
    # re-planned after each from the speed of the last few (`deadline_replan`; fit's
    # `replan`), never below `min_epochs`; `epochs` is the first plan.
    deadline: float | None = None
    min_epochs: int = 1
    # The re-plans of an earlier run of this task ([done, new total] pairs, its journal
    # record's): replayed as they were, so the same weights are trained again.
    replans: list[list[int]] | None = None


@dataclass
class TrainOutcome:
    """What training one model produced (weights on the CPU) or why it failed."""

    model_id: str
    ok: bool
    weights: dict[str, torch.Tensor] | None
    records: list[dict[str, Any]]
    eval: dict[str, float] | None
    seconds: float
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    replans: list[list[int]] | None = None   # fit's re-plans, where the task had a deadline


RECENT = 3   # epochs whose mean time predicts the next ones' (deadline_replan)


def deadline_replan(deadline: float, min_epochs: int, start: float, clock=time.perf_counter):
    """fit's `replan` for a training to end by `deadline` seconds after `start` (clock's
    time): as many epochs in all as fit at the mean time of the last RECENT epochs, at least
    `min_epochs` and those done. The speed is measured on this training, under the machine's
    load now, rather than predicted from the trainings before it."""
    def replan(done: int, total: int, records) -> int:
        recent = [r.seconds for r in records[-RECENT:]]
        per_epoch = sum(recent) / len(recent) if recent else 0.0
        if per_epoch <= 0:
            return total
        left = deadline - (clock() - start)
        return max(min_epochs, done + max(int(left // per_epoch), 0))
    return replan


def replay(replans: list[list[int]]):
    """fit's `replan` that answers as a journaled run did: the same totals after the same
    epochs, and no change elsewhere."""
    at = {int(done): int(total) for done, total in replans}
    return lambda done, total, records: at.get(done, total)


def trained_epochs(task: TrainTask, out: TrainOutcome) -> int:
    """The epochs `task` trained: its `epochs`, or as many as its re-plans made."""
    return len(out.records) if out.replans else task.epochs


def _replanner(task: TrainTask, start: float):
    if task.replans is not None:
        return replay(task.replans)
    if task.deadline is not None:
        return deadline_replan(task.deadline, task.min_epochs, start)
    return None


def _with_total(replan, callback):
    """(replan, callback) where the callback's records carry "epochs": the run's total as
    last planned (progress shows epoch 7/31, not 7/27, once a re-plan made it 31)."""
    if replan is None or callback is None:
        return replan, callback
    latest: dict[str, Any] = {}

    def planned(done, total, records):
        latest["epochs"] = answer = replan(done, total, records)
        return answer

    def told(rec):
        callback({**dict(rec), "epochs": max(latest.get("epochs", 0), rec.epoch)})
    return planned, told


def _part(split, name: str):
    if name == "train_full":
        return split.train_full
    if name not in ("train", "val", "test"):
        raise ValueError(f"unknown data part {name!r}")
    return getattr(split, name)


def check_memory(arch: Arch, batch_size: int, device) -> None:
    """Fail fast (TrainingError) when training `arch` clearly cannot fit in free memory,
    rather than swapping the machine to a halt or dying mid-step."""
    from .budget import available_bytes, training_bytes
    need, have = training_bytes(arch, batch_size), available_bytes(device)
    if have is not None and need > 0.9 * have:
        raise TrainingError(f"out of memory: training needs about {need / 2**30:.1f} GiB "
                            f"(batch {batch_size}, {arch.num_params:,} parameters); "
                            f"{have / 2**30:.1f} GiB are free")


def run_task(task: TrainTask, split, device: str | torch.device | None = None,
             callback: Callable[[dict], None] | None = None) -> TrainOutcome:
    """Train `task` on `split`; failures (exception, NaN loss, out of memory) become outcomes."""
    start = time.perf_counter()
    try:
        arch = Arch.from_dict(task.arch)
        check_memory(arch, task.config.batch_size, device)
        with _BUILD_LOCK:
            model = build(arch, task.weights, seed=task.init_seed, dtype=torch.float32)
        records: list[dict[str, Any]] = []
        replans = None
        if task.epochs > 0:
            teacher, distill = None, None
            if task.teacher is not None:
                t = task.teacher
                distill = Distill(t.weight, t.temperature)
                with _BUILD_LOCK:
                    teacher = build(Arch.from_dict(t.arch), t.weights, dtype=torch.float32)
            replan, told = _with_total(_replanner(task, start), callback)
            result = fit(model, _part(split, task.part), epochs=task.epochs,
                         config=task.config, mean=split.mean, std=split.std, seed=task.seed,
                         device=device, callback=told, step=task.step, teacher=teacher,
                         distill=distill, replan=replan)
            records = [dict(r) for r in result.records]   # fit raises on a NaN/inf loss
            replans = result.settings.get("replans")
        ev = None
        if task.eval_part is not None:
            dev = (resolve_device(device) if device is not None
                   else next(model.parameters()).device)
            res = evaluate(model, _part(split, task.eval_part), mean=split.mean, std=split.std,
                           device=dev, batch_size=task.config.eval_batch_size,
                           **eval_settings(task.config, dev))
            ev = {"accuracy": float(res.accuracy), "loss": float(res.loss)}
        model = model.to("cpu")
        return TrainOutcome(task.model_id, True, weights_of(model), records, ev,
                            time.perf_counter() - start, meta=dict(task.meta), replans=replans)
    except (TrainingError, RuntimeError, ValueError, torch.cuda.OutOfMemoryError) as e:
        reason = f"{type(e).__name__}: {e}".strip()
        if not isinstance(e, TrainingError):
            reason += "\n" + traceback.format_exc(limit=-4)
        return TrainOutcome(task.model_id, False, None, [], None, time.perf_counter() - start,
                            error=reason[:2000], meta=dict(task.meta))


def failed_outcome(task: TrainTask, error: BaseException | str) -> TrainOutcome:
    """A failed outcome for `task` (an exception, or a reason such as a dead worker)."""
    if isinstance(error, BaseException):
        tb = "".join(traceback.format_exception(error, limit=-3))
        error = f"{type(error).__name__}: {error}\n{tb}"
    return TrainOutcome(task.model_id, False, None, [], None, 0.0, error=str(error)[:2000],
                        meta=dict(task.meta))


def run_isolated(task: TrainTask, split, device=None, callback=None) -> TrainOutcome:
    """`run_task`, with any exception (MemoryError included) turned into a failed outcome."""
    try:
        return run_task(task, split, device, callback)
    except Exception as e:  # noqa: BLE001 - one child's failure must not end the search
        return failed_outcome(task, e)
