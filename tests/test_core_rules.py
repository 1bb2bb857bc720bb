"""Unit rules of the core that silently change a search's result when broken: derived seeds,
the budget's time model and limits, the journal replay, the config checks and the automatic
device settings (the CUDA branch by monkeypatching). Fast; the mutation runs of these modules
use them (scripts/mutation.sh, docs/mutation.md)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

import morphclimb.budget as budget
import morphclimb.config as config
import morphclimb.device as device
from morphclimb.budget import (
    TimeModel,
    available_bytes,
    fits,
    image_passes,
    mflops,
    size_problem,
    training_bytes,
)
from morphclimb.config import SearchConfig
from morphclimb.device import auto_settings, cpu_supports_bf16, resolve_device
from morphclimb.errors import ConfigError
from morphclimb.model0 import starting_arch
from morphclimb.seeds import derive_seed
from morphclimb.state import RunState
from morphclimb.train import TrainConfig, _settings
from morphclimb.zoo import NAMES as ZOO_NAMES

NAN, INF = float("nan"), float("inf")


# ------------------------------------------------------------------ seeds
def _ss(*ints: int) -> int:
    return int(np.random.SeedSequence(list(ints)).generate_state(1)[0] & 0x7FFFFFFF)


def test_derived_seeds_are_the_documented_ones():
    # fixed values: every run ever made draws from these (a change re-randomises old runs)
    assert derive_seed(0) == 821328062
    assert derive_seed(0, "train", "s01c1") == 645531962
    assert derive_seed(7, 3, "abcdefgh") == 1183165582          # 8 bytes: the old rule
    assert derive_seed(7, 3, "abcdefghi") == 1256141633         # 9 bytes: hashed whole
    assert derive_seed(2**62, "morph", 1, 2, 3) == 454912633
    # the rules behind them: integers as they are, up to 8 bytes little-endian, longer keys
    # as a SHA-256 digest; 31 bits of the first word of a SeedSequence
    assert derive_seed(5, 9, "ab") == _ss(5, 9, int.from_bytes(b"ab", "little"))
    assert derive_seed(5, "abcdefgh") == _ss(5, int.from_bytes(b"abcdefgh", "little"))
    long = "s01c12r1-a-long-id"
    digest = int.from_bytes(hashlib.sha256(long.encode()).digest(), "little")
    assert derive_seed(5, long) == _ss(5, digest)
    assert derive_seed(5, "1") != derive_seed(5, 1)
    assert derive_seed(5, 1, 2) != derive_seed(5, 2, 1)
    seeds = [derive_seed(s, "k", i) for s in range(4) for i in range(50)]
    assert all(0 <= s < 2**31 for s in seeds) and max(seeds) >= 2**30
    assert len(set(seeds)) == len(seeds)


# ------------------------------------------------------------------ budget
TINY_ARCH = starting_arch(3, 4, 8, widths=(4, 8, 8))   # 1,048 parameters, 0.030116 MFLOPs


def test_size_limits_are_inclusive():
    n, m = TINY_ARCH.num_params, mflops(TINY_ARCH)
    assert n == 1048 and m == 0.030116                      # 30,116 FLOPs per image
    assert size_problem(TINY_ARCH, None, None) is None
    assert size_problem(TINY_ARCH, n, m) is None               # at the limit: allowed
    assert size_problem(TINY_ARCH, n - 1, None) == "1,048 parameters > max_params 1,047"
    assert size_problem(TINY_ARCH, None, 0.03) == "0.03 MFLOPs > max_mflops 0.03"
    assert size_problem(TINY_ARCH, n - 1, 0.03).startswith("1,048 parameters")
    # floors, likewise inclusive
    assert size_problem(TINY_ARCH, None, None, n, m) is None
    assert size_problem(TINY_ARCH, None, None, n + 1) == "1,048 parameters < min_params 1,049"
    assert size_problem(TINY_ARCH, None, None, None, 0.031) == \
        "0.03 MFLOPs < min_mflops 0.031"
    assert size_problem(TINY_ARCH, n, m, n + 1, None).startswith("1,048 parameters <")


def test_image_passes_and_training_bytes():
    assert image_passes(3, 100, 30) == pytest.approx(310.0)
    assert image_passes(0, 100, 90) == pytest.approx(30.0)
    assert image_passes(2, 50, 0) == 100
    # 3 copies of the parameters, 2 of each node's output per image (1,548 values), float32
    assert training_bytes(TINY_ARCH, 2) == 4 * (3 * 1048 + 2 * 2 * 1548)
    assert training_bytes(TINY_ARCH, 0) == 12 * 1048


@pytest.mark.parametrize("samples, a, b", [
    # two sizes on a line: overhead a and cost b per MFLOP (seconds per image pass)
    ([(1.0, 1000, 2.0), (3.0, 1000, 4.0)], 1e-3, 1e-3),
    ([(1.0, 1000, 2.0), (3.0, 1000, 4.0), (5.0, 2000, 12.0)], 1e-3, 1e-3),
    # negative overhead: proportional, the median of seconds per pass and MFLOP
    ([(1.0, 1000, 1.0), (3.0, 1000, 5.0)], 0.0, (1e-3 + 5e-3 / 3) / 2),
    ([(0.25, 1000, 1.0), (0.75, 1000, 5.0)], 0.0, (4e-3 + 5e-3 / 0.75) / 2),
    # negative slope: constant, the median of seconds per pass
    ([(1.0, 1000, 5.0), (3.0, 1000, 1.0)], 3e-3, 0.0),
    # one size only: proportional
    ([(2.0, 1000, 4.0)], 0.0, 2e-3),
    ([(2.0, 1, 0.004)], 0.0, 2e-3),                  # a single image pass counts
    ([(0.5, 1000, 1.0)], 0.0, 2e-3),                 # below 1 MFLOP: still per MFLOP
    ([(2.0, 1000, 4.0), (2.0, 500, 1.0), (2.0, 100, 1.0)], 0.0, 2e-3),
    # sizes closer than 1e-9 relative count as one size (proportional); just above: a line
    ([(1000.0, 1000, 2.0), (1000.00000001, 1000, 1.0)], 0.0, 1.5e-3 / 1000.0),
    ([(0.5, 1000, 2.0), (0.5 + 1.5e-9, 1000, 1.0)], 1.5e-3, 0.0),
    # unmeasured samples (no passes, no seconds) are left out
    ([(2.0, 1000, 4.0), (9.0, 0, 5.0), (9.0, 10, 0.0)], 0.0, 2e-3),
])
def test_time_model_fit(samples, a, b):
    m = TimeModel(samples)
    assert m.a == pytest.approx(a, abs=1e-12) and m.b == pytest.approx(b, abs=1e-12)
    assert m.ready and m.n == len([s for s in samples if s[1] > 0 and s[2] > 0])
    # predictions: 15 % margin on passes x (a + b x MFLOPs)
    assert m.seconds(4.0, 500) == pytest.approx(1.15 * 500 * (a + 4.0 * b))


def test_time_model_without_samples_predicts_nothing():
    m = TimeModel([])
    assert not m.ready and m.n == 0 and (m.a, m.b) == (0.0, 0.0)
    assert m.seconds(10.0, 1e6) == 0.0
    assert not TimeModel([(1.0, 0, 1.0)]).ready


def test_fits_is_inclusive_and_accounts():
    ok, account = fits(30.0, {"step 1": 10.0, "final": 20.0})
    assert ok and account == "needs ~30s (step 1 ~10s, final ~20s), 30s left"
    ok, account = fits(29.9, {"step 1": 10.0, "final": 20.0})
    assert not ok and account.endswith(", 30s left")
    ok, account = fits(-5.0, {"final": 1.0})
    assert not ok and account == "needs ~1s (final ~1s), 0s left"
    assert fits(0.0, {}) == (True, "needs ~0s (), 0s left")


def test_available_bytes_cpu_cuda_and_unknown(monkeypatch):
    text = "MemTotal:  100 kB\nMemFree:  5 kB\nMemAvailable:  40 kB\n"

    class FakeFile:
        def __init__(self, path, *a, **k):
            assert path == "/proc/meminfo"
            self.lines = iter(text.splitlines(True))

        def __enter__(self):
            return self.lines

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(budget, "open", FakeFile, raising=False)
    assert available_bytes("cpu") == 40 * 1024
    assert available_bytes(None) == 40 * 1024
    text = "MemTotal:  100 kB\n"
    assert available_bytes("cpu") is None

    def no_proc(*a, **k):
        raise OSError("no /proc")

    monkeypatch.setattr(budget, "open", no_proc, raising=False)
    assert available_bytes("cpu") is None
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda dev: (123 * (dev == torch.device("cuda", 1)), 456))
    assert available_bytes("cuda:1") == 123


def test_the_time_model_of_a_run_counts_each_training_on_its_data():
    """forecast.time_model: one sample per timed training, its image passes on the data it
    trained on (train, or train + validation) plus its evaluation (val, or test)."""
    from types import SimpleNamespace

    from morphclimb.forecast import time_model
    split = SimpleNamespace(train=range(100), train_full=range(130), val=range(30),
                            test=range(60))
    st = RunState()
    for r in ({"model": "x", "params": 1, "epochs": 1, "part": "train"},      # not timed
              {"model": "m0", "params": 1, "epochs": 2, "part": "train", "mflops": 1.0,
               "seconds": 3.0},
              {"model": "final", "params": 1, "epochs": 1, "part": "train_full",
               "mflops": 3.0, "seconds": 5.0},
              {"model": "s01c1", "params": 1, "epochs": 1, "part": "train", "seconds": 2.0},
              {"model": "y", "params": 1, "epochs": 3, "mflops": 2.0, "seconds": 1.0}):
        st.apply({"event": "model_trained", **r})
    climber = SimpleNamespace(split=split, state=st, load_arch={"s01c1": TINY_ARCH}.__getitem__)
    got = time_model(climber)
    want = TimeModel([(1.0, 2 * 100 + 30 / 3, 3.0), (3.0, 130 + 60 / 3, 5.0),
                      (mflops(TINY_ARCH), 100 + 30 / 3, 2.0),      # no mflops: from its arch
                      (2.0, 30 / 3, 1.0)])            # no known part: its evaluation only
    assert got.n == 4 and (got.a, got.b) == pytest.approx((want.a, want.b), rel=1e-12)


# ------------------------------------------------------------------ journal replay
def _r(event, **kw):
    return {"event": event, **kw}


def test_replay_folds_every_event():
    recs = [
        _r("run_started", config={"n_steps": 2}, clock=0.5),
        _r("child_made", model="s01c1", step=1, child=1, parent="m0", morphisms=[], params=5),
        _r("child_redrawn", model="s01c2", step=1, child=2, draw=0, reason="x"),
        _r("model_trained", model="m0", params=4, epochs=1, role="pretrain", clock=3.0),
        _r("child_failed", model="s01c1", reason="nan", parent="m0"),
        _r("model_trained", model="s01c2", params=6, epochs=1, role="child", parent="m0",
           clock=2.0),
        _r("model_trained", model="s01inc", params=4, epochs=1, role="incumbent",
           parent="m0"),
        _r("rung_decided", step=1, rung=1, kept=["s01c2"], cut=[]),
        _r("step_decided", step=1, best="s01c2", previous="m0", val_accuracy=0.5, params=6,
           candidates=["s01c1", "s01c2", "s01inc"]),
        _r("run_resumed", clock=None),
        _r("config_changed", changes={"lr_start": 0.1}),
        _r("config_changed", changes={"lr_start": 0.2, "batch_size": 64}),
        _r("run_resumed"),
        _r("failures_retried", models=["s01c1"], changes={}),
        _r("climb_stopped", step=2, reason="budget"),
        _r("ensemble_evaluated", kind="snapshot", members=["a"], test_accuracy=0.1, params=1),
        _r("ensemble_evaluated", kind="other", members=["b"], test_accuracy=0.2, params=1),
        _r("ensemble_evaluated", kind="snapshot", members=["c"], test_accuracy=0.3, params=1),
        _r("run_finished", model="final"),
    ]
    st = RunState.replay(recs)
    assert st.started is recs[0] and st.finished is recs[-1] and st.stopped is recs[14]
    assert st.clock == 3.0                             # the latest clock seen, never less
    assert st.resumes == 2
    assert st.config({"lr_start": 0.05, "seed": 1}) == {"lr_start": 0.2, "seed": 1,
                                                         "batch_size": 64}
    assert list(st.made) == ["s01c1"] and st.redrawn == [recs[2]]
    assert list(st.trained) == ["m0", "s01c2", "s01inc"]
    assert st.failed == {} and st.retried == [recs[13]]   # retried: no longer failed
    assert st.rungs == {(1, 1): recs[7]} and st.decided == {1: recs[8]}
    assert st.best() is recs[5] and not st.kept_incumbent(1)
    assert st.ensemble() is recs[17] and st.ensemble("other") is recs[16]
    assert st.ensemble("bagging") is None
    assert st.outcome("s01c2") is recs[5] and st.outcome("nope") is None


def test_replay_questions():
    st = RunState()
    assert st.best() is None and st.clock == 0.0 and st.started is None
    st.apply(_r("run_resumed"))
    assert st.clock == 0.0 and st.resumes == 1
    m0 = _r("model_trained", model="m0", params=4, epochs=1, role="pretrain")
    st.apply(m0)
    assert st.best() is m0                                  # nothing decided: model_0
    failed = _r("child_failed", model="s01c1", reason="oom", parent="m0")
    st.apply(failed)
    assert st.outcome("s01c1") is failed
    again = _r("model_trained", model="s01c1", params=5, epochs=1, role="child", parent="m0")
    st.apply(again)
    assert st.failed == {} and st.outcome("s01c1") is again
    inc = _r("model_trained", model="s01inc", params=4, epochs=1, role="incumbent",
             parent="m0")
    st.apply(inc)
    for step, best in ((1, "s01inc"), (2, "s01c1")):
        st.apply(_r("step_decided", step=step, best=best, previous="m0", val_accuracy=0.5,
                    params=4, candidates=[best]))
    assert st.kept_incumbent(1) and not st.kept_incumbent(2)
    assert st.best() is again                              # the last step's winner
    st.apply(_r("step_decided", step=0, best="m0", previous="m0", val_accuracy=0.5,
                params=4, candidates=[]))
    assert st.best() is again                              # the highest step, not the latest
    # lineage through made, trained and failed records; a loop ends it
    st.apply(_r("child_made", model="s02c1", step=2, child=1, parent="s01c1", morphisms=[],
                params=7))
    st.apply(_r("child_failed", model="s03c1", reason="x", parent="s02c1"))
    assert st.lineage("s03c1") == ["m0", "s01c1", "s02c1", "s03c1"]
    assert st.lineage("m0") == ["m0"] and st.lineage("unknown") == ["unknown"]
    st.apply(_r("model_trained", model="x", params=1, epochs=0, parent="y"))
    st.apply(_r("model_trained", model="y", params=1, epochs=0, parent="x"))
    assert st.lineage("x") == ["y", "x"]
    # the model a run hands out
    assert st.chosen_model({"final_model": "retrain"}) == "final"    # not retrained yet
    st.apply(_r("model_trained", model="retrain", params=1, epochs=1))
    assert st.chosen_model({"final_model": "retrain"}) == "retrain"
    assert st.chosen_model({"final_model": "search"}) == "final"
    assert st.chosen_model({}) == "final"


def test_replay_dataset_retries_and_restores():
    """Events that leave the climb's records alone: the dataset summary (completed by a
    resume of an older run), retried failures, restored checkpoints, a reference plan."""
    st = RunState.replay([_r("run_started", config={}, dataset={"name": "a"})])
    assert st.dataset == {"name": "a"}
    st.apply(_r("run_resumed"))                            # no summary: keeps the first
    assert st.dataset == {"name": "a"}
    st.apply(_r("run_resumed", dataset={"name": "a", "images": 10}))
    assert st.dataset == {"name": "a", "images": 10}
    assert RunState.replay([_r("run_started", config={})]).dataset is None
    # a retry of a model that had not failed (or no longer has) is no error
    failed = _r("child_failed", model="s01c1", reason="x")
    st.apply(failed)
    st.apply(_r("failures_retried", models=["s01c1", "s01c2"], changes={}))
    assert st.failed == {}
    restored = _r("model_restored", model="s01c1", checkpoint="models/s01c1", matches=True)
    plan = _r("reference_planned", start_point="m0", epochs=3, matched_seconds=2.0)
    st.apply(restored)
    st.apply(plan)
    assert st.restored == {"s01c1": restored} and st.reference_plan is plan
    assert st.trained == {} and st.made == {} and st.decided == {}
    # a step whose best has no training record (a damaged journal) did not keep the incumbent
    st.apply(_r("step_decided", step=1, best="s01c9", previous="m0", val_accuracy=0.5,
                params=4, candidates=["s01c9"]))
    assert st.kept_incumbent(1) is False


def test_the_model_a_run_hands_out():
    """final_model: "search" (default) hands out the final model, "retrain" the retrained one
    once trained, "auto" the retrained one when the final training (its record's epochs) is
    at most 60% of the answer's epochs (config.retrain_is_answer)."""
    def state(final_lineage=None, retrained=True, epochs=1):
        st = RunState()
        if final_lineage is not None:
            st.apply(_r("model_trained", model="final", params=1, epochs=epochs,
                        lineage=final_lineage))
        if retrained:
            st.apply(_r("model_trained", model="retrain", params=1, epochs=1))
        return st

    assert state(10).chosen_model({}) == "final"
    assert state(10).chosen_model({"final_model": "search", "epoch_final": 1}) == "final"
    assert state(10).chosen_model({"final_model": "retrain", "epoch_final": 9}) == "retrain"
    assert state(10, retrained=False).chosen_model({"final_model": "retrain"}) == "final"
    auto = {"final_model": "auto"}
    assert state(10, epochs=6).chosen_model({**auto, "epoch_final": 1}) == "retrain"  # 60 %
    assert state(10, epochs=7).chosen_model({**auto, "epoch_final": 1}) == "final"    # 70 %
    assert state(2).chosen_model(auto) == "retrain"          # 1 of 2 epochs
    assert state(None).chosen_model({**auto, "epoch_final": 0}) == "final"   # no final yet
    assert state(10, retrained=False).chosen_model({**auto, "epoch_final": 1}) == "final"


def test_the_models_a_step_kept():
    st = RunState()
    st.apply(_r("step_decided", step=1, best="s01c2", previous="m0", val_accuracy=0.5,
                params=4, candidates=["s01c1", "s01c2"]))
    st.apply(_r("step_decided", step=2, best="s02c1", previous="s01c2", val_accuracy=0.5,
                params=4, candidates=["s02c1", "s02c2"], kept=["s02c1", "s02c2"]))
    st.apply(_r("step_decided", step=3, best="s03c1", previous="s02c1", val_accuracy=0.5,
                params=4, candidates=["s03c1"], kept=[]))
    assert st.kept(1) == ["s01c2"]                  # journals before "kept": the best alone
    assert st.kept(2) == ["s02c1", "s02c2"]
    assert st.kept(3) == ["s03c1"]
    kept = st.kept(2)
    kept.append("x")
    assert st.kept(2) == ["s02c1", "s02c2"]         # a copy


def test_replay_clock_is_the_latest_seen():
    st = RunState.replay([_r("run_resumed", clock=5.0), _r("run_resumed", clock=2.0),
                          _r("run_resumed", clock=None), _r("run_resumed")])
    assert st.clock == 5.0


# ------------------------------------------------------------------ config checks
def _one_of(key, allowed, got):
    return f"{key} must be one of {', '.join(allowed)}, got {got!r}"


# each message whole: a check that fires, with the words a user reads
@pytest.mark.parametrize("kw, message", [
    *[({k: -1}, f"{k} must be >= 0, got -1") for k in (
        "n_steps", "n_nm", "epoch_pretrain", "epoch_neigh", "epoch_final", "probe_size", "seed",
        "split_seed")],
    ({"seed": 2**63}, "seed and split_seed must be < 2**63, got 9223372036854775808, 0"),
    ({"split_seed": 2**63}, "seed and split_seed must be < 2**63, got 0, 9223372036854775808"),
    ({"n_neigh": 0}, "n_neigh must be >= 1, got 0"),
    ({"subset": 1}, "subset must be at least 2 images, got 1"),
    ({"val": 0.0}, "val must be a count >= 1 or a fraction in (0, 1), got 0.0"),
    ({"val": -3.0}, "val must be a count >= 1 or a fraction in (0, 1), got -3.0"),
    ({"val": NAN}, "val must be a count >= 1 or a fraction in (0, 1), got nan"),
    ({"val": INF}, "val must be a count >= 1 or a fraction in (0, 1), got inf"),
    ({"executor": "slurm"}, _one_of("executor", config.EXECUTORS, "slurm")),
    ({"final_model": "best"}, _one_of("final_model", config.FINAL_MODELS, "best")),
    ({"train_step": "fast"}, _one_of("train_step", ("auto", *config.TRAIN_STEPS), "fast")),
    ({"executor": "streams", "train_step": "compile"},
     "executor=streams cannot train with train_step=compile (torch.compile is not thread-safe);"
     " use train_step=cuda_graph or eager, or executor=serial"),
    ({"keep_weights": "none"}, _one_of("keep_weights", config.KEEP_WEIGHTS, "none")),
    ({"workers": 0}, "workers must be >= 1, got 0"),
    ({"widths": (4, 8)}, "widths must be three positive integers, got [4, 8]"),
    ({"widths": (4, 8, 8, 8)}, "widths must be three positive integers, got [4, 8, 8, 8]"),
    ({"widths": (4, 0, 8)}, "widths must be three positive integers, got [4, 0, 8]"),
    *[({k: v}, f"{k} must be a positive number, got {v}")
      for k in ("time_budget", "max_mflops", "min_mflops") for v in (0.0, -1.0, NAN, INF)],
    ({"min_params": 0}, "min_params must be >= 1, got 0"),
    ({"min_params": 11, "max_params": 10},
     "min_params (11) is above max_params (10): no child could be trained"),
    ({"min_mflops": 2.5, "max_mflops": 2.0},
     "min_mflops (2.5) is above max_mflops (2): no child could be trained"),
    ({"final_shrink": 0.0}, "final_shrink must be in (0, 1], got 0.0"),
    ({"final_shrink": 1.01}, "final_shrink must be in (0, 1], got 1.01"),
    ({"final_shrink": NAN}, "final_shrink must be in (0, 1], got nan"),
    ({"final_perturb": -0.1}, "final_perturb must be a finite number >= 0, got -0.1"),
    ({"final_perturb": INF}, "final_perturb must be a finite number >= 0, got inf"),
    ({"final_lr": 0.0}, "final_lr must be a finite number > 0 and >= lr_end (0.0), got 0.0"),
    ({"final_lr": 0.01, "lr_end": 0.02},
     "final_lr must be a finite number > 0 and >= lr_end (0.02), got 0.01"),
    ({"final_lr": NAN}, "final_lr must be a finite number > 0 and >= lr_end (0.0), got nan"),
    ({"distill_weight": -0.1}, "distill_weight must be in [0, 1], got -0.1"),
    ({"distill_weight": 1.01}, "distill_weight must be in [0, 1], got 1.01"),
    ({"distill_weight": NAN}, "distill_weight must be in [0, 1], got nan"),
    ({"distill_temperature": 0.0}, "distill_temperature must be a finite number > 0, got 0.0"),
    ({"distill_temperature": INF}, "distill_temperature must be a finite number > 0, got inf"),
    ({"reference": "resnet21"}, "reference must be auto or a start point such as "
                                f"{', '.join(ZOO_NAMES)}, got 'resnet21'"),
    ({"max_params": 0}, "max_params must be >= 1, got 0"),
    ({"start_weights": "w.safetensors"},
     "start_weights needs start (the arch.json the weights belong to)"),
    ({"rungs": (0, 2), "epoch_neigh": 2},
     "rungs must be positive epoch counts adding up to epoch_neigh (2), got [0, 2]"),
    ({"rungs": (1, 2), "epoch_neigh": 2},
     "rungs must be positive epoch counts adding up to epoch_neigh (2), got [1, 2]"),
    ({"rungs": (1, 1), "epoch_neigh": 2, "n_neigh": 1},
     "rungs (successive halving) need n_neigh >= 2"),
    ({"eta": 1}, "eta must be >= 2, got 1"),
    ({"n_nm": 0, "n_neigh": 2, "n_steps": 1},
     "n_nm must be >= 1 when children are made (n_neigh > 1)"),
    ({"n_steps": "3"}, "n_steps: expected int, got '3'"),
])
def test_config_check_rejects(kw, message):
    with pytest.raises(ConfigError) as info:
        SearchConfig(**kw)
    assert str(info.value) == message


@pytest.mark.parametrize("kw", [
    dict(n_steps=0, n_nm=0, epoch_pretrain=0, epoch_neigh=0, epoch_final=0, probe_size=0,
         seed=0, split_seed=0),
    dict(seed=2**63 - 1, split_seed=2**63 - 1),
    dict(n_neigh=1, n_nm=0),                  # random networks with no morphism: allowed
    dict(n_steps=0, n_neigh=8, n_nm=0),       # no children are made
    dict(n_steps=1, n_neigh=2, n_nm=1),
    dict(subset=2, val=0.5),
    dict(val=1e-9, workers=1, widths=(1, 1, 1), time_budget=1e-9, max_mflops=1e-9),
    dict(final_shrink=1.0, final_perturb=0.0, final_lr=0.01, lr_end=0.01),
    dict(final_shrink=1e-9, final_perturb=5.0, final_lr=1e-9),
    dict(max_params=1, eta=2, n_neigh=2, epoch_neigh=2, rungs=(1, 1)),
    dict(min_params=1, max_params=1, min_mflops=1e-9, max_mflops=1e-9),
    dict(start="arch.json", start_weights="w.safetensors"),
    dict(distill_weight=0.0, distill_temperature=1e-9),
    dict(distill_weight=1.0, distill_temperature=0.5),
    dict(reference="auto"),
    dict(reference="resnet20"),
    dict(executor="streams", train_step="cuda_graph"),
    dict(executor="serial", train_step="compile"),
    dict(train_step="auto"),
])
def test_config_check_accepts_the_edges(kw):
    c = SearchConfig(**kw)
    assert all(getattr(c, k) == v for k, v in kw.items())


@pytest.mark.parametrize("kw, message", [
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"batch_size": True}, "batch_size must be a positive integer, got True"),
    ({"eval_batch_size": 0}, "eval_batch_size must be a positive integer, got 0"),
    ({"crop_pad": -1}, "crop_pad must be an integer >= 0, got -1"),
    ({"crop_pad": 1.5}, "crop_pad must be an integer >= 0, got 1.5"),
    ({"lr_start": 0.0}, "lr_start must be a finite number > 0, got 0.0"),
    ({"lr_start": INF}, "lr_start must be a finite number > 0, got inf"),
    ({"lr_end": -0.01}, "lr_end must be a finite number >= 0, got -0.01"),
    ({"lr_end": NAN}, "lr_end must be a finite number >= 0, got nan"),
    ({"lr_start": 0.01, "lr_end": 0.02},
     "lr_end (0.02) must not exceed lr_start (0.01): SGDR anneals downwards"),
    ({"weight_decay": -1e-4}, "weight_decay must be a finite number >= 0, got -0.0001"),
    ({"weight_decay": NAN}, "weight_decay must be a finite number >= 0, got nan"),
    ({"momentum": 1.0}, "momentum must be in [0, 1), got 1.0"),
    ({"momentum": -0.1}, "momentum must be in [0, 1), got -0.1"),
    ({"nesterov": 1}, "nesterov must be true or false, got 1"),
    ({"augment": "yes"}, "augment must be true or false, got 'yes'"),
    ({"bf16": 0}, "bf16 must be true, false or null (auto), got 0"),
    ({"channels_last": "no"}, "channels_last must be true, false or null (auto), got 'no'"),
    ({"cudnn_benchmark": 1}, "cudnn_benchmark must be true, false or null (auto), got 1"),
    ({"threads": 0}, "threads must be a positive integer or null (auto), got 0"),
    ({"momentum": 0.0}, "nesterov=true needs momentum > 0 (set nesterov=false for plain SGD)"),
])
def test_training_settings_rejected(kw, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**kw)
    assert str(info.value) in (message, f"TrainConfig: {message}")


def test_training_settings_edges_accepted():
    t = TrainConfig(batch_size=1, eval_batch_size=1, crop_pad=0, lr_start=0.01, lr_end=0.01,
                    weight_decay=0.0, momentum=0.0, nesterov=False, threads=1, bf16=None,
                    channels_last=None, cudnn_benchmark=None)
    assert (t.batch_size, t.lr_end, t.momentum) == (1, 0.01, 0.0)
    assert TrainConfig(momentum=0.999, cudnn_benchmark=False).momentum == 0.999


# ------------------------------------------------------------------ the learning rate
def test_sgdr_schedule_edges():
    from morphclimb.train import sgdr_lr
    assert sgdr_lr(0, 1, 0.05, 0.01) == 0.05 and sgdr_lr(1, 1, 0.05, 0.01) == 0.01  # one step
    assert sgdr_lr(-3, 10, 0.05, 0.01) == 0.05           # clamped to the cycle
    assert sgdr_lr(15, 10, 0.05, 0.01) == pytest.approx(0.01, abs=1e-15)
    assert sgdr_lr(5, -1, 0.05, 0.01) == 0.05            # no steps: lr_start
    assert sgdr_lr(3, 4, 0.05, 0.01) == pytest.approx(0.01 + 0.02 * (1 + math.cos(0.75 * math.pi)))
    t = TrainConfig(lr_start=0.08, lr_end=0.02)
    assert [t.lr(s, 4) for s in range(5)] == pytest.approx(
        [0.08, 0.02 + 0.03 * (1 + math.cos(math.pi / 4)), 0.05,
         0.02 + 0.03 * (1 + math.cos(0.75 * math.pi)), 0.02])
    flat = TrainConfig(lr_start=0.08, lr_end=0.02, sgdr=False)
    assert [flat.lr(s, 4) for s in range(5)] == [0.08] * 5


# ------------------------------------------------------------------ device settings
def _cuda(monkeypatch, available=True, bf16=True, count=1):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_auto_settings_on_cuda(monkeypatch):
    _cuda(monkeypatch, bf16=True)
    want = {"bf16": True, "channels_last": True, "threads": None}
    assert auto_settings("cuda") == want and auto_settings(torch.device("cuda", 1)) == want
    _cuda(monkeypatch, bf16=False)
    assert auto_settings("cuda") == {"bf16": False, "channels_last": False, "threads": None}
    _cuda(monkeypatch, available=False, bf16=True)       # no CUDA at all: never bf16
    assert auto_settings("cuda") == {"bf16": False, "channels_last": False, "threads": None}
    assert auto_settings("mps") == {"bf16": False, "channels_last": False, "threads": None}


def test_training_settings_on_cuda(monkeypatch):
    _cuda(monkeypatch, bf16=True)
    cuda = torch.device("cuda")
    s = _settings(TrainConfig(), cuda, "cuda_graph")
    assert {k: s[k] for k in ("device", "bf16", "channels_last", "threads", "step")} == {
        "device": "cuda", "bf16": True, "channels_last": True, "threads": None,
        "step": "cuda_graph"}
    s = _settings(TrainConfig(bf16=False, channels_last=False, threads=2), cuda)
    assert (s["bf16"], s["channels_last"], s["threads"], s["step"]) == (False, False, 2,
                                                                         "eager")
    assert _settings(TrainConfig(), torch.device("cpu"), "cuda_graph")["step"] == "static"
    _cuda(monkeypatch, bf16=False)
    with pytest.raises(ConfigError, match="bf16=True but cuda does not support bfloat16"):
        _settings(TrainConfig(bf16=True), cuda)
    assert _settings(TrainConfig(bf16=True), torch.device("cpu"))["bf16"] is True
    with pytest.raises(ConfigError, match="step must be one of .*got 'fast'"):
        _settings(TrainConfig(), cuda, "fast")


def test_resolve_device_with_cuda(monkeypatch):
    _cuda(monkeypatch, count=2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device(None) == torch.device("cuda")
    assert resolve_device(" AUTO ") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"this machine has 2 CUDA device\(s\), cuda:0 to "
                                          r"cuda:1"):
        resolve_device("cuda:2")
    _cuda(monkeypatch, available=False, count=0)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA device found"):
        resolve_device("cuda")


def test_cpu_bf16_from_the_flags(monkeypatch):
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    monkeypatch.setattr(device, "_cpuinfo_flags", lambda: frozenset({"sse2", "avx512_bf16"}))
    assert cpu_supports_bf16() is True
    monkeypatch.setattr(device, "_cpuinfo_flags", lambda: frozenset({"sse2", "avx2"}))
    assert cpu_supports_bf16() is False

    def broken():
        raise RuntimeError("no such probe here")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    assert cpu_supports_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert cpu_supports_bf16() is True
    assert math.isfinite(float(device.cpu_count())) and device.cpu_count() >= 1
