"""Config presets and overrides; the journal and checkpoints of a run directory."""

from __future__ import annotations

import json

import pytest
import torch

import morphclimb as mc
from morphclimb.config import PRESETS, SearchConfig, resolve
from morphclimb.journal import Journal, RunDir, load_checkpoint, save_checkpoint


def test_presets_are_valid_and_match_the_paper():
    for name in PRESETS:
        resolve(name)
    t1 = resolve("table1-nash")
    assert (t1.n_steps, t1.n_neigh, t1.n_nm, t1.epoch_neigh, t1.epoch_final,
            t1.epoch_pretrain, t1.lr_start, t1.lr_end) == (5, 8, 5, 17, 100, 20, 0.05, 0.0)
    assert t1.total_epochs == 205            # the paper's footnote 4
    assert resolve("table1-random").n_neigh == 1
    assert resolve("table1-nosgdr").sgdr_climb is False
    assert resolve("table4-c100-s8").dataset == "cifar100"


def test_override_order_and_types(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"n_steps": 7, "lr_start": 0.1}))
    c = resolve("demo", f, {"n_steps": 9}, ["lr_start=0.2", "widths=[8,16,32]", "bf16=false",
                                           "device=cuda:1"])
    assert (c.n_steps, c.lr_start, c.widths, c.bf16, c.device) == (9, 0.2, (8, 16, 32), False,
                                                                    "cuda:1")
    assert SearchConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("sets, message", [
    (["n_neigh=0"], "n_neigh must be >= 1"),
    (["epoch_final=-2"], "epoch_final must be >= 0"),
    (["lr_end=1"], "must not exceed lr_start"),
    (["bogus=1"], "unknown config key 'bogus' (`morphclimb search --help` lists the keys)"),
    (["n_steps=2.5"], "n_steps: expected int"),
    (["widths=[1,2]"], "widths must be three"),
    (["executor=slurm"], "executor must be one of"),
    (["n_steps"], "--set needs key=value"),
])
def test_bad_values_raise_config_error(sets, message):
    with pytest.raises(mc.ConfigError) as info:
        resolve("demo", sets=sets)
    assert message in str(info.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(mc.ConfigError, match="does not exist"):
        resolve("demo", tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{n_steps: 3")
    with pytest.raises(mc.ConfigError, match="not valid JSON"):
        resolve("demo", bad)


def test_journal_appends_and_drops_a_torn_last_line(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append({"event": "run_started", "config": {}})
    j.append({"event": "child_failed", "model": "s01c1", "x": float("nan")})
    with open(j.path, "a") as f:
        f.write('{"event": "run_resumed", "x"')          # killed (or being written) mid-line
    before = j.path.read_bytes()
    recs = j.read()
    assert [r["event"] for r in recs] == ["run_started", "child_failed"]
    assert j.path.read_bytes() == before                  # a reader never changes the run
    j.append({"event": "run_resumed"})                     # the writer cuts the torn tail
    assert [r["event"] for r in j.read()] == ["run_started", "child_failed", "run_resumed"]


def test_checkpoint_round_trip_is_exact_and_not_a_pickle(tmp_path):
    a = mc.starting_arch(image_size=8, widths=(4, 8, 8))
    sd = mc.build(a, seed=1).state_dict()
    save_checkpoint(tmp_path / "m", a, sd)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["arch.json",
                                                                  "weights.safetensors"]
    b, sd2 = load_checkpoint(tmp_path / "m")
    assert a == b and all(torch.equal(sd[k], sd2[k]) for k in sd)
    with pytest.raises(mc.RunDirError, match="not a checkpoint"):
        load_checkpoint(tmp_path)


def test_run_dir_errors(tmp_path):
    with pytest.raises(mc.RunDirError, match="not a morphclimb run directory"):
        RunDir.open(tmp_path)
    run = RunDir.create(tmp_path / "r", {"k": 1})
    assert run.config() == {"k": 1}
    with pytest.raises(mc.RunDirError, match="has not finished"):
        run.results()


def test_one_source_of_truth_for_training_settings():
    import dataclasses

    from morphclimb.nash import TRAIN_KEYS, train_config
    from morphclimb.train import TrainConfig
    search, train = SearchConfig(), TrainConfig()
    assert set(TRAIN_KEYS) <= {f.name for f in dataclasses.fields(SearchConfig)}
    assert {k: getattr(search, k) for k in TRAIN_KEYS} == {k: getattr(train, k)
                                                           for k in TRAIN_KEYS}
    c = resolve("demo", sets=["lr_start=0.2", "momentum=0.5", "batch_size=64"])
    t = train_config(c, sgdr=False)
    assert (t.lr_start, t.momentum, t.batch_size, t.sgdr) == (0.2, 0.5, 64, False)
    # the same rule rejects the same value in both, with the same message
    for bad in ({"lr_start": float("nan")}, {"threads": 0}, {"momentum": 0.0}):
        with pytest.raises(mc.ConfigError) as a:
            SearchConfig(**bad)
        with pytest.raises(mc.ConfigError) as b:
            TrainConfig(**bad)
        assert str(a.value) in str(b.value)
