"""Known-good start points (CIFAR ResNets in the spec) and the equal-time reference (issue 22)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import morphclimb.followups as followups
from conftest import TINY
from morphclimb.build import build, weights_of
from morphclimb.commands import show_run
from morphclimb.config import SearchConfig
from morphclimb.errors import ArchError, ConfigError
from morphclimb.journal import RunDir
from morphclimb.morphisms import REGISTRY
from morphclimb.nash import hill_climb, resume
from morphclimb.zoo import closest, is_zoo_name, resnet, zoo_arch
from test_morphisms_props import outputs, perturb


def published_params(depth: int, width: int = 1, classes: int = 10, channels: int = 3) -> int:
    """He et al.'s CIFAR ResNet (option A shortcuts: no weights), counted by hand."""
    n = (depth - 2) // 6
    w = [16 * width, 32 * width, 64 * width]
    total = channels * w[0] * 9 + 2 * w[0]                   # stem conv + BN
    c_in = w[0]
    for c in w:
        for _ in range(n):
            total += c_in * c * 9 + 2 * c + c * c * 9 + 2 * c   # two conv + BN
            c_in = c
    return total + w[2] * classes + classes                    # linear with bias


@pytest.mark.parametrize("depth", [8, 20, 32, 56])
def test_resnet_is_the_published_network_plus_its_stated_differences(depth):
    arch = resnet(depth)
    n = (depth - 2) // 6
    # + the two 1x1 projection shortcuts with BN (option B) + two scales per addition
    extra = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64) + 2 * 3 * n
    assert arch.num_params == published_params(depth) + extra
    assert sum(p.numel() for p in build(arch).parameters()) == arch.num_params
    assert arch.count("conv") == 6 * n + 1 + 2 and arch.count("add") == 3 * n
    assert arch.count("conv") - 2 + 1 == depth       # weighted layers of the published count
    assert resnet(20).num_params == 272_492 and published_params(20) == 269_722


def test_resnet_any_input_and_width():
    net = build(resnet(8, in_channels=1, num_classes=7, image_size=(28, 20)))
    assert net(torch.randn(2, 1, 28, 20)).shape == (2, 7)
    wide = resnet(20, width=4)
    assert wide.num_params == published_params(20, 4) + (64 * 128 + 256) + (128 * 256 + 512) \
        + 18
    assert zoo_arch("resnet20x4", 3, 10, 32).to_dict() == wide.to_dict()
    for bad in ("resnet9", "resnet0", "resnet20x0", "resnet", "vgg16"):
        assert not is_zoo_name(bad)
    with pytest.raises(ArchError, match="depth 6n \\+ 2"):
        resnet(9)
    with pytest.raises(ArchError, match="at least 4x4"):
        resnet(8, image_size=3)


@pytest.mark.parametrize("seed", range(6))
def test_every_morphism_is_exact_on_a_resnet(seed):
    torch.set_num_threads(1)
    arch = resnet(8, num_classes=5, image_size=12)
    sd = perturb(weights_of(build(arch, seed=seed)), seed)
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(seed))
    y = outputs(arch, sd, x)
    rng = np.random.default_rng(seed)
    tried = 0
    for name, m in REGISTRY.items():
        choices = m.choices(arch)
        if not choices:
            continue
        child, child_sd, full = m.apply(arch, sd, m.sample(arch, rng, choices), rng, None)
        err = (outputs(child, child_sd, x) - y).abs().max().item()
        assert err <= 1e-5 * y.abs().max().item(), (name, full, err)
        tried += 1
    assert tried == len(REGISTRY)


def test_closest_by_parameter_ratio():
    assert closest(78_000) == "resnet8"
    assert closest(272_000) == "resnet20"
    assert closest(150_000) == "resnet20"     # 272 k is nearer than 78 k by ratio
    assert closest(120_000) == "resnet8"
    assert closest(10**7) == "resnet56"


def test_reference_epochs_by_hand():
    # 100 s at 0.01 s per image: 10,000 image passes, less a third of 300 evaluated images
    assert followups.reference_epochs(100, 0.01, 1000, 300) == 9
    assert followups.reference_epochs(1, 0.01, 1000, 300) == 1       # at least one
    assert followups.reference_epochs(100, 0.0, 1000, 300) == 1


def test_start_from_a_resnet_by_name(tiny_npz, tmp_path):
    cfg = SearchConfig(**{**TINY, "dataset": tiny_npz, "start": "resnet8", "n_steps": 1})
    hill_climb(cfg, tmp_path / "run")
    run = RunDir.open(tmp_path / "run")
    assert run.load_arch("m0").to_dict() == resnet(8, 3, 4, 8).to_dict()
    st = run.state()
    assert st.started["start"] == {"kind": "zoo", "name": "resnet8", "weights": None}
    assert st.trained["m0"]["epochs"] == TINY["epoch_pretrain"]
    with pytest.raises(ConfigError, match="not a start point .*resnet20"):
        hill_climb(cfg.replace(start="resnet9"), tmp_path / "bad")
    with pytest.raises(ConfigError, match="reference must be auto or a start point"):
        cfg.replace(reference="resnet9")


def test_reference_trained_for_the_search_wall_time(tiny_npz, tmp_path, monkeypatch):
    """Timed now side by side, the reference takes twice the answer's time per image; the
    answer's final training measured its time per image under the search's conditions: the
    reference's epochs are what fits in the search's time at twice that."""
    def timed(arch, *a, **k):           # the answer (the final's architecture) and the rest
        final = RunDir.open(tmp_path / "run").load_arch("final")
        return 0.001 if arch.to_dict() == final.to_dict() else 0.002

    monkeypatch.setattr(followups, "seconds_per_image", timed)
    cfg = SearchConfig(**{**TINY, "dataset": tiny_npz, "reference": "auto"})
    res = hill_climb(cfg, tmp_path / "run").results
    run = RunDir.open(tmp_path / "run")
    st = run.state()
    plan = st.reference_plan
    final = st.trained["final"]
    assert plan["matched_seconds"] == final["clock"]
    assert plan["start_point"] == closest(final["params"], classes=4, size=8)
    n_full, n_test = 192, 48                      # the tiny set's training and test images
    then = final["seconds"] / (final["epochs"] * n_full + n_test / 3)
    assert plan["timed"] == {"reference": 0.002, "answer": 0.001, "ratio": 2.0, "rounds": 5,
                             "answer_in_search": then}
    assert plan["seconds_per_image"] == pytest.approx(2 * then)
    assert plan["epochs"] == max(1, int((final["clock"] / plan["seconds_per_image"]
                                         - n_test / 3) // n_full))
    ref = st.trained["reference"]
    assert ref["epochs"] == plan["epochs"] and ref["role"] == "reference"
    assert run.load_arch("reference").to_dict() == zoo_arch(plan["start_point"], 3, 4,
                                                            8).to_dict()
    r = res["reference"]
    assert r["answer_minus_reference"] == pytest.approx(
        res["final"]["test_error"] - r["test_error"])
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["reference"]["start_point"] == plan["start_point"]
    text = show_run(tmp_path / "run")
    assert f"reference {plan['start_point']} trained alone" in text
    assert ("LOST" in text) == (r["answer_minus_reference"] > 0)


def test_the_speed_ratio_is_the_median_round_timed_in_turn(monkeypatch):
    """Reference and answer are timed alternately; a burst of load in one round (the first
    answer timing here) moves neither the ratio nor, much, the medians."""
    ref_times, ans_times = iter([1.0, 3.0, 5.0, 7.0, 9.0]), iter([100.0, 6.0, 10.0, 14.0, 18.0])
    calls = []

    def timed(arch, *a, **k):
        calls.append(arch)
        return next(ref_times if arch == "ref" else ans_times)

    monkeypatch.setattr(followups, "seconds_per_image", timed)
    got = followups.speed_ratio("ref", "ans", None, None, None, None, None)
    assert calls == ["ref", "ans"] * 5
    assert got == {"reference": 5.0, "answer": 14.0, "ratio": 0.5, "rounds": 5}


def test_reference_plan_is_kept_on_resume(tiny_npz, tmp_path, monkeypatch):
    monkeypatch.setattr(followups, "seconds_per_image", lambda *a, **k: 0.002)
    cfg = SearchConfig(**{**TINY, "dataset": tiny_npz, "reference": "resnet8", "n_steps": 1})
    hill_climb(cfg, tmp_path / "run")
    journal = tmp_path / "run" / "journal.jsonl"
    lines = journal.read_text().splitlines()
    planned = next(json.loads(x) for x in lines if '"reference_planned"' in x)
    # killed after the plan, before the reference was trained
    keep = [x for x in lines if '"model": "reference"' not in x and '"run_finished"' not in x]
    journal.write_text("\n".join(keep) + "\n")
    monkeypatch.setattr(followups, "seconds_per_image", lambda *a, **k: 0.0001)  # now faster
    res = resume(tmp_path / "run").results
    assert res["reference"]["epochs"] == planned["epochs"]


@pytest.mark.parametrize("kw, until", [(dict(final_model="retrain"), "retrain"),
                                       (dict(final_model="retrain", baseline=True), "retrain"),
                                       (dict(retrain=True, baseline=True), "final"),
                                       (dict(retrain=True), "final")])
def test_the_reference_matches_the_time_until_the_answer(tiny_npz, tmp_path, monkeypatch, kw,
                                                         until):
    """Where the retrained network is the answer, its retraining is part of the search's
    time; where it is only a comparison, it is not. The baseline (model_0 for comparison)
    never is: trained before the retraining, its time is taken off."""
    monkeypatch.setattr(followups, "seconds_per_image", lambda *a, **k: 0.002)
    cfg = SearchConfig(**{**TINY, "dataset": tiny_npz, "reference": "auto", "n_steps": 1, **kw})
    hill_climb(cfg, tmp_path / "run")
    st = RunDir.open(tmp_path / "run").state()
    assert st.trained["retrain"]["clock"] > st.trained["final"]["clock"]
    base = st.trained.get("baseline")
    off = base["seconds"] if base and base["clock"] < st.trained[until]["clock"] else 0.0
    assert (base is not None) == kw.get("baseline", False)
    assert off > 0 if (base and until == "retrain") else off == 0
    assert st.reference_plan["matched_seconds"] == st.trained[until]["clock"] - off
    # results.json says how long the answer took, the same number
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["model"] == until and res["answer_clock_s"] == st.trained[until]["clock"] - off


def test_a_reference_the_budget_skipped_is_trained_by_the_reference_command(
        tiny_npz, tmp_path, monkeypatch, capsys):
    from morphclimb.cli import main
    monkeypatch.setattr(followups, "seconds_per_image", lambda *a, **k: 0.002)
    out = tmp_path / "run"
    cfg = SearchConfig(**{**TINY, "dataset": tiny_npz, "reference": "resnet8",
                          "time_budget": 3, "final_share": 0.5})
    res = hill_climb(cfg, out).results
    why = res["climb"]["skipped"]["reference"]
    assert why.startswith("time budget: needs ~")
    assert why.endswith(f"; `morphclimb reference {out}` trains it afterwards")
    assert "reference" not in res
    assert main(["reference", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    st = RunDir.open(out).state()
    ref = st.trained["reference"]
    assert st.reference_plan["start_point"] == "resnet8" == ref["start_point"]
    assert st.reference_plan["matched_seconds"] == st.trained["final"]["clock"]
    assert "reference resnet8 trained alone for the search's wall time" in text
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["reference"]["test_error"] == pytest.approx(
        100 * (1 - ref["test_accuracy"]))
    # again: nothing trained anew; another network than the run's is refused
    assert main(["reference", str(out), "--quiet", "--network", "auto"]) == 0
    assert [r["model"] for r in RunDir.open(out).records("model_trained")].count(
        "reference") == 1
    assert main(["reference", str(out), "--network", "resnet20"]) == 2
    assert "has its reference already: resnet8" in capsys.readouterr().err


@pytest.mark.parametrize("network, want", [(None, "auto"), ("resnet14", "resnet14")])
def test_the_reference_command_picks_the_network(tiny_npz, tmp_path, monkeypatch, network,
                                                 want):
    from morphclimb.cli import main
    monkeypatch.setattr(followups, "seconds_per_image", lambda *a, **k: 0.002)
    out = tmp_path / "run"
    hill_climb(SearchConfig(**{**TINY, "dataset": tiny_npz, "n_steps": 1}), out)
    assert main(["reference", str(out), "--quiet"] + (["--network", network] if network
                                                      else [])) == 0
    st = RunDir.open(out).state()
    name = st.reference_plan["start_point"]
    assert name == (closest(st.trained["final"]["params"], classes=4, size=8)
                    if want == "auto" else want)


def test_closest_then_smaller_orders_the_auto_candidates():
    from morphclimb.zoo import closest_then_smaller
    assert closest_then_smaller(10**7) == ["resnet56", "resnet32", "resnet20", "resnet8"]
    assert closest_then_smaller(272_000) == ["resnet20", "resnet8"]
    assert closest_then_smaller(78_000) == ["resnet8"]
    assert closest_then_smaller(272_000, ("resnet32", "resnet8", "resnet20")) == [
        "resnet20", "resnet8"]                               # by size, not by the list's order


@pytest.fixture(scope="module")
def grown_run(tmp_path_factory):
    """A finished tiny search from ResNet-20 (its answer closer in size to a ResNet than
    ResNet-8), no reference yet."""
    from conftest import make_tiny_npz
    root = tmp_path_factory.mktemp("grown")
    out = root / "run"
    hill_climb(SearchConfig(**{**TINY, "dataset": str(make_tiny_npz(root / "tiny.npz")), "start": "resnet20",
                               "n_steps": 1}), out)
    return out


def _epochs_by_name(table):
    """A stand-in for _plan_for: each network's epochs from `table` (the timing itself is
    tested above)."""
    def plan(climber, name, seconds, answer, then):
        return {"start_point": name, "epochs": table[name], "seconds_per_image": 0.001,
                "timed": {}}
    return plan


@pytest.mark.parametrize("short", ["all", "first", "none"])
def test_auto_reference_is_the_closest_that_gets_the_answers_epochs(grown_run, tmp_path,
                                                                    monkeypatch, capsys, short):
    """auto tries the ResNet closest to the answer's size, then each smaller, and takes the
    first that trains at least as many epochs in the search's time as the answer had (its
    lineage, more than its final training's epochs); where none does, the smallest."""
    import shutil

    from morphclimb.cli import main
    from morphclimb.zoo import closest_then_smaller
    out = tmp_path / "run"
    shutil.copytree(grown_run, out)
    st = RunDir.open(out).state()
    final = st.trained["final"]
    need = final["lineage"]
    assert need > final["epochs"]
    order = closest_then_smaller(final["params"], classes=4, size=8)
    assert len(order) >= 2 and order[-1] == "resnet8"
    if short == "all":     # every one short by an epoch (more than the final's own epochs)
        table = {n: need - 1 for n in order}
        want, tried = "resnet8", order
    elif short == "first":   # the closest short; the next has exactly the answer's epochs
        table = {**{n: need + 5 for n in order}, order[0]: need - 1, order[1]: need}
        want, tried = order[1], order[:2]
    else:
        table = {n: need for n in order}
        want, tried = order[0], order[:1]
    monkeypatch.setattr(followups, "_plan_for", _epochs_by_name(table))
    assert main(["reference", str(out), "--network", "auto"]) == 0
    text = capsys.readouterr().out
    plan = RunDir.open(out).state().reference_plan
    assert plan["start_point"] == want and plan["epochs"] == table[want]
    assert plan["auto"] == {"answer_epochs": need,
                            "tried": [{"start_point": n, "epochs": table[n]} for n in tried]}
    res = json.loads((out / "results.json").read_text())
    assert res["reference"]["start_point"] == want
    assert res["reference"]["auto"] == plan["auto"]
    passed = tried[:-1] if want == tried[-1] else tried
    if passed:
        assert (f"(auto: not {', '.join(passed)}, closer in size, which would get "
                f"{', '.join(str(table[n]) for n in passed)} epoch(s), fewer than the "
                f"answer's {need})") in text
    else:
        assert "(auto:" not in text
    # a named reference is planned as named, without trying others
    named = tmp_path / "named"
    shutil.copytree(grown_run, named)
    assert main(["reference", str(named), "--network", order[0], "--quiet"]) == 0
    plan = RunDir.open(named).state().reference_plan
    assert plan["start_point"] == order[0] and "auto" not in plan


def test_the_answers_epochs_are_the_retrained_networks_where_it_is_the_answer(tiny_npz,
                                                                             tmp_path):
    cfg = SearchConfig(**{**TINY, "dataset": tiny_npz, "n_steps": 1, "retrain": True})
    hill_climb(cfg, tmp_path / "run")
    st = RunDir.open(tmp_path / "run").state()
    final = st.trained["final"]
    assert followups.answer_epochs(st, cfg.to_dict()) == final["lineage"]
    st.trained["retrain"]["epochs"] = final["lineage"] + 7   # told apart from the lineage
    assert followups.answer_epochs(st, cfg.replace(final_model="retrain").to_dict()) == (
        final["lineage"] + 7)
