"""Promises that span modules, each tested directly (issue 31): what data every training,
evaluation, probe and statistic of a search reads; that each model's training has its own seed,
derived from its id; that the split follows `split_seed`, not the search's seed; that the API,
results.json, `show`, `evaluate` and the reference's arithmetic name one answer.

The search runs in this process with the serial executor while the trainer's entry points
record what they are handed; images are told apart by their bytes (the tiny set's are all
distinct), so each read is checked against the dataset's own parts, never against the split
the code under test computed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import torch

from conftest import TINY, make_tiny_npz
from morphclimb import followups, nash, train, worker
from morphclimb.config import SearchConfig
from morphclimb.journal import RunDir
from morphclimb.nash import hill_climb
from morphclimb.seeds import derive_seed
from morphclimb.spec import Arch

FINAL_ROLES = {"final", "baseline", "retrain", "reference", "snapshot"}
CLIMB_ROLES = {"pretrain", "child", "incumbent"}


def keys(x: np.ndarray) -> list[bytes]:
    """One key per uint8 image (N, H, W, C): a hash of its bytes."""
    return [hashlib.blake2b(np.ascontiguousarray(im).tobytes(), digest_size=12).digest()
            for im in x]


class Trace:
    """What a search read: every fit / evaluate / predict_proba call (the task it ran for,
    the images by key, the normalisation and seed), every task, every probe batch."""

    def __init__(self):
        self.reads: list[dict] = []
        self.tasks: list = []
        self.probes: list[torch.Tensor] = []
        self.current = None

    def read(self, kind, x, mean, std, seed=None):
        task = self.current
        self.reads.append({"kind": kind, "model": task.model_id if task else None,
                           "role": task.meta.get("role") if task else None,
                           "keys": keys(np.asarray(x)), "mean": tuple(mean),
                           "std": tuple(std), "seed": seed})

    def of(self, kind: str, model: str) -> list[dict]:
        return [r for r in self.reads if r["kind"] == kind and r["model"] == model]


def traced_search(mp: pytest.MonkeyPatch, config: SearchConfig, out):
    """hill_climb(config, out) with the trainer's entry points recording into a Trace."""
    t = Trace()
    run_task, fit, evaluate, proba = worker.run_task, train.fit, train.evaluate, \
        train.predict_proba
    morph = nash.apply_random_morphisms

    def run_task_(task, split, device=None, callback=None):
        t.tasks.append(task)
        t.current = task
        try:
            return run_task(task, split, device, callback)
        finally:
            t.current = None

    def fit_(model, data, *a, **kw):
        t.read("fit", data.x, kw["mean"], kw["std"], kw.get("seed"))
        return fit(model, data, *a, **kw)

    def evaluate_(model, data, *a, **kw):
        t.read("evaluate", data.x, kw["mean"], kw["std"])
        return evaluate(model, data, *a, **kw)

    def proba_(model, x, *a, **kw):
        t.read("predict", x, kw["mean"], kw["std"])
        return proba(model, x, *a, **kw)

    def morph_(*a, probe=None, **kw):
        if probe is not None:
            t.probes.append(probe.clone())
        return morph(*a, probe=probe, **kw)

    mp.setattr(worker, "run_task", run_task_)
    for module in (worker, train):
        mp.setattr(module, "fit", fit_)
    mp.setattr(worker, "evaluate", evaluate_)
    mp.setattr(train, "evaluate", evaluate_)
    mp.setattr(train, "predict_proba", proba_)
    mp.setattr(nash, "apply_random_morphisms", morph_)
    result = hill_climb(config, out)
    return t, result


class Traced:
    def __init__(self, npz, out, trace, result):
        data = np.load(npz)
        self.all_train, self.test = keys(data["x"]), keys(data["x_test"])
        self.x_train = data["x"]
        self.out, self.trace, self.result = out, trace, result
        self.run = RunDir.open(out)
        self.state = self.run.state()
        m0 = trace.of("fit", "m0")[0]
        self.T = set(m0["keys"])                               # model_0's training images
        self.V = set(trace.of("evaluate", "m0")[0]["keys"])    # and its validation images


MAIN = dict(TINY, n_steps=2, n_neigh=3, epoch_neigh=2, epoch_final=3, baseline=True,
            final_model="retrain", snapshot_ensemble=True, reference="resnet8")


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """A search with every job after the climb: baseline, the retrained answer, the snapshot
    ensemble and the equal-time reference (seed 0, split_seed 0)."""
    d = tmp_path_factory.mktemp("promises")
    npz = str(make_tiny_npz(d / "tiny.npz"))
    with pytest.MonkeyPatch.context() as mp:
        trace, result = traced_search(mp, SearchConfig(**{**MAIN, "dataset": npz}), d / "run")
    return Traced(npz, d / "run", trace, result)


@pytest.fixture(scope="module")
def other_seed(tmp_path_factory):
    """The same data and split_seed, search seed 3; the search's own final is the answer and
    the retrained network a comparison only."""
    d = tmp_path_factory.mktemp("promises1")
    npz = str(make_tiny_npz(d / "tiny.npz"))
    c = SearchConfig(**{**TINY, "dataset": npz, "seed": 3, "n_steps": 1, "retrain": True,
                        "final_model": "search", "reference": "resnet8"})
    with pytest.MonkeyPatch.context() as mp:
        trace, result = traced_search(mp, c, d / "run")
    return Traced(npz, d / "run", trace, result)


def test_the_dataset_tells_every_image_apart(traced):
    assert len(set(traced.all_train)) == len(traced.all_train) == 192
    assert len(set(traced.test)) == len(traced.test) == 48
    assert not set(traced.all_train) & set(traced.test)


# ------------------------------------------------------------------ data hygiene
def test_the_climb_trains_on_the_training_part_and_scores_on_validation(traced):
    T, V = traced.T, traced.V
    assert not T & V and T | V == set(traced.all_train)
    assert len(T) + len(V) == traced.state.dataset["sizes"]["train"] == 192
    assert 36 <= len(V) <= 40       # the default 20% held out for validation
    climb = [t for t in traced.trace.tasks if t.meta["role"] in CLIMB_ROLES]
    assert Counter(t.meta["role"] for t in climb) == {"pretrain": 1, "child": 4, "incumbent": 2}
    for task in climb:
        mid = task.model_id
        fits, evals = traced.trace.of("fit", mid), traced.trace.of("evaluate", mid)
        assert len(fits) <= 1 and len(evals) == 1, mid
        if fits:   # each image once, every training image (an epoch of the training part)
            assert Counter(fits[0]["keys"]) == Counter(T), mid
        assert Counter(evals[0]["keys"]) == Counter(V), mid
        assert traced.state.trained[mid]["part"] == "train", mid
    assert traced.trace.of("fit", "m0"), "model_0 was pretrained"


def test_final_trainings_see_train_and_validation_and_are_scored_on_the_test_set(traced):
    T, V = traced.T, traced.V
    finals = [t for t in traced.trace.tasks if t.meta["role"] in FINAL_ROLES]
    assert {t.meta["role"] for t in finals} == FINAL_ROLES
    for task in finals:
        mid = task.model_id
        [fit], [ev] = traced.trace.of("fit", mid), traced.trace.of("evaluate", mid)
        assert Counter(fit["keys"]) == Counter(T | V), mid
        assert Counter(ev["keys"]) == Counter(traced.test), mid
        assert traced.state.trained[mid]["part"] == "train_full", mid
        assert "test_accuracy" in traced.state.trained[mid], mid


def test_the_test_set_is_read_only_by_final_evaluations(traced):
    test = set(traced.test)
    reading = [r for r in traced.trace.reads if test & set(r["keys"])]
    assert reading
    for r in reading:
        if r["kind"] == "predict":   # the snapshot ensemble, after every training
            assert r["model"] is None and Counter(r["keys"]) == Counter(traced.test)
        else:
            assert r["kind"] == "evaluate" and r["role"] in FINAL_ROLES, r["model"]
    members = traced.state.ensemble("snapshot")["members"]
    assert sum(r["kind"] == "predict" for r in reading) == len(members)
    # what reads outside any task (the reference's timings) reads training images only
    loose = [r for r in traced.trace.reads if r["model"] is None and r["kind"] != "predict"]
    assert loose and all(set(r["keys"]) <= traced.T | traced.V for r in loose)


def test_new_batchnorm_statistics_come_from_training_images(traced):
    probes = traced.trace.probes
    assert probes, "children were made with a probe batch"
    mean = torch.tensor(traced.state.dataset["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(traced.state.dataset["std"]).view(1, -1, 1, 1)
    for p in probes:
        x = ((p * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
        got = keys(x.permute(0, 2, 3, 1).numpy())
        assert set(got) <= traced.T, "a probe image is not a training image"
        assert len(got) == TINY["probe_size"]
        assert torch.equal(p, probes[0]), "the probe batch is fixed for the run"


def test_inputs_are_normalised_by_the_training_part_alone(traced):
    by_key = dict(zip(traced.all_train, traced.x_train))
    x = np.stack([by_key[k] for k in traced.T]).astype(np.float64) / 255
    mean, std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
    xf = np.stack([by_key[k] for k in traced.T | traced.V]).astype(np.float64) / 255
    assert np.abs(xf.mean(axis=(0, 1, 2)) - mean).max() > 1e-4   # the parts' stats differ
    rec_mean, rec_std = traced.state.dataset["mean"], traced.state.dataset["std"]
    assert rec_mean == pytest.approx(mean, abs=1e-6)
    assert rec_std == pytest.approx(std, abs=1e-6)
    for r in traced.trace.reads:          # every training and evaluation normalises alike
        assert r["mean"] == tuple(rec_mean) and r["std"] == tuple(rec_std), r["model"]


def test_each_training_starts_where_the_paper_says_and_trains_its_epochs(traced):
    """Children start as their parent's morphism, the incumbent and the final model (and
    each snapshot) from their parent's trained weights; the baseline, the retraining and
    the reference from fresh weights. Epochs: epoch_neigh in the climb, epoch_final for the
    final and the snapshots, the final model's lineage for the baseline and the retraining."""
    from morphclimb.build import build
    c, st, run = traced.state.started["config"], traced.state, traced.run
    probe = traced.trace.probes[0]
    for t in traced.trace.tasks:
        role, mid = t.meta["role"], t.model_id
        if role in ("baseline", "retrain", "reference") or mid == "m0":
            assert t.weights is None, mid
            continue
        parent = run.load_model(t.meta["parent"])
        if role == "child":          # exact: computes what the parent computes
            with torch.no_grad():
                a = build(*parent).eval()(probe)
                b = build(Arch.from_dict(t.arch), t.weights).eval()(probe)
            assert torch.allclose(a, b, atol=1e-4), mid
            assert t.epochs == c["epoch_neigh"], mid
        else:                        # incumbent, final, snapshot: the parent's weights
            assert t.arch == parent[0].to_dict(), mid
            assert all(torch.equal(t.weights[k], v) for k, v in parent[1].items()), mid
            want = c["epoch_neigh"] if role == "incumbent" else c["epoch_final"]
            assert t.epochs == want, mid
    lineage = st.trained["final"]["lineage"]
    assert lineage == c["epoch_pretrain"] + c["n_steps"] * c["epoch_neigh"] + c["epoch_final"]
    assert st.trained["baseline"]["epochs"] == st.trained["retrain"]["epochs"] == lineage


# ------------------------------------------------------------------ seeds
@pytest.mark.parametrize("which", ["traced", "other_seed"])
def test_every_training_has_its_own_seed_derived_from_its_id(which, request):
    run = request.getfixturevalue(which)
    seed = run.state.started["config"]["seed"]
    tasks = run.trace.tasks
    assert len({t.model_id for t in tasks}) == len(tasks) >= 5
    for t in tasks:
        assert t.seed == derive_seed(seed, "train", t.model_id), t.model_id
        assert t.init_seed == derive_seed(seed, "init", t.model_id), t.model_id
        for r in run.trace.of("fit", t.model_id):
            assert r["seed"] == t.seed, t.model_id
    assert len({t.seed for t in tasks}) == len(tasks)
    assert len({t.init_seed for t in tasks}) == len(tasks)


def test_the_search_seed_changes_every_models_seed(traced, other_seed):
    a = {t.model_id: (t.seed, t.init_seed) for t in traced.trace.tasks}
    b = {t.model_id: (t.seed, t.init_seed) for t in other_seed.trace.tasks}
    common = set(a) & set(b)
    assert {"m0", "s01c1", "final"} <= common
    assert all(a[m][0] != b[m][0] and a[m][1] != b[m][1] for m in common)


def test_the_split_follows_split_seed_not_the_search_seed(traced, other_seed, tmp_path):
    assert other_seed.V == traced.V and other_seed.T == traced.T   # seed 3, split_seed 0
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    c = SearchConfig(**{**TINY, "dataset": npz, "n_steps": 1, "n_neigh": 1, "split_seed": 1})
    with pytest.MonkeyPatch.context() as mp:
        trace, _ = traced_search(mp, c, tmp_path / "run")
    moved = Traced(npz, tmp_path / "run", trace, None)
    assert moved.V != traced.V and len(moved.V) == len(traced.V)
    assert moved.T | moved.V == set(traced.all_train) and not moved.T & moved.V


# ------------------------------------------------------------------ the answer
@pytest.mark.parametrize("which, answer", [("traced", "retrain"), ("other_seed", "final")])
def test_the_answer_is_one_model_everywhere(which, answer, request, capsys):
    """The API's result, results.json, `show`, `evaluate` and the reference's difference all
    name the same model, with the same test error."""
    from morphclimb.cli import main
    run = request.getfixturevalue(which)
    st, res = run.state, run.result.results
    error = {m: 100 * (1 - st.trained[m]["test_accuracy"]) for m in ("final", "retrain")}
    assert abs(error["final"] - error["retrain"]) > 1, "the test needs them to differ"
    on_disk = json.loads((run.out / "results.json").read_text())
    assert on_disk["model"] == res["model"] == answer
    # the Python API hands out the answer, as the CLI's readers take it
    assert run.result.model_id == answer
    assert run.result.test_accuracy == st.trained[answer]["test_accuracy"]
    assert run.result.test_error == pytest.approx(error[answer])
    arch, w = run.run.load_model(answer)
    assert run.result.arch.to_dict() == arch.to_dict()
    assert all(torch.equal(run.result.weights[k], w[k]) for k in w)
    # the reference's difference is the answer's error less the reference's
    ref = on_disk["reference"]
    want = error[answer] - 100 * (1 - st.trained["reference"]["test_accuracy"])
    assert ref["answer_minus_reference"] == pytest.approx(want, abs=0.006)
    assert ref["matched_seconds"] == on_disk["answer_clock_s"]
    assert main(["show", str(run.out)]) == 0
    shown = capsys.readouterr().out
    assert f"the run's answer: {answer};" in shown
    assert main(["evaluate", str(run.out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"{answer} on test") and f"error {error[answer]:.2f}%" in said


def test_a_pareto_answer_is_timed_to_its_last_final_training(tmp_path, monkeypatch):
    """The reference of a Pareto search gets the time until the last member's final
    training, the search's time until its answer (every final is part of the answer)."""
    monkeypatch.setattr(followups, "seconds_per_image", lambda *a, **k: 0.002)
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    c = SearchConfig(**{**TINY, "dataset": npz, "strategy": "pareto", "approximate": True,
                        "n_neigh": 3, "n_draw": 6, "front_final": 0, "reference": "resnet8"})
    res = hill_climb(c, tmp_path / "run").results
    st = RunDir.open(tmp_path / "run").state()
    finals = [r for r in st.trained.values() if r.get("role") == "final"]
    last = max(r["clock"] for r in finals)
    assert len(finals) >= 2 and last > st.trained["final"]["clock"]
    assert st.reference_plan["matched_seconds"] == last == res["answer_clock_s"]
    assert res["model"] == "final"


# ------------------------------------------------------------------ the snapshot ensemble
class PerPass:
    """A fake speed: one second per image pass, whatever the network."""

    def seconds(self, mflops, passes):
        return passes


@pytest.mark.parametrize("n_steps", [3, 5])
def test_a_climb_the_budget_stopped_ensembles_the_steps_it_decided(tiny_npz, tmp_path,
                                                                   monkeypatch, n_steps):
    """A step costs ~500 fake seconds (three trainings), the final and each snapshot ~208:
    in 1,000 s steps 1 and 2 fit with what follows them (one snapshot), step 3 does not (it
    would add a second). The ensemble is step 1's best (trained on) and the final model,
    whether the stop came at the last step (n_steps 3) or before it (5)."""
    from morphclimb import forecast
    from morphclimb.budget import image_passes
    monkeypatch.setattr(forecast, "time_model", lambda climber: PerPass())
    c = SearchConfig(**{**TINY, "dataset": tiny_npz, "n_steps": n_steps,
                        "snapshot_ensemble": True, "time_budget": 1000})
    res = hill_climb(c, tmp_path / "run").results
    st = RunDir.open(tmp_path / "run").state()
    one = image_passes(TINY["epoch_final"], 192, 48)          # a snapshot's fake seconds
    assert st.stopped["step"] == 3 and sorted(st.decided) == [1, 2]
    assert st.stopped["predicted"]["snapshots"] == pytest.approx(2 * one)
    snaps = [r for r in st.trained.values() if r.get("role") == "snapshot"]
    assert [(r["model"], r["step"], r["parent"]) for r in snaps] == [
        ("snap01", 1, st.decided[1]["best"])]
    assert st.trained["final"]["parent"] == st.decided[2]["best"]
    assert st.ensemble("snapshot")["members"] == ["snap01", "final"]
    assert res["snapshot_ensemble"]["members"] == ["snap01", "final"]


def test_an_unstopped_climb_ensembles_every_step_before_the_last(tiny_npz, tmp_path):
    c = SearchConfig(**{**TINY, "dataset": tiny_npz, "n_steps": 3, "snapshot_ensemble": True})
    hill_climb(c, tmp_path / "run")
    st = RunDir.open(tmp_path / "run").state()
    assert st.ensemble("snapshot")["members"] == ["snap01", "snap02", "final"]
    assert [st.trained[f"snap0{i}"]["parent"] for i in (1, 2)] == [
        st.decided[1]["best"], st.decided[2]["best"]]
    assert st.trained["final"]["parent"] == st.decided[3]["best"]


# ------------------------------------------------------------------ resume at every record
def _full_run_config(npz) -> SearchConfig:
    from morphclimb.model0 import starting_arch
    m0 = starting_arch(3, 4, 8, widths=TINY["widths"]).num_params
    return SearchConfig(**{**TINY, "dataset": npz, "n_neigh": 4, "max_params": m0 + 120,
                           "baseline": True, "final_model": "retrain",
                           "snapshot_ensemble": True})   # deeper fits the limit, wider not


def _account(out) -> dict:
    """What a run decided and trained, without its times."""
    run = RunDir.open(out)
    st = run.state()
    timeless = ("clock", "time", "seconds", "curves", "checkpoint")
    trained = {m: {k: v for k, v in r.items() if k not in timeless}
               for m, r in st.trained.items()}
    weights = {}
    for m in st.trained:
        w = run.load_model(m)[1]
        weights[m] = {k: v.numpy().tobytes() for k, v in w.items()}
    return {"trained": trained, "weights": weights,
            "made": {m: {k: v for k, v in r.items() if k not in timeless}
                     for m, r in st.made.items()},
            "redrawn": sorted((r["step"], r["child"], r["draw"], r["reason"]) for r in st.redrawn),
            "failed": {m: r["reason"] for m, r in st.failed.items()},
            "decided": {i: (d["best"], d["kept"], d["candidates"]) for i, d in st.decided.items()},
            "ensemble": {k: v for k, v in (st.ensemble("snapshot") or {}).items()
                         if k not in timeless},
            "answer": json.loads((out / "results.json").read_text())["model"]}


def _pareto_config(npz) -> SearchConfig:
    return SearchConfig(**{**TINY, "dataset": npz, "strategy": "pareto", "approximate": True,
                           "n_neigh": 3, "n_draw": 6, "front_final": 0})


def _cuts(records: list[dict]) -> list[int]:
    """Where to kill: after the first and the last record of every kind, after every final
    training (a Pareto front's members each have one), after the first child made with
    draw > 0 and before it (after its last rejected draw), and after that child's training."""
    cuts = set()
    for e in {r["event"] for r in records} - {"run_finished"}:
        at = [k for k, r in enumerate(records) if r["event"] == e]
        cuts |= {at[0], at[-1]}
    cuts |= {k for k, r in enumerate(records) if r.get("role") == "final"}
    k = next((k for k, r in enumerate(records)
              if r["event"] == "child_made" and r.get("draw", 0) > 0), None)
    if k is not None:
        redrawn = records[k]["model"]
        cuts |= {k - 1, k, next(j for j, r in enumerate(records)
                                if r["event"] == "model_trained" and r["model"] == redrawn)}
    return sorted(cuts)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["nash", "pareto"])
def test_a_search_killed_after_any_kind_of_record_resumes_to_the_same_run(tmp_path, strategy):
    """Killed after each kind of journal record (NASH: model_0, a child made at draw 0 and at
    a later draw, a rejected draw, a failed child, a step's decision, the final, the
    baseline, the retraining, a snapshot, the ensemble; Pareto: a generation and each front
    member's final training), the resumed run ends as the uninterrupted one: the same
    decisions, trainings, weights, ensemble and answer."""
    import shutil

    from morphclimb.nash import resume
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    full = tmp_path / "full"
    hill_climb((_full_run_config if strategy == "nash" else _pareto_config)(npz), full)
    want = _account(full)
    lines = (full / "journal.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    kinds = {r["event"] for r in records}
    finals = [r for r in records if r.get("role") == "final"]
    if strategy == "nash":
        assert {"child_redrawn", "child_failed", "ensemble_evaluated"} <= kinds
        assert any(r["event"] == "child_made" and r["draw"] > 0 for r in records)
    else:
        assert len(finals) >= 3, "the tiny front should have three members"
    cuts = _cuts(records)
    assert len(cuts) >= (12 if strategy == "nash" else 10)
    for k in cuts:
        out = tmp_path / f"cut{k}"
        shutil.copytree(full, out)
        (out / "results.json").unlink()
        (out / "journal.jsonl").write_text("\n".join(lines[: k + 1]) + "\n")
        kept = RunDir.open(out).state().trained
        for d in (out / "models").iterdir():      # a kill leaves no later checkpoint
            if d.name not in kept:
                shutil.rmtree(d)
        resume(out)
        got = _account(out)
        for part in want:
            assert got[part] == want[part], f"killed after record {k} " \
                f"({records[k]['event']} {records[k].get('model', '')}): {part} differs"
        shutil.rmtree(out)


def test_the_same_seed_gives_the_same_run(tmp_path):
    """Same config, same seed: every decision, training, weight and the ensemble alike; the
    probe batch (deeper children's new BatchNorm statistics), shuffling, augmentation and
    every draw are seeded by the run alone."""
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    c = SearchConfig(**{**TINY, "dataset": npz, "n_nm": 3, "baseline": True,
                        "final_model": "retrain", "snapshot_ensemble": True})
    for name in ("a", "b"):
        hill_climb(c, tmp_path / name)
    a, b = _account(tmp_path / "a"), _account(tmp_path / "b")
    ops = {m["op"] for r in a["made"].values() for m in r["morphisms"]}
    assert {"deeper", "wider"} <= ops
    for part in a:
        assert a[part] == b[part], part
