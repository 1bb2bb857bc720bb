"""The Pareto search (pareto.py, docs/pareto.md) as a strategy (strategy.py): its rules,
the front members that get final trainings, its section of results.json and its lines in the
progress display, `show`, the end of a search and the report."""

from __future__ import annotations

from .pareto import (
    KeepFront,
    Sparse,
    current_front,
    final_members,
    front_results,
    pareto_ranked,
)
from .strategy import Strategy


class Pareto(Strategy):
    """The Pareto search (LEMONADE-style, docs/pareto.md) as a strategy: a front of error
    against size (`objective`), children drawn where the front is sparse, final trainings
    for `front_final` of its members."""

    name = "pareto"
    has_front = True

    def rules(self, c):
        from .rules import Halving, Rules, nash_rules
        nash = nash_rules(c)   # the same stoppers (n_steps, the time budget)
        pruner = (Halving(tuple(c.rungs), c.eta, rank=pareto_ranked(c.objective))
                  if c.rungs else None)
        return Rules(Sparse(c.n_neigh, c.n_draw or 4 * c.n_neigh, c.objective, c.seed),
                     KeepFront(c.objective), pruner, nash.stoppers)

    def to_finish(self, kept, c):
        return final_members(kept, c.front_final, c.objective)

    def finishing_now(self, state, best, c):
        return self.to_finish(current_front(state) or [best], c)

    def child_meta(self, proposer):
        return {"drawn": proposer.n_children}

    def results(self, st, cfg, trained):
        from .members import retrain_id
        out = front_results(st, cfg.get("objective", "params"))
        for m in out["front"]:        # a member's architecture retrained (retrain --member)
            rid = retrain_id(st, m["id"])
            if rid in trained:
                acc = trained[rid].get("test_accuracy")
                m["retrain"] = {"model": rid,
                                "test_error": None if acc is None else
                                round(100.0 * (1.0 - acc), 4)}
        return out

    def answer_why(self, cfg):
        return ("a Pareto search: the front's most accurate member trained on train + "
                "validation; the others by --member ID")

    def step_line(self, e, state):
        return (f"step {e['step']}: front of {len(e['kept'])}, the most accurate "
                f"{e['best']} (val acc {100 * e['val_accuracy']:.2f}%, "
                f"{e['params']:,} params)")

    def show_lines(self, r):
        from .members import front_text
        return ["", *front_text(r), ""]

    def result_lines(self, r):
        return [f"Pareto front: {len(r['front'])} members ({r['objective']}); `morphclimb show "
                f"{r['run_dir']}` lists them, --member ID picks one"]

    def report_html(self, results, fig, table):
        from .front_view import CAPTION, front_figure, front_table
        return ('<div class="archs">' + fig(front_figure(results), "front", CAPTION)
                + table(*front_table(results)) + "</div>")
