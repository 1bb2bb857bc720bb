"""User errors end in one line and exit status 2, before anything is written: datasets that make
a classification meaningless, missing optional dependencies, folders that cannot be created,
config keys in the paper's spelling or misspelt."""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import TINY, make_tiny_npz
from morphclimb.cli import main
from morphclimb.config import SearchConfig, parse_sets, resolve
from morphclimb.data.load import load_split
from morphclimb.errors import ConfigError, DataError, MissingDependencyError, MorphclimbError


def _sets(**kw) -> list[str]:
    out = []
    for k, v in {**TINY, **kw}.items():
        out += ["--set", f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"]
    return out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("morphclimb: error: "), err
    return err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("edges")
    npz = str(make_tiny_npz(root / "tiny.npz"))
    out = root / "run"
    assert main(["search", "--dataset", npz, "--out", str(out), "--quiet",
                 *_sets(n_steps=1)]) == 0
    return out


# ------------------------------------------------------------ 1. meaningless classifications

def _npz(path, y, y_test, classes=None, n_test=None):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (len(y), 4, 4, 3), dtype=np.uint8)
    xt = rng.integers(0, 256, (len(y_test), 4, 4, 3), dtype=np.uint8)
    extra = {} if classes is None else {"classes": np.array(classes)}
    np.savez(path, x=x, y=np.asarray(y, np.int64), x_test=xt,
             y_test=np.asarray(y_test, np.int64), **extra)
    return str(path)


@pytest.mark.parametrize("y, y_test, classes, message", [
    ([0] * 20, [0] * 4, None, "has a single class ('0'); a classification needs at least 2"),
    ([0] * 20, [0] * 4, ["cat"], "has a single class ('cat')"),
    # labels 1..3 (not 0..k-1): class 0 never appears in training
    (np.arange(20) % 3 + 1, [1, 2, 3], None, "class '0' has 0 training images (label 0)"),
    # a test class that training never sees
    (np.arange(20) % 3, [0, 1, 3], None, "class '3' has 0 training images but 1 test image"),
    # a declared class without images
    (np.arange(20) % 2, [0, 1], ["a", "b", "c"], "class 'c' has 0 training images"),
    (np.arange(20) % 2, [], None, "has no test images"),
])
def test_meaningless_npz_datasets_refused_before_the_run_exists(tmp_path, capsys, y, y_test,
                                                                classes, message):
    data = _npz(tmp_path / "d.npz", y, y_test, classes)
    out = tmp_path / "run"
    assert main(["search", "--dataset", data, "--out", str(out), *_sets()]) == 2
    assert message in _one_error_line(capsys)
    assert not out.exists()


def test_single_class_folder_tree_refused(tmp_path, capsys):
    for part in ("train", "test"):
        for i in range(3):
            p = tmp_path / "tree" / part / "cat" / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(p)
    out = tmp_path / "run"
    assert main(["search", "--dataset", str(tmp_path / "tree"), "--out", str(out),
                 *_sets()]) == 2
    assert "dataset 'tree' has a single class ('cat')" in _one_error_line(capsys)
    assert not out.exists()


def test_bundled_subset_too_small_for_its_classes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--out", str(out), "--set", "subset=5"]) == 2
    err = _one_error_line(capsys)
    assert "dataset 'mini-cifar10': subset=5 keeps no training image of class" in err
    assert not out.exists()


def test_cifar_files_with_classes_missing_from_training(tmp_path):
    from test_data import write_cifar10
    write_cifar10(tmp_path, per_batch=1)            # labels 0..4 only: 5 classes never seen
    with pytest.raises(DataError, match=r"class 'dog' has 0 training images \(label 5\)"):
        load_split(SearchConfig(dataset="cifar10", data_root=str(tmp_path), val=1))


def test_too_few_images_of_a_class_for_the_split(tmp_path, capsys):
    data = _npz(tmp_path / "d.npz", [0] * 10 + [1], [0, 1])
    out = tmp_path / "run"
    assert main(["search", "--dataset", data, "--out", str(out), *_sets(val=10)]) == 2
    assert "class '1' has 1 training images, which leaves none" in _one_error_line(capsys)
    assert not out.exists()


def test_sound_datasets_still_split():
    ds, split = load_split(SearchConfig(subset=40))
    assert split.num_classes == 10 and set(split.train.y) == set(range(10))


# ------------------------------------------------------------ 2. missing optional dependencies

def _block(monkeypatch, name, forget=()):
    """Make `import name` fail as it does when the package is not installed; the modules
    `forget` (that imported it) are imported afresh."""
    for prefix in (name, *forget):
        for mod in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
            monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, name, None)


def test_export_onnx_without_onnx(finished_run, tmp_path, capsys, monkeypatch):
    _block(monkeypatch, "onnx")
    out = tmp_path / "m.onnx"
    assert main(["export", str(finished_run), "--format", "onnx", "--out", str(out)]) == 2
    err = _one_error_line(capsys)
    assert "export --format onnx needs onnx" in err and "pip install 'morphclimb[export]'" in err
    assert not out.exists()
    assert main(["export", str(finished_run), "--format", "onnx"]) == 2
    capsys.readouterr()
    assert not (finished_run / "export").exists()


def test_ray_executor_without_ray(finished_run, tmp_path, capsys, monkeypatch):
    _block(monkeypatch, "ray")
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    out = tmp_path / "run"
    assert main(["search", "--dataset", npz, "--out", str(out), "--executor", "ray",
                 *_sets()]) == 2
    assert "pip install 'morphclimb[ray]'" in _one_error_line(capsys)
    assert not out.exists()
    journal = (finished_run / "journal.jsonl").read_bytes()
    for cmd in (["resume", str(finished_run)], ["retrain", str(finished_run)]):
        assert main([*cmd, "--executor", "ray"]) == 2
        assert "executor 'ray' needs ray" in _one_error_line(capsys)
    assert (finished_run / "journal.jsonl").read_bytes() == journal


def test_tensorboard_without_tensorboard(tmp_path, capsys, monkeypatch):
    _block(monkeypatch, "tensorboard", forget=["torch.utils.tensorboard"])
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    out = tmp_path / "run"
    assert main(["search", "--dataset", npz, "--out", str(out), "--tensorboard",
                 *_sets()]) == 2
    assert "pip install 'morphclimb[tensorboard]'" in _one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("module, extra", [("onnxruntime", "export"), ("onnxscript", "export"),
                                           ("ray", "ray"), ("tensorboard", "tensorboard")])
def test_any_optional_import_failing_names_its_extra(finished_run, capsys, monkeypatch,
                                                     module, extra):
    _block(monkeypatch, module)
    import morphclimb.commands

    def show_needing_it(*a, **k):
        __import__(module)   # an import of an optional module deep inside a command

    monkeypatch.setattr(morphclimb.commands, "show_run", show_needing_it)
    assert main(["show", str(finished_run)]) == 2
    err = _one_error_line(capsys)
    assert f"needs {module}, which is not installed: pip install 'morphclimb[{extra}]'" in err
    assert issubclass(MissingDependencyError, ImportError)
    assert issubclass(MissingDependencyError, MorphclimbError)


def test_other_import_errors_are_not_hidden(finished_run, monkeypatch):
    import morphclimb.commands
    monkeypatch.setattr(morphclimb.commands, "show_run",
                        lambda *a, **k: __import__("no_such_module_anywhere"))
    with pytest.raises(ModuleNotFoundError, match="no_such_module_anywhere"):
        main(["show", str(finished_run)])


# ------------------------------------------------------------ 3. folders that cannot be created

@pytest.fixture
def blocker(tmp_path):
    """A regular file where a folder would have to be."""
    f = tmp_path / "file"
    f.write_text("not a folder")
    return f


def _image(tmp_path):
    p = tmp_path / "img.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(p)
    return str(p)


def _commands(run, tmp_path, target):
    """Every command that writes a file or folder the user names, writing to `target`."""
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    return {
        "search": (["search", "--dataset", npz, "--out", str(target / "run"), *_sets()],
                   "run directory"),
        "export": (["export", str(run), "--format", "torchscript", "--out",
                    str(target / "m.pt")], "export"),
        "predict": (["predict", str(run), _image(tmp_path), "--out", str(target / "p.csv")],
                    "predictions file"),
        "ensemble": (["ensemble", str(run), str(run), "--out", str(target / "e.json")],
                     "ensemble result file"),
        "report": (["report", str(run), "--out", str(target / "rep")], "report folder"),
    }


@pytest.mark.parametrize("command", ["search", "export", "predict", "ensemble", "report"])
def test_folder_under_a_file(finished_run, tmp_path, blocker, capsys, command):
    argv, what = _commands(finished_run, tmp_path, blocker)[command]
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert f"cannot create {what} {blocker}/" in err and f"{blocker} is a file, not a folder" \
        in err
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("command", ["search", "predict", "ensemble"])
def test_folder_one_may_not_write_in_is_found_before_the_work(finished_run, tmp_path, capsys,
                                                               monkeypatch, command):
    target = tmp_path / "locked"
    target.mkdir()
    argv, what = _commands(finished_run, tmp_path, target / "sub")[command]
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if pathlib.Path(p) ==
                        target else real(p, mode, *a, **k))
    import morphclimb.nash
    import morphclimb.predict
    monkeypatch.setattr(morphclimb.nash, "load_split", _must_not_run)
    monkeypatch.setattr(morphclimb.predict, "load_images", _must_not_run)
    monkeypatch.setattr("morphclimb.ensemble.ensemble_across_runs", _must_not_run)
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert f"cannot create {what} {target}/sub/" in err
    assert f"permission denied (you may not write in {target})" in err
    assert list(target.iterdir()) == []


def _must_not_run(*a, **k):
    raise AssertionError("the work started before the output was checked")


@pytest.mark.parametrize("command", ["search", "export", "predict", "ensemble", "report"])
def test_permission_denied_while_creating(finished_run, tmp_path, capsys, monkeypatch,
                                          command):
    target = tmp_path / "locked"
    argv, what = _commands(finished_run, tmp_path, target)[command]
    real = pathlib.Path.mkdir

    def mkdir(self, *a, **k):
        if self == target or target in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert f"cannot create {what}" in err and f" {target}" in err   # "export (folder)"
    assert "permission denied (you may not write in" in err
    assert not target.exists()


def test_unreadable_parent_of_the_run_directory(tmp_path, capsys, monkeypatch):
    """The case reported: `Path.exists` itself raises (a folder one may not even look into)."""
    npz = str(make_tiny_npz(tmp_path / "tiny.npz"))
    locked = tmp_path / "locked"
    real = pathlib.Path.exists

    def exists(self, *a, **k):
        if self == locked or locked in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "exists", exists)
    assert main(["search", "--dataset", npz, "--out", str(locked / "run"), *_sets()]) == 2
    err = _one_error_line(capsys)
    assert f"cannot create run directory {locked / 'run'}: permission denied" in err


def test_system_errors_anywhere_else(finished_run, capsys, monkeypatch):
    """A path error that no check caught is still the user's (2); a full disk is not (1)."""
    import errno

    import morphclimb.commands

    def fail(error):
        def show(*a, **k):
            raise error
        return show

    monkeypatch.setattr(morphclimb.commands, "show_run",
                        fail(PermissionError(errno.EACCES, "Permission denied", "/x/y")))
    assert main(["show", str(finished_run)]) == 2
    assert "Permission denied: '/x/y'" in _one_error_line(capsys)
    monkeypatch.setattr(morphclimb.commands, "show_run",
                        fail(OSError(errno.ENOSPC, "No space left on device")))
    assert main(["show", str(finished_run)]) == 1
    assert "No space left on device" in capsys.readouterr().err


# ------------------------------------------------------------ 6. config keys

def test_keys_in_any_case_everywhere(tmp_path):
    assert parse_sets(["n_NM=5", "LR_Start=0.1"]) == {"n_nm": 5, "lr_start": 0.1}
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"N_NM": 3, "Epoch_Final": 2}))
    c = resolve("demo", f, {"N_Steps": 1}, ["n_NEIGH=2"])
    assert (c.n_nm, c.epoch_final, c.n_steps, c.n_neigh) == (3, 2, 1, 2)
    assert SearchConfig.from_dict({"n_NM": 4}).n_nm == 4
    assert SearchConfig().replace(N_NM=7).n_nm == 7
    with pytest.raises(ConfigError, match=r"n_nm given twice with different values \(as 'n_nm' "
                                          r"and 'n_NM'\)"):
        resolve(None, None, {"n_nm": 1, "n_NM": 2})


def test_resume_accepts_keys_in_any_case(finished_run, tmp_path):
    import shutil

    import morphclimb as mc
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    mc.resume(run, LR_START=0.01)
    changed = [json.loads(x) for x in (run / "journal.jsonl").read_text().splitlines()
               if '"config_changed"' in x]
    assert changed[-1]["changes"] == {"lr_start": 0.01}


def test_paper_spelling_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--out", str(out), "--set", "n_NM=-1"]) == 2
    assert "n_nm must be >= 0" in _one_error_line(capsys)   # read as n_nm, then checked
    assert not out.exists()


@pytest.mark.parametrize("key, hint", [("n_nmm", "did you mean 'n_nm'?"),
                                       ("lr_strat", "did you mean 'lr_start'"),
                                       ("epochs_final", "did you mean 'epoch_final', 'epoch_"),
                                       ("zzzz", "`morphclimb search --help` lists the keys")])
def test_unknown_key_suggests_instead_of_listing_all(tmp_path, capsys, key, hint):
    assert main(["search", "--out", str(tmp_path / "r"), "--set", f"{key}=1"]) == 2
    err = _one_error_line(capsys)
    assert f"unknown config key {key!r}" in err and hint in err
    assert len(err) < 160 and "keep_weights" not in err   # not a dump of all keys


def test_ensemble_of_one_run_writes_its_out_file(finished_run, tmp_path, capsys):
    """`ensemble RUN --out FILE` writes the snapshot ensemble's result, as for several runs."""
    import shutil
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    out = tmp_path / "sub" / "e.json"
    assert main(["ensemble", str(run), "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["members"] == ["final"]
    assert main(["ensemble", str(run), "--out", str(out)]) == 2
    assert "already exists" in _one_error_line(capsys)
