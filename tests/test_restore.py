"""A checkpoint that vanished from a run is trained again on `resume`, from what the journal
holds, to the same weights (same machine, torch and threads); where it cannot be, one line
says what to do."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY, make_tiny_npz
from morphclimb.cli import main
from morphclimb.journal import RunDir
from morphclimb.nash import resume, search


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    root = tmp_path_factory.mktemp("restore")
    npz = str(make_tiny_npz(root / "tiny.npz"))
    res = search(None, dataset=npz, out=root / "run", **TINY)
    return root / "run", res


def _copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


def _same_weights(a, b, model):
    wa = load_file(str(a / "models" / model / "weights.safetensors"))
    wb = load_file(str(b / "models" / model / "weights.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _summary(results):
    return {"arch": results["final"]["arch"], "test": results["final"]["test_accuracy"],
            "best": [s["best"] for s in results["steps"]],
            "vals": {c["model"]: c["val_accuracy"] for s in results["steps"]
                     for c in s["children"]}}


def test_killed_run_whose_parent_and_model0_vanished(original, tmp_path):
    orig, res = original
    run = _copy(orig, tmp_path)
    st = RunDir.open(run).state()
    parent = st.decided[1]["best"]          # what step 2's children are made from
    assert parent != "m0"
    lines = (run / "journal.jsonl").read_text().splitlines(keepends=True)
    cut = next(k for k, x in enumerate(lines) if '"step_decided"' in x and '"step": 2' in x)
    (run / "journal.jsonl").write_text("".join(lines[: cut - 1]))   # killed in step 2
    (run / "results.json").unlink()
    for m in ("m0", parent, "final"):
        shutil.rmtree(run / "models" / m)
    again = resume(run)
    assert _summary(again.results) == _summary(res.results)
    restored = {r["model"]: r for r in RunDir.open(run).records("model_restored")}
    assert set(restored) == {"m0", parent}           # final was not trained yet: trained now
    assert all(r["matches"] for r in restored.values())
    for m in ("m0", parent, "final"):
        assert _same_weights(orig, run, m), m
    # the journal's account of each model is its first training; the retraining is added
    trained = [r["model"] for r in RunDir.open(run).records("model_trained")]
    assert trained.count("m0") == 1 and trained.count(parent) == 1


def test_finished_run_whose_final_vanished(original, tmp_path, capsys):
    orig, _ = original
    run = _copy(orig, tmp_path)
    shutil.rmtree(run / "models" / "final")
    (run / "models" / "m0" / "weights.safetensors").unlink()   # an unneeded one stays gone
    assert main(["resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert "final: its vanished checkpoint was trained again (the same metrics" in err
    assert _same_weights(orig, run, "final")
    assert [r["model"] for r in RunDir.open(run).records("model_restored")] == ["final"]
    assert not (run / "models" / "m0" / "weights.safetensors").exists()
    assert main(["evaluate", str(run)]) == 0


def test_a_child_whose_whole_folder_vanished_mid_step(original, tmp_path):
    """Its architecture (for spotting duplicates) comes from the journal's draw, untrained."""
    orig, res = original
    run = _copy(orig, tmp_path)
    lines = (run / "journal.jsonl").read_text().splitlines(keepends=True)
    cut = next(k for k, x in enumerate(lines) if '"step_decided"' in x and '"step": 2' in x)
    (run / "journal.jsonl").write_text("".join(lines[: cut - 1]))
    (run / "results.json").unlink()
    shutil.rmtree(run / "models" / "s02c1")
    again = resume(run)
    assert _summary(again.results) == _summary(res.results)


def test_changed_settings_are_the_ones_in_force_when_it_was_trained(original, tmp_path):
    orig, _ = original
    run = _copy(orig, tmp_path)
    resume(run, lr_start=0.01)                     # journaled after every training
    shutil.rmtree(run / "models" / "final")
    resume(run)
    assert _same_weights(orig, run, "final")       # trained with lr_start 0.05, as at first


def test_gone_start_point_says_what_to_do(tmp_path, capsys):
    from morphclimb.build import build
    from morphclimb.journal import save_checkpoint
    from morphclimb.model0 import starting_arch
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    arch = starting_arch(3, 4, (8, 8), widths=(4, 8, 8))
    save_checkpoint(tmp_path / "start", arch, build(arch, seed=1).state_dict())
    run = tmp_path / "run"
    search(None, dataset=npz, out=run, start=str(tmp_path / "start" / "arch.json"),
           start_weights=str(tmp_path / "start" / "weights.safetensors"),
           **{**TINY, "n_steps": 0})
    journal = (run / "journal.jsonl").read_text()
    shutil.rmtree(tmp_path / "start")
    shutil.rmtree(run / "models" / "final")
    shutil.rmtree(run / "models" / "m0")
    assert main(["resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{run}/models/m0 is gone and cannot be trained again: its start point" in err
    assert "copy that folder back from a copy of the run" in err
    kept = (run / "journal.jsonl").read_text()
    assert kept.startswith(journal) and "model_restored" not in kept


def test_old_run_with_a_vanished_checkpoint(tmp_path):
    """tests/data/run_v0 (written before the typed journal, on another CPU: the weights agree
    to float rounding, not bit for bit, and the journal says so) restores too."""
    from pathlib import Path
    old = Path(__file__).parent / "data" / "run_v0"
    run = _copy(old, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["dataset"] = str(make_tiny_npz(tmp_path / "tiny.npz"))
    (run / "config.json").write_text(json.dumps(cfg))
    shutil.rmtree(run / "models" / "final")
    resume(run)
    (rec,) = RunDir.open(run).records("model_restored")
    first = next(r for r in RunDir.open(run).records("model_trained") if r["model"] == "final")
    assert rec["model"] == "final" and rec["test_accuracy"] == first["test_accuracy"]
    assert rec["matches"] == (rec["test_loss"] == first["test_loss"])
    wa = load_file(str(old / "models/final/weights.safetensors"))
    wb = load_file(str(run / "models/final/weights.safetensors"))
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)


def test_halving_rungs_restored_from_the_rung_before(tmp_path):
    """A rung's model starts from the rung before it, the first rung from the child's draw."""
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    cfg = {**TINY, "epoch_neigh": 2, "rungs": (1, 1), "eta": 2}
    orig = tmp_path / "orig"
    res = search(None, dataset=npz, out=orig, **cfg)
    st = RunDir.open(orig).state()
    parent = st.decided[1]["best"]                   # a rung-2 model, say s01c2r2
    assert parent.endswith("r2")
    run = _copy(orig, tmp_path)
    lines = (run / "journal.jsonl").read_text().splitlines(keepends=True)
    cut = next(k for k, x in enumerate(lines) if '"step_decided"' in x and '"step": 2' in x)
    (run / "journal.jsonl").write_text("".join(lines[: cut - 1]))
    (run / "results.json").unlink()
    for m in (parent, parent[:-1] + "1", "final"):     # the winner and its first rung
        shutil.rmtree(run / "models" / m)
    again = resume(run)
    assert _summary(again.results) == _summary(res.results)
    assert {r["model"] for r in RunDir.open(run).records("model_restored")} == {
        parent, parent[:-1] + "1"}
    for m in (parent, parent[:-1] + "1", "final"):
        assert _same_weights(orig, run, m), m
