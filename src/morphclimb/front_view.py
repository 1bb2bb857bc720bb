"""A Pareto search in the report: the front generation by generation (validation error
against size, log size axis) and the final front's table, drawn from results.json's
`generations` and `front` (pareto.front_results)."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .members import FRONT_HEADER, front_caption, front_rows

AXIS = {"params": "parameters", "mflops": "MFLOPs"}
FINAL_COLOUR = "#d62728"


def _stairs(ax, front: list[dict[str, Any]], key: str, **kw) -> None:
    """One front as a staircase, smallest first: each member's error holds until the next,
    larger and more accurate, member (the best error reachable within a size)."""
    xs = [m[key] for m in front]
    ys = [m["val_error"] for m in front]
    ax.step(xs, ys, where="post", **kw)


def front_figure(results: dict[str, Any]) -> Figure:
    """Validation error against size, every generation's front in a colour ramp (earliest
    light, latest dark) and the final front emphasised, its members labelled; members with a
    final training filled, the others hollow."""
    key = results.get("objective", "params")
    gens = [g for g in results.get("generations") or [] if g["front"]]
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    ramp = ListedColormap(colormaps["viridis_r"](np.linspace(0.2, 1.0, 256)))
    steps = [g["step"] for g in gens]
    norm = Normalize(min(steps, default=0), max(max(steps, default=0), 1))
    for g in gens:
        front = sorted(g["front"], key=lambda m: m[key])
        colour = ramp(norm(g["step"]))
        _stairs(ax, front, key, color=colour, lw=1.0, alpha=0.8, zorder=2)
        ax.scatter([m[key] for m in front], [m["val_error"] for m in front], s=14,
                   color=colour, zorder=3, linewidths=0)
    final = results.get("front") or []
    if final:
        _stairs(ax, final, key, color=FINAL_COLOUR, lw=2.4, zorder=4)
        for m in final:
            ax.scatter([m[key]], [m["val_error"]], s=60, zorder=5, linewidths=1.5,
                       edgecolors=FINAL_COLOUR,
                       facecolors=FINAL_COLOUR if m.get("model") else "white")
            ax.annotate(m["id"], (m[key], m["val_error"]), textcoords="offset points",
                        xytext=(5, 4), fontsize=8, color="#7f1010")
    ax.set_xscale("log")
    ax.set_xlabel(f"{AXIS.get(key, key)} (objective {key}, log scale)")
    ax.set_ylabel("validation error (%)")
    ax.grid(True, which="both", alpha=0.25)
    ax.margins(x=0.12, y=0.12)
    if len(gens) > 1:
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=ramp), ax=ax, pad=0.02)
        bar.set_label("generation (step)")
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    fig.legend(handles=[
        Line2D([], [], color=FINAL_COLOUR, lw=2.4, marker="o", label="final front (filled: "
               "final training)"),
        Line2D([], [], color=ramp(0.5), lw=1.0, marker="o", ms=4,
               label="front after each generation")], fontsize=8, ncol=2,
               loc="outside lower center", frameon=False)
    return fig


def front_table(results: dict[str, Any]) -> tuple[str, list[str], list[list[tuple[str, Any]]]]:
    """(title, header, rows) of the final front's table, the columns `show` prints."""
    return front_caption(results), FRONT_HEADER, front_rows(results)


CAPTION = ("The Pareto front of validation error against size after every generation (step), "
           "earliest light, latest dark; the final front in red, its members labelled, filled "
           "where the member had a final training (train + validation, tested).")
