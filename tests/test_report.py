"""Report, figures, architecture drawings and TensorBoard logging, on one real tiny search."""

from __future__ import annotations

import base64
import functools
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from conftest import TINY, make_tiny_npz
from morphclimb import Arch, Node, build, starting_arch, weights_of
from morphclimb.cli import main
from morphclimb.drawing import block_label, draw_arch, fold, layout, main_path
from morphclimb.errors import RunDirError
from morphclimb.figures import progress
from morphclimb.report import build_report


@functools.lru_cache(maxsize=1)
def _search(root):
    from morphclimb.config import SearchConfig
    from morphclimb.nash import hill_climb
    root.mkdir(parents=True, exist_ok=True)
    data = make_tiny_npz(root / "tiny.npz")
    cfg = SearchConfig(dataset=str(data), snapshot_ensemble=True, baseline=True, retrain=True,
                       tensorboard=True, **TINY)
    hill_climb(cfg, root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished tiny search (shared with test_export through the cache above)."""
    return _search(tmp_path_factory.getbasetemp() / "shared-search")


class Page(HTMLParser):
    """Collects tables (cells as (text, data-value)) and image sources of an HTML page."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.cell = [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ["", a.get("data-value")]
        elif tag == "img":
            self.images.append(a["src"])

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[0] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(tuple(self.cell))
            self.cell = None


def _row(table, label):
    return next(r for r in table if r[0][0].startswith(label))


def test_report_files_and_numbers(finished_run, tmp_path):
    rep = build_report([finished_run], tmp_path / "rep")
    results = json.loads((finished_run / "results.json").read_text())
    names = {p.name for p in rep.files}
    for stem in ("progress", "children", "arch-m0", "arch-final"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    for p in rep.files:
        assert p.is_file() and p.stat().st_size > 0
        if p.suffix == ".png":
            with Image.open(p) as im:
                im.verify()
        elif p.suffix == ".svg":
            assert ET.parse(p).getroot().tag.endswith("svg")
    page = Page()
    page.feed(rep.html.read_text())
    assert len(page.images) == 4
    for src in page.images:  # embedded, so the page works when moved
        assert src.startswith("data:image/svg+xml;base64,")
        ET.fromstring(base64.b64decode(src.split(",", 1)[1]))
    main_t, retrain_t, steps_t = page.tables
    f = results["final"]
    nash = _row(main_t, "NASH")
    assert nash[4] == (f"{f['test_error']:.2f}", repr(f["test_error"]))
    assert float(nash[3][1]) == f["params"] and float(nash[2][1]) == results["search_clock_s"]
    snap = _row(main_t, "snapshot ensemble")
    assert float(snap[4][1]) == results["snapshot_ensemble"]["test_error"]
    assert float(snap[3][1]) == results["snapshot_ensemble"]["params"]
    for label, key in (("starting network", "baseline"), ("found architecture", "retrain")):
        row = _row(main_t, label)
        assert float(row[4][1]) == results[key]["test_error"]
        assert float(row[3][1]) == results[key]["params"]
    assert float(retrain_t[1][3][1]) == results["retrain"]["test_error"]
    assert [r[1][0] for r in steps_t[2:]] == [s["best"] for s in results["steps"]]
    assert [float(r[2][1]) for r in steps_t[2:]] == [s["val_accuracy"] for s in results["steps"]]


def test_report_several_runs_via_cli(finished_run, tmp_path, capsys):
    out = tmp_path / "many"
    assert main(["report", str(finished_run), str(finished_run), "--out", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = Page()
    page.feed((out / "report.html").read_text())
    across = _row(page.tables[0], "ensemble across runs")
    assert 0 <= float(across[4][1]) <= 100
    nash = _row(page.tables[0], "NASH")
    assert nash[1][0] == "2" and nash[4][0].endswith("± 0.00")
    assert (out / "progress-all.png").is_file() and (out / "2-run-arch-final.svg").is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_progress_matches_journal(finished_run):
    from morphclimb.journal import RunDir
    recs = RunDir(finished_run).records()
    prog = progress(RunDir(finished_run).state())
    decided = [r for r in recs if r["event"] == "step_decided"]
    assert [b["model"] for b in prog.best] == ["m0"] + [d["best"] for d in decided]
    assert [s["step"] for s in prog.starts] == [1, 2]
    assert sum(c["chosen"] for c in prog.children) == 2
    assert len(prog.children) == 2 * TINY["n_neigh"]


def test_tensorboard_event_files(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from morphclimb.journal import RunDir
    tb = finished_run / "tensorboard"
    acc = EventAccumulator(str(tb / "search"))
    acc.Reload()
    best = [(e.step, e.value) for e in acc.Scalars("search/best_val_accuracy")]
    recs = RunDir(finished_run).records()
    want = [(0, next(r for r in recs if r.get("model") == "m0")["val_accuracy"])] + [
        (r["step"], r["val_accuracy"]) for r in recs if r["event"] == "step_decided"]
    assert best == [(s, pytest.approx(v, abs=1e-6)) for s, v in want]
    assert len(acc.Scalars("children/val_accuracy")) == 2 * TINY["n_neigh"]
    m = EventAccumulator(str(tb / "models" / "final"))
    m.Reload()
    assert "train/loss" in m.Tags()["scalars"] and "eval/test_accuracy" in m.Tags()["scalars"]


def _grown(n_rounds=6, seed=0):
    from morphclimb.morphisms import apply_random_morphisms
    rng = np.random.default_rng(seed)
    arch = starting_arch(widths=(4, 8, 8), image_size=16)
    w = weights_of(build(arch))
    for _ in range(n_rounds):
        arch, w, _ = apply_random_morphisms(arch, w, 5, rng)
    return arch


def test_draw_deep_network_legible(tmp_path):
    arch = _grown()
    assert len(arch) >= 50
    lay = layout(arch)
    spots = [(b.row, round(b.x, 3)) for b in lay.blocks.values()]
    assert len(spots) == len(set(spots))          # no two boxes in one place
    assert sum(b.main for b in lay.blocks.values()) == len(lay.main)
    fig = draw_arch(arch, "grown")
    fig.savefig(tmp_path / "deep.png", dpi=60)
    fig.savefig(tmp_path / "deep.svg")
    with Image.open(tmp_path / "deep.png") as im:
        w, h = im.size
    small = draw_arch(starting_arch())
    assert h > 2.5 * small.get_figheight() * 60 and w > 0  # height grows with depth
    ET.parse(tmp_path / "deep.svg")


def test_fold_and_labels():
    arch = starting_arch(widths=(8, 16, 32))
    blocks = fold(arch)
    labels = [block_label(b.nodes, arch) for b in blocks.values()]
    assert labels == ["input 32x32x3", "Conv-BN-ReLU 3x3, 8", "max-pool 2x2",
                      "Conv-BN-ReLU 3x3, 16", "max-pool 2x2", "Conv-BN-ReLU 3x3, 32",
                      "global avg-pool", "FC 10 + softmax"]
    nodes = list(arch.nodes[:4]) + [  # a direct skip by concatenation and one by addition
        Node("c2", "conv", ("relu1",), channels=8, kernel=5),
        Node("cat", "concat", ("c2", "relu1")), Node("c3", "conv", ("cat",), channels=8,
                                                       kernel=1),
        Node("add", "add", ("c3", "relu1")), Node("gap", "gap", ("add",)),
        Node("fc", "linear", ("gap",), channels=10)]
    skip = Arch(tuple(nodes), "fc")
    lay = layout(skip)
    assert [s for s, _, _ in lay.direct] == ["relu1", "relu1"]
    assert main_path(lay.blocks, "fc")[-3:] == ["add", "gap", "fc"]
    assert "concat (||), 16" in [block_label(b.nodes, skip) for b in lay.blocks.values()]


def test_report_rejects_empty(tmp_path):
    with pytest.raises(RunDirError, match="report needs at least one run directory"):
        build_report([])
    with pytest.raises(RunDirError, match="not a morphclimb run directory"):
        build_report([tmp_path])
