"""The final training's settings (issue 19): shrink and perturb, and its own starting lr."""

from __future__ import annotations

import pytest
import torch

import morphclimb.worker as worker
from conftest import TINY
from morphclimb.build import build
from morphclimb.config import SearchConfig
from morphclimb.errors import ConfigError
from morphclimb.journal import RunDir
from morphclimb.model0 import starting_arch
from morphclimb.nash import hill_climb
from morphclimb.seeds import derive_seed
from morphclimb.warmstart import shrink_perturb


def test_shrink_perturb_is_its_formula():
    arch = starting_arch(3, 5, 8, widths=(4, 8, 8))
    w = {k: v + 0.25 for k, v in build(arch, seed=1).state_dict().items()
         if v.is_floating_point()}
    w.update({k: v for k, v in build(arch, seed=1).state_dict().items()
              if not v.is_floating_point()})
    before = {k: v.clone() for k, v in w.items()}
    out = shrink_perturb(arch, w, 0.3, 0.2, seed=7)
    fresh = build(arch, seed=7)
    params = dict(fresh.named_parameters())
    stats = [k for k in w if k not in params]
    assert any("running_var" in k for k in stats)       # BatchNorm statistics exist ...
    for k, v in w.items():
        assert torch.equal(v, before[k])                  # the input is left alone
        if k in params:
            assert torch.allclose(out[k], 0.3 * v + 0.2 * params[k].detach(), atol=0, rtol=0)
        else:
            assert torch.equal(out[k], v)                 # ... and are copied unchanged
    same = shrink_perturb(arch, w, 1.0, 0.0, seed=7)
    assert all(torch.equal(same[k], w[k]) for k in w)
    other = shrink_perturb(arch, w, 0.3, 0.2, seed=8)     # the noise follows the seed
    assert any(not torch.equal(other[k], out[k]) for k in params)


@pytest.mark.parametrize("key,value,msg", [
    ("final_shrink", 0.0, "final_shrink must be in"), ("final_shrink", 1.5, "final_shrink"),
    ("final_perturb", -0.1, "final_perturb must be"), ("final_lr", 0.0, "final_lr must be"),
    ("final_lr", float("nan"), "final_lr must be")])
def test_final_settings_are_checked(key, value, msg):
    with pytest.raises(ConfigError, match=msg):
        SearchConfig(**{key: value})


def _spy_final(monkeypatch, epoch_final):
    """Record (weights at the start, lr_start) of every fit of `epoch_final` epochs."""
    seen = []
    real = worker.fit

    def spy(model, data, *, epochs, config, **kw):
        if epochs == epoch_final:
            seen.append(({k: v.detach().clone() for k, v in model.state_dict().items()},
                         config.lr_start))
        return real(model, data, epochs=epochs, config=config, **kw)

    monkeypatch.setattr(worker, "fit", spy)
    return seen


@pytest.mark.parametrize("shrink,perturb,lr", [(1.0, 0.0, None), (0.4, 0.1, 0.09)])
def test_final_training_starts_from_the_prepared_winner(tiny_npz, tmp_path, monkeypatch,
                                                        shrink, perturb, lr):
    seen = _spy_final(monkeypatch, epoch_final=2)
    cfg = SearchConfig(**{**TINY, "dataset": tiny_npz, "n_steps": 1, "epoch_final": 2,
                          "final_shrink": shrink, "final_perturb": perturb, "final_lr": lr})
    hill_climb(cfg, tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    final = run.state().trained["final"]
    arch, w = run.load_model(final["parent"])
    want = shrink_perturb(arch, w, shrink, perturb, derive_seed(cfg.seed, "perturb", "final"))
    assert len(seen) == 1
    start, lr_start = seen[0]
    for k in want:
        assert torch.equal(start[k], want[k].to(start[k].dtype)), k
    if shrink == 1.0:      # the paper's final training: the winner's weights as they are
        assert all(torch.equal(start[k], w[k]) for k in w)
    assert lr_start == (lr if lr is not None else cfg.lr_start)
    # only the final training: every other training starts from lr_start
    other = run.records("model_trained")
    assert all(r["curves"][0]["lr"] <= cfg.lr_start for r in other if r["role"] != "final")


def test_auto_rule_by_hand():
    from morphclimb.config import AUTO_RETRAIN_UP_TO, retrain_is_answer
    assert AUTO_RETRAIN_UP_TO == 0.6
    assert retrain_is_answer("auto", 6, 22)            # 27%: the measured gap
    assert retrain_is_answer("auto", 16, 32)           # 50%: measured, retraining won
    assert retrain_is_answer("auto", 24, 40)           # 60%: the largest share measured
    assert retrain_is_answer("auto", 3, 5)             # 60% in small numbers (3 / 5)
    assert not retrain_is_answer("auto", 25, 41)       # 61%: not measured
    assert not retrain_is_answer("auto", 6, 0)
    assert retrain_is_answer("retrain", 100, 100)
    assert not retrain_is_answer("search", 1, 100)


@pytest.mark.parametrize("epoch_final,answer", [(1, "retrain"), (4, "retrain"), (5, "final")])
def test_final_model_auto_retrains_where_the_rule_says(tiny_npz, tmp_path, epoch_final, answer):
    cfg = SearchConfig(**{**TINY, "dataset": tiny_npz, "epoch_final": epoch_final,
                          "final_model": "auto"})
    res = hill_climb(cfg, tmp_path / "run").results   # lineage 1 + 2 + f: 25%, 57%, 62.5%
    trained = RunDir.open(tmp_path / "run").state().trained
    assert res["model"] == answer
    assert ("retrain" in trained) == (answer == "retrain")
    assert res["model_why"].startswith("final_model=auto")
    assert ("retrained from scratch" in res["model_why"]) == (answer == "retrain")
    if answer == "retrain":
        assert trained["retrain"]["epochs"] == trained["final"]["lineage"]


def test_final_model_auto_retraining_is_planned_in_the_time_budget(tiny_npz, tmp_path):
    from morphclimb import forecast
    from morphclimb.nash import attach
    hill_climb(SearchConfig(**{**TINY, "dataset": tiny_npz, "n_steps": 1}), tmp_path / "run")
    for final_model, planned in (("auto", True), ("search", False)):
        with attach(tmp_path / "run", {"final_model": final_model, "epoch_final": 2}) as climber:
            climber.state.trained.pop("final")   # as predicted during the climb, before it
            best = climber.state.trained["m0"]        # lineage 1 + final 2: 67%, above 60%
            costs = forecast.after_climb_costs(climber, forecast.time_model(climber), best, 0)
            assert "retrain" not in costs
            best = climber.state.trained[climber.state.decided[1]["best"]]   # 2 of 4: 50%
            costs = forecast.after_climb_costs(climber, forecast.time_model(climber), best, 1)
            assert ("retrain" in costs) == planned
            assert costs.get("retrain", 0) >= 0
