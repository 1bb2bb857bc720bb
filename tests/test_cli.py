"""The `morphclimb` command: progress output, quiet mode, and the commands on a finished run."""

from __future__ import annotations

import io
import json

import pytest

from conftest import TINY
from morphclimb.cli import main
from morphclimb.cli_progress import Progress
from morphclimb.journal import RunDir


def _args(npz, out, **kw):
    cfg = {**TINY, **kw}
    args = ["search", "--dataset", npz, "--out", str(out)]
    for k, v in cfg.items():
        args += ["--set", f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"]
    return args


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from conftest import make_tiny_npz
    root = tmp_path_factory.mktemp("cli")
    npz = str(make_tiny_npz(root / "tiny.npz"))
    out = root / "run"
    # the demo preset's reference and final_model=auto stay on except the retraining, which
    # the test asks for by command
    assert main(_args(npz, out, n_steps=2, epoch_final=2, final_model="search")
                + ["--quiet"]) == 0
    return out


def test_progress_as_log_lines_when_not_a_terminal(tiny_npz, tmp_path, capsys):
    assert main(_args(tiny_npz, tmp_path / "run", epoch_neigh=2)) == 0
    err = capsys.readouterr().err
    assert "step 1/2" in err and "step 2/2" in err
    assert "step 1/2 child 1/3 (s01c1): training 2 epoch(s)" in err
    assert "step 1/2 child 3/3 (s01inc, current best)" in err
    assert "s01c1 epoch 2/2: loss" in err and "elapsed" in err and "remaining 0.0s" in err
    assert "\r" not in err                                   # no bars in a log


def test_quiet_prints_only_the_result(tiny_npz, tmp_path, capsys):
    assert main(_args(tiny_npz, tmp_path / "run") + ["--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("final: test error")
    assert out.strip().splitlines()[1].startswith("starting network, same epochs: test error")


def test_progress_bars_on_a_terminal():
    stream = io.StringIO()
    p = Progress(stream=stream, tty=True)
    p.event({"event": "step_start", "step": 1, "n_steps": 3})
    p.event({"event": "train_start", "model": "s01c1", "epochs": 2, "role": "child", "step": 1,
             "child": 1, "n_neigh": 4})
    p.epoch("s01c1", {"epoch": 1, "loss": 1.5, "accuracy": 0.4})
    p.epoch("s01c1", {"epoch": 2, "loss": 1.2, "accuracy": 0.5})
    p.event({"event": "model_trained", "model": "s01c1", "val_accuracy": 0.5, "params": 10,
             "seconds": 1.0})
    text = stream.getvalue()
    assert "step 1/3 child 1/4 (s01c1)" in text and "2/2" in text and "loss=1.200" in text


@pytest.mark.parametrize("tty", [False, True])
def test_progress_follows_a_replanned_final(tty):
    stream = io.StringIO()
    p = Progress(stream=stream, tty=tty)
    p.event({"event": "train_start", "model": "final", "epochs": 27, "deadline": 1440.4,
             "role": "final"})
    p.epoch("final", {"epoch": 1, "loss": 1.5, "accuracy": 0.4, "epochs": 31})
    p.epoch("final", {"epoch": 2, "loss": 1.4, "accuracy": 0.45, "epochs": 31})
    text = stream.getvalue()
    assert "training 27 epoch(s) at first, re-planned as it runs to end within 1440s" in text
    if tty:
        assert "| 2/31 " in text.split("\r")[-1]      # the bar's last frame
    else:
        assert "final epoch 2/31:" in text
        remaining = float(text.split("remaining ")[-1].split("s")[0])
        elapsed = float(text.split("elapsed ")[-1].split("s")[0])
        assert remaining == pytest.approx(elapsed / 2 * 29, abs=0.2)


def test_show_evaluate_and_extras(finished_run, capsys):
    assert main(["show", str(finished_run)]) == 0
    out = capsys.readouterr().out
    assert "step 1:" in out and "step 2:" in out and "final architecture:" in out
    assert "conv" in out and "parameters" in out
    results = json.loads((finished_run / "results.json").read_text())
    assert main(["evaluate", str(finished_run)]) == 0
    out = capsys.readouterr().out
    acc = 100 * results["final"]["test_accuracy"]
    assert f"accuracy {acc:.2f}%" in out
    assert main(["retrain", str(finished_run), "--quiet"]) == 0
    assert "found architecture retrained from scratch: test error" in capsys.readouterr().out
    run = RunDir.open(finished_run)
    retrain = next(r for r in run.records("model_trained") if r["model"] == "retrain")
    assert run.records("model_trained")[-1]["model"] == "retrain" and retrain["epochs"] == results["final"]["epochs_total"]
    assert main(["ensemble", str(finished_run), "--quiet"]) == 0
    assert "snapshot ensemble (2 models)" in capsys.readouterr().out
    ens = run.records("ensemble_evaluated")[-1]
    assert ens["members"] == ["snap01", "final"]
    snap = next(r for r in run.records("model_trained") if r["model"] == "snap01")
    assert snap["part"] == "train_full" and snap["parent"] == run.records("step_decided")[0][
        "best"]
    assert main(["show", str(finished_run), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["retrain"]["model"] == "retrain" and "snapshot_ensemble" in shown


def test_ensemble_across_runs_and_errors(finished_run, tmp_path, capsys):
    out = tmp_path / "ens.json"
    assert main(["ensemble", str(finished_run), str(finished_run), "--out", str(out)]) == 0
    assert "ensemble across 2 runs" in capsys.readouterr().out
    assert json.loads(out.read_text())["kind"] == "across_runs"
    assert main(["evaluate", str(finished_run), "--model", "nope"]) == 2
    assert "has no model 'nope'" in capsys.readouterr().err
    assert main(["show", str(tmp_path)]) == 2
    assert "not a morphclimb run directory" in capsys.readouterr().err
