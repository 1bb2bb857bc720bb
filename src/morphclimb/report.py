"""An HTML report of one or more runs: progress figures, architecture drawings, paper-style tables."""

from __future__ import annotations

import base64
import html
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .drawing import arch_caption, draw_arch, drawing_width
from .errors import RunDirError
from .events import FINAL, MODEL0
from .figures import children_figure, progress_figure, save_figure, time_unit
from .journal import RunDir, no_link, read_arch_file
from .results import collect_results, final_plan_text, reference_line
from .spec import Arch
from .state import RunState
from .strategy import strategy_of


@dataclass
class RunInfo:
    """One run as the report sees it: its directory, replayed state and results summary."""

    run: RunDir
    state: RunState
    results: dict[str, Any]

    @property
    def name(self) -> str:
        """The run directory's name."""
        return self.run.path.resolve().name

    @property
    def finished(self) -> bool:
        """Whether the final model has been trained and tested."""
        return "final" in self.results

    @property
    def search_seconds(self) -> float:
        """Wall time of the search up to the final model's test (summed training time if unset)."""
        return self.results.get("search_clock_s") or self.results.get("runtime_s") or 0.0


def load_run(path: str | Path) -> RunInfo:
    """Open a run directory and summarise its journal (results.json is not rewritten)."""
    run = RunDir.open(path)
    state = run.state()
    if state.started is None:
        raise RunDirError(f"{path} has an empty journal: nothing to report yet")
    return RunInfo(run, state, collect_results(run, write=False))


def setting(config: dict[str, Any]) -> str:
    """The paper's name for a run's setting, e.g. 'n_steps=5, n_neigh=8, n_NM=5, no SGDR'."""
    s = f"n_steps={config['n_steps']}, n_neigh={config['n_neigh']}, n_NM={config['n_nm']}"
    s += f", epochs {config['epoch_pretrain']}/{config['epoch_neigh']}/{config['epoch_final']}"
    if not config.get("sgdr_climb", True):
        s += ", no SGDR"
    return ("random networks (" + s + ")") if config["n_neigh"] == 1 else "NASH (" + s + ")"


# ---------------------------------------------------------------------------- tables
@dataclass
class Table:
    """A table: title, header, rows of cells; each cell is (shown text, exact value or None)."""

    title: str
    header: list[str]
    rows: list[list[tuple[str, Any]]] = field(default_factory=list)


def _mean_std(values: list[float], digits: int = 2) -> tuple[str, float]:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}", mean
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}", mean


def _units(runs: list[RunInfo]) -> tuple[float, str, float, str]:
    secs = max((r.search_seconds for r in runs), default=0.0)
    tdiv, tunit = time_unit(secs)
    params = max((r.results.get("final", {}).get("params", 0) for r in runs), default=0)
    pdiv, punit = (1e6, "mil.") if params >= 1e6 else (1e3, "thousands")
    return tdiv, tunit, pdiv, punit


def _row(label: str, n: int, secs: list[float], params: list[float], errors: list[float],
         units) -> list[tuple[str, Any]]:
    tdiv, _, pdiv, _ = units
    t_text, t_val = _mean_std([s / tdiv for s in secs])
    p_text, p_val = _mean_std([p / pdiv for p in params], 1 if pdiv == 1e6 else 1)
    e_text, e_val = _mean_std(errors)
    return [(label, None), (str(n), n), (t_text, t_val * tdiv), (p_text, p_val * pdiv),
            (e_text, e_val)]


def results_tables(runs: list[RunInfo], across: dict[str, dict] | None = None) -> list[Table]:
    """Paper Tables 1/3/4: per dataset, one row per setting (mean ± std over its runs)."""
    finished = [r for r in runs if r.finished]
    tables = []
    for dataset in dict.fromkeys(r.results["config"]["dataset"] for r in finished):
        group = [r for r in finished if r.results["config"]["dataset"] == dataset]
        units = _units(group)
        t = Table(f"Results on {Path(dataset).name}",
                  ["setting", "runs", f"runtime ({units[1]})", f"# params ({units[3]})",
                   "test error ± std (%)"])
        labels = list(dict.fromkeys(setting(r.results["config"]) for r in group))
        for label in labels:
            tag = f" [{label}]" if len(labels) > 1 else ""
            same = [r for r in group if setting(r.results["config"]) == label]
            res = [r.results for r in same]
            t.rows.append(_row(label, len(same), [r.search_seconds for r in same],
                               [x["final"]["params"] for x in res],
                               [x["final"]["test_error"] for x in res], units))
            for key, name in (("baseline", "starting network, same epochs"),
                              ("retrain", "found architecture retrained from scratch"),
                              ("reference", "reference network alone, same wall time")):
                sub = [x[key] for x in res if key in x]
                if sub:
                    t.rows.append(_row(name + tag, len(sub),
                                       [x["seconds"] for x in sub], [x["params"] for x in sub],
                                       [x["test_error"] for x in sub], units))
            snaps = [(r, r.results["snapshot_ensemble"]) for r in same
                     if "snapshot_ensemble" in r.results]
            if snaps:
                t.rows.append(_row(
                    "snapshot ensemble" + tag, len(snaps),
                    [r.search_seconds + s["runtime_s"] - r.results["runtime_s"] for r, s in snaps],
                    [s["params"] for _, s in snaps], [s["test_error"] for _, s in snaps], units))
        if across and dataset in across:
            a = across[dataset]
            t.rows.append(_row(f"ensemble across runs ({len(a['runs'])} runs, runtime summed)",
                               1, [sum(r.search_seconds for r in group)], [a["params"]],
                               [a["test_error"]], units))
        tables.append(t)
    return tables


def retrain_table(runs: list[RunInfo]) -> Table | None:
    """Paper Table 2: our algorithm vs. retraining the found architecture from scratch."""
    rows = [r for r in runs if "retrain" in r.results and r.finished]
    if not rows:
        return None
    div, unit = time_unit(max(r.search_seconds for r in rows))
    t = Table("Retraining the found architectures from scratch",
              ["run", "error (%)", f"runtime ({unit})", "retrained: error (%)",
               f"retrained: runtime ({unit})"])
    for r in rows:
        f, x = r.results["final"], r.results["retrain"]
        t.rows.append([(r.name, None), (f"{f['test_error']:.2f}", f["test_error"]),
                       (f"{r.search_seconds / div:.2f}", r.search_seconds),
                       (f"{x['test_error']:.2f}", x["test_error"]),
                       (f"{x['seconds'] / div:.2f}", x["seconds"])])
    return t


def steps_table(run: RunInfo) -> Table:
    """Each hill-climbing step: the chosen model, its validation accuracy, size and morphisms."""
    t = Table(f"Hill-climbing steps of {run.name}",
              ["step", "chosen", "val. accuracy (%)", "# params", "children trained",
               "morphisms of the chosen model", "cut by successive halving"])
    m0 = run.results.get("model0")
    if m0:
        t.rows.append([("0", 0), ("m0 (pretrained)", None),
                       (f"{100 * m0['val_accuracy']:.2f}", m0["val_accuracy"]),
                       (f"{m0['params']:,}", m0["params"]), ("-", None), ("-", None),
                       ("-", None)])
    for s in run.results["steps"]:
        ok = sum(c["val_accuracy"] is not None for c in s["children"])
        best = next((c for c in s["children"] if c["model"] == s["best"]), {})
        morph = ", ".join(_morph(m) for m in best.get("morphisms", [])) or "none (incumbent)"
        rungs: dict[int, list[str]] = {}
        for c in s["children"]:
            if c.get("cut_at_rung"):
                rungs.setdefault(c["cut_at_rung"], []).append(c["model"])
        cut = "; ".join(f"rung {r}: {', '.join(ms)}" for r, ms in sorted(rungs.items())) or "-"
        t.rows.append([(str(s["step"]), s["step"]), (s["best"], None),
                       (f"{100 * s['val_accuracy']:.2f}", s["val_accuracy"]),
                       (f"{s['params']:,}", s["params"]), (f"{ok}/{len(s['children'])}", ok),
                       (morph, None), (cut, None)])
    return t


def _morph(m: dict[str, Any]) -> str:
    if m.get("op") == "deeper":
        return f"deeper after {m.get('after')} ({m.get('kernel')}x{m.get('kernel')})"
    if m.get("op") == "wider":
        return f"wider {m.get('conv')} x{m.get('factor')}"
    if m.get("op") == "skip":
        return f"skip ({m.get('mode')}) {m.get('source')} → {m.get('target')}"
    return str(m.get("op"))


# ---------------------------------------------------------------------------- HTML
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.6em}td,th{border:1px solid #bbb;padding:.3em .7em}
th{background:#eee}td.num{text-align:right}figure{margin:1em 0}img{max-width:100%}
.archs{display:flex;gap:2em;align-items:flex-start;flex-wrap:wrap}figcaption{font-size:.9em}"""


def table_html(t: Table) -> str:
    """A table as HTML; exact values are kept in data-value attributes."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = []
    for row in t.rows:
        cells = []
        for text, value in row:
            attr = "" if value is None else f' class="num" data-value="{value!r}"'
            cells.append(f"<td{attr}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<h3>{html.escape(t.title)}</h3><table><thead><tr>{head}</tr></thead><tbody>"
            + "".join(body) + "</tbody></table>")


def _figure_html(svg: Path, png: Path, caption: str, max_width: str | None = None) -> str:
    data = base64.b64encode(svg.read_bytes()).decode()
    style = f' style="max-width:{max_width}"' if max_width else ""
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/svg+xml;base64,{data}"'
            f'{style}><figcaption>{html.escape(caption)} (files: <a href="{png.name}">'
            f'{png.name}</a>, <a href="{svg.name}">{svg.name}</a>)</figcaption></figure>')


@dataclass
class Report:
    """What `build_report` wrote: the HTML page, every file, and a one-line summary."""

    html: Path
    files: list[Path]
    summary: str


DRAW_MAX_NODES = 600   # an architecture past it is listed, not drawn (ResNet-110: 390)


def _arch_of(info: RunInfo, model_id: str) -> Arch | None:
    p = info.run.model_dir(model_id) / "arch.json"
    if not p.is_file():
        return None
    return read_arch_file(p)


def _run_section(info: RunInfo, out: Path, prefix: str, files: list[Path]) -> str:
    def fig(figure, stem: str, caption: str, dpi: int = 110, width: str | None = None) -> str:
        png, svg = save_figure(figure, out / f"{prefix}{stem}", dpi=dpi)
        files.extend([png, svg])
        return _figure_html(svg, png, caption, width)

    c = info.results["config"]
    parts = [f"<h2>Run {html.escape(info.name)}</h2>",
             f"<p>{html.escape(setting(c))}; dataset {html.escape(str(c['dataset']))}, "
             f"seed {c['seed']}, lr {c['lr_start']} → {c['lr_end']}. "
             f"{html.escape(_status(info))}</p>",
             fig(progress_figure([(info.name, info.state)]), "progress",
                 "Search progress (paper Figure 2): validation accuracy of the current best "
                 "model against search wall time (left) and against the epochs its weights have "
                 "been trained (right); red lines mark where morphisms were applied (each step's "
                 "start), points are the children of each step; final training not plotted."),
             fig(children_figure(info.state), "children",
                 "Each step's children: validation accuracy against parameter count; the star "
                 "is the model the step moved to (the square is the incumbent).")]
    parts.append(strategy_of(c).report_html(info.results, fig,
                                            lambda *t: table_html(Table(*t))))
    archs = []
    best = info.results["steps"][-1]["best"] if info.results["steps"] else None
    for mid, label in ((MODEL0, f"starting network {MODEL0}"),
                       (FINAL if info.finished else best, "final network")):
        arch = _arch_of(info, mid) if mid else None
        if arch is not None and len(arch.nodes) > DRAW_MAX_NODES:   # minutes to lay out
            archs.append(f"<p>{html.escape(label)} ({html.escape(mid)}): "
                         f"{html.escape(arch_caption(arch))}; {len(arch.nodes):,} layers, too "
                         f"many to draw (at most {DRAW_MAX_NODES:,}): `morphclimb show "
                         f"RUN_DIR --arch {html.escape(mid)}` lists them</p>")
        elif arch is not None:
            archs.append(fig(draw_arch(arch, f"{label}: {arch_caption(arch)}"), f"arch-{mid}",
                             f"{label} ({mid}): {arch_caption(arch)}", dpi=100,
                             width=f"{100 * drawing_width(arch):.0f}px"))
    parts.append('<h3>Architectures (paper Figures 3-5)</h3><div class="archs">'
                 + "".join(archs) + "</div>")
    climb = info.results.get("climb") or {}
    if climb.get("stopped"):
        parts.append(f"<p>The climb stopped after {climb['steps_run']} of {climb['n_steps']} "
                     f"steps: {html.escape(climb['stopped'])}</p>")
    if climb.get("final_plan"):
        parts.append(f"<p>{html.escape(final_plan_text(climb['final_plan']))}.</p>")
    parts.append(table_html(steps_table(info)))
    return "\n".join(parts)


def _status(info: RunInfo) -> str:
    if not info.finished:
        return "The search has not finished (figures show the steps done so far)."
    f = info.results["final"]
    return (f"Final model: test error {f['test_error']:.2f}%, {f['params']:,} parameters, "
            f"{f['epochs_total']} epochs in total, search wall time "
            f"{info.search_seconds / 60:.1f} min.")


def _across(runs: list[RunInfo], device: str | None) -> dict[str, dict]:
    from .ensemble import ensemble_across_runs
    out = {}
    finished = [r for r in runs if r.finished]
    for dataset in dict.fromkeys(r.results["config"]["dataset"] for r in finished):
        group = [r for r in finished if r.results["config"]["dataset"] == dataset]
        if len(group) > 1:
            out[dataset] = ensemble_across_runs([r.run.path for r in group], device)
    return out


def build_report(run_dirs: list[str | Path], out: str | Path | None = None, *,
                 ensemble_across: bool = True, device: str | None = "cpu") -> Report:
    """Write report.html (self-contained) plus PNG and SVG figures for one or more runs.

    The default output folder is `<run>/report` for one run and `./report` for several.
    With several finished runs on one dataset, their final models are ensembled on the
    test set (set `ensemble_across=False` to skip that evaluation).
    """
    if not run_dirs:
        raise RunDirError("report needs at least one run directory")
    runs = [load_run(p) for p in run_dirs]
    out = Path(out) if out is not None else (
        runs[0].run.path / "report" if len(runs) == 1 else Path("report"))
    if len(runs) == 1 and out == runs[0].run.path / "report":
        no_link(out)   # a link planted in a shared run must not lead the report outside
    from .paths import make_dir
    make_dir(out, "report folder")
    files: list[Path] = []
    across = _across(runs, device) if ensemble_across else {}
    tables = results_tables(runs, across)
    extra = retrain_table(runs)
    body = ["<h1>morphclimb report</h1>",
            f"<p>{len(runs)} run(s): {html.escape(', '.join(r.name for r in runs))}.</p>",
            "<h2>Results (paper Tables 1-4)</h2>"]
    body += [table_html(t) for t in tables + ([extra] if extra else [])] or [
        "<p>No run has finished yet.</p>"]
    body += [f"<p><b>{html.escape(r.name)}</b>: {html.escape(reference_line(r.results))}.</p>"
             for r in runs if r.finished and reference_line(r.results)]
    body += [f"<p><b>{html.escape(r.name)}</b>: the run's answer is {html.escape(r.results['model'])}"
             f"; {html.escape(r.results['model_why'])}.</p>"
             for r in runs if r.finished and r.results.get("model_why")
             and r.results["config"].get("final_model") != "search"]
    if len(runs) > 1:
        png, svg = save_figure(progress_figure([(r.name, r.state) for r in runs]),
                               out / "progress-all")
        files += [png, svg]
        body.append(_figure_html(svg, png, "The current best model of every run, overlaid."))
    for k, info in enumerate(runs):
        prefix = "" if len(runs) == 1 else f"{k + 1}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', info.name)}-"
        body.append(_run_section(info, out, prefix, files))
    page = out / "report.html"
    page.write_text("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>morphclimb "
                    f"report</title><style>{CSS}</style></head><body>\n" + "\n".join(body)
                    + "\n</body></html>\n", encoding="utf-8")
    files.append(page)
    n_fig = sum(f.suffix == ".png" for f in files)
    return Report(page, files, f"wrote {page} ({n_fig} figures as PNG + SVG, "
                               f"{sum(len(t.rows) for t in tables)} table rows) for "
                               f"{len(runs)} run(s)")
