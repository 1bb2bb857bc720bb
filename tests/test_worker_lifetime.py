"""The local executor's workers end with the search that started them, also when it is
killed with SIGKILL mid-training, and leave no shared memory behind (issue 37)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# a search process in miniature: a local executor with two workers, each given a training
# of thousands of epochs and nothing to send back until it ends (no progress callback), so
# only a worker's own watch on its parent can end it early; then this process is killed
SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading, time
    sys.path.insert(0, sys.argv[2])
    from conftest import TINY, make_tiny_npz
    from morphclimb.config import SearchConfig
    from morphclimb.data.load import load_split
    from morphclimb.model0 import starting_arch
    from morphclimb.nash import train_config
    from morphclimb.parallel import LocalExecutor
    from morphclimb.worker import TrainTask
    npz = make_tiny_npz(sys.argv[1])
    c = SearchConfig(**{**TINY, "dataset": str(npz)})
    _, split = load_split(c)
    arch = starting_arch(3, 4, 8, widths=TINY["widths"]).to_dict()
    ex = LocalExecutor(split, "cpu", workers=2, threads=1)
    pids = [s.proc.pid for s in ex._slots]
    print(" ".join(map(str, pids)), flush=True)
    tasks = [TrainTask(f"t{i}", arch, None, 5000, train_config(c), seed=i) for i in range(2)]
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
    ex.run(tasks)
""")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self").is_dir() or not Path("/dev/shm").is_dir(),
                    reason="needs Linux's /proc and /dev/shm")
def test_workers_end_with_a_killed_search_and_free_the_shared_memory(tmp_path):
    shm_before = set(os.listdir("/dev/shm"))
    tests = str(Path(__file__).parent)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "t.npz"), tests],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(p) for p in workers)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    t = time.time()
    while time.time() - t < 3 and any(_alive(p) for p in workers):
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers), "a worker outlived the search by 3 s"
    left: set[str] = set()
    t = time.time()
    while time.time() - t < 10:
        left = {n for n in set(os.listdir("/dev/shm")) - shm_before if n.startswith("psm_")}
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"shared memory left behind: {sorted(left)}"
