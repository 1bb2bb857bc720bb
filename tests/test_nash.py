"""Algorithm 1's bookkeeping, the run directory, resume after a kill, and bad configurations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import morphclimb.worker as worker
from conftest import TINY
from morphclimb.config import SearchConfig
from morphclimb.journal import RunDir
from morphclimb.nash import Climber, hill_climb
from morphclimb.state import RunState

CLI = [sys.executable, "-m", "morphclimb.cli"]


def tiny_config(npz, **kw) -> SearchConfig:
    return SearchConfig(**{**TINY, "dataset": npz, **kw})


def _sets(npz, **kw) -> list[str]:
    cfg = {**TINY, **kw}
    out = ["--dataset", npz, "--preset", "demo"]
    for k, v in cfg.items():
        out += ["--set", f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"]
    return out


def test_algorithm1_bookkeeping(tiny_npz, tmp_path, monkeypatch):
    seen_sizes = []
    real_evaluate = worker.evaluate

    def spy(model, data, **kw):
        seen_sizes.append(len(data.y))
        return real_evaluate(model, data, **kw)

    monkeypatch.setattr(worker, "evaluate", spy)
    cfg = tiny_config(tiny_npz, epoch_neigh=2, epoch_final=3)
    res = hill_climb(cfg, tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    trained = run.records("model_trained")
    # model_0, n_neigh per step (n_neigh - 1 children + the incumbent), then the final model
    assert [r["model"] for r in trained][0] == "m0"
    assert len(trained) == 1 + cfg.n_steps * cfg.n_neigh + 1
    assert len(run.records("child_made")) == cfg.n_steps * (cfg.n_neigh - 1)
    for r in trained:
        want = {"pretrain": 1, "child": 2, "incumbent": 2, "final": 3}[r["role"]]
        assert r["epochs"] == want and len(r["curves"]) == want
    decided = run.records("step_decided")
    assert [d["step"] for d in decided] == [1, 2]
    for d in decided:
        assert len(d["candidates"]) == cfg.n_neigh
        assert d["candidates"][-1].endswith("inc")
    # the final training uses train + validation; the test set is evaluated once, at the end
    final = trained[-1]
    assert final["model"] == "final" and final["part"] == "train_full"
    assert sum(r["images"] for r in final["curves"]) >= 3 * (192 - 32)
    assert seen_sizes.count(48) == 1 and seen_sizes[-1] == 48
    assert "test_accuracy" in final and all("test_accuracy" not in r for r in trained[:-1])
    assert res.test_accuracy == final["test_accuracy"]
    assert final["lineage"] == cfg.total_epochs
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["final"]["test_accuracy"] == res.test_accuracy
    assert res.arch.to_dict() == results["final"]["arch"]
    assert len(results["steps"]) == 2


def test_random_networks_accept_every_child(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, n_neigh=1, n_steps=2)
    hill_climb(cfg, tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    decided = run.records("step_decided")
    assert [d["candidates"] for d in decided] == [["s01c1"], ["s02c1"]]
    assert [d["best"] for d in decided] == ["s01c1", "s02c1"]
    assert run.records("child_made")[1]["parent"] == "s01c1"
    roles = [r["role"] for r in run.records("model_trained")]
    assert roles == ["pretrain", "child", "child", "final"]


def test_keep_weights_best_drops_only_the_losers(tiny_npz, tmp_path):
    from morphclimb.errors import RunDirError
    kw = dict(snapshot_ensemble=True, n_steps=2, n_neigh=3)
    full = hill_climb(tiny_config(tiny_npz, **kw), tmp_path / "all")
    lean = hill_climb(tiny_config(tiny_npz, keep_weights="best", **kw), tmp_path / "best")
    # pruning changes nothing the search computes
    assert lean.test_accuracy == full.test_accuracy
    assert lean.arch.to_dict() == full.arch.to_dict()
    for key in ("members", "test_accuracy", "params"):
        assert lean.results["snapshot_ensemble"][key] == full.results["snapshot_ensemble"][key]
    run = RunDir.open(tmp_path / "best")
    decided = run.records("step_decided")
    winners = {"m0", "final"} | {d["best"] for d in decided}
    losers = {m for d in decided for m in d["candidates"]} - winners
    assert losers and all(r["model"] in winners | losers | {"snap01"}
                          for r in run.records("model_trained"))
    for m in winners | {"snap01"}:
        run.load_model(m)
    for m in losers:
        assert run.load_arch(m).num_params > 0
        assert not (run.model_dir(m) / "weights.safetensors").exists()
        with pytest.raises(RunDirError, match="keep_weights=best"):
            run.load_model(m)
    assert all((RunDir.open(tmp_path / "all").model_dir(m) / "weights.safetensors").exists()
               for m in losers)
    # idempotent, and a resumed run finds nothing left to train or drop
    again = hill_climb(SearchConfig.from_dict(run.config()), tmp_path / "best", resume=True)
    assert again.test_accuracy == lean.test_accuracy
    assert len(run.records("model_trained")) == len(RunDir.open(tmp_path / "all")
                                                    .records("model_trained"))


def _rec(model, acc, loss=1.0):
    return {"event": "model_trained", "model": model, "val_accuracy": acc, "val_loss": loss,
            "params": 10}


def _climber():
    c = Climber.__new__(Climber)
    c.state = RunState()
    c.log = lambda rec: rec
    return c


def test_incumbent_kept_unless_beaten():
    c = _climber()
    best = {"model": "m0"}
    recs = [_rec("s01c1", 0.5), _rec("s01c2", 0.6), _rec("s01inc", 0.6)]
    assert c.decide(1, best, recs)["model"] == "s01inc"          # a tie keeps the current best
    recs = [_rec("s01c1", 0.5), _rec("s01c2", 0.61), _rec("s01inc", 0.6)]
    assert c.decide(1, best, recs)["model"] == "s01c2"
    recs = [_rec("s01c1", 0.7, 0.9), _rec("s01c2", 0.7, 0.8), _rec("s01inc", 0.6)]
    assert c.decide(1, best, recs)["model"] == "s01c2"           # equal accuracy: lower loss
    failed = {"event": "child_failed", "model": "s01c1", "reason": "nan"}
    recs = [failed, _rec("s01c2", 0.1), _rec("s01inc", 0.6)]
    assert c.decide(1, best, recs)["model"] == "s01inc"


def _run_cli(args, **kw):
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    return subprocess.run(CLI + args, capture_output=True, text=True, env=env, **kw)


def _summary(run_dir: Path) -> dict:
    r = json.loads((run_dir / "results.json").read_text())
    vals = {c["model"]: c["val_accuracy"] for s in r["steps"] for c in s["children"]}
    return {"arch": r["final"]["arch"], "test": r["final"]["test_accuracy"],
            "best": [s["best"] for s in r["steps"]], "vals": vals}


@pytest.mark.slow
def test_killed_search_resumes_to_the_same_result(tiny_npz, tmp_path):
    args = _sets(tiny_npz, n_steps=2, n_neigh=3, epoch_neigh=2, baseline=False)
    full = tmp_path / "full"
    done = _run_cli(["search", *args, "--out", str(full), "--quiet"], timeout=300)
    assert done.returncode == 0, done.stderr
    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(CLI + ["search", *args, "--out", str(killed), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = killed / "journal.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:   # kill in step 1, mid-children
        if journal.exists() and journal.read_text().count('"model_trained"') >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the search ended before it could be killed"
    assert not (killed / "results.json").exists()
    resumed = _run_cli(["resume", str(killed), "--quiet"], timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _summary(killed) == _summary(full)
    recs = [json.loads(x) for x in journal.read_text().splitlines()]
    trained = [r["model"] for r in recs if r["event"] == "model_trained"]
    assert len(trained) == len(set(trained)), "a finished training was redone"
    assert any(r["event"] == "run_resumed" for r in recs)


@pytest.mark.parametrize("setting, message", [
    (["--set", "n_neigh=0"], "n_neigh must be >= 1"),
    (["--set", "epoch_neigh=-1"], "epoch_neigh must be >= 0"),
    (["--set", "lr_start=0.01", "--set", "lr_end=0.1"], "must not exceed lr_start"),
    (["--set", "n_nieghbours=3"], "unknown config key 'n_nieghbours'; did you mean 'n_neigh'?"),
    (["--set", "n_steps=three"], "n_steps: expected int"),
    (["--dataset", "imagenet21k"], "imagenet21k"),
    (["--preset", "table9"], "unknown preset"),
    (["--set", "keep_weights=losers"], "keep_weights must be one of all, best"),
])
def test_bad_configuration_exits_2_before_training(tmp_path, setting, message):
    out = tmp_path / "run"
    res = _run_cli(["search", *setting, "--out", str(out)], timeout=120)
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (out / "journal.jsonl").exists()


def test_unwritable_output_directory_exits_2(tmp_path, tiny_npz):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = _run_cli(["search", "--dataset", tiny_npz, "--out", str(blocker / "run")], timeout=120)
    assert res.returncode == 2
    assert f"cannot create run directory {blocker / 'run'}: {blocker} is a file" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_existing_run_is_not_overwritten(tmp_path, tiny_npz):
    run = RunDir.create(tmp_path / "run", {"x": 1})
    run.journal.append({"event": "run_started", "config": {"x": 1}})
    res = _run_cli(["search", "--dataset", tiny_npz, "--out", str(tmp_path / "run")],
                   timeout=120)
    assert res.returncode == 2 and "morphclimb resume" in res.stderr


def test_python_api_search_and_subset(tiny_npz, tmp_path):
    import morphclimb as mc
    from morphclimb.nash import load_split
    res = mc.search(None, dataset=tiny_npz, out=tmp_path / "run", **{**TINY, "n_steps": 1})
    assert isinstance(res, mc.SearchResult) and 0 <= res.test_accuracy <= 1
    assert res.model(torch.zeros(2, 3, 8, 8, dtype=torch.uint8).float()).shape == (2, 4)
    assert len(res.history) == 1 and res.history[0]["step"] == 1
    ds, split = load_split(tiny_config(tiny_npz, subset=100))
    assert ds.name.endswith("-subset100") and len(split.train) + len(split.val) == 100
    assert np.bincount(np.concatenate([split.train.y, split.val.y])).tolist() == [25] * 4
