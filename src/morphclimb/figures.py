"""Search-progress figures drawn from a run's replayed state (paper Figure 2 and per-step views)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .events import MODEL0
from .state import RunState

MARK = {  # role -> (marker, face colour, edge colour, size, legend label)
    "child": ("o", "#7aa6d6", "#2b5d94", 28, "child (after morphisms)"),
    "incumbent": ("s", "none", "#444444", 30, "incumbent (parent, trained on)"),
    "chosen": ("*", "#d62728", "#7f1010", 110, "chosen as the new best"),
}
STEP_LINE = "#d62728"


@dataclass
class Progress:
    """What Figure 2 plots: the current best over time and epochs, every child, step starts."""

    best: list[dict[str, Any]] = field(default_factory=list)      # clock, epochs, acc, model
    children: list[dict[str, Any]] = field(default_factory=list)  # + step, role, chosen, params
    starts: list[dict[str, Any]] = field(default_factory=list)    # step, clock, epochs


def progress(state: RunState) -> Progress:
    """Collect the search's progress from a run's replayed state."""
    trained = state.trained
    out = Progress()
    if MODEL0 in trained:
        m0 = trained[MODEL0]
        out.best.append({"clock": m0.get("clock", 0.0), "epochs": m0.get("lineage", m0["epochs"]),
                         "acc": m0.get("val_accuracy"), "model": MODEL0})
    for i in sorted(state.decided):
        d = state.decided[i]
        prev = trained.get(d["previous"], {})
        first = [m.get("clock", 0.0) for m in state.made.values() if m["step"] == i]
        start = min(first) if first else (out.best[-1]["clock"] if out.best else 0.0)
        out.starts.append({"step": i, "clock": start, "epochs": prev.get("lineage", 0)})
        for mid in d["candidates"]:
            t = trained.get(mid)
            if t is None or t.get("val_accuracy") is None:
                continue
            out.children.append({"step": i, "model": mid, "clock": t.get("clock", 0.0),
                                 "epochs": t.get("lineage", 0), "acc": t["val_accuracy"],
                                 "params": t["params"], "role": t.get("role", "child"),
                                 "child": t.get("child"), "chosen": mid == d["best"]})
        won = trained.get(d["best"], {})
        out.best.append({"clock": d.get("clock", 0.0), "epochs": won.get("lineage", 0),
                         "acc": d["val_accuracy"], "model": d["best"]})
    return out


def time_unit(seconds: float) -> tuple[float, str]:
    """(divisor, unit name) that keeps `seconds` readable: s, min or h."""
    if seconds >= 7200:
        return 3600.0, "h"
    if seconds >= 120:
        return 60.0, "min"
    return 1.0, "s"


def _points(ax, pts: list[dict[str, Any]], xkey: str, div: float, dodge: float) -> None:
    by_x: dict[tuple, int] = {}
    for p in pts:
        kind = "chosen" if p["chosen"] else ("incumbent" if p["role"] == "incumbent" else "child")
        marker, face, edge, size, _ = MARK[kind]
        x = p[xkey] / div
        if dodge:  # children of one step share their epoch count: spread them a little
            slot = by_x.get((p["step"], x), 0)
            by_x[(p["step"], x)] = slot + 1
            x += dodge * (slot - 1)
        ax.scatter([x], [100 * p["acc"]], marker=marker, s=size, facecolors=face,
                   edgecolors=edge, linewidths=1.0, zorder=4 if kind == "chosen" else 3)


def _panel(ax, prog: Progress, xkey: str, div: float, dodge: float, colour: str,
           overlay: bool) -> None:
    """One run in one panel; `overlay` (several runs) draws everything in the run's colour."""
    if prog.best:
        xs = [b[xkey] / div for b in prog.best]
        ys = [100 * b["acc"] for b in prog.best]
        ax.step(xs, ys, where="post", color=colour, lw=2.0, zorder=2)
        ax.plot(xs, ys, "o", color=colour, ms=3.5, zorder=2)
    for s in prog.starts:
        ax.axvline(s[xkey] / div, color=colour if overlay else STEP_LINE, lw=0.9,
                   alpha=0.55, zorder=1, ls=":" if overlay else "-")
    if overlay:
        ax.scatter([c[xkey] / div for c in prog.children],
                   [100 * c["acc"] for c in prog.children], s=14, color=colour, alpha=0.5,
                   zorder=3, linewidths=0)
    else:
        _points(ax, prog.children, xkey, div, dodge)
    ax.grid(True, alpha=0.3)


def legend_handles(colour: str = "#1f1f1f") -> list:
    """Legend entries shared by the progress figures."""
    hs = [Line2D([], [], color=colour, lw=2.0, label="current best (validation)"),
          Line2D([], [], color=STEP_LINE, lw=0.9, alpha=0.7, label="morphisms applied")]
    for marker, face, edge, size, label in MARK.values():
        hs.append(Line2D([], [], marker=marker, ls="", markerfacecolor=face,
                         markeredgecolor=edge, markersize=math.sqrt(size) * 1.1, label=label))
    return hs


def progress_figure(runs: list[tuple[str, RunState]], title: str | None = None) -> Figure:
    """Figure 2: validation accuracy of the best model vs wall time and vs epochs.

    `runs` is a list of (label, run state); several runs are overlaid in colours.
    """
    progs = [(label, progress(state)) for label, state in runs]
    clocks = [b["clock"] for _, p in progs for b in p.best] + [
        c["clock"] for _, p in progs for c in p.children]
    div, unit = time_unit(max(clocks, default=0.0))
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    ax_t, ax_e = fig.subplots(1, 2, sharey=True)
    colours = ["#1f1f1f", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22"]
    for k, (_, p) in enumerate(progs):
        colour = colours[k % len(colours)]
        many = len(progs) > 1
        _panel(ax_t, p, "clock", div, 0.0, colour, many)
        neigh = max((c["epochs"] for c in p.children), default=1)
        _panel(ax_e, p, "epochs", 1.0, 0.012 * max(neigh, 1), colour, many)
    ax_t.set_xlabel(f"search wall time ({unit})")
    ax_e.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_e.set_xlabel("epochs the model's weights have been trained (in total)")
    ax_t.set_ylabel("validation accuracy (%)")
    ax_t.set_title("best model vs. wall time", fontsize=10)
    ax_e.set_title("best model vs. training epochs", fontsize=10)
    handles = legend_handles(colours[0])
    if len(progs) > 1:
        handles = [Line2D([], [], color=colours[k % len(colours)], lw=2, marker="o", ms=3.5,
                          label=f"{label}: current best; dots: children; dotted: step starts")
                   for k, (label, _) in enumerate(progs)]
    fig.legend(handles=handles, loc="outside lower center",
               ncol=min(len(handles), 5 if len(progs) == 1 else 2),
               fontsize=8.5, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def children_figure(state: RunState, title: str | None = None) -> Figure:
    """Each step's children: validation accuracy vs parameter count, the chosen one starred."""
    prog = progress(state)
    steps = sorted({c["step"] for c in prog.children})
    n = max(len(steps), 1)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.9 * cols + 0.6, 2.6 * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
    for ax, step in zip(axes, steps):
        pts = [c for c in prog.children if c["step"] == step]
        for p in pts:
            p["params_k"] = p["params"] / 1e3
        _points(ax, pts, "params_k", 1.0, 0.0)
        for p in pts:
            tag = "inc" if p["role"] == "incumbent" else f"c{p['child']}"
            ax.annotate(tag, (p["params_k"], 100 * p["acc"]), textcoords="offset points",
                        xytext=(4, 3), fontsize=7, color="#444444")
        ax.set_title(f"step {step}", fontsize=9.5)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("parameters (thousands)", fontsize=8.5)
        ax.tick_params(labelsize=8)
        ax.margins(x=0.18, y=0.15)
    for ax in axes[len(steps):]:
        ax.set_visible(False)
    for r in range(rows):
        axes[r * cols].set_ylabel("validation accuracy (%)", fontsize=8.5)
    fig.legend(handles=legend_handles()[2:], loc="outside lower center", ncol=3, fontsize=8.5,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    if not steps:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no hill-climbing steps in this run", ha="center",
                     va="center", transform=axes[0].transAxes)
    return fig


def save_figure(fig: Figure, stem: str | Path, dpi: int = 110) -> tuple[Path, Path]:
    """Write `stem`.png and `stem`.svg; returns both paths."""
    stem = Path(stem)
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    fig.savefig(png, dpi=dpi, metadata={"Software": None})
    fig.savefig(svg, metadata={"Date": None})
    return png, svg
