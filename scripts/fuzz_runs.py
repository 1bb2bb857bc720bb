#!/usr/bin/env python3
"""The run-file fuzzer through the command line (issue 33), with time and memory limits.

tests/test_fuzz_runs.py runs a few hundred damaged copies of a small run through the readers
in-process; this runs as many as asked through the installed `morphclimb` command, each
reader in its own process under a wall-clock timeout and an address-space limit, and prints
every case that gave a traceback, an exit status other than 0/1/2, more than one line, a
hang or a memory blow-up. Exit status 1 when any did.

    .venv/bin/python scripts/fuzz_runs.py --cases 1000 --seed 1
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import TINY, make_tiny_npz  # noqa: E402
from test_fuzz_runs import damage  # noqa: E402

READERS = [["show"], ["report", "--no-ensemble"], ["export", "--format", "safetensors"],
           ["predict", "IMG"], ["evaluate"], ["resume", "--quiet"]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per reader")
    ap.add_argument("--memory-gib", type=float, default=4.0, help="address space per reader")
    args = ap.parse_args()
    cli = Path(sys.executable).with_name("morphclimb")
    limit = int(args.memory_gib * 2 ** 30)

    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    bad, codes = [], Counter()
    with tempfile.TemporaryDirectory(prefix="morphclimb-fuzz-") as tmp:
        root = Path(tmp)
        npz = str(make_tiny_npz(root / "tiny.npz"))
        from morphclimb.config import SearchConfig
        from morphclimb.nash import hill_climb
        hill_climb(SearchConfig(**{**TINY, "dataset": npz, "n_steps": 1}), root / "run")
        from PIL import Image
        Image.new("RGB", (8, 8), (10, 200, 30)).save(root / "img.png")
        rng = np.random.default_rng(args.seed)
        for case in range(args.cases):
            run = root / "case" / "run"
            shutil.copytree(root / "run", run)
            what = damage(rng, run)
            for argv in READERS:
                cmd = [str(cli), argv[0], str(run),
                       *[str(root / "img.png") if a == "IMG" else a for a in argv[1:]]]
                try:
                    r = subprocess.run(cmd, capture_output=True, text=True,
                                       timeout=args.timeout, preexec_fn=limits)
                except subprocess.TimeoutExpired:
                    bad.append((case, what, argv[0], f"ran past {args.timeout:.0f}s"))
                    continue
                codes[r.returncode] += 1
                err = r.stderr.strip()
                if "Traceback" in err or r.returncode not in (0, 1, 2) or \
                        len(err.splitlines()) > 1:
                    bad.append((case, what, argv[0],
                                f"exit {r.returncode}: {err.splitlines()[-1] if err else ''}"))
            shutil.rmtree(root / "case")
            print(f"\rcase {case + 1}/{args.cases}, {len(bad)} bad", end="", flush=True)
    print()
    print(f"exit statuses: {dict(sorted(codes.items()))}")
    for case, what, reader, why in bad:
        print(f"case {case} ({what}): {reader}: {why[:300]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
