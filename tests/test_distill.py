"""Distillation from the parent while a child of an approximate morphism trains (LEMONADE's
Lamarckian inheritance; docs/distill.md): the loss, the trainer, the executors, the climb."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY
from morphclimb import restore
from morphclimb.build import build, weights_of
from morphclimb.config import SearchConfig
from morphclimb.errors import ConfigError
from morphclimb.journal import RunDir
from morphclimb.model0 import starting_arch
from morphclimb.morphisms import APPROXIMATE
from morphclimb.nash import attach, hill_climb, resume
from morphclimb.parallel.transport import Part
from morphclimb.train import Distill, TrainConfig, distill_loss, fit
from morphclimb.worker import Teacher, TrainTask, run_task


# ------------------------------------------------------------------ the loss, by hand
def test_distill_loss_on_crafted_logits():
    s = torch.tensor([[0.0, 0.0]])                 # student: (1/2, 1/2)
    t = torch.tensor([[math.log(3.0), 0.0]])       # teacher at T = 1: (3/4, 1/4)
    y = torch.tensor([0])
    ce = math.log(2.0)                             # -log 1/2
    kl1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert float(distill_loss(s, t, y, 0.0, 1.0)) == pytest.approx(ce, rel=1e-6)
    assert float(distill_loss(s, t, y, 1.0, 1.0)) == pytest.approx(kl1, rel=1e-6)
    # T = 2: the teacher's soft targets are softmax(log(3)/2, 0) = (sqrt3, 1) / (sqrt3 + 1)
    p = math.sqrt(3.0) / (math.sqrt(3.0) + 1.0)
    kl2 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert float(distill_loss(s, t, y, 1.0, 2.0)) == pytest.approx(4.0 * kl2, rel=1e-6)
    assert float(distill_loss(s, t, y, 0.25, 2.0)) == pytest.approx(
        0.75 * ce + 0.25 * 4.0 * kl2, rel=1e-6)
    # the KL is averaged over the batch: a second, identical row changes nothing
    assert float(distill_loss(s.repeat(2, 1), t.repeat(2, 1), y.repeat(2), 1.0, 2.0)) == \
        pytest.approx(4.0 * kl2, rel=1e-6)
    # a student that already agrees with its teacher has no soft loss
    assert float(distill_loss(t, t, y, 1.0, 3.0)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("w, T", [(-0.1, 4.0), (1.5, 4.0), (0.5, 0.0), (0.5, float("inf")),
                                  (True, 4.0)])
def test_distill_settings_are_checked(w, T):
    bad = "weight" if T == 4.0 else "temperature"   # each case breaks exactly one setting
    with pytest.raises(ConfigError, match=f": distill {bad} must be"):
        Distill(w, T)
    with pytest.raises(ConfigError, match=f"^distill_{bad}( must be|: expected float)"):
        SearchConfig(distill_weight=w, distill_temperature=T)


# ------------------------------------------------------------------ the trainer
def _data(n=64, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return Part(rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8),
                rng.integers(0, 4, size=n).astype(np.int64))


MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
CFG = TrainConfig(batch_size=16, lr_start=0.05, threads=1, bf16=False, channels_last=False)


def _kl_to(student, teacher, data) -> float:
    x = torch.as_tensor(data.x).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    student.eval()
    teacher.eval()
    with torch.no_grad():
        return float(distill_loss(student(x), teacher(x), torch.as_tensor(data.y), 1.0, 1.0))


@pytest.mark.parametrize("step", ["eager", "cuda_graph"])   # cuda_graph on a CPU: "static"
def test_a_student_moves_toward_its_teacher(step):
    arch = starting_arch(3, 4, 8, widths=(4, 8, 8))
    teacher, student = build(arch, seed=1), build(arch, seed=2)
    t0 = {k: v.clone() for k, v in weights_of(teacher).items()}
    data = _data()
    before = _kl_to(student, teacher, data)
    res = fit(student, data, epochs=6, config=CFG, mean=MEAN, std=STD, seed=0, step=step,
              teacher=teacher, distill=Distill(1.0, 1.0))
    assert res.settings["distill"] == {"weight": 1.0, "temperature": 1.0}
    assert _kl_to(student, teacher, data) < 0.5 * before
    assert all(torch.equal(v, weights_of(teacher)[k]) for k, v in t0.items())  # untouched


def _curves(out) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in out.records]


def _task(model_id="c", teacher=True, weight=0.5, temperature=4.0, **kw) -> TrainTask:
    arch = starting_arch(3, 4, 8, widths=(4, 8, 8))
    t = None
    if teacher:
        t = Teacher("p", arch.to_dict(), weights_of(build(arch, seed=5)), weight, temperature)
    return TrainTask(model_id, arch.to_dict(), None, 2, CFG, seed=3, init_seed=7, teacher=t,
                     **kw)


class _Split:
    def __init__(self):
        self.train, self.val = _data(64, seed=1), _data(32, seed=2)
        self.test, self.train_full = self.val, self.train
        self.mean, self.std = MEAN, STD


def test_distilled_training_is_deterministic_and_every_setting_counts():
    split = _Split()
    a, b = run_task(_task(), split), run_task(_task(), split)
    assert a.ok and b.ok, (a.error, b.error)
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert _curves(a) == _curves(b) and a.eval == b.eval
    for other in (_task(teacher=False), _task(weight=0.9), _task(temperature=2.0)):
        c = run_task(other, split)
        assert c.ok
        assert not all(torch.equal(a.weights[k], c.weights[k]) for k in a.weights)


def test_the_teacher_crosses_to_a_worker_process():
    from morphclimb.parallel import LocalExecutor
    split = _Split()
    want = run_task(_task(), split)
    with LocalExecutor(split, "cpu", workers=1, threads=1) as ex:
        got, = ex.run([_task()])
    assert got.ok, got.error
    assert all(torch.equal(want.weights[k], got.weights[k]) for k in want.weights)
    assert _curves(got) == _curves(want)


# ------------------------------------------------------------------ the climb
def tiny(npz, **kw) -> SearchConfig:
    return SearchConfig(**{**TINY, "dataset": npz, "n_neigh": 4, "n_nm": 1, "approximate": True,
                           **kw})


def _records(out) -> list[dict]:
    return [json.loads(x) for x in (out / "journal.jsonl").read_text().splitlines()]


def _approximate(made: dict) -> bool:
    return any(m["op"] in APPROXIMATE for m in made["morphisms"])


def _trained(out) -> dict[str, dict]:
    return {r["model"]: r for r in _records(out) if r["event"] == "model_trained"}


def test_a_search_with_approximate_children_distils_them(tiny_npz, tmp_path):
    out = tmp_path / "run"
    hill_climb(tiny(tiny_npz), out)
    made = {r["model"]: r for r in _records(out) if r["event"] == "child_made"}
    trained = _trained(out)
    assert any(_approximate(m) for m in made.values())
    assert any(not _approximate(m) for m in made.values())
    for cid, m in made.items():
        rec = trained[cid]
        if _approximate(m):
            assert rec["distill"] == {"teacher": rec["parent"], "weight": 0.5,
                                      "temperature": 4.0}
        else:
            assert "distill" not in rec
    assert all("distill" not in r for r in trained.values() if r["role"] != "child")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["approximate"] is True and "distill_weight" not in cfg   # default: quiet


def test_distill_settings_reach_the_journal_and_the_weights(tiny_npz, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    hill_climb(tiny(tiny_npz, n_steps=1), a)
    hill_climb(tiny(tiny_npz, n_steps=1, distill_weight=0.9, distill_temperature=2.0), b)
    ta, tb = _trained(a), _trained(b)
    distilled = [m for m, r in ta.items() if "distill" in r]
    assert distilled
    for m in distilled:
        assert tb[m]["distill"]["weight"] == 0.9 and tb[m]["distill"]["temperature"] == 2.0
        assert ta[m]["curves"] != tb[m]["curves"]
    for m in ("m0", "s01inc"):                           # never distilled: unchanged
        assert ta[m]["curves"][0]["loss"] == tb[m]["curves"][0]["loss"]
    c = tmp_path / "c"                                   # weight 0: no teacher at all
    hill_climb(tiny(tiny_npz, n_steps=1, distill_weight=0.0), c)
    assert all("distill" not in r for r in _trained(c).values())


def _same_run(a, b) -> None:
    ta, tb = _trained(a), _trained(b)
    assert set(ta) == set(tb)
    for m in ta:
        for k in ("val_accuracy", "val_loss", "test_accuracy", "distill", "params"):
            assert ta[m].get(k) == tb[m].get(k), (m, k)
    da = [r["best"] for r in _records(a) if r["event"] == "step_decided"]
    assert da == [r["best"] for r in _records(b) if r["event"] == "step_decided"]


@pytest.mark.parametrize("executor", ["local", "streams"])
def test_every_executor_distils_as_the_serial_one(tiny_npz, tmp_path, executor):
    hill_climb(tiny(tiny_npz), tmp_path / "serial")
    hill_climb(tiny(tiny_npz, executor=executor, workers=2), tmp_path / executor)
    _same_run(tmp_path / "serial", tmp_path / executor)


def test_a_distilled_search_killed_mid_step_resumes_to_the_same_result(tiny_npz, tmp_path):
    hill_climb(tiny(tiny_npz), tmp_path / "whole")
    distilled = [m for m, r in _trained(tmp_path / "whole").items()
                 if "distill" in r and r["step"] == 2]
    assert distilled
    victim = distilled[0]

    def kill(e):
        if e["event"] == "train_start" and e["model"] == victim:   # before it trains
            raise KeyboardInterrupt

    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        hill_climb(tiny(tiny_npz), out, callback=kill)
    resume(out)
    _same_run(tmp_path / "whole", out)


def test_a_vanished_distilled_child_is_trained_again_with_its_teacher(tiny_npz, tmp_path):
    out = tmp_path / "run"
    hill_climb(tiny(tiny_npz, n_steps=1), out)
    rec = next(r for r in _trained(out).values() if "distill" in r)
    shutil.rmtree(out / "models" / rec["model"])
    with attach(out) as climber:
        task = restore.initial_task(climber, rec["model"])
        assert task.teacher is not None and task.teacher.record() == rec["distill"]
        again = restore.restore(climber, rec["model"])
    assert again["matches"] is True
    assert RunDir.open(out).state().restored[rec["model"]]["val_accuracy"] == \
        rec["val_accuracy"]


def test_a_teacher_of_other_classes_is_refused():
    student = build(starting_arch(3, 4, 8, widths=(4, 8, 8)))
    teacher = build(starting_arch(3, 5, 8, widths=(4, 8, 8)))
    with pytest.raises(ConfigError, match="teacher predicts 5 classes"):
        fit(student, _data(), epochs=1, config=CFG, mean=MEAN, std=STD, seed=0,
            teacher=teacher)
