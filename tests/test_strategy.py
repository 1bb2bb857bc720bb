"""The strategy object and the executor table (issue 32): a search strategy is one module
plus one entry in config.STRATEGIES, an executor one class plus one entry in
config.EXECUTORS, and nothing else compares their names."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

from conftest import TINY
from morphclimb import config
from morphclimb.cli import parser
from morphclimb.journal import RunDir
from morphclimb.nash import hill_climb
from morphclimb.rules import Incumbent, KeepBest, Rules, nash_rules
from morphclimb.strategy import Strategy, strategy_of

PKG = Path(__file__).resolve().parents[1] / "src" / "morphclimb"


class RandomWalk(Strategy):
    """The paper's "random networks" (n_neigh = 1) as a strategy of its own: every step
    makes one child of the current best and always moves to it, whatever n_neigh says."""

    name = "random"

    def rules(self, c):
        return Rules(Incumbent(1), KeepBest(), None, nash_rules(c).stoppers)

    def result_lines(self, r):
        return [f"random walk of {len(r['steps'])} steps"]


def test_a_new_strategy_is_one_class_and_one_table_entry(tiny_npz, tmp_path, monkeypatch,
                                                         capsys):
    from morphclimb.cli import main
    monkeypatch.setitem(config.STRATEGIES, "random", f"{__name__}:RandomWalk")
    c = config.SearchConfig(**{**TINY, "dataset": tiny_npz, "strategy": "random",
                               "n_steps": 3, "n_neigh": 3})
    res = hill_climb(c, tmp_path / "run").results
    st = RunDir.open(tmp_path / "run").state()
    roles = [r["role"] for r in st.trained.values()]
    assert roles.count("child") == 3 and "incumbent" not in roles   # one child a step
    assert [st.decided[i]["best"] for i in (1, 2, 3)] == ["s01c1", "s02c1", "s03c1"]
    assert [st.made[f"s0{i}c1"]["parent"] for i in (1, 2, 3)] == ["m0", "s01c1", "s02c1"]
    assert res["model"] == "final" and "front" not in res
    assert main(["show", str(tmp_path / "run")]) == 0
    assert "step 3: moved to s03c1" in capsys.readouterr().out


def test_the_strategy_of_a_config_is_its_table_entry():
    assert type(strategy_of({"strategy": "nash"})) is Strategy
    assert type(strategy_of({})).__name__ == "Strategy"
    pareto = strategy_of({"strategy": "pareto"})
    assert pareto.has_front and not strategy_of({}).has_front
    with pytest.raises(config.ConfigError, match="strategy must be one of nash, pareto, got "
                                                 "'tabu'"):
        config.SearchConfig(strategy="tabu")


def test_no_module_compares_the_strategy_by_name():
    """Only config's own checks may spell a strategy's name beside a comparison."""
    offenders = []
    for path in PKG.rglob("*.py"):
        if path.name == "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                names = [n.value for n in (node.left, *node.comparators)
                         if isinstance(n, ast.Constant)]
                if any(n in config.STRATEGIES for n in names):
                    offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders


def test_every_executor_is_one_table_entry():
    for name, where in config.EXECUTORS.items():
        if where is None:
            assert name == "auto"
            continue
        module, cls = where.split(":")
        assert callable(getattr(importlib.import_module(module), cls).from_config)
    sub = next(a for a in parser()._actions if a.dest == "command")
    search = sub.choices["search"]
    opt = next(a for a in search._actions if a.dest == "executor")
    assert list(opt.choices) == list(config.EXECUTORS)
    with pytest.raises(config.ConfigError, match="executor must be one of auto, serial, local, "
                                                 "ray, streams, got 'slurm'"):
        config.SearchConfig(executor="slurm")
    json.dumps(config.EXECUTORS)
