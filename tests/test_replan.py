"""Re-planning a training's epochs as it runs (fit's `replan`; issue 22): the cosine goes on
without a jump, a run that changes nothing is a plain run, replaying the journaled re-plans
trains the same weights, and a deadline's re-plans follow the speed of the last epochs."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from morphclimb import TrainingError, build, starting_arch
from morphclimb.train import TrainConfig, _Schedule, cosine_lr, fit
from morphclimb.worker import RECENT, deadline_replan, replay
from test_train import MEAN, SMALL, STD, synthetic

CFG = TrainConfig(batch_size=32, bf16=False, channels_last=False, lr_start=0.1, lr_end=0.001)
STEPS = 10


def answers(table: dict[int, int]):
    """A replan that answers `table[done]`, else keeps the total."""
    return lambda done, total, records: table.get(done, total)


def sched(epochs: int, table: dict[int, int] | None = None) -> _Schedule:
    s = _Schedule(CFG, epochs, answers(table or {}))
    s.steps = STEPS
    return s


def test_without_a_replan_the_schedule_is_the_configs():
    for epochs in (1, 3, 7):
        s = _Schedule(CFG, epochs)
        s.steps = STEPS
        for g in range(epochs * STEPS + 2):
            assert s.lr(g) == CFG.lr(g, epochs * STEPS)
        for done in range(1, epochs + 1):
            s.after(done, [])
        assert s.replans == [] and s.epochs == epochs


def cos(t):
    return cosine_lr(t, 0.1, 0.001)


def test_with_a_replan_the_first_epoch_measures_and_the_cosine_follows_it():
    s = sched(4)                                   # a replan that keeps the 4 epochs
    assert {s.lr(g) for g in range(STEPS + 1)} == {0.1}     # epoch 1 at lr_start
    s.after(1, [])
    assert s.replans == [] and s.epochs == 4       # nothing changed: nothing recorded
    assert s.lr(STEPS) == 0.1 and s.lr(4 * STEPS) == pytest.approx(0.001)
    assert s.lr(STEPS + 15) == pytest.approx(cos(15 / 30))   # the cosine over epochs 2-4


def test_a_first_plan_far_too_short_is_laid_out_anew_after_epoch_1():
    s = sched(1, {1: 9})      # one epoch planned, nine fit: the cosine is not spent in one
    s.after(1, [])
    assert s.epochs == 9 and s.replans == [[1, 9]]
    assert s.lr(STEPS) == 0.1 and s.lr(5 * STEPS) == pytest.approx(cos(0.5))


def test_a_longer_plan_goes_on_from_the_fraction_reached():
    s = sched(4, {2: 6})
    s.after(1, [])
    before = s.lr(2 * STEPS)
    assert before == pytest.approx(cos(1 / 3))
    s.after(2, [])
    assert s.epochs == 6 and s.replans == [[2, 6]]
    assert s.lr(2 * STEPS) == pytest.approx(before, abs=1e-12)      # no jump
    # a third reached at epoch 2, then the other two thirds over 4 more epochs
    assert s.lr(4 * STEPS) == pytest.approx(cos(1 / 3 + 2 / 3 * 2 / 4))
    assert s.lr(6 * STEPS) == pytest.approx(0.001)
    assert s.lr(3 * STEPS + 3) == pytest.approx(cos(1 / 3 + 2 / 3 * 13 / 40))


def test_a_shorter_plan_and_one_below_the_epochs_done():
    s = sched(4, {2: 3})
    s.after(1, [])
    s.after(2, [])
    assert s.epochs == 3 and s.lr(3 * STEPS) == pytest.approx(0.001)
    assert s.lr(25) == pytest.approx(cos(1 / 3 + 2 / 3 * 0.5))
    s = sched(4, {2: 0})
    s.after(1, [])
    s.after(2, [])
    assert s.epochs == 2 and s.replans == [[2, 2]]      # the run ends at the epochs done
    s = sched(4, {1: 1})
    s.after(1, [])
    assert s.epochs == 1 and s.replans == [[1, 1]]


def test_two_replans_chain_without_a_jump():
    s = sched(4, {1: 8, 3: 5})
    s.after(1, [])
    assert s.lr(3 * STEPS) == pytest.approx(cos(2 / 7))
    at3 = s.lr(3 * STEPS)
    s.after(3, [])
    assert s.lr(3 * STEPS) == pytest.approx(at3, abs=1e-12)
    t3 = 2 / 7
    assert s.lr(4 * STEPS) == pytest.approx(cos(t3 + (1 - t3) / 2))


def test_the_last_epoch_asks_nothing():
    asked = []
    s = _Schedule(CFG, 2, lambda done, total, records: asked.append(done) or total + 3)
    s.steps = STEPS
    s.after(1, [])
    assert asked == [1] and s.epochs == 5
    s.after(5, [])      # the cosine has ended: no more epochs at lr_end
    assert asked == [1] and s.epochs == 5


def test_a_replan_must_answer_an_integer():
    for bad in (2.0, "3", True, None):
        s = sched(4, {1: bad})
        with pytest.raises(TrainingError, match="replan must return an integer"):
            s.after(1, [])


def test_sgdr_off_keeps_a_constant_lr_through_a_replan():
    s = _Schedule(TrainConfig(sgdr=False, lr_start=0.02), 3, answers({1: 5, 2: 4}))
    s.steps = STEPS
    s.after(1, [])
    s.after(2, [])
    assert s.epochs == 4 and {s.lr(g) for g in range(0, 50, 7)} == {0.02}


# ----------------------------------------------------------------------------- fit
def net():
    return build(starting_arch(num_classes=4, image_size=16, **SMALL), seed=3)


def train(epochs, replan=None):
    model = net()
    res = fit(model, synthetic(96), epochs=epochs, config=CFG, mean=MEAN, std=STD, seed=5,
              replan=replan)
    return model, res


def same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_with_a_replan_that_changes_nothing():
    plain, r0 = train(3)
    asked = []
    kept, r1 = train(3, lambda d, t, recs: asked.append((d, t, len(recs))) or t)
    assert asked == [(1, 3, 1), (2, 3, 2)]          # not after the last
    assert r1.settings["replans"] == [] and "replans" not in r0.settings
    assert [r.lr for r in r1.records] == [CFG.lr_start, CFG.lr_at(0.5), CFG.lr_end]
    assert not same(plain, kept)                         # the first epoch at lr_start


def test_fit_replans_and_a_replay_trains_the_same_weights():
    model, res = train(2, answers({1: 5, 2: 3}))
    assert res.settings["replans"] == [[1, 5], [2, 3]]
    assert [r.epoch for r in res.records] == [1, 2, 3]
    assert res.records[-1].lr == pytest.approx(CFG.lr_end)
    again, res2 = train(2, replay(res.settings["replans"]))
    assert same(model, again) and res2.settings["replans"] == res.settings["replans"]
    plain, _ = train(3)          # three epochs planned as three: another schedule, other weights
    assert not same(model, plain)


# ----------------------------------------------------------------------------- deadline
class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def recs(*seconds):
    return [SimpleNamespace(seconds=s) for s in seconds]


def test_a_deadline_fills_what_is_left_at_the_recent_speed():
    clock = Clock()
    replan = deadline_replan(60.0, 2, start=100.0, clock=clock)
    clock.now = 110.0                       # 10 s gone, 50 left, 2 s an epoch: 25 more
    assert replan(4, 10, recs(3, 2, 2, 2)) == 29
    clock.now = 150.0                       # the machine slowed down: 4 s an epoch, 10 left
    assert replan(9, 29, recs(2, 2, 4, 4, 4)) == 11
    assert RECENT == 3                       # the mean of the last three epochs, not all


def test_a_deadline_never_plans_below_min_epochs_nor_the_epochs_done():
    clock = Clock()
    replan = deadline_replan(10.0, 4, start=100.0, clock=clock)
    clock.now = 130.0                       # past the deadline
    assert replan(2, 8, recs(5, 5)) == 4     # min_epochs
    assert replan(6, 8, recs(5, 5)) == 6     # the epochs done: stop now
    assert replan(3, 8, recs(0.0)) == 8      # no speed measured: keep the plan


# ----------------------------------------------------------------------------- worker
def test_a_task_with_replans_tells_each_epoch_the_total_as_planned(tmp_path):
    from conftest import TINY, make_tiny_npz
    from morphclimb.config import SearchConfig
    from morphclimb.nash import load_split, train_config
    from morphclimb.worker import TrainTask, run_task
    c = SearchConfig(**{**TINY, "dataset": str(make_tiny_npz(tmp_path / "t.npz"))})
    _, split = load_split(c)
    arch = starting_arch(3, 4, 8, widths=(4, 8, 8)).to_dict()
    task = TrainTask("final", arch, None, 3, train_config(c), seed=1, replans=[[1, 5], [2, 4]])
    seen = []
    out = run_task(task, split, "cpu", seen.append)
    assert out.ok and out.replans == [[1, 5], [2, 4]] and len(out.records) == 4
    assert [(r["epoch"], r["epochs"]) for r in seen] == [(1, 5), (2, 4), (3, 4), (4, 4)]
    plain = []
    out = run_task(dataclasses.replace(task, replans=None), split, "cpu", plain.append)
    assert out.replans is None and len(plain) == 3 and "epochs" not in dict(plain[0])
