"""Parallel executors: local worker processes and Ray match the serial run; faults and Ctrl-C."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, make_tiny_npz
from morphclimb.config import SearchConfig
from morphclimb.errors import ConfigError
from morphclimb.executors import SerialExecutor
from morphclimb.journal import RunDir
from morphclimb.model0 import starting_arch
from morphclimb.nash import hill_climb, load_split, resume
from morphclimb.parallel import (
    DIED_TWICE,
    HOOK_ENV,
    LocalExecutor,
    WorkerSplit,
    pack_split,
    worker_devices,
)
from morphclimb.train import TrainConfig
from morphclimb.worker import TrainTask

CONTROL_ENV = "MORPHCLIMB_TEST_PARALLEL_CONTROL"


# ---------------------------------------------------------------- the worker hook (test only)
def hook(task: TrainTask):
    """Runs in the worker before each task, as the control file (JSON) says.

    {"crash": {model_id: marker_path or null}}: the worker dies (os._exit) on that model, once
    (creating the marker) or always (null); {"nan": [model_id]}: its weights become NaN;
    {"raise": [model_id]}: a TypeError escapes.
    """
    path = os.environ.get(CONTROL_ENV)
    if not path or not os.path.exists(path):
        return None
    control = json.loads(Path(path).read_text())
    crash = control.get("crash", {})
    if task.model_id in crash:
        marker = crash[task.model_id]
        if marker is None or not os.path.exists(marker):
            if marker is not None:
                Path(marker).touch()
            os._exit(1)
    if task.model_id in control.get("raise", []):
        raise TypeError(f"planted bug in {task.model_id}")
    if task.model_id in control.get("nan", []):
        weights = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                   for k, v in task.weights.items()}
        return dataclasses.replace(task, weights=weights)
    return None


@pytest.fixture
def control(tmp_path, monkeypatch):
    """Install the hook in workers started from now on; returns a writer for its control file."""
    path = tmp_path / "control.json"
    monkeypatch.setenv(HOOK_ENV, "test_parallel:hook")
    monkeypatch.setenv(CONTROL_ENV, str(path))

    def write(**kw):
        path.write_text(json.dumps(kw))
    write()
    return write


# ---------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return str(make_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz"))


def config(npz, **kw) -> SearchConfig:
    return SearchConfig(**{**TINY, "dataset": npz, **kw})


def summary(run_dir) -> dict:
    """What must not depend on the executor: choices, metrics, curves, final weights."""
    run = RunDir.open(run_dir)
    trained = {}
    for r in run.records("model_trained"):
        curves = [(c["loss"], c["accuracy"], c["lr"], c["images"]) for c in r["curves"]]
        trained[r["model"]] = (r.get("val_accuracy"), r.get("val_loss"), r.get("test_accuracy"),
                               r["params"], curves)
    made = {r["model"]: r["morphisms"] for r in run.records("child_made")}
    steps = [(d["step"], d["best"], d["val_accuracy"]) for d in run.records("step_decided")]
    final = run.records("run_finished")[-1]["model"]
    arch, weights = run.load_model(final)
    return {"trained": trained, "made": made, "steps": steps, "arch": arch.to_dict(),
            "weights": {k: v.tolist() for k, v in weights.items()}}


@pytest.fixture(scope="module")
def serial_summary(npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "run"
    hill_climb(config(npz), out)
    return summary(out)


def tasks_for(n: int, epochs: int = 1) -> list[TrainTask]:
    arch = starting_arch(3, 4, 8, widths=(4, 8, 8))
    cfg = TrainConfig(batch_size=32, threads=1, bf16=False, channels_last=False)
    return [TrainTask(f"t{i}", arch.to_dict(), None, epochs, cfg, seed=10 + i, init_seed=i)
            for i in range(n)]


def same(a, b) -> bool:
    def curves(o):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in o.records]
    return (a.ok == b.ok and a.eval == b.eval and curves(a) == curves(b)
            and all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights))


# ---------------------------------------------------------------- unit level
def test_worker_split_views_and_devices(npz, monkeypatch):
    _, split = load_split(config(npz))
    ws = WorkerSplit(pack_split(split))
    for part in ("train", "val", "test", "train_full"):
        assert (getattr(ws, part).x == getattr(split, part).x).all()
        assert (getattr(ws, part).y == getattr(split, part).y).all()
    assert ws.mean == tuple(split.mean) and ws.std == tuple(split.std)
    assert worker_devices(torch.device("cpu"), None) == ["cpu", "cpu"]
    assert worker_devices(torch.device("cpu"), 3) == ["cpu"] * 3
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert worker_devices(torch.device("cuda"), None) == ["cuda:0", "cuda:1"]
    assert worker_devices(torch.device("cuda"), 5) == ["cuda:0", "cuda:1"] * 2 + ["cuda:0"]
    assert worker_devices(torch.device("cuda:1"), 2) == ["cuda:1", "cuda:1"]
    with pytest.raises(ConfigError, match="workers"):
        worker_devices(torch.device("cpu"), 0)


def test_ray_missing_is_a_config_error(npz, monkeypatch):
    from morphclimb.parallel import RayExecutor
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"morphclimb\[ray\]"):
        RayExecutor(None, "cpu")


def test_local_executor_retries_dead_workers(npz, control, tmp_path):
    _, split = load_split(config(npz))
    tasks = tasks_for(4)
    want = SerialExecutor(split, "cpu").run(tasks)
    marker = tmp_path / "t1.crashed"
    control(crash={"t1": str(marker), "t2": None})
    done, epochs = [], []
    with LocalExecutor(split, "cpu", workers=2, threads=1,
                       on_epoch=lambda m, r: epochs.append((m, r["epoch"]))) as ex:
        got = ex.run(tasks, lambda o: done.append(o.model_id))
        # epoch records stream back as they happen (t2's worker died before it trained)
        assert sorted(epochs) == [("t0", 1), ("t1", 1), ("t3", 1)]
        assert marker.exists()  # t1's first attempt killed its worker
        assert sorted(done) == ["t0", "t1", "t2", "t3"]
        assert [o.model_id for o in got] == ["t0", "t1", "t2", "t3"]
        assert same(got[0], want[0]) and same(got[3], want[3])
        assert same(got[1], want[1]) and got[1].meta["attempts"] == 2
        assert not got[2].ok and DIED_TWICE in got[2].error and got[2].meta["attempts"] == 2
        deaths = sorted((d["model"], d["exitcode"]) for d in ex.deaths)
        assert deaths == [("t1", 1), ("t2", 1), ("t2", 1)]
        # a task that raises anything comes back as that task's failure; the rest go on
        control(**{"raise": ["t0"]})
        got = ex.run(tasks[:2])
        assert not got[0].ok and "TypeError: planted bug in t0" in got[0].error
        assert same(got[1], want[1])
        control()
        assert same(ex.run(tasks[:1])[0], want[0])
        # a worker killed while idle is replaced at the start of the next run
        victim = ex._slots[0].proc
        os.kill(victim.pid, signal.SIGKILL)
        victim.join()
        got = ex.run(tasks[:2])
        assert same(got[0], want[0]) and same(got[1], want[1])
        assert ex._slots[0].proc is not victim and ex._slots[0].proc.is_alive()


# ---------------------------------------------------------------- search level
def test_local_search_matches_serial(npz, serial_summary, control, tmp_path):
    marker = tmp_path / "s01c2.crashed"
    control(crash={"s01c2": str(marker)})
    hill_climb(config(npz, executor="local", workers=2), tmp_path / "run")
    assert marker.exists()  # a worker died mid-step; its child was retried elsewhere
    assert summary(tmp_path / "run") == serial_summary


def test_streams_search_matches_serial(npz, serial_summary, tmp_path):
    hill_climb(config(npz, executor="streams", workers=2), tmp_path / "run")
    assert summary(tmp_path / "run") == serial_summary


def test_ray_search_matches_serial(npz, serial_summary, control, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    tests_dir = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [tests_dir] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    marker = tmp_path / "s02c1.crashed"
    control(crash={"s02c1": str(marker)})
    hill_climb(config(npz, executor="ray", workers=2), tmp_path / "run")
    assert marker.exists()  # Ray retried the child whose worker died (max_retries=1)
    assert not ray.is_initialized()  # the local cluster it started is shut down
    assert summary(tmp_path / "run") == serial_summary


def test_diverging_child_fails_and_the_step_goes_on(npz, control, tmp_path):
    control(nan=["s01c1"])
    res = hill_climb(config(npz, executor="local", workers=2), tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    failed = run.records("child_failed")
    assert [f["model"] for f in failed] == ["s01c1"]
    assert "diverged" in failed[0]["reason"] and "nan" in failed[0]["reason"]
    step1 = run.records("step_decided")[0]
    assert step1["best"] != "s01c1" and "s01c1" in step1["candidates"]
    assert len(run.records("step_decided")) == 2 and run.records("run_finished")
    assert res.test_accuracy == run.records("model_trained")[-1]["test_accuracy"]


def test_ctrl_c_stops_workers_and_resume_continues(npz, serial_summary, tmp_path):
    out = tmp_path / "run"
    seen = {}

    def interrupt(event):
        if event["event"] == "model_trained" and event.get("step") == 2:
            seen["t"] = time.perf_counter()
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hill_climb(config(npz, executor="local", workers=2), out, callback=interrupt)
    assert time.perf_counter() - seen["t"] < 10
    assert multiprocessing.active_children() == []
    run = RunDir.open(out)
    assert not run.records("run_finished")
    assert len(run.records("step_decided")) == 1
    resume(out, executor="serial")
    assert summary(out) == serial_summary
