"""A run directory is untrusted data: nothing written outside it, no user file overwritten, one
line instead of a traceback, and a way forward for every stuck run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

import morphclimb.worker as worker
from conftest import TINY
from morphclimb.cli import main
from morphclimb.config import SearchConfig
from morphclimb.errors import RunDirError
from morphclimb.events import check_model_id
from morphclimb.journal import RunDir
from morphclimb.nash import hill_climb, resume


def _sets(npz, **kw):
    args = ["--dataset", npz]
    for k, v in {**TINY, **kw}.items():
        args += ["--set", f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"]
    return args


def _one_line(capsys, code, want_code=2):
    out, err = capsys.readouterr()
    assert code == want_code, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    from conftest import make_tiny_npz
    root = tmp_path_factory.mktemp("trust")
    npz = str(make_tiny_npz(root / "tiny.npz"))
    cfg = SearchConfig.from_dict({**TINY, "dataset": npz, "n_steps": 1})
    hill_climb(cfg, root / "run")
    return root / "run"


@pytest.fixture
def run_copy(done_run, tmp_path):
    dst = tmp_path / "shared" / "run"
    shutil.copytree(done_run, dst)
    return dst


def _listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*")
                  if p.is_file())


# ------------------------------------------------------------------ user files and bad settings
def test_search_refuses_a_directory_holding_user_files(tiny_npz, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "config.json").write_text('{"mine": true}')
    err = _one_line(capsys, main(["search", *_sets(tiny_npz), "--out", str(out), "-q"]))
    assert "not empty" in err
    assert (out / "config.json").read_text() == '{"mine": true}'
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()                                   # an empty folder is fine
    assert main(["search", *_sets(tiny_npz, n_steps=0), "--out", str(empty), "-q"]) == 0


@pytest.mark.parametrize("setting, needle", [
    ("lr_start=NaN", "lr_start"), ("lr_start=Infinity", "lr_start"), ("threads=0", "threads"),
    ("momentum=0", "nesterov"), ("weight_decay=-1", "weight_decay"), ("val=NaN", "val"),
    ("eval_batch_size=0", "eval_batch_size"), ("seed=-1", "seed"), ("split_seed=-3", "seed"),
    ("widths=[4,8]", "widths")])
def test_bad_setting_never_creates_a_run(tiny_npz, tmp_path, capsys, setting, needle):
    out = tmp_path / "run"
    err = _one_line(capsys, main(["search", *_sets(tiny_npz), "--set", setting,
                                  "--out", str(out)]))
    assert needle in err and not out.exists()


def test_negative_seed_flag_and_too_small_images(tiny_npz, tmp_path, capsys):
    err = _one_line(capsys, main(["search", *_sets(tiny_npz), "--seed", "-1",
                                  "--out", str(tmp_path / "a")]))
    assert "seed" in err and not (tmp_path / "a").exists()
    from conftest import make_tiny_npz
    small = str(make_tiny_npz(tmp_path / "small.npz", size=3))
    err = _one_line(capsys, main(["search", *_sets(small), "--out", str(tmp_path / "b")]))
    assert "4x4" in err and not (tmp_path / "b").exists()


# ------------------------------------------------------------------ nothing outside the run
@pytest.mark.parametrize("bad", ["../x", "..", "a/b", "/etc", "", "x\\y", ".hidden", 3, None])
def test_model_ids_are_single_safe_names(bad):
    with pytest.raises(RunDirError, match="not a valid model id"):
        check_model_id(bad)
    assert check_model_id("s01c7") == "s01c7" and check_model_id("snap01") == "snap01"


def _append(run, record):
    with open(run / "journal.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def test_crafted_journal_cannot_reach_outside(run_copy, tmp_path, capsys):
    victim = run_copy.parent / "other" / "weights.safetensors"
    victim.parent.mkdir()
    victim.write_bytes(b"precious")
    # a decided step whose losers include a path: keep_weights=best would have deleted it
    _append(run_copy, {"event": "step_decided", "step": 9, "best": "m0", "previous": "m0",
                       "val_accuracy": 0.5, "params": 1, "candidates": ["../../other"]})
    before = _listing(run_copy.parent)
    for argv in (["resume", str(run_copy), "-q"], ["show", str(run_copy)],
                 ["report", str(run_copy)], ["retrain", str(run_copy), "-q"]):
        err = _one_line(capsys, main(argv))
        assert "not a valid model id" in err, (argv, err)
    assert victim.read_bytes() == b"precious" and _listing(run_copy.parent) == before
    _append(run_copy, {"event": "ensemble_evaluated", "kind": "snapshot", "members": ["../o"],
                       "test_accuracy": 0.5, "params": 1})
    before = _listing(run_copy.parent)
    err = _one_line(capsys, main(["export", str(run_copy), "--format", "safetensors",
                                  "--ensemble", "snapshot"]))
    assert "not a valid model id" in err and _listing(run_copy.parent) == before


def test_model_option_cannot_leave_the_run(run_copy, tmp_path, capsys):
    outside = run_copy.parent / "x"
    shutil.copytree(run_copy / "models" / "final", outside)
    for argv in (["evaluate", str(run_copy), "--model", "../../x"],
                 ["export", str(run_copy), "--format", "onnx", "--model", "../x"]):
        err = _one_line(capsys, main(argv))
        assert "not a valid model id" in err
    assert not list(run_copy.parent.glob("*.onnx")) and not (run_copy.parent / "export").exists()


def test_symlinks_in_a_run_are_refused(run_copy, tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    shutil.copytree(run_copy / "models" / "s01c1", outside)
    shutil.rmtree(run_copy / "models" / "s01c1")
    (run_copy / "models" / "s01c1").symlink_to(outside)
    err = _one_line(capsys, main(["evaluate", str(run_copy), "--model", "s01c1"]))
    assert "symbolic link" in err
    (run_copy / "export").symlink_to(tmp_path)
    err = _one_line(capsys, main(["export", str(run_copy), "--format", "torchscript"]))
    assert "symbolic link" in err and not list(tmp_path.glob("*.pt"))


def test_export_never_overwrites_a_user_file(run_copy, tmp_path, capsys):
    mine = tmp_path / "model.onnx"
    mine.write_text("mine")
    err = _one_line(capsys, main(["export", str(run_copy), "--format", "onnx", "--out",
                                  str(mine)]))
    assert "--force" in err and mine.read_text() == "mine"


# ------------------------------------------------------------------ one line, not a traceback
@pytest.mark.parametrize("damage, argv, needle", [
    ("journal_field", ["show"], "lacks model"),
    ("journal_event", ["resume"], "unknown event"),
    ("journal_garbage", ["report"], "corrupt record"),
    ("config", ["resume"], "config.json is unreadable"),
    ("config", ["show"], "config.json is unreadable"),
    ("weights", ["evaluate"], "unreadable"),
    ("weights", ["export", "--format", "onnx"], "unreadable"),
    ("weights_garbage", ["export", "--format", "safetensors"], "unreadable"),
    ("arch", ["show"], "arch.json"),
])
def test_damaged_runs_give_one_line(run_copy, capsys, damage, argv, needle):
    final = run_copy / "models" / "final"
    if damage == "journal_field":
        _append(run_copy, {"event": "model_trained", "params": 3, "epochs": 1})
    elif damage == "journal_event":
        _append(run_copy, {"event": "model_deleted", "model": "m0"})
    elif damage == "journal_garbage":
        with open(run_copy / "journal.jsonl", "a") as f:
            f.write("{not json}\n")
    elif damage == "config":
        text = (run_copy / "config.json").read_text()
        (run_copy / "config.json").write_text(text[: len(text) // 2])
    elif damage == "weights":
        data = (final / "weights.safetensors").read_bytes()
        (final / "weights.safetensors").write_bytes(data[: len(data) // 3])
    elif damage == "weights_garbage":
        (final / "weights.safetensors").write_bytes(b"\x00garbage" * 10)
    elif damage == "arch":
        text = (final / "arch.json").read_text()
        (final / "arch.json").write_text(text[:40])
    err = _one_line(capsys, main([argv[0], str(run_copy), *argv[1:]]))
    assert needle in err, err


# ------------------------------------------------------------------ readers never write
def test_readers_leave_a_live_journal_alone(run_copy, capsys):
    with open(run_copy / "journal.jsonl", "a") as f:
        f.write('{"event": "model_trained", "model": "s0')      # a record being written
    (run_copy / "results.json").unlink()
    before = (run_copy / "journal.jsonl").read_bytes()
    assert main(["show", str(run_copy)]) == 0
    assert (run_copy / "journal.jsonl").read_bytes() == before
    assert not (run_copy / "results.json").exists()
    capsys.readouterr()


def test_a_second_writer_is_refused(run_copy):
    holder = RunDir.open(run_copy)
    holder.lock()                      # a search still running on this run
    try:
        res = subprocess.run([sys.executable, "-m", "morphclimb.cli", "resume", str(run_copy),
                              "-q"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "being written by another" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    finally:
        holder.unlock()
    RunDir.open(run_copy).lock()       # released: the next writer gets it


# ------------------------------------------------------------------ failures and a way forward
def test_any_exception_in_a_child_fails_only_that_child(tiny_npz, tmp_path, monkeypatch):
    real = worker.fit

    def fit(model, data, **kw):
        if kw["seed"] == bad_seed:
            raise MemoryError("planted: this child does not fit")
        return real(model, data, **kw)

    from morphclimb.seeds import derive_seed
    bad_seed = derive_seed(0, "train", "s01c1")
    monkeypatch.setattr(worker, "fit", fit)
    hill_climb(SearchConfig.from_dict({**TINY, "dataset": tiny_npz, "n_steps": 1}),
               tmp_path / "run")
    st = RunDir.open(tmp_path / "run").state()
    assert list(st.failed) == ["s01c1"] and "MemoryError" in st.failed["s01c1"]["reason"]
    assert st.finished is not None and "s01c1" in st.decided[1]["candidates"]


def test_failed_step_has_a_way_forward(tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    # every candidate of step 1 diverges at this learning rate (model_0 is not trained)
    argv = ["search", *_sets(tiny_npz, n_steps=1, epoch_pretrain=0, lr_start=1e9),
            "--out", str(out), "-q"]
    err = _one_line(capsys, main(argv), want_code=1)
    assert "every candidate failed" in err and "--retry-failed --set lr_start=...`" in err
    err = _one_line(capsys, main(["resume", str(out), "-q"]), want_code=1)   # same, honestly
    assert "every candidate failed" in err
    assert main(["resume", str(out), "-q", "--retry-failed", "--set", "lr_start=0.05"]) == 0
    capsys.readouterr()
    run = RunDir.open(out)
    recs = run.records()
    changed = [r for r in recs if r["event"] == "config_changed"]
    retried = [r for r in recs if r["event"] == "failures_retried"]
    assert changed[-1]["changes"] == {"lr_start": 0.05}
    assert sorted(retried[-1]["models"]) == ["s01c1", "s01c2", "s01inc"]
    st = run.state()
    assert st.finished is not None and not st.failed
    assert json.loads((out / "config.json").read_text())["lr_start"] == 1e9   # as started
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["lr_start"] == 0.05 and res["resumed_with"]["changes"]
    with pytest.raises(RunDirError, match="may only change"):
        resume(out, n_steps=3)


def test_a_child_too_large_for_memory_fails_fast(tiny_npz, tmp_path, monkeypatch):
    import morphclimb.budget as budget
    m0_bytes = budget.training_bytes(
        __import__("morphclimb").starting_arch(3, 4, 8, widths=TINY["widths"]),
        TINY["batch_size"])
    monkeypatch.setattr(budget, "available_bytes", lambda device: int(m0_bytes * 1.12))
    hill_climb(SearchConfig.from_dict({**TINY, "dataset": tiny_npz, "n_steps": 1}),
               tmp_path / "run")
    st = RunDir.open(tmp_path / "run").state()
    assert st.failed and all("out of memory" in r["reason"] for r in st.failed.values())
    assert "s01inc" in st.trained and st.finished is not None   # the step went on without them


def test_a_step_whose_every_candidate_ran_out_of_memory_advises_a_smaller_batch(
        tiny_npz, tmp_path, monkeypatch, capsys):
    """The advice fits the failure: memory, not the learning rate (issue 37)."""
    real = worker.run_task

    def run_task(task, *a, **k):     # every candidate of step 1 is refused before allocating
        if task.model_id != "m0":
            return worker.failed_outcome(task, "TrainingError: out of memory: training needs "
                                         "about 39.4 GiB (batch 32, 9 parameters); 3.0 GiB "
                                         "are free")
        return real(task, *a, **k)
    monkeypatch.setattr(worker, "run_task", run_task)
    argv = ["search", *_sets(tiny_npz, n_steps=1), "--out", str(tmp_path / "run"), "-q"]
    err = _one_line(capsys, main(argv), want_code=1)
    assert "step 1: every candidate failed (first: TrainingError: out of memory" in err
    assert "--retry-failed --set batch_size=...`" in err and "lr_start" not in err


def test_ensemble_out_never_overwrites_a_user_file(done_run, run_copy, tmp_path, capsys):
    mine = tmp_path / "mine.json"
    mine.write_text("mine")
    err = _one_line(capsys, main(["ensemble", str(done_run), str(run_copy), "--out",
                                  str(mine)]))
    assert "--force" in err and mine.read_text() == "mine"
    assert main(["ensemble", str(done_run), str(run_copy), "--out", str(mine), "--force"]) == 0
    assert json.loads(mine.read_text())["kind"] == "across_runs"
