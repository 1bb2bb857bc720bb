"""Search strategies: one object per strategy, chosen once from the config (`strategy_of`).

A strategy owns what differs between searches: its rules (rules.py: who proposes, prunes,
selects and stops), which kept models get a final training, the fields its children's
records carry, its section of results.json, and its lines in the progress display, `show`,
the end of a search and the report. The engine and the readers ask the run's strategy and
never compare its name. NASH (Algorithm 1) is here; the Pareto search is `pareto_strategy.Pareto`.

To add a strategy: a module with a `Strategy` subclass and its name and "module:class" in
config.STRATEGIES (the config check and `strategy_of` read that one table).

Nothing here imports torch: `show`, `--help` and the results read strategies too.
"""

from __future__ import annotations

import importlib
from typing import Any

Record = dict[str, Any]


class Strategy:
    """NASH's answers, the defaults a strategy overrides where it differs."""

    name = "nash"
    has_front = False     # whether the run's result is a front of members (`--member ID`)

    def rules(self, c):
        """The rules of a search with config `c` (rules.Rules)."""
        from .rules import nash_rules
        return nash_rules(c)

    def to_finish(self, kept: list[Record], c) -> list[Record]:
        """Of the models the last step kept (best first), those that get a final training,
        the run's `final` first: NASH's winner."""
        return kept[:1]

    def finishing_now(self, state, best: Record, c) -> list[Record]:
        """The models that get a final training if the climb ends now (the time budget's
        forecast): NASH's current best."""
        return [best]

    def child_meta(self, proposer) -> dict[str, Any]:
        """Fields a child's records carry beside NASH's (role, step, child, parent, ...)."""
        return {}

    def results(self, st, cfg: dict[str, Any], trained: dict[str, Record]) -> dict[str, Any]:
        """Its section of results.json (merged into the top level)."""
        return {}

    def answer_why(self, cfg: dict[str, Any]) -> str | None:
        """Why the run's answer is its model, where the strategy decides that (else None:
        final_model's rule)."""
        return None

    def step_line(self, e: Record, state) -> str:
        """The progress display's line for a step_decided record `e`."""
        kept = "kept" if state.kept_incumbent(e["step"]) else "moved to"
        return (f"step {e['step']}: {kept} {e['best']} (val acc "
                f"{100 * e['val_accuracy']:.2f}%, {e['params']:,} params)")

    def show_lines(self, r: dict[str, Any]) -> list[str]:
        """`show`'s lines after the steps (results.json `r`)."""
        return []

    def result_lines(self, r: dict[str, Any]) -> list[str]:
        """The lines that end `search` and `resume` after the answer's."""
        return []

    def report_html(self, results: dict[str, Any], fig, table) -> str:
        """The report's section: `fig(figure, stem, caption)` saves a figure, `table(title,
        header, rows)` lays out a table, each returning its HTML."""
        return ""


Nash = Strategy


def strategy_named(name: str | None) -> Strategy:
    """The strategy config.STRATEGIES names `name` ("nash" when None)."""
    from .config import STRATEGIES
    from .errors import ConfigError
    where = STRATEGIES.get(name or "nash")
    if where is None:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    module, cls = where.split(":")
    return getattr(importlib.import_module(module), cls)()


def strategy_of(config) -> Strategy:
    """The strategy of a config: a SearchConfig or a run's config dict."""
    name = config.get("strategy") if isinstance(config, dict) else config.strategy
    return strategy_named(name)
