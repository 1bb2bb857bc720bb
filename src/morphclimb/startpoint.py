"""Where a climb starts: the paper's model_0, another run's network, or a user's arch.json."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, RunDirError
from .events import FINAL, MODEL0
from .journal import RunDir, read_arch_file
from .model0 import starting_arch
from .spec import Arch
from .zoo import NAMES, is_zoo_name, zoo_arch


def load_start(c, split) -> tuple[Arch, dict[str, torch.Tensor] | None, dict[str, Any]]:
    """The starting network of config `c` on `split`: (arch, weights or None, where from).

    `c.start` None: the paper's model_0 (weights None: trained from scratch). A run directory:
    its final network (its current best if it has not finished), with weights; with
    `c.start_model`, that model of the run, or that front member's final training when it had
    one (members.start_model). A JSON file:
    that architecture, with `c.start_weights` (a safetensors file) or fresh weights. A start
point's name from zoo.py (resnet20, ...): that network for the data's images and classes,
fresh weights unless `c.start_weights`. The
    network must read the split's images and predict its classes; errors are one line.
    """
    if c.start is None:
        arch = starting_arch(split.channels, split.num_classes, split.image_size,
                             widths=c.widths)
        return arch, None, {"kind": "model0"}
    p = Path(c.start).expanduser()
    if p.is_dir():
        if c.start_weights is not None:
            raise ConfigError("start_weights is for an arch.json start; a run directory "
                              "brings its own weights")
        run = RunDir.open(p)
        st = run.state()
        if c.start_model is not None:
            from .members import start_model
            model = start_model(run, st, c.start_model)
        else:
            best = st.trained.get(FINAL) or st.best()
            if best is None:
                raise RunDirError(f"start: {p} has no trained model yet")
            model = best["model"]
        arch, w = run.load_model(model)
        info = {"kind": "run", "source": str(p), "model": model,
                **({"member": c.start_model} if c.start_model not in (None, model) else {})}
    elif c.start_model is not None:
        raise ConfigError(f"start_model picks a model of a run directory start; {p} is not a "
                          "run directory")
    elif p.is_file():
        arch = read_arch_file(p)
        w = None
        if c.start_weights is not None:
            w = _read_weights(Path(c.start_weights).expanduser())
            from .build import build
            build(arch, w)   # the weights must fit the architecture (ArchError otherwise)
        info = {"kind": "arch", "source": str(p), "weights": c.start_weights}
    elif is_zoo_name(c.start):
        arch = zoo_arch(c.start, split.channels, split.num_classes, split.image_size)
        w = None
        if c.start_weights is not None:
            w = _read_weights(Path(c.start_weights).expanduser())
            from .build import build
            build(arch, w)   # the weights must fit the architecture (ArchError otherwise)
        info = {"kind": "zoo", "name": c.start, "weights": c.start_weights}
    else:
        raise ConfigError(f"start: no such run directory or arch.json file, and not a start "
                          f"point ({', '.join(NAMES)}): {p}")
    _check_fits_data(arch, split, p)
    return arch, w, info


def start_ids(c) -> list[str]:
    """The models a climb starts from: model_0 (`start`), then start_1, start_2, ... for a
    Pareto search's `extra_starts`, in their order."""
    return [MODEL0] + [f"start_{k}" for k in range(1, len(c.extra_starts) + 1)]


def start_of(c, split, model_id: str
             ) -> tuple[Arch, dict[str, torch.Tensor] | None, dict[str, Any]]:
    """`load_start` of one of `start_ids(c)`: model_0's start, or start_k's entry of
    `extra_starts` (a start point's name, an arch.json without weights, or a run directory)."""
    if model_id == MODEL0:
        return load_start(c, split)
    ids = start_ids(c)
    if model_id not in ids:
        raise ConfigError(f"{model_id} is not a start of this run (its starts: "
                          f"{', '.join(ids)})")
    entry = c.extra_starts[ids.index(model_id) - 1]
    try:
        return load_start(dataclasses.replace(c, start=entry, start_weights=None,
                                              start_model=None), split)
    except (ConfigError, RunDirError) as e:
        raise type(e)(f"extra_starts ({entry}): {e}") from None


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    if not path.is_file():
        raise ConfigError(f"start_weights: no such file: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ConfigError(f"start_weights: {path} is not a readable safetensors file: "
                          f"{str(e).splitlines()[0] if str(e) else e}") from e


def _check_fits_data(arch: Arch, split, source: Path) -> None:
    problem = arch.data_mismatch(split.channels, split.image_size, split.num_classes,
                                 "the dataset has")
    if problem:
        raise ConfigError(f"start: {source} {problem}")
