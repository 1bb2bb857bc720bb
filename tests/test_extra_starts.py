"""A Pareto search seeded with several start networks (extra_starts, issue 22): each is
trained like model_0, the first front is their non-dominated set, the first generation's
parents come from it, and a killed run resumes to the same front."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import TINY, make_tiny_npz
from morphclimb import starting_arch
from morphclimb.config import SearchConfig, resolve
from morphclimb.errors import ConfigError
from morphclimb.events import MODEL0
from morphclimb.journal import RunDir
from morphclimb.nash import hill_climb, resume
from morphclimb.zoo import zoo_arch
from test_pareto import killed_and_resumed

SEEDED = dict(TINY, strategy="pareto", n_steps=1, n_neigh=2, n_draw=4)


def _non_dominated(recs):
    pts = [(1 - r["val_accuracy"], r["params"]) for r in recs]
    return {recs[i]["model"] for i, p in enumerate(pts)
            if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in pts)}


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("seeded")
    npz = str(make_tiny_npz(d / "tiny.npz"))
    small = d / "small.json"      # smaller than model_0 (4, 8, 8): always on the first front
    small.write_text(json.dumps(starting_arch(3, 4, 8, widths=(2, 4, 4)).to_dict()))
    cfg = SearchConfig(**{**SEEDED, "dataset": npz, "extra_starts": ("resnet8", str(small))})
    hill_climb(cfg, d / "run")
    return d / "run", small


def test_each_extra_start_is_trained_like_model_0(seeded_run, capsys):
    out, small = seeded_run
    run = RunDir.open(out)
    st = run.state()
    starts = [r for r in st.trained.values() if r.get("role") == "pretrain"]
    assert [r["model"] for r in starts] == [MODEL0, "start_1", "start_2"]
    assert all(r["step"] == 0 and r["epochs"] == SEEDED["epoch_pretrain"] for r in starts)
    assert run.load_arch("start_1").to_dict() == zoo_arch("resnet8", 3, 4, 8).to_dict()
    assert run.load_arch("start_2").to_dict() == json.loads(small.read_text())
    assert run.load_arch(MODEL0).to_dict() == starting_arch(3, 4, 8, widths=(4, 8, 8)).to_dict()
    # where each came from, in run_started
    assert st.started["start"] == {
        "kind": "model0",
        "extra": [{"model": "start_1", "kind": "zoo", "name": "resnet8", "weights": None},
                  {"model": "start_2", "kind": "arch", "source": str(small), "weights": None}]}
    assert st.started["config"]["extra_starts"] == ["resnet8", str(small)]
    # results.json and `show` name them with their validation accuracy and size
    res = json.loads((out / "results.json").read_text())
    assert res["extra_starts"] == [
        {"model": m, "from": src, "val_accuracy": st.trained[m]["val_accuracy"],
         "params": st.trained[m]["params"]}
        for m, src in (("start_1", "resnet8"), ("start_2", str(small)))]
    from morphclimb.cli import main
    assert main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    for m, src in (("start_1", "resnet8"), ("start_2", str(small))):
        r = st.trained[m]
        assert (f"{m} ({src}): val acc {100 * r['val_accuracy']:.2f}%, {r['params']:,} params"
                in text)


def test_the_first_front_is_the_starts_non_dominated_set(seeded_run):
    out, _ = seeded_run
    st = RunDir.open(out).state()
    starts = [st.trained[m] for m in (MODEL0, "start_1", "start_2")]
    first = _non_dominated(starts)
    assert "start_2" in first                    # the smallest start is never dominated
    res = json.loads((out / "results.json").read_text())
    gen0 = res["generations"][0]
    assert gen0["step"] == 0 and {e["id"] for e in gen0["front"]} == first
    # each start is a step-0 network with its own pretraining as its lineage
    assert all(e["step"] == 0 and e["epochs"] == st.trained[e["id"]]["epochs"] > 0
               for e in gen0["front"]), gen0["front"]
    assert [e["params"] for e in gen0["front"]] == sorted(e["params"] for e in gen0["front"])
    # every child of the first generation has a parent on that front
    children = [r for r in st.trained.values() if r.get("role") == "child"]
    assert len(children) == SEEDED["n_neigh"]
    assert {r["parent"] for r in children} <= first
    # the search's front is the non-dominated set of everything the climb trained
    climbed = [r for r in st.trained.values() if r.get("role") in ("pretrain", "child")]
    assert {m["id"] for m in res["front"]} == _non_dominated(climbed)


@pytest.mark.parametrize("cut", ["start_1", "start_2", "child_made"])
def test_a_killed_seeded_search_resumes_to_the_same_front(seeded_run, tmp_path, cut):
    out, _ = seeded_run
    lines = (out / "journal.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    k = next(i for i, r in enumerate(recs) if r.get("model") == cut or r["event"] == cut)
    killed = tmp_path / "killed"
    a, b = killed_and_resumed(out, killed, k)
    assert b["front"] == a["front"] and b["generations"] == a["generations"]
    st = RunDir.open(killed).state()
    assert [r["model"] for r in st.trained.values() if r.get("role") == "pretrain"] == \
        [MODEL0, "start_1", "start_2"]


@pytest.mark.parametrize("kw, message", [
    (dict(extra_starts=("resnet8",)), "extra_starts seeds a Pareto search's first front "
     "(strategy=pareto); NASH climbs from one network (start)"),
    (dict(strategy="pareto", extra_starts=("resnet8", "resnet8")),
     "extra_starts names 'resnet8' twice"),
    (dict(strategy="pareto", extra_starts=("resnet8", "")),
     "extra_starts: an empty name in ['resnet8', '']"),
])
def test_extra_starts_are_checked(kw, message):
    with pytest.raises(ConfigError) as e:
        SearchConfig(**kw)
    assert str(e.value) == message


def test_extra_starts_from_the_command_line_and_in_config_json():
    base = ["strategy=pareto", "final_model=search", "reference=null"]
    c = resolve("demo", sets=base + ["extra_starts=resnet20, resnet8x2"])
    assert c.extra_starts == ("resnet20", "resnet8x2")
    assert c.to_dict()["extra_starts"] == ["resnet20", "resnet8x2"]
    assert SearchConfig.from_dict(c.to_dict()) == c
    assert resolve("demo", sets=base + ['extra_starts=["resnet20"]']).extra_starts == \
        ("resnet20",)
    assert "extra_starts" not in resolve("demo", sets=base).to_dict()   # quiet when unused
    with pytest.raises(ConfigError) as e:
        resolve("demo", sets=base + ["extra_starts=[1]"])
    assert str(e.value) == "extra_starts: expected tuple, got [1]"


def test_an_extra_start_is_checked_before_the_run_exists(tmp_path):
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        hill_climb(SearchConfig(**{**SEEDED, "dataset": npz, "extra_starts": ("resnet8",),
                                   "max_params": 20000}), out)
    params = zoo_arch("resnet8", 3, 4, 8).num_params
    assert str(e.value) == (f"extra start resnet8 breaks the size limits: {params:,} "
                            "parameters > max_params 20,000")
    with pytest.raises(ConfigError) as e:
        hill_climb(SearchConfig(**{**SEEDED, "dataset": npz,
                                   "extra_starts": (str(tmp_path / "nothing.json"),)}), out)
    assert str(e.value).startswith(f"extra_starts ({tmp_path / 'nothing.json'}): start: no "
                                   "such run directory or arch.json file")
    assert not out.exists()


def test_a_vanished_extra_start_is_trained_again_to_the_same_weights(seeded_run, tmp_path):
    """start_2 (the smallest start, so on the final front and finally trained) lost with
    model_0 and start_1 in a run killed inside its first generation: resume trains each one
    it needs again, from its own entry of extra_starts, to the same weights."""
    from safetensors.torch import load_file
    out, _ = seeded_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    (run / ".lock").unlink(missing_ok=True)
    (run / "results.json").unlink()
    lines = (run / "journal.jsonl").read_text().splitlines(keepends=True)
    cut = next(k for k, x in enumerate(lines) if '"step_decided"' in x)
    (run / "journal.jsonl").write_text("".join(lines[:cut]))
    for m in (MODEL0, "start_1", "start_2"):
        shutil.rmtree(run / "models" / m)
    again = resume(run).results
    assert again["front"] == json.loads((out / "results.json").read_text())["front"]
    restored = {r["model"]: r for r in RunDir.open(run).records("model_restored")}
    assert "start_2" in restored and set(restored) <= {MODEL0, "start_1", "start_2"}
    assert all(r["matches"] for r in restored.values())
    for m in restored:
        a = load_file(str(out / "models" / m / "weights.safetensors"))
        b = load_file(str(run / "models" / m / "weights.safetensors"))
        assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
