"""Ensembles: averaged softmax of several models, scored on a test set (one run's snapshot
members, or the final models of several runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .build import build
from .errors import RunDirError
from .events import FINAL
from .journal import RunDir


def ensemble_proba(models: list[torch.nn.Module], x: np.ndarray, mean, std,
                   device=None) -> np.ndarray:
    """Uniform average of the members' softmax outputs on uint8 images (N, H, W, C)."""
    from .train import predict_proba
    probs = [predict_proba(m, x, mean=mean, std=std, device=device) for m in models]
    return np.mean(probs, axis=0)


def evaluate_members(run: RunDir, member_ids: list[str], data, mean, std, device) -> dict:
    """Test accuracy, loss and parameter count of the ensemble of `member_ids` on `data`."""
    models, params = [], 0
    for mid in member_ids:
        arch, w = run.load_model(mid)
        models.append(build(arch, w).eval())
        params += arch.num_params
    p = ensemble_proba(models, data.x, mean, std, device)
    acc = float((p.argmax(1) == data.y).mean())
    nll = float(-np.log(np.clip(p[np.arange(len(data.y)), data.y], 1e-12, None)).mean())
    return {"members": member_ids, "test_accuracy": acc, "test_loss": nll, "params": params}


def ensemble_across_runs(run_dirs: list[str | Path], device=None) -> dict:
    """Ensemble the final models of several finished runs on the same dataset's test set."""
    from .config import SearchConfig
    from .data.load import load_split
    runs = [RunDir.open(p) for p in run_dirs]
    cfgs = [SearchConfig.from_dict(r.state().config(r.config())) for r in runs]
    keys = {(c.dataset, c.data_root) for c in cfgs}
    if len(keys) > 1:
        raise RunDirError(f"runs use different datasets {sorted(map(str, keys))}; an ensemble "
                          "needs one test set")
    for r in runs:
        if r.state().finished is None:
            raise RunDirError(f"{r.path} has not finished; resume it first")
    _, split = load_split(cfgs[0])
    models, params = [], 0
    for r in runs:
        arch, w = r.load_model(FINAL)
        models.append(build(arch, w).eval())
        params += arch.num_params
    p = ensemble_proba(models, split.test.x, split.mean, split.std, device)
    acc = float((p.argmax(1) == split.test.y).mean())
    return {"kind": "across_runs", "runs": [str(r.path) for r in runs], "test_accuracy": acc,
            "test_error": 100 * (1 - acc), "params": params}
