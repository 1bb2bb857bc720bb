"""A Pareto search as the user gets it (issue 17): `show`'s front table, the report's front
figure and table, and front members by id (--member of export, predict, evaluate and retrain;
search --start RUN_DIR --start-member ID). NASH runs' show and report stay as they were."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from conftest import TINY, make_tiny_npz
from morphclimb.cli import main
from morphclimb.config import SearchConfig
from morphclimb.errors import ConfigError, RunDirError
from morphclimb.journal import RunDir
from morphclimb.nash import hill_climb

PARETO = dict(TINY, strategy="pareto", approximate=True, n_steps=2, n_neigh=3, seed=1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pareto-view")
    make_tiny_npz(root / "tiny.npz")
    return root


@pytest.fixture(scope="module")
def pareto_run(root):
    """A tiny Pareto search, every front member final-trained (front_final=0)."""
    out = root / "run"
    hill_climb(SearchConfig(**{**PARETO, "dataset": str(root / "tiny.npz")}), out)
    assert len(_results(out)["front"]) >= 3, "the tests need a front of 3 or more members"
    return out


@pytest.fixture(scope="module")
def partial_run(root):
    """The same search with front_final=1: only the most accurate member final-trained."""
    out = root / "partial"
    hill_climb(SearchConfig(**{**PARETO, "dataset": str(root / "tiny.npz"), "front_final": 1}),
               out)
    return out


@pytest.fixture(scope="module")
def nash_run(root):
    out = root / "nash"
    hill_climb(SearchConfig(**{**TINY, "dataset": str(root / "tiny.npz"), "n_steps": 1}), out)
    return out


def _results(run) -> dict:
    return json.loads((run / "results.json").read_text())


def _other(run) -> dict:
    """A front member with a final training that is not the run's `final`."""
    return next(m for m in _results(run)["front"] if m["model"] not in (None, "final"))


def _one_line_error(capsys, *words) -> str:
    err = capsys.readouterr().err
    assert err.startswith("morphclimb: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err
    return err


def _arch(run, model) -> dict:
    return json.loads((run / "models" / model / "arch.json").read_text())


# ------------------------------------------------------------------ show
def _front_rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    head = next(k for k, line in enumerate(lines) if line.startswith("member "))
    assert set(lines[head + 1]) <= {"-", " "}
    rows = []
    for line in lines[head + 2:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_show_prints_the_front_as_results_json_holds_it(pareto_run, capsys):
    assert main(["show", str(pareto_run)]) == 0
    out = capsys.readouterr().out
    res = _results(pareto_run)
    assert "strategy=pareto, objective=params" in out and "--member ID" in out
    rows = _front_rows(out)
    assert [r[0] for r in rows] == [m["id"] for m in res["front"]]
    for row, m in zip(rows, res["front"], strict=True):
        assert row[1] == f"{m['params']:,}"
        assert float(row[2]) == pytest.approx(m["mflops"], rel=0.01)
        assert float(row[3]) == pytest.approx(m["val_error"], abs=0.005)
        assert float(row[4]) == pytest.approx(m["test_error"], abs=0.005)
        assert row[5] == m["model"]
    sizes = [m["params"] for m in res["front"]]
    assert sizes == sorted(sizes)                        # smallest first
    best = min(res["front"], key=lambda m: m["val_error"])
    assert [r[0] for r in rows if r[5] == "final"] == [best["id"]]   # the most accurate's


def test_show_reads_a_pareto_run_without_torch(pareto_run):
    from test_startup import _loaded_after
    assert "torch" not in _loaded_after(f"from morphclimb.cli import main\n"
                                        f"assert main(['show', {str(pareto_run)!r}]) == 0")


def test_search_result_points_to_the_front(pareto_run, capsys):
    from morphclimb.cli import _print_result
    res = _results(pareto_run)
    _print_result(res)
    assert (f"Pareto front: {len(res['front'])} members (params); `morphclimb show "
            f"{res['run_dir']}` lists them, --member ID picks one") in capsys.readouterr().out


@pytest.mark.parametrize("command, flag", [("export", "--member"), ("predict", "--member"),
                                           ("evaluate", "--member"), ("retrain", "--member"),
                                           ("search", "--start-member")])
def test_help_names_the_member_flags(command, flag, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert flag + " ID" in capsys.readouterr().out


def test_show_marks_members_without_a_final_training(partial_run, capsys):
    assert main(["show", str(partial_run)]) == 0
    rows = _front_rows(capsys.readouterr().out)
    finals = [r for r in rows if r[5] != "-"]
    assert [r[5] for r in finals] == ["final"] and len(rows) >= 2
    assert all(r[4] == "-" for r in rows if r[5] == "-")


def test_nash_show_has_no_front(nash_run, capsys):
    assert main(["show", str(nash_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert not any("Pareto" in x or "member" in x for x in lines)
    last_step = max(k for k, x in enumerate(lines) if x.startswith("step "))
    assert lines[last_step + 1].startswith("final: test error")   # nothing put in between


# ------------------------------------------------------------------ report
def test_report_has_the_front_figure_and_table(pareto_run, tmp_path):
    from morphclimb.report import build_report
    rep = build_report([pareto_run], tmp_path / "rep")
    assert (tmp_path / "rep" / "front.png").is_file() and (tmp_path / "rep" / "front.svg").is_file()
    page = rep.html.read_text()
    assert "objective=params" in page
    for m in _results(pareto_run)["front"]:
        row = next(r for r in page.split("<tr>") if f"<td>{m['id']}</td>" in r)
        assert f'data-value="{m["params"]!r}"' in row and f">{m['val_error']:.2f}<" in row
        assert f">{m['test_error']:.2f}<" in row and f"<td>{m['model']}</td>" in row


def test_front_figure_draws_every_generation_on_a_log_size_axis(pareto_run):
    from morphclimb.front_view import front_figure
    res = _results(pareto_run)
    ax = front_figure(res).axes[0]
    assert ax.get_xscale() == "log" and "parameters" in ax.get_xlabel()
    lines = ax.get_lines()
    assert len(lines) == len(res["generations"]) + 1          # one per generation, the final
    np.testing.assert_allclose(lines[-1].get_xdata(), [m["params"] for m in res["front"]])
    assert lines[-1].get_linewidth() > lines[0].get_linewidth()   # the final front emphasised
    by_mflops = {**res, "objective": "mflops"}
    ax = front_figure(by_mflops).axes[0]
    assert "MFLOPs" in ax.get_xlabel()
    np.testing.assert_allclose(ax.get_lines()[-1].get_xdata(),
                               [m["mflops"] for m in res["front"]])


def test_nash_report_has_no_front(nash_run, tmp_path):
    from morphclimb.report import build_report
    rep = build_report([nash_run], tmp_path / "rep")
    assert not (tmp_path / "rep" / "front.png").exists()
    assert "Pareto" not in rep.html.read_text()


# ------------------------------------------------------------------ --member
def test_member_resolves_to_its_final_model(pareto_run):
    from morphclimb.members import pick
    for m in _results(pareto_run)["front"]:
        assert pick(pareto_run, member=m["id"]) == m["model"]
    assert pick(pareto_run, model="m0") == "m0" and pick(pareto_run) is None


def test_export_member_is_export_of_its_final_model(pareto_run, tmp_path, capsys):
    from morphclimb.export import load_safetensors_export, read_meta
    m = _other(pareto_run)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["export", str(pareto_run), "--format", "safetensors", "--member", m["id"],
                 "--out", str(a)]) == 0
    assert f"model {m['model']} (front member {m['id']})" in capsys.readouterr().out
    assert main(["export", str(pareto_run), "--format", "safetensors", "--model", m["model"],
                 "--out", str(b)]) == 0
    assert read_meta(a)["members"] == read_meta(b)["members"] == [m["model"]]
    x = np.load(RunDir(pareto_run).config()["dataset"])["x_test"][:10]
    import torch
    with torch.no_grad():
        pa = load_safetensors_export(a)[0](torch.from_numpy(x)).numpy()
        pb = load_safetensors_export(b)[0](torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(pa, pb)


def test_predict_and_evaluate_member(pareto_run, tmp_path, capsys):
    m = _other(pareto_run)
    folder = tmp_path / "images"
    folder.mkdir()
    for k, im in enumerate(np.load(RunDir(pareto_run).config()["dataset"])["x_test"][:6]):
        Image.fromarray(im).save(folder / f"{k}.png")
    outs = []
    for flag, value in (("--member", m["id"]), ("--model", m["model"])):
        out = tmp_path / f"{flag[2:]}.json"
        assert main(["predict", str(pareto_run), str(folder), flag, value, "--out",
                     str(out)]) == 0
        outs.append(json.loads(out.read_text()))
    assert outs[0] == outs[1] and outs[0]["members"] == [m["model"]]
    capsys.readouterr()
    assert main(["evaluate", str(pareto_run), "--member", m["id"]]) == 0
    by_member = capsys.readouterr().out
    assert main(["evaluate", str(pareto_run), "--model", m["model"]]) == 0
    assert by_member == capsys.readouterr().out and by_member.startswith(m["model"] + " on test")


def test_member_errors_are_one_line(pareto_run, partial_run, nash_run, tmp_path, capsys):
    run = str(pareto_run)
    front = [m["id"] for m in _results(pareto_run)["front"]]
    assert main(["export", run, "--format", "safetensors", "--member", "nope"]) == 2
    _one_line_error(capsys, "no front member 'nope'", ", ".join(front))
    assert main(["export", run, "--format", "safetensors", "--member", "m0"]) == 2
    _one_line_error(capsys, "no front member 'm0'", "--model")      # a model, not on the front
    assert main(["predict", run, str(tmp_path), "--member", front[0], "--model", "final"]) == 2
    _one_line_error(capsys, "--model and --member")
    assert main(["predict", run, str(tmp_path), "--member", front[0], "--ensemble",
                 "snapshot"]) == 2
    _one_line_error(capsys, "--ensemble")
    assert main(["predict", str(nash_run), str(tmp_path), "--member", "s01c1"]) == 2
    _one_line_error(capsys, "Pareto search", "nash run", "--model ID")
    bare = next(m for m in _results(partial_run)["front"] if m["model"] is None)
    assert main(["evaluate", str(partial_run), "--member", bare["id"]]) == 2
    _one_line_error(capsys, f"front member {bare['id']}", "no final training", "front_final=1",
                    f"--model {bare['id']}")
    assert main(["retrain", str(nash_run), "--member", "s01c1", "--quiet"]) == 2
    _one_line_error(capsys, "Pareto search")
    assert main(["retrain", run, "--member", "nope", "--quiet"]) == 2
    _one_line_error(capsys, "no front member 'nope'")


def test_retrain_member_trains_its_architecture_from_scratch(pareto_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(pareto_run, run)
    m = _other(run)
    assert main(["retrain", str(run), "--member", m["id"], "--quiet"]) == 0
    out = capsys.readouterr().out
    rid = f"retrain-{m['id']}"
    st = RunDir(run).state()
    rec = st.trained[rid]
    assert rec["role"] == "retrain" and rec["parent"] == m["id"] and rec["part"] == "train_full"
    assert rec["lineage"] == rec["epochs"] == st.trained[m["model"]]["lineage"]   # as its final
    assert _arch(run, rid) == _arch(run, m["id"])
    w_member, w_new = load_file(run / "models" / m["id"] / "weights.safetensors"), \
        load_file(run / "models" / rid / "weights.safetensors")
    assert any(not (w_member[k] == w_new[k]).all() for k in w_member)
    entry = next(e for e in _results(run)["front"] if e["id"] == m["id"])
    assert entry["retrain"]["model"] == rid
    assert f"front member {m['id']}'s architecture retrained from scratch ({rid}): test " \
           f"error {entry['retrain']['test_error']:.2f}%" in out
    best = next(e for e in _results(run)["front"] if e["model"] == "final")
    assert main(["retrain", str(run), "--member", best["id"], "--quiet"]) == 0
    assert "found architecture retrained from scratch" in capsys.readouterr().out
    assert _arch(run, "retrain") == _arch(run, best["id"])


# ------------------------------------------------------------------ search --start-member
def _search(root, out, *extra) -> list[str]:
    args = ["search", "--dataset", str(root / "tiny.npz"), "--out", str(out), "--quiet",
            *extra]
    for k, v in {**TINY, "n_steps": 0, "baseline": False, "reference": None,
                 "final_model": "search"}.items():
        args += ["--set", f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"]
    return args


def test_start_member_starts_from_its_final_model(root, pareto_run, tmp_path):
    m = _other(pareto_run)
    out = tmp_path / "next"
    assert main(_search(root, out, "--start", str(pareto_run), "--start-member", m["id"])) == 0
    start = RunDir(out).state().started["start"]
    assert start == {"kind": "run", "source": str(pareto_run), "model": m["model"],
                     "member": m["id"]}
    assert _arch(out, "m0") == _arch(pareto_run, m["model"])
    got = load_file(out / "models" / "m0" / "weights.safetensors")
    want = load_file(pareto_run / "models" / m["model"] / "weights.safetensors")
    assert all((got[k] == want[k]).all() for k in want)     # its final training's weights


def test_start_model_without_a_final_is_the_model_itself(root, partial_run):
    from morphclimb.nash import load_split
    from morphclimb.startpoint import load_start
    bare = next(m for m in _results(partial_run)["front"] if m["model"] is None)
    cfg = SearchConfig(**{**TINY, "dataset": str(root / "tiny.npz"), "start": str(partial_run),
                          "start_model": bare["id"]})
    arch, w, info = load_start(cfg, load_split(cfg)[1])
    assert info["model"] == bare["id"] and "member" not in info
    assert arch.to_dict() == _arch(partial_run, bare["id"])
    want = load_file(partial_run / "models" / bare["id"] / "weights.safetensors")
    assert all((w[k] == want[k]).all() for k in want)


def test_start_member_errors_are_one_line(root, pareto_run, tmp_path, capsys):
    front = [m["id"] for m in _results(pareto_run)["front"]]
    assert main(_search(root, tmp_path / "a", "--start", str(pareto_run), "--start-member",
                        "nope")) == 2
    _one_line_error(capsys, "start_model", "'nope'", ", ".join(front), "m0")
    assert not (tmp_path / "a").exists()
    assert main(_search(root, tmp_path / "b", "--start-member", front[0])) == 2
    _one_line_error(capsys, "start_model needs start")
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(_arch(pareto_run, "final")))
    assert main(_search(root, tmp_path / "c", "--start", str(arch), "--start-member",
                        front[0])) == 2
    _one_line_error(capsys, "not a run directory")


def test_library_errors_are_typed(pareto_run, nash_run):
    from morphclimb.members import member_model, pick
    with pytest.raises(ConfigError, match="^--model and --member both pick a model"):
        pick(pareto_run, model="final", member="s01c1")
    with pytest.raises(RunDirError, match="nash run"):
        member_model(nash_run, "s01c1")
