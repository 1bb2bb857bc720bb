"""Progress display for the command line: tqdm bars on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm


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
        if role in ("child", "incumbent"):
            return (f"step {e['step']}/{self.n_steps} child {e['child']}/{e.get('n_neigh', '?')}"
                    f" ({e['model']}{', current best' if role == 'incumbent' else ''})")
        return f"{role or 'model'} ({e['model']})"

    def event(self, e: dict[str, Any]) -> None:
        """Handle one search event."""
        kind = e.get("event")
        if kind == "run_started":
            self.n_steps = e["config"]["n_steps"]
            self.line(f"search on {e['dataset'].get('name')} -> run directory ready")
        elif kind == "run_resumed":
            self.line("resuming: finished trainings are taken from the journal")
        elif kind == "step_start":
            self.n_steps = e["n_steps"]
            self.line(f"step {e['step']}/{e['n_steps']}")
        elif kind == "train_start":
            self.active[e["model"]] = (time.perf_counter(), e["epochs"])
            self.line(f"{self._label(e)}: training {e['epochs']} epoch(s)")
            if self.tty and not self.quiet and e["epochs"] > 0 and len(self.active) == 1:
                self.bar = tqdm(total=e["epochs"], desc=e["model"], unit="ep", leave=False,
                                file=self.stream, dynamic_ncols=True, mininterval=0)
        elif kind == "model_trained":
            self.active.pop(e["model"], None)
            self._close_bar()
            metric = next((k for k in ("val_accuracy", "test_accuracy") if k in e), None)
            acc = f"{metric.split('_')[0]} acc {100 * e[metric]:.2f}%" if metric else ""
            self.line(f"{e['model']}: {acc}, {e['params']:,} params, {e['seconds']:.1f}s")
        elif kind == "child_failed":
            self.active.pop(e["model"], None)
            self._close_bar()
            reason = (e.get("reason") or "").splitlines()[0]
            self.line(f"{e['model']}: FAILED ({reason}); the step goes on without it")
        elif kind == "step_decided":
            kept = "kept" if e["best"].endswith("inc") else "moved to"
            self.line(f"step {e['step']}: {kept} {e['best']} (val acc "
                      f"{100 * e['val_accuracy']:.2f}%, {e['params']:,} params)")
        elif kind == "ensemble_evaluated":
            self.line(f"snapshot ensemble of {len(e['members'])}: test acc "
                      f"{100 * e['test_accuracy']:.2f}%")

    def epoch(self, model_id: str, r: dict[str, Any]) -> None:
        """Handle one finished epoch of the model being trained."""
        t0, total = self.active.get(model_id, (self.t0, 0))
        done = r.get("epoch", 0)
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
