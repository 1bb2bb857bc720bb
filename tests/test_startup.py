"""The command answers what needs no tensors (help, argument and config errors, `show`) without
importing torch, and the package's public API still loads on first use."""

from __future__ import annotations

import resource
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

OLD_RUN = Path(__file__).parent / "data" / "run_v0"
HEAVY = ("torch", "safetensors", "matplotlib", "PIL", "tqdm")


def _loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running `code`."""
    body = "".join(f"        {line}\n" for line in code.splitlines())
    probe = ("import sys, contextlib, io\n"
             "with contextlib.redirect_stdout(io.StringIO()), "
             "contextlib.redirect_stderr(io.StringIO()):\n"
             "    try:\n" + body + "    except SystemExit:\n        pass\n"
             f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return [m for m in res.stdout.strip().split(",") if m]


@pytest.mark.parametrize("code", [
    "import morphclimb",
    "import morphclimb; morphclimb.__version__; morphclimb.SearchConfig; morphclimb.Arch",
    "import morphclimb.cli",
    "from morphclimb.cli import main; main(['--help'])",
    "from morphclimb.cli import main; main(['search', '--help'])",
    "from morphclimb.cli import main; main(['search', '--bogus'])",
    "from morphclimb.cli import main; main(['search', '--set', 'n_nmm=3'])",
    "from morphclimb.cli import main; main(['search', '--set', 'n_NM=-1'])",
])
def test_no_torch_without_tensors(code):
    assert _loaded_after(code) == []


def test_show_reads_a_run_without_torch(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    code = ("from morphclimb.cli import main\n"
            f"assert main(['show', {str(run)!r}]) == 0\n"
            f"assert main(['show', {str(run)!r}, '--arch']) == 0\n"
            f"assert main(['show', {str(run)!r}, '--json']) == 0")
    assert "torch" not in _loaded_after(code)


def test_public_api_loads_on_first_use():
    code = ("import morphclimb as mc, torch\n"
            "import sys, morphclimb.build\n"            # the submodule build is imported...
            "from morphclimb import nash\n"
            "assert mc.build is sys.modules['morphclimb.build'].build\n"   # ...the name stays
            "arch = mc.starting_arch(3, 10, (8, 8), widths=(4, 8, 8))\n"
            "net = mc.build(arch, seed=0)\n"
            "assert isinstance(net, mc.Network) and mc.search is nash.search\n"
            "assert set(mc.__all__) <= set(dir(mc))\n"
            "from morphclimb import *\n"
            "assert resume is nash.resume and TrainConfig is mc.TrainConfig\n"
            "try:\n    mc.no_such_name\nexcept AttributeError as e:\n"
            "    assert 'no_such_name' in str(e)\nelse:\n    raise SystemExit(1)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr


def _median_seconds(cmd: list[str], runs: int = 5) -> float:
    """Median processor time (user + system) of `cmd`: on a machine shared with other work
    the wall time measures the neighbours as much as the command."""
    times = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(cmd, capture_output=True, timeout=120, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(times)


def test_help_answers_quickly():
    """`morphclimb --help` costs little more than starting Python (1.4 s when the package
    imported torch); compared with a bare interpreter, not with a fixed time."""
    bare = _median_seconds([sys.executable, "-c", "pass"])
    helped = _median_seconds([sys.executable, "-m", "morphclimb.cli", "--help"])
    assert helped < bare + 0.3, (helped, bare)


def test_training_keys_listed_without_torch_are_the_trainers():
    """config.TRAIN_KEYS (read by the CLI's help without torch) are TrainConfig's fields."""
    import dataclasses

    from morphclimb.config import TRAIN_KEYS
    from morphclimb.train import TrainConfig
    assert set(TRAIN_KEYS) == {f.name for f in dataclasses.fields(TrainConfig)} - {"sgdr"}
