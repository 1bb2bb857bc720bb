"""Search configuration: a frozen dataclass, named presets, file and key=value overrides."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from .errors import ConfigError
from .zoo import NAMES as ZOO_NAMES
from .zoo import is_zoo_name


@dataclass(frozen=True)
class SearchConfig:
    """Every knob of a NASH run (Algorithm 1's parameters, data, training and execution)."""

    # data
    dataset: str = "mini-cifar10"
    data_root: str | None = None
    val: float | None = None          # validation size: count (>=1) or fraction; None = default
    split_seed: int = 0               # seed of the train/validation split (fixed across runs)
    subset: int | None = None         # use only this many training images (stratified)
    # Algorithm 1
    n_steps: int = 5
    n_neigh: int = 8
    n_nm: int = 5
    epoch_pretrain: int = 20
    epoch_neigh: int = 17
    epoch_final: int = 100
    lr_start: float = 0.05
    lr_end: float = 0.0
    sgdr_climb: bool = True           # False: the paper's "no SGDR" ablation (constant lr_start)
    rungs: tuple[int, ...] = ()       # successive halving: epochs of each rung (sum epoch_neigh)
    eta: int = 3                      # halving: the best 1/eta of a rung go on to the next
    # approximate morphisms and distillation (LEMONADE; docs/distill.md)
    approximate: bool = False         # children may also be made by approximate morphisms
    distill_weight: float = 0.5       # a child of an approximate morphism learns from its
    distill_temperature: float = 4.0  # parent: (1-w) CE + w T^2 KL (w = 0: no distillation)
    # the Pareto search (LEMONADE; docs/pareto.md)
    strategy: str = "nash"            # "pareto": a front of error against size in one search
    objective: str = "params"         # the size a Pareto search trades against: params, mflops
    n_draw: int = 0                   # Pareto: children drawn per generation (0: 4 x n_neigh)
    front_final: int = 0              # Pareto: front members trained on train+val (0: all)
    # starting network
    widths: tuple[int, int, int] = (32, 64, 128)
    start: str | None = None          # start from a run directory or an arch.json instead
    start_weights: str | None = None  # weights.safetensors for an arch.json start
    start_model: str | None = None    # with a run directory start: its model or front member
    extra_starts: tuple[str, ...] = ()    # Pareto: more start networks for the first front
                                          # (start points, arch.json files, run directories)
    # limits
    time_budget: float | None = None  # seconds for the whole command ("2h", "30m" accepted)
    max_params: int | None = None     # children above this are redrawn, never trained
    max_mflops: float | None = None   # forward MFLOPs per image, likewise
    min_params: int | None = None     # children below this are redrawn (the start may be)
    min_mflops: float | None = None   # forward MFLOPs per image, likewise
    # extras around the search
    snapshot_ensemble: bool = False   # train each step's best on train+val and ensemble them
    retrain: bool = False             # retrain the found architecture from scratch (Table 2)
    baseline: bool = False            # train model_0 for the same total epochs, for comparison
    final_model: str = "search"       # "retrain": the run's model is the retrained one;
                                      # "auto": retrained when the final share is small
    reference: str | None = None      # "auto" or a start point (resnet20...): trained alone
                                      # for the search's wall time, for comparison
    # the final training (on train + validation) of the climb's winner
    final_shrink: float = 1.0         # shrink and perturb first (Ash & Adams 2020): the
    final_perturb: float = 0.0        # weights become shrink * w + perturb * fresh init
    final_lr: float | None = None     # its SGDR cycle's starting lr (None: lr_start)
    final_share: float | None = None  # with time_budget: at least this share of the budget is
                                      # the final training's, whose epochs fill what is left
                                      # (re-planned after each epoch to end by the budget)
    # training
    batch_size: int = 128
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    augment: bool = True
    crop_pad: int = 4                 # augmentation: random crops of the image padded by this
    probe_size: int = 256             # images whose statistics initialise new BatchNorms
    bf16: bool | None = None          # None: automatic per device
    channels_last: bool | None = None
    threads: int | None = None
    eval_batch_size: int = 1000
    train_step: str = "auto"          # how a training step runs: eager, cuda_graph, compile;
                                      # auto: cuda_graph on CUDA, eager elsewhere
    cudnn_benchmark: bool | None = None   # CUDA: cuDNN autotuning (None: auto, off in stream slots)
    # execution
    seed: int = 0
    device: str = "auto"
    executor: str = "auto"            # auto: streams on CUDA (serial if train_step=compile),
                                      # serial elsewhere
    workers: int | None = None
    ray_address: str | None = None
    tensorboard: bool = False
    keep_weights: str = "all"         # "best": after each step, delete the losers' weights

    def __post_init__(self) -> None:
        check(self)

    def replace(self, **changes: Any) -> SearchConfig:
        """A copy with some fields changed (validated; keys in any case, as everywhere)."""
        return dataclasses.replace(self, **canonical_keys(changes))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (but the QUIET keys at their defaults)."""
        d = dataclasses.asdict(self)
        d["widths"], d["rungs"] = list(self.widths), list(self.rungs)
        for key in QUIET:
            if d[key] == FIELDS[key].default:
                del d[key]
        if "extra_starts" in d:
            d["extra_starts"] = list(self.extra_starts)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchConfig:
        """A config from a dict such as `to_dict()` wrote (unknown keys rejected)."""
        return cls(**{k: _coerce(k, v) for k, v in canonical_keys(d).items()})

    @property
    def total_epochs(self) -> int:
        """Epochs the returned model received in total (pretrain + steps + final)."""
        return self.epoch_pretrain + self.n_steps * self.epoch_neigh + self.epoch_final


FIELDS = {f.name: f for f in fields(SearchConfig)}
# keys added after runs were journaled that change nothing at their defaults: to_dict leaves
# them out while they hold them, so a NASH run's config.json and journal are byte for byte
# what they were before the keys existed (from_dict fills them in)
QUIET = ("approximate", "distill_weight", "distill_temperature", "strategy", "objective",
         "n_draw", "front_final", "start_model", "final_share", "min_params", "min_mflops",
         "extra_starts")
_LOWER = {k.lower(): k for k in FIELDS}   # keys are accepted in any case (n_NM: n_nm)
_HINTS = get_type_hints(SearchConfig)
# field -> the types its value may have (a union split into its members; a tuple kept whole)
_ALLOWED = {k: get_args(t) if get_origin(t) is not tuple and get_args(t) else (t,)
            for k, t in _HINTS.items()}

PAPER = dict(n_steps=5, n_neigh=8, n_nm=5, epoch_pretrain=20, epoch_neigh=17, epoch_final=100,
             lr_start=0.05, lr_end=0.0, dataset="cifar10")
PRESETS: dict[str, dict[str, Any]] = {
    "demo": dict(dataset="mini-cifar10", n_steps=3, n_neigh=4, n_nm=2, epoch_pretrain=4,
                 epoch_neigh=3, epoch_final=6, widths=(16, 32, 64), baseline=True,
                 reference="auto", final_model="auto"),
    "pareto-demo": dict(dataset="mini-cifar10", n_steps=4, n_neigh=4, n_nm=2, epoch_pretrain=4,
                        epoch_neigh=3, epoch_final=6, widths=(16, 32, 64), strategy="pareto",
                        approximate=True, front_final=3),
    "table1-nash": dict(PAPER),
    "table1-nosgdr": dict(PAPER, sgdr_climb=False),
    "table1-random": dict(PAPER, n_neigh=1),
    "table3-c10-s5": dict(PAPER, snapshot_ensemble=True),
    "table3-c10-s8": dict(PAPER, n_steps=8, snapshot_ensemble=True),
    "table4-c100-s8": dict(PAPER, n_steps=8, dataset="cifar100", snapshot_ensemble=True),
}
PRESET_HELP = {
    "demo": "small search on the bundled mini CIFAR-10 (about 3 min on 2 CPU cores, about 10 "
            "with the baseline, retraining and equal-time reference after it)",
    "pareto-demo": "a Pareto front of error against parameters on the bundled mini CIFAR-10 "
                   "(LEMONADE's search at demo scale; 3 members trained to the end)",
    "table1-nash": "paper Table 1: n_steps 5, n_neigh 8, n_NM 5, 17 epochs/child, 100 final",
    "table1-nosgdr": "paper Table 1: as table1-nash but constant lr during the climb",
    "table1-random": "paper Table 1: random networks (n_neigh 1)",
    "table3-c10-s5": "paper Table 3: CIFAR-10, n_steps 5, with snapshot ensemble",
    "table3-c10-s8": "paper Table 3: CIFAR-10, n_steps 8, with snapshot ensemble",
    "table4-c100-s8": "paper Table 4: CIFAR-100, n_steps 8, with snapshot ensemble",
}
# where models train: name -> "module:class" of its executor (each has `from_config`), the one
# table the config check, the CLI's --executor and executors.make_executor read ("auto" is
# resolved to one of the others: executors.auto_executor); imported only when chosen
EXECUTORS = {"auto": None,
             "serial": "morphclimb.executors:SerialExecutor",
             "local": "morphclimb.parallel.local:LocalExecutor",
             "ray": "morphclimb.parallel.ray_executor:RayExecutor",
             "streams": "morphclimb.parallel.streams:StreamExecutor"}
# the search strategies: name -> "module:class" of its Strategy (strategy.py), the one table
# the config check and strategy.strategy_of read
STRATEGIES = {"nash": "morphclimb.strategy:Nash", "pareto": "morphclimb.pareto_strategy:Pareto"}
OBJECTIVES = ("params", "mflops")
TRAIN_STEPS = ("eager", "cuda_graph", "compile")   # train.fit's `step` (it also takes "auto")
FINAL_MODELS = ("search", "retrain", "auto")   # the model a run hands out (evaluate, export,
                                                # predict); auto: retrain_is_answer's rule
# final_model=auto retrains the found architecture from scratch, and hands that out, when the
# final training is at most this share of the answer's epochs: the largest share measured, at
# which the retrained network still won (BENCHMARKS.md, issue 19, CPU scale, 5 seeds: by 4.7
# points at 27%, 2.9 at 50%, 2.5 at 55%, 2.0 at 60%); above it nothing was measured
AUTO_RETRAIN_UP_TO = 0.6


def retrain_is_answer(final_model: str, epoch_final: int, lineage: int) -> bool:
    """Whether the run's answer is its architecture retrained from scratch: final_model
    "retrain", or "auto" when the final training is at most AUTO_RETRAIN_UP_TO of the answer's
    `lineage` epochs (pretraining, climb and final training)."""
    if final_model == "retrain":
        return True
    return (final_model == "auto" and lineage > 0
            and epoch_final / lineage <= AUTO_RETRAIN_UP_TO + 1e-9)
KEEP_WEIGHTS = ("all", "best")  # which trained models keep their weights on disk
# the trainer's settings (train.TrainConfig's fields but sgdr; tests check they agree), where a
# search runs, and what `resume --set` may change (the training settings are journaled)
TRAIN_KEYS = ("batch_size", "lr_start", "lr_end", "momentum", "nesterov", "weight_decay",
              "augment", "crop_pad", "bf16", "channels_last", "threads", "eval_batch_size",
              "cudnn_benchmark")
EXEC_KEYS = ("device", "executor", "workers", "ray_address", "threads", "keep_weights")
# the jobs after the climb: `resume --set reference=null` (or baseline=false, ...) skips one
# that failed, journaled like the training settings
FOLLOWUP_KEYS = ("baseline", "retrain", "reference", "snapshot_ensemble", "final_model")
RESUME_KEYS = (*TRAIN_KEYS, "train_step", *FOLLOWUP_KEYS)


def canonical_key(key: Any) -> str:
    """The config key `key` names: itself, or the key it spells in another case (the paper's
    n_NM is n_nm); ConfigError otherwise, suggesting the closest keys."""
    if key in FIELDS:
        return key
    if isinstance(key, str) and key.lower() in _LOWER:
        return _LOWER[key.lower()]
    raise ConfigError(f"unknown config key {key!r}{_suggest(key)}")


def _suggest(key: Any) -> str:
    """'; did you mean ...?' for the keys closest to `key` (else where to find the keys)."""
    close = difflib.get_close_matches(str(key).lower(), list(_LOWER), n=3, cutoff=0.6)
    names = [repr(_LOWER[c]) for c in close]
    if names:
        listed = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        return f"; did you mean {listed}?"
    return " (`morphclimb search --help` lists the keys)"


def canonical_keys(d: dict[str, Any]) -> dict[str, Any]:
    """`d` with every key made canonical (case differences accepted); ConfigError for an
    unknown key, or for one key given twice in different cases."""
    out: dict[str, Any] = {}
    spelled: dict[str, Any] = {}
    for key, value in d.items():
        name = canonical_key(key)
        if name in out and out[name] != value:
            raise ConfigError(f"config key {name} given twice with different values (as "
                              f"{spelled[name]!r} and {key!r})")
        out[name], spelled[name] = value, key
    return out


DURATION = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(key: str, text: str) -> float:
    """Seconds from '90', '90s', '30m', '2h' or '1.5h' (ConfigError naming `key` otherwise)."""
    t = text.strip().lower()
    unit = next((u for u in ("min", "s", "m", "h") if t.endswith(u)), "")
    try:
        return float(t[: len(t) - len(unit)]) * DURATION.get(unit, 1.0)
    except ValueError:
        raise ConfigError(f"{key}: expected seconds or a duration such as 90s, 30m, 2h; "
                          f"got {text!r}") from None


def _coerce(key: str, value: Any) -> Any:
    """Check (and gently convert) one value against the field's declared type."""
    allowed = _ALLOWED[key]
    if key == "time_budget" and isinstance(value, str):
        value = parse_duration(key, value)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{key}: may not be null")
    for t in allowed:
        if t is type(None):
            continue
        if get_origin(t) is tuple or t is tuple:
            if (get_args(t) or (int,))[0] is str:   # names: a list, or "a,b" as --set gives
                if isinstance(value, str):
                    value = [v.strip() for v in value.split(",") if v.strip()]
                if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                    return tuple(value)
                continue
            if isinstance(value, (list, tuple)) and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value):
                return tuple(value)
            continue
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is bool and isinstance(value, bool):
            return value
        if t is str and isinstance(value, str):
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"{key}: expected {names}, got {value!r}")


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def finite(v: Any) -> bool:
    """Whether `v` is a real number (not a bool) that is neither infinite nor NaN."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_training(t: Any) -> None:
    """The rules for training settings, shared by SearchConfig and train.TrainConfig.

    `t` is any object with the training fields as attributes (batch_size, lr_start, ...);
    raises ConfigError naming the key. This is the one place these rules live.
    """
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)
    for name in ("batch_size", "eval_batch_size"):
        v = getattr(t, name)
        need(_int(v) and v >= 1, f"{name} must be a positive integer, got {v!r}")
    need(_int(t.crop_pad) and t.crop_pad >= 0,
         f"crop_pad must be an integer >= 0, got {t.crop_pad!r}")
    need(finite(t.lr_start) and t.lr_start > 0,
         f"lr_start must be a finite number > 0, got {t.lr_start!r}")
    need(finite(t.lr_end) and t.lr_end >= 0,
         f"lr_end must be a finite number >= 0, got {t.lr_end!r}")
    need(t.lr_end <= t.lr_start, f"lr_end ({t.lr_end}) must not exceed lr_start "
         f"({t.lr_start}): SGDR anneals downwards")
    need(finite(t.weight_decay) and t.weight_decay >= 0,
         f"weight_decay must be a finite number >= 0, got {t.weight_decay!r}")
    need(finite(t.momentum) and 0 <= t.momentum < 1,
         f"momentum must be in [0, 1), got {t.momentum!r}")
    for name in ("nesterov", "augment"):
        v = getattr(t, name)
        need(isinstance(v, bool), f"{name} must be true or false, got {v!r}")
    for name in ("bf16", "channels_last"):
        v = getattr(t, name)
        need(v is None or isinstance(v, bool), f"{name} must be true, false or null (auto), "
             f"got {v!r}")
    need(t.cudnn_benchmark is None or isinstance(t.cudnn_benchmark, bool),
         f"cudnn_benchmark must be true, false or null (auto), got {t.cudnn_benchmark!r}")
    need(t.threads is None or (_int(t.threads) and t.threads >= 1),
         f"threads must be a positive integer or null (auto), got {t.threads!r}")
    need(not (t.nesterov and t.momentum == 0),
         "nesterov=true needs momentum > 0 (set nesterov=false for plain SGD)")


def check(c: SearchConfig) -> None:
    """Raise ConfigError for any value out of range (messages name the key)."""
    for f in fields(c):
        _coerce(f.name, getattr(c, f.name))
    check_training(c)
    for key in ("n_steps", "n_nm", "epoch_pretrain", "epoch_neigh", "epoch_final", "probe_size",
                "seed", "split_seed"):
        if getattr(c, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {getattr(c, key)}")
    if c.seed >= 2**63 or c.split_seed >= 2**63:
        raise ConfigError(f"seed and split_seed must be < 2**63, got {c.seed}, {c.split_seed}")
    if c.n_neigh < 1:
        raise ConfigError(f"n_neigh must be >= 1, got {c.n_neigh}")
    if c.subset is not None and c.subset < 2:
        raise ConfigError(f"subset must be at least 2 images, got {c.subset}")
    if c.val is not None and (not math.isfinite(c.val) or c.val <= 0):
        raise ConfigError(f"val must be a count >= 1 or a fraction in (0, 1), got {c.val}")
    if c.executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {c.executor!r}")
    if c.final_model not in FINAL_MODELS:
        raise ConfigError(f"final_model must be one of {', '.join(FINAL_MODELS)}, got "
                          f"{c.final_model!r}")
    if c.train_step not in ("auto", *TRAIN_STEPS):
        raise ConfigError(f"train_step must be one of auto, {', '.join(TRAIN_STEPS)}, got "
                          f"{c.train_step!r}")
    if c.executor == "streams" and c.train_step == "compile":
        raise ConfigError("executor=streams cannot train with train_step=compile "
                          "(torch.compile is not thread-safe); use train_step=cuda_graph or "
                          "eager, or executor=serial")
    if c.keep_weights not in KEEP_WEIGHTS:
        raise ConfigError(f"keep_weights must be one of {', '.join(KEEP_WEIGHTS)}, got "
                          f"{c.keep_weights!r}")
    if c.workers is not None and c.workers < 1:
        raise ConfigError(f"workers must be >= 1, got {c.workers}")
    if len(c.widths) != 3 or min(c.widths) < 1:
        raise ConfigError(f"widths must be three positive integers, got {list(c.widths)}")
    for key in ("time_budget", "max_mflops", "min_mflops"):
        v = getattr(c, key)
        if v is not None and (not math.isfinite(v) or v <= 0):
            raise ConfigError(f"{key} must be a positive number, got {v}")
    if not (finite(c.final_shrink) and 0 < c.final_shrink <= 1):
        raise ConfigError(f"final_shrink must be in (0, 1], got {c.final_shrink}")
    if not (finite(c.final_perturb) and c.final_perturb >= 0):
        raise ConfigError(f"final_perturb must be a finite number >= 0, got {c.final_perturb}")
    if c.final_lr is not None and not (finite(c.final_lr) and c.final_lr >= c.lr_end
                                       and c.final_lr > 0):
        raise ConfigError(f"final_lr must be a finite number > 0 and >= lr_end ({c.lr_end}), "
                          f"got {c.final_lr}")
    if c.final_share is not None:
        if not (finite(c.final_share) and 0 < c.final_share < 1):
            raise ConfigError(f"final_share must be in (0, 1), got {c.final_share}")
        if c.time_budget is None:
            raise ConfigError("final_share needs time_budget (a share of what?)")
    if c.reference is not None and c.reference != "auto" and not is_zoo_name(c.reference):
        raise ConfigError(f"reference must be auto or a start point such as "
                          f"{', '.join(ZOO_NAMES)}, got {c.reference!r}")
    if c.max_params is not None and c.max_params < 1:
        raise ConfigError(f"max_params must be >= 1, got {c.max_params}")
    if c.min_params is not None and c.min_params < 1:
        raise ConfigError(f"min_params must be >= 1, got {c.min_params}")
    for unit in ("params", "mflops"):
        lo, hi = getattr(c, f"min_{unit}"), getattr(c, f"max_{unit}")
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"min_{unit} ({lo:g}) is above max_{unit} ({hi:g}): no child "
                              f"could be trained")
    if c.start_weights is not None and c.start is None:
        raise ConfigError("start_weights needs start (the arch.json the weights belong to)")
    if c.start_model is not None and c.start is None:
        raise ConfigError("start_model needs start (the run directory the model belongs to)")
    if c.extra_starts:
        if c.strategy != "pareto":
            raise ConfigError("extra_starts seeds a Pareto search's first front "
                              "(strategy=pareto); NASH climbs from one network (start)")
        if any(not e for e in c.extra_starts):
            raise ConfigError(f"extra_starts: an empty name in {list(c.extra_starts)}")
        twice = next((e for k, e in enumerate(c.extra_starts) if e in c.extra_starts[:k]),
                     None)
        if twice is not None:
            raise ConfigError(f"extra_starts names {twice!r} twice")
    if c.rungs:
        if min(c.rungs) < 1 or sum(c.rungs) != c.epoch_neigh:
            raise ConfigError(f"rungs must be positive epoch counts adding up to epoch_neigh "
                              f"({c.epoch_neigh}), got {list(c.rungs)}")
        if c.n_neigh < 2:
            raise ConfigError("rungs (successive halving) need n_neigh >= 2")
    if c.eta < 2:
        raise ConfigError(f"eta must be >= 2, got {c.eta}")
    if not (finite(c.distill_weight) and 0 <= c.distill_weight <= 1):
        raise ConfigError(f"distill_weight must be in [0, 1], got {c.distill_weight}")
    if not (finite(c.distill_temperature) and c.distill_temperature > 0):
        raise ConfigError(f"distill_temperature must be a finite number > 0, got "
                          f"{c.distill_temperature}")
    if c.n_steps > 0 and (c.n_neigh > 1 or c.strategy == "pareto") and c.n_nm < 1:
        raise ConfigError("n_nm must be >= 1 when children are made (n_neigh > 1)")
    check_pareto(c)


def check_pareto(c: SearchConfig) -> None:
    """The Pareto search's settings (strategy, objective, n_draw, front_final)."""
    if c.strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got "
                          f"{c.strategy!r}")
    if c.objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got "
                          f"{c.objective!r}")
    if c.n_draw < 0 or (c.n_draw and c.n_draw < c.n_neigh):
        raise ConfigError(f"n_draw must be 0 (4 x n_neigh) or at least n_neigh ({c.n_neigh}), "
                          f"got {c.n_draw}")
    if c.front_final < 0:
        raise ConfigError(f"front_final must be >= 0 (0: every member), got {c.front_final}")
    if c.strategy == "pareto" and c.final_model != "search":
        raise ConfigError("final_model applies to NASH's one answer; a Pareto search hands "
                          "out its front (use retrain=true to retrain its most accurate "
                          "member)")


def parse_value(key: str, text: str) -> Any:
    """Parse the value of a `--set key=value` override (JSON, else a bare string)."""
    key = canonical_key(key)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    if isinstance(value, str) and text.lower() in ("true", "false", "none", "null"):
        value = {"true": True, "false": False}.get(text.lower())
    return _coerce(key, value)


def resolve(preset: str | None = "demo", file: str | Path | None = None,
            overrides: dict[str, Any] | None = None, sets: list[str] | None = None
            ) -> SearchConfig:
    """Preset, then config file (JSON), then keyword overrides, then `key=value` strings."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    if file is not None:
        values.update(canonical_keys(load_file(file)))
    values.update(canonical_keys(dict(overrides or {})))
    values.update(parse_sets(sets or []))
    return SearchConfig.from_dict(values)


def parse_sets(sets: list[str]) -> dict[str, Any]:
    """`key=value` strings (the CLI's --set) as a dict of checked values."""
    values = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set needs key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = canonical_key(key.strip())
        values[key] = parse_value(key, text.strip())
    return values


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON config file into a dict (errors name the file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"config file {p} is not valid JSON: {e}") from e
    if not isinstance(d, dict):
        raise ConfigError(f"config file {p} must hold a JSON object of key: value")
    return d
