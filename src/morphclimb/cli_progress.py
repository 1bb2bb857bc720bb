"""Progress display for the command line: tqdm bars on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

from .events import LIVE_ONLY, Event
from .state import RunState


class Progress:
    """Renders search events (step i/n, child j/k) and epochs (loss, accuracy, time)."""

    def __init__(self, quiet: bool = False, stream=None, tty: bool | None = None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.t0 = time.perf_counter()
        self.bar: tqdm | None = None
        self.n_steps = 0
        self.active: dict[str, tuple[float, int]] = {}   # model -> (start time, epochs)
        self.state = RunState()   # the journal records seen, replayed as the search does

    def line(self, text: str) -> None:
        """One log line (kept above any live bar)."""
        if self.quiet:
            return
        stamp = f"[{time.perf_counter() - self.t0:7.1f}s] "
        if self.bar is not None:
            self.bar.write(stamp + text, file=self.stream)
        else:
            print(stamp + text, file=self.stream, flush=True)

    def _label(self, e: dict[str, Any]) -> str:
        role = e.get("role", "")
        if role == "child" and "drawn" in e:   # a Pareto search: n_neigh of `drawn` train
            return (f"step {e['step']}/{self.n_steps} child {e['child']} of {e['drawn']} drawn "
                    f"({e['model']}, from {e['parent']})")
        if role in ("child", "incumbent"):
            return (f"step {e['step']}/{self.n_steps} child {e['child']}/{e.get('n_neigh', '?')}"
                    f" ({e['model']}{', current best' if role == 'incumbent' else ''})")
        return f"{role or 'model'} ({e['model']})"

    def event(self, e: dict[str, Any]) -> None:
        """Handle one search event."""
        kind = Event(e["event"])
        if kind not in LIVE_ONLY:
            self.state.apply(e)
        if kind is Event.RUN_STARTED:
            self.n_steps = e["config"]["n_steps"]
            self.line(f"search on {(e.get('dataset') or {}).get('name')} -> run directory ready")
        elif kind is Event.RUN_RESUMED:
            self.line("resuming: finished trainings are taken from the journal")
        elif kind is Event.CONFIG_CHANGED:
            self.line("settings changed on resume: " + ", ".join(
                f"{k}={v}" for k, v in e["changes"].items()))
        elif kind is Event.FAILURES_RETRIED:
            self.line(f"retrying {len(e['models'])} failed training(s): "
                      + ", ".join(e["models"]))
        elif kind is Event.STEP_START:
            self.n_steps = e["n_steps"]
            self.line(f"step {e['step']}/{e['n_steps']}")
        elif kind is Event.TRAIN_START:
            self.active[e["model"]] = (time.perf_counter(), e["epochs"])
            replanned = ("" if e.get("deadline") is None else
                         f" at first, re-planned as it runs to end within {e['deadline']:.0f}s")
            self.line(f"{self._label(e)}: training {e['epochs']} epoch(s){replanned}")
            if self.tty and not self.quiet and e["epochs"] > 0 and len(self.active) == 1:
                self.bar = tqdm(total=e["epochs"], desc=e["model"], unit="ep", leave=False,
                                file=self.stream, dynamic_ncols=True, mininterval=0)
        elif kind is Event.MODEL_TRAINED:
            self.active.pop(e["model"], None)
            self._close_bar()
            metric = next((k for k in ("val_accuracy", "test_accuracy") if k in e), None)
            acc = f"{metric.split('_')[0]} acc {100 * e[metric]:.2f}%" if metric else ""
            self.line(f"{e['model']}: {acc}, {e['params']:,} params, "
                      f"{e.get('seconds', 0.0):.1f}s")
        elif kind is Event.MODEL_RESTORED:
            self.active.pop(e["model"], None)
            self._close_bar()
            self.line(f"{e['model']}: its vanished checkpoint was trained again "
                      + ("(the same metrics as journaled)" if e["matches"] else
                         "(metrics differ from the journaled ones: another machine or torch?)"))
        elif kind is Event.CHILD_FAILED:
            self.active.pop(e["model"], None)
            self._close_bar()
            reason = (e.get("reason") or "").splitlines()[0] if e.get("reason") else "?"
            self.line(f"{e['model']}: FAILED ({reason}); the step goes on without it")
        elif kind is Event.RUNG_DECIDED:
            self.line(f"step {e['step']} rung {e['rung']} ({e.get('epochs', '?')} epoch(s)): "
                      f"kept {', '.join(e['kept'])}; cut {', '.join(e['cut']) or 'none'}")
        elif kind is Event.CHILD_REDRAWN:
            self.line(f"step {e['step']} child {e['child']}: drawn again ({e['reason']})")
        elif kind is Event.CLIMB_STOPPED:
            self.line(f"climb stopped before step {e['step']}: {e['reason']}")
        elif kind is Event.STEP_DECIDED:   # the strategy that decided it says what it did
            from .strategy import strategy_named
            self.line(strategy_named(e.get("strategy")).step_line(e, self.state))
        elif kind is Event.FINAL_PLANNED:
            self.line(f"final training planned: {e['epochs']} epoch(s), to fill the "
                      f"~{e.get('seconds_left', 0):.0f}s the climb left of the time budget")
        elif kind is Event.ENSEMBLE_EVALUATED:
            self.line(f"snapshot ensemble of {len(e['members'])}: test acc "
                      f"{100 * e['test_accuracy']:.2f}%")

    def epoch(self, model_id: str, r: dict[str, Any]) -> None:
        """Handle one finished epoch of the model being trained."""
        t0, total = self.active.get(model_id, (self.t0, 0))
        done = r.get("epoch", 0)
        if r.get("epochs", total) != total:    # re-planned (a deadline): the new total
            total = r["epochs"]
            if self.bar is not None:
                self.bar.total = total
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{r.get('loss', float('nan')):.3f}",
                                 acc=f"{100 * r.get('accuracy', 0):.1f}%")
            self.bar.update(1)
            return
        elapsed = time.perf_counter() - t0
        remaining = elapsed / max(done, 1) * (total - done)
        self.line(f"  {model_id} epoch {done}/{total}: loss {r.get('loss', float('nan')):.4f} "
                  f"acc {100 * r.get('accuracy', 0):.2f}% elapsed {elapsed:.1f}s "
                  f"remaining {remaining:.1f}s")

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
