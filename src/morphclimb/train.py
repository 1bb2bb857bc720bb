"""Training with SGD + SGDR (cosine annealing restarted at every call), evaluation, prediction.

The whole data set lives on the device as uint8 (on an accelerator it is uploaded once per
array and process and reused by every later fit and evaluation: augment.device_images; on the
CPU it is laid out once per call); batches are indexed and augmented there (pad-4 random crop
+ horizontal flip, CHUNK batches per batched op), then each is normalised to float in one op.
Nothing inside an epoch waits for the device: losses and predictions stay there until the
epoch's end. Each epoch runs floor(N / batch_size) full batches of a fresh random permutation:
the last partial batch is dropped (a different one each epoch), so an epoch sees at least
N - batch_size + 1 images. A data set smaller than one batch trains as one batch of all its
images.

How a step runs (fit's `step`; the data order and augmentation are the same in every mode):

* "eager" (default): forward, backward and torch.optim.SGD, op by op.
* "cuda_graph": the whole step (normalise, forward, backward, fused SGD with the lr in a
  device tensor) is captured once per fit as a CUDA graph and replayed for every batch, so a
  step costs a handful of launches instead of hundreds. Before the capture, three warm-up
  steps on the first batch (cuDNN autotuning, optimizer state) run and are then undone
  (weights, BatchNorm statistics and momentum restored), so the run trains exactly the batches
  eager mode trains. On a device other than CUDA the same static-buffer step runs uncaptured
  (what the tests on a CPU exercise). Fused SGD rounds differently from the eager optimizer in
  the last bits, so results match eager mode closely, not bitwise.
* "compile": the model is trained through torch.compile (its compile time falls into
  the first epoch; every new architecture compiles anew). Not for several fits at once in one
  process (threads): compile one model at a time (the stream executor refuses it).
* "auto": "cuda_graph" on CUDA, "eager" elsewhere (SearchConfig.train_step's default; chosen,
  not yet measured: see docs/gpu.md).

Distillation (fit's `teacher`, docs/distill.md): a teacher network runs in eval mode, without
gradients, on the very batch the student sees (same normalisation, autocast and memory
layout), and the loss becomes (1 - w) * CE(labels) + w * T^2 * KL(softmax(teacher / T) ||
softmax(student / T)) (`distill_loss`). Every step mode supports it: eager and compile run the
teacher eagerly beside the student, cuda_graph captures the teacher's forward pass in the
step's graph (on a device without CUDA: in the uncaptured static step). The teacher draws no
random numbers, so the data order and augmentation are those of a plain training.

On CUDA, fit turns cuDNN autotuning on for its duration (`cudnn_benchmark`, default on:
device.speed_settings), and evaluation runs in the training's precision and memory layout
(eval_settings): bf16 autocast and channels_last as the training, so that it reuses the
training's kind of kernels rather than autotuning fp32 NCHW ones, and runs at the speed the
training does. On the CPU evaluation stays fp32 and contiguous (CPU results are unchanged).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import (
    crop_flip,
    crop_flip_indices,
    device_images,
    device_labels,
    normalizer,
    to_float,
)
from .config import TRAIN_STEPS, check_training, finite
from .device import CUDA_WORK, auto_settings, resolve_device, side_stream, speed_settings
from .errors import ConfigError, DataError, TrainingError

PAD = 4
CHUNK = 16  # batches augmented together (amortises per-op overhead, bounds memory)
GRAPH_WARMUP = 3  # eager steps (then undone) before a CUDA graph capture
# Per capture stream: [memory pool handle, the last graph captured on it]. Successive graphs
# of one stream share one pool (a new capture reuses the memory of the last one, which is
# never replayed again), so a search's many children do not each keep a pool of their own.
_graph_pools: dict[tuple, list] = {}


def sgdr_lr(step: int, total_steps: int, lr_start: float, lr_end: float) -> float:
    """Cosine annealing from lr_start (step 0) to lr_end (step total_steps), SGDR-style."""
    if total_steps <= 0:
        return float(lr_start)
    return cosine_lr(min(max(step, 0), total_steps) / total_steps, lr_start, lr_end)


def cosine_lr(t: float, lr_start: float, lr_end: float) -> float:
    """The cosine annealing's lr at fraction t (0: lr_start, 1: lr_end) of its run."""
    return float(lr_end + 0.5 * (lr_start - lr_end) * (1.0 + math.cos(math.pi * t)))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ConfigError(f"TrainConfig: {what}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and speed settings of one training run (None = auto per device)."""

    batch_size: int = 128
    lr_start: float = 0.05
    lr_end: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    sgdr: bool = True
    augment: bool = True
    crop_pad: int = PAD
    bf16: bool | None = None
    channels_last: bool | None = None
    threads: int | None = None
    eval_batch_size: int = 1000
    cudnn_benchmark: bool | None = None   # CUDA: autotune convolutions (None: on in fit; the
    # stream executor makes it off where several slots share a GPU: docs/gpu.md)

    def __post_init__(self) -> None:
        _check(isinstance(self.sgdr, bool), f"sgdr must be true or false, got {self.sgdr!r}")
        check_training(self)   # the same rules as SearchConfig's (config.py)

    def lr(self, step: int, total_steps: int) -> float:
        """The learning rate at `step` of a run of `total_steps` (SGDR or constant)."""
        if not self.sgdr:
            return float(self.lr_start)
        return sgdr_lr(step, total_steps, self.lr_start, self.lr_end)

    def lr_at(self, t: float) -> float:
        """The learning rate at fraction t in [0, 1] of a run (SGDR or constant)."""
        if not self.sgdr:
            return float(self.lr_start)
        return cosine_lr(min(max(t, 0.0), 1.0), self.lr_start, self.lr_end)


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean loss and accuracy on its (augmented) batches, lr at its end, wall time."""

    epoch: int
    loss: float
    accuracy: float
    lr: float
    seconds: float
    images: int

    def to_dict(self) -> dict:
        """This record as a plain dict."""
        return dataclasses.asdict(self)

    def keys(self) -> tuple[str, ...]:
        """Field names, so that `dict(record)` and `record["loss"]` work too."""
        return tuple(f.name for f in dataclasses.fields(self))

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)


@dataclass(frozen=True)
class TrainResult:
    """Per-epoch records, totals, and the settings the run actually used."""

    records: tuple[EpochRecord, ...]
    images: int
    seconds: float
    settings: dict = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        """Training images processed per second of wall time (data upload included)."""
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    @property
    def final(self) -> EpochRecord | None:
        """The last epoch's record (None for a zero-epoch run)."""
        return self.records[-1] if self.records else None


@dataclass(frozen=True)
class EvalResult:
    """Accuracy and mean cross-entropy over n images."""

    accuracy: float
    loss: float
    n: int


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _num_outputs(model: nn.Module) -> int | None:
    arch = getattr(model, "arch", None)
    return arch.channels(arch.output) if arch is not None and hasattr(arch, "output") else None


def _settings(config: TrainConfig, device: torch.device, step: str = "eager") -> dict:
    auto = auto_settings(device)
    s = {"device": str(device),
         "bf16": auto["bf16"] if config.bf16 is None else config.bf16,
         "channels_last": (auto["channels_last"] if config.channels_last is None
                           else config.channels_last),
         "threads": auto["threads"] if config.threads is None else config.threads}
    if s["bf16"] and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"bf16=True but {device} does not support bfloat16; set bf16=False")
    if device.type != "cpu" and config.threads is None:
        s["threads"] = None
    if step not in TRAIN_STEPS and step != "auto":
        raise ConfigError(f"step must be one of {', '.join(TRAIN_STEPS)} or auto, got {step!r}")
    if step == "auto":
        step = "cuda_graph" if device.type == "cuda" else "eager"
    s["step"] = "static" if step == "cuda_graph" and device.type != "cuda" else step
    if device.type == "cuda":
        s["cudnn_benchmark"] = config.cudnn_benchmark is not False
    return s


def eval_settings(config: TrainConfig, device: str | torch.device) -> dict:
    """How evaluate runs after a training with `config` on `device`: {"bf16", "channels_last"}.

    On CUDA the training's own precision and layout (config's values, None = auto per device),
    so that evaluation uses the kernels the training tuned and runs at its speed; elsewhere
    fp32 and contiguous, as always (CPU results do not change).
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        return {"bf16": False, "channels_last": False}
    auto = auto_settings(dev)
    return {"bf16": auto["bf16"] if config.bf16 is None else bool(config.bf16),
            "channels_last": (auto["channels_last"] if config.channels_last is None
                              else bool(config.channels_last))}


@dataclass(frozen=True)
class Distill:
    """Distillation settings: the soft targets' weight w in [0, 1] and temperature T > 0."""

    weight: float = 0.5
    temperature: float = 4.0

    def __post_init__(self) -> None:
        _check(finite(self.weight) and 0.0 <= self.weight <= 1.0,
               f"distill weight must be in [0, 1], got {self.weight!r}")
        _check(finite(self.temperature) and self.temperature > 0,
               f"distill temperature must be a finite number > 0, got {self.temperature!r}")


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                 weight: float, temperature: float) -> torch.Tensor:
    """(1 - w) * CE(student, labels) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T)),
    the KL averaged over the batch (Hinton et al. 2015: T^2 keeps the soft targets' gradients
    on the scale of the hard ones'). Logits are taken in float32."""
    student, teacher = student.float(), teacher.float()
    ce = F.cross_entropy(student, labels)
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                  reduction="batchmean", log_target=True)
    return (1.0 - weight) * ce + weight * (t * t) * kl


def fit(model: nn.Module, data, *, epochs: int, config: TrainConfig,
        mean: Sequence[float], std: Sequence[float], seed: int,
        device: str | torch.device | None = None,
        callback: Callable[[EpochRecord], None] | None = None,
        step: str = "eager", teacher: nn.Module | None = None,
        distill: Distill | None = None,
        replan: Callable[[int, int, list[EpochRecord]], int] | None = None) -> TrainResult:
    """Train `model` in place for `epochs` epochs on `data` (an ImageData); returns the records.

    SGD with (Nesterov) momentum and weight decay; the lr follows `config.lr` per batch and
    restarts at lr_start on every call. Shuffling and augmentation draw from a torch.Generator
    seeded with `seed` (the global RNG is untouched). device=None trains where the model is;
    otherwise the model is moved there (and stays). `callback(record)` runs after each epoch.
    `step`: "eager", "cuda_graph", "compile" or "auto" (see the module docstring); the settings
    in the result say which ran ("static": cuda_graph's step uncaptured, on a device without
    CUDA) and, for cuda_graph, `setup_seconds` (warm-up and capture).

    `teacher`: a network whose outputs the student learns from as well (distillation with
    `distill`'s weight and temperature, Distill() by default; see `distill_loss`). It is moved
    to the device and run in eval mode without gradients; its weights never change. The
    records' loss is then the mixed loss.

    `replan(done, total, records)`: asked after the first epoch and after each later one but
    the last, returns how many epochs the run is to have in all now (at least `done`;
    `epochs` is the first plan). The first epoch then runs at lr_start and the cosine is laid
    out after it over the total replan gives; a later change runs the cosine on from where it
    is to lr_end over the new remainder, so the lr never jumps. Replaying the same answers
    at the same epochs retrains the same weights. The changes are in the result's
    settings["replans"] as [done, new total] pairs (a time budget's final training:
    worker.TrainTask.deadline).
    """
    if not _is_int(epochs) or epochs < 0:
        raise ConfigError(f"epochs must be a non-negative integer, got {epochs!r}")
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not _is_int(seed):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if teacher is not None and not isinstance(teacher, nn.Module):
        raise ConfigError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    if distill is not None and not isinstance(distill, Distill):
        raise ConfigError(f"distill must be a train.Distill, got {type(distill).__name__}")
    if teacher is not None and _num_outputs(teacher) != _num_outputs(model):
        raise ConfigError(f"the teacher predicts {_num_outputs(teacher)} classes, the model "
                          f"{_num_outputs(model)}")
    dev = _model_device(model) if device is None else resolve_device(device)
    s = _settings(config, dev, step)
    kd = None
    if teacher is not None:
        kd = (teacher, distill or Distill())
        s["distill"] = {"weight": kd[1].weight, "temperature": kd[1].temperature}
    start = time.perf_counter()
    with speed_settings(dev, s["threads"], s.get("cudnn_benchmark", True)):
        model.to(dev)
        if teacher is not None:
            was_training = teacher.training
            teacher.to(dev).eval()
        x = device_images(getattr(data, "x", None), dev)
        y = device_labels(getattr(data, "y", None), len(x), dev, _num_outputs(model))
        if len(x) < 2:
            raise DataError(f"training needs at least 2 images (batch norm), got {len(x)}")
        if s["channels_last"]:
            model.to(memory_format=torch.channels_last)
            if teacher is not None:
                teacher.to(memory_format=torch.channels_last)
        try:
            records = _run(model, x, y, _Schedule(config, epochs, replan), config, s, mean,
                           std, seed, callback, kd)
        finally:
            if s["channels_last"]:
                model.to(memory_format=torch.contiguous_format)
                if teacher is not None:
                    teacher.to(memory_format=torch.contiguous_format)
            if teacher is not None:
                teacher.train(was_training)
    seconds = time.perf_counter() - start
    return TrainResult(tuple(records), sum(r.images for r in records), seconds, s)


def _distiller(kd):
    """(teacher_logits(input), loss(student logits, teacher logits, labels)) of a step: without
    `kd` no teacher (None) and the cross-entropy; with `kd` = (teacher, Distill) the teacher's
    logits on the student's very input (eval mode, no gradients; called inside the step's
    autocast) and `distill_loss`."""
    if kd is None:
        return (lambda xin: None), (lambda logits, t_logits, yb:
                                    F.cross_entropy(logits.float(), yb))
    teacher, d = kd

    def teach(xin):
        with torch.no_grad():
            return teacher(xin)
    return teach, (lambda logits, t_logits, yb:
                   distill_loss(logits, t_logits, yb, d.weight, d.temperature))


def _run(model, x, y, sched, config, s, mean, std, seed, callback, kd=None
         ) -> list[EpochRecord]:
    dev, n = x.device, len(x)
    batch = min(config.batch_size, n)
    sched.steps = n // batch
    scale, shift = normalizer(mean, std, x.shape[1], dev)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    pad = config.crop_pad if config.augment else None  # None: no augmentation
    if s["step"] in ("cuda_graph", "static"):
        return _run_static(model, x, y, sched, batch, config, s, scale, shift, gen, pad,
                           callback, kd)
    net = torch.compile(model, dynamic=False) if s["step"] == "compile" else model
    opt = torch.optim.SGD(model.parameters(), lr=sched.lr(0), momentum=config.momentum,
                          nesterov=config.nesterov, weight_decay=config.weight_decay)
    model.train()
    teach, loss_fn = _distiller(kd)

    def step(lr: float, xb: torch.Tensor, yb: torch.Tensor):
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=s["bf16"]):
            xin = to_float(xb, scale, shift, s["channels_last"])
            logits = net(xin)
            t_logits = teach(xin)
        loss = loss_fn(logits, t_logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach(), logits.detach().argmax(1)

    with CUDA_WORK.shared(dev):   # eager steps: autotuning may synchronise the device
        return _epochs(x, y, sched, batch, gen, pad, callback, step, s)


class _Schedule:
    """A run's epochs and its lr at each step. Without `replan`: config.lr over `epochs`
    epochs. With one, the first epoch is a measurement of the run's own speed: it runs at
    lr_start, and the cosine is laid out after it over the total `replan` then gives (so a
    first plan far too short cannot spend the cosine in its first epoch); each later re-plan
    runs the cosine on from the fraction it had reached to its end over the new remainder.
    `steps`: batches per epoch (set by _run)."""

    def __init__(self, config: TrainConfig, epochs: int, replan=None):
        self.config, self.epochs, self.replan, self.steps = config, epochs, replan, 1
        self.replans: list[list[int]] = []
        self.laid = replan is None               # the cosine laid out (after epoch 1)
        self.t0, self.s0, self.span = 0.0, 0, 0

    def lr(self, step: int) -> float:
        if self.replan is None:
            return self.config.lr(step, self.epochs * self.steps)
        return self.config.lr_at(self.fraction(step))

    def fraction(self, step: int) -> float:
        if not self.laid:
            return 0.0
        return self.t0 + (1.0 - self.t0) * (step - self.s0) / self.span if self.span else 1.0

    def after(self, done: int, records: list[EpochRecord]) -> None:
        """Ask `replan` after epoch `done` and take its answer (always after the first; never
        after the last: the cosine has reached lr_end, more epochs would learn next to
        nothing)."""
        if self.replan is None or (self.laid and done >= self.epochs):
            return
        new = self.replan(done, self.epochs, records)
        if not _is_int(new):
            raise TrainingError(f"replan must return an integer, got {new!r}")
        new = max(new, done)
        if self.laid and new == self.epochs:
            return
        at = done * self.steps
        self.t0 = self.fraction(at)
        self.s0, self.span, self.laid = at, (new - done) * self.steps, True
        if new != self.epochs:
            self.replans.append([done, new])
        self.epochs = new


def _epochs(x, y, sched: _Schedule, batch: int, gen, pad, callback, step, s: dict
            ) -> list[EpochRecord]:
    """The epoch loop every step mode shares: `step(lr, images, labels)` trains one batch and
    returns (loss, predictions) as device tensors; nothing waits for the device before the
    epoch's end. The schedule's epochs may change after each (a re-plan)."""
    dev, n = x.device, len(x)
    steps = n // batch
    records: list[EpochRecord] = []
    epoch = 0
    while epoch < sched.epochs:
        epoch += 1
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen, device=dev)[: steps * batch]
        losses = torch.zeros(steps, device=dev)
        preds = torch.empty(steps, batch, dtype=torch.int64, device=dev)
        for i, xb, yb in _epoch_batches(x, y, order, batch, pad, gen):
            losses[i], preds[i] = step(sched.lr((epoch - 1) * steps + i), xb, yb)
        _check_finite(losses, epoch, steps)
        accuracy = float((preds.view(-1) == y[order]).float().mean())
        rec = EpochRecord(epoch, float(losses.mean()), accuracy, sched.lr(epoch * steps),
                          time.perf_counter() - t0, steps * batch)
        records.append(rec)
        sched.after(epoch, records)      # before the callback: it may ask for the new total
        if callback is not None:
            callback(rec)
    if sched.replan is not None:
        s["replans"] = sched.replans
    return records


class _StaticStep:
    """One SGD step on static input buffers: normalise, forward, backward, fused SGD with the
    learning rate in a device tensor. `capture` records it as a CUDA graph; afterwards each
    call copies the batch in and replays the graph (a few launches for the whole step)."""

    def __init__(self, model: nn.Module, config: TrainConfig, s: dict, batch: int, chw,
                 scale: torch.Tensor, shift: torch.Tensor, dev: torch.device, kd=None):
        self.model, self.dev, self.scale, self.shift = model, dev, scale, shift
        # with a teacher, its forward pass is part of the step (and of its graph)
        self.teach, self.loss_fn = _distiller(kd)
        self.bf16, self.channels_last = s["bf16"], s["channels_last"]
        self.xb = torch.zeros((batch, *chw), dtype=torch.uint8, device=dev)
        self.yb = torch.zeros(batch, dtype=torch.int64, device=dev)
        lr = torch.tensor(config.lr_start, dtype=torch.float32, device=dev)
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                                   nesterov=config.nesterov, weight_decay=config.weight_decay,
                                   fused=True)
        self.lr = self.opt.param_groups[0]["lr"]
        self.graph = None
        self.out: tuple[torch.Tensor, torch.Tensor] | None = None

    def _body(self) -> tuple[torch.Tensor, torch.Tensor]:
        # autocast's weight cache must be off inside a graph capture (PyTorch's CUDA graph docs)
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.bf16,
                            cache_enabled=False):
            xin = to_float(self.xb, self.scale, self.shift, self.channels_last)
            logits = self.model(xin)
            t_logits = self.teach(xin)
        loss = self.loss_fn(logits, t_logits, self.yb)
        loss.backward()
        self.opt.step()
        return loss.detach(), logits.detach().argmax(1)

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next step (a device-side fill: no host synchronisation)."""
        self.lr.fill_(lr)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step on (uint8 images, labels); returns (loss, predictions) tensors
        that the next call overwrites."""
        self.xb.copy_(xb)
        self.yb.copy_(yb)
        if self.graph is not None:
            self.graph.replay()
            return self.out
        self.opt.zero_grad(set_to_none=True)
        return self._body()

    def _state(self) -> list[torch.Tensor]:
        return [t for t in self.model.parameters()] + [t for t in self.model.buffers()]

    def capture(self, x0: torch.Tensor, y0: torch.Tensor, warmup: int = GRAPH_WARMUP) -> None:
        """Warm up on batch (x0, y0), undo the warm-up, then capture the step as a CUDA graph.

        Warm-up and capture run on a side stream (the current one if it is not the default
        stream: each of the stream executor's threads has its own). The capture uses
        "thread_local" mode so that other threads keep training meanwhile, one capture runs
        at a time per process while no other thread does eager CUDA work (device.CaptureGuard),
        and the graphs captured on one stream share a memory pool.
        """
        dev = self.dev
        saved = [t.detach().clone() for t in self._state()]
        current = torch.cuda.current_stream(dev)
        side = current
        if current == torch.cuda.default_stream(dev):
            side = side_stream(dev, ("fit", threading.get_ident()))
            side.wait_stream(current)
        with torch.cuda.stream(side):
            with CUDA_WORK.shared(dev):   # eager: autotuning may synchronise the device
                self.xb.copy_(x0)
                self.yb.copy_(y0)
                for _ in range(warmup):
                    self.opt.zero_grad(set_to_none=True)
                    self._body()
                with torch.no_grad():
                    for t, v in zip(self._state(), saved, strict=True):
                        t.copy_(v)
                    for state in self.opt.state.values():  # momentum 0: the first step exact
                        buf = state.get("momentum_buffer")
                        if buf is not None:
                            buf.zero_()
            self.opt.zero_grad(set_to_none=True)  # backward allocates .grad in the graph pool
            key = (side.device.index, side.cuda_stream)
            with CUDA_WORK.exclusive(dev):   # no other thread's eager work while capturing
                keeper = _graph_pools.setdefault(key, [torch.cuda.graph_pool_handle(), None])
                graph = torch.cuda.CUDAGraph()
                graph.capture_begin(pool=keeper[0], capture_error_mode="thread_local")
                try:
                    out = self._body()
                finally:
                    graph.capture_end()
                keeper[1] = graph   # keeps the pool alive for the next capture; drops the last
        current.wait_stream(side)
        self.graph, self.out = graph, out

    def release(self) -> None:
        """Drop the graph, its outputs and the gradients (frees the graph's memory pool)."""
        self.graph = self.out = None
        self.opt.zero_grad(set_to_none=True)


def _run_static(model, x, y, sched, batch, config, s, scale, shift, gen, pad, callback,
                kd=None) -> list[EpochRecord]:
    """_run with a _StaticStep (captured as a CUDA graph when s["step"] is "cuda_graph")."""
    dev = x.device
    if sched.epochs == 0:
        return []
    model.train()
    t_setup = time.perf_counter()
    step = _StaticStep(model, config, s, batch, tuple(x.shape[1:]), scale, shift, dev, kd)

    def train_step(lr: float, xb: torch.Tensor, yb: torch.Tensor):
        step.set_lr(lr)
        return step(xb, yb)

    try:
        if s["step"] == "cuda_graph":
            step.capture(x[:batch], y[:batch])
            torch.cuda.current_stream(dev).synchronize()
        s["setup_seconds"] = time.perf_counter() - t_setup
        return _epochs(x, y, sched, batch, gen, pad, callback, train_step, s)
    finally:
        step.release()


def _epoch_batches(x, y, order, batch: int, pad: int | None, gen):
    """(step, uint8 images, labels) for each batch; with `pad` not None, random crops (after
    zero-padding by `pad`) and flips, CHUNK batches in one go."""
    steps = len(order) // batch
    for c0 in range(0, steps, CHUNK):
        idx = order[c0 * batch: min(steps, c0 + CHUNK) * batch]
        xs, ys = x[idx], y[idx]
        if pad is not None:
            xs = crop_flip(xs, pad, *crop_flip_indices(len(idx), xs.shape[2], xs.shape[3], pad,
                                                       gen, x.device))
        for k in range(len(idx) // batch):
            yield c0 + k, xs[k * batch:(k + 1) * batch], ys[k * batch:(k + 1) * batch]


def _check_finite(losses: torch.Tensor, epoch: int, steps: int) -> None:
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        step = int(bad.int().argmax())
        raise TrainingError(f"training diverged: the loss became {float(losses[step])} at epoch "
                            f"{epoch}, step {step + 1} of {steps} (try a lower lr_start)")


def _batches(model, x_np: np.ndarray, mean, std, device, batch_size, bf16: bool = False,
             channels_last: bool = False):
    """(offset, logits) per batch, the forward passes under bf16 autocast and with
    channels_last input if asked (the caller puts the model in that layout)."""
    dev = _model_device(model) if device is None else resolve_device(device)
    model.to(dev)
    if not _is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    x = device_images(x_np, dev)
    scale, shift = normalizer(mean, std, x.shape[1], dev)
    for i in range(0, len(x), batch_size):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(bf16)):
            logits = model(to_float(x[i:i + batch_size], scale, shift, channels_last))
        yield i, logits


def evaluate(model: nn.Module, data, *, mean: Sequence[float], std: Sequence[float],
             device: str | torch.device | None = None, batch_size: int = 1000,
             bf16: bool = False, channels_last: bool = False) -> EvalResult:
    """Accuracy and mean cross-entropy of `model` on `data` (eval mode, no augmentation).

    fp32 and contiguous unless `bf16` (autocast) or `channels_last` ask otherwise; after a
    training, `**eval_settings(config, device)` gives the training's own (what run_task does).
    """
    dev = _model_device(model) if device is None else resolve_device(device)
    y = device_labels(data.y, len(data.x), dev, _num_outputs(model))
    was_training = model.training
    model.eval()
    sums = []  # (loss sum, correct) per batch, kept on the device until the end
    if channels_last:   # outside inference mode: the weights must stay usable for training
        model.to(dev, memory_format=torch.channels_last)
    try:
        with torch.inference_mode(), CUDA_WORK.shared(dev):
            for i, logits in _batches(model, data.x, mean, std, dev, batch_size, bf16,
                                      channels_last):
                yb = y[i:i + len(logits)]
                sums.append(torch.stack([F.cross_entropy(logits.float(), yb, reduction="sum"),
                                         (logits.argmax(1) == yb).sum().float()]))
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        model.train(was_training)
    n = len(y)
    if n == 0:
        return EvalResult(float("nan"), float("nan"), 0)
    loss_sum, correct = torch.stack(sums).double().sum(0).tolist()
    return EvalResult(correct / n, loss_sum / n, n)


def predict_proba(model: nn.Module, x_uint8: np.ndarray, *, mean: Sequence[float],
                  std: Sequence[float], device: str | torch.device | None = None,
                  batch_size: int = 1000) -> np.ndarray:
    """Softmax class probabilities (N, classes) as float32 for uint8 images (N, H, W, C)."""
    was_training = model.training
    model.eval()
    out = []
    dev = _model_device(model) if device is None else resolve_device(device)
    try:
        with torch.inference_mode(), CUDA_WORK.shared(dev):
            for _, logits in _batches(model, x_uint8, mean, std, dev, batch_size):
                out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)
