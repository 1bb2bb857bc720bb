"""NASH unchanged: the same small NASH search with two versions of morphclimb, compared.

Runs the demo preset at a small scale (1,500 images, 1 epoch everywhere, 2 steps, no
baseline, reference or retrain) once with the library of another source tree (a git worktree
of an older commit) and once with this tree's, on this machine, then compares the journals
(every record, its times and the training curves aside), config.json and the final model's
weights byte for byte:

    git worktree add /tmp/old <commit>
    .venv/bin/python benchmarks/nash_unchanged.py /tmp/old/src

Prints what differs, or that nothing does; exit status 1 when something differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import sys
from morphclimb.config import resolve
from morphclimb.nash import hill_climb
cfg = resolve("demo", overrides=dict(subset=1500, epoch_pretrain=1, epoch_neigh=1,
              epoch_final=1, threads=1, baseline=False, reference=None,
              final_model="search", n_steps=2))
hill_climb(cfg, sys.argv[1])
"""
VOLATILE = ("clock", "seconds", "curves", "run_dir", "time")


def run(src: Path, out: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(src))
    subprocess.run([sys.executable, "-c", RUN, str(out)], env=env, check=True)


def journal(run_dir: Path) -> list[dict]:
    recs = [json.loads(x) for x in (run_dir / "journal.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in recs]


def main() -> int:
    old = Path(sys.argv[1]).resolve()
    new = Path(__file__).resolve().parents[1] / "src"
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "old", Path(tmp) / "new"
        run(old, a)
        run(new, b)
        diffs = []
        ja, jb = journal(a), journal(b)
        if ja != jb:
            k = next((i for i, (x, y) in enumerate(zip(ja, jb)) if x != y), min(len(ja), len(jb)))
            diffs.append(f"journals differ from record {k} ({len(ja)} and {len(jb)} records)")
        for f in ("config.json", "models/final/weights.safetensors"):
            if (a / f).read_bytes() != (b / f).read_bytes():
                diffs.append(f"{f} differs")
        print(f"{old} against {new}: " + ("; ".join(diffs) if diffs else
              f"the same journal ({len(ja)} records), config.json and final weights"))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
