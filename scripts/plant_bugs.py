#!/usr/bin/env python3
"""Plant realistic bugs one at a time and see which tests catch each (docs/mutation.md).

Each bug in scripts/planted_bugs.json is a few lines changed in one file (`old` -> `new`,
the first occurrence), the promise it breaks and the tests to run. The script copies src/,
tests/ and pyproject.toml to a scratch folder (the working tree is never changed), plants
each bug there alone, runs its tests with that copy first on the import path, and prints a
Markdown row per bug: the tests that failed, or SURVIVED. Exit status 1 when a bug survived
or its `old` text is no longer in the code (the list must follow the code).

    .venv/bin/python scripts/plant_bugs.py                 # every bug
    .venv/bin/python scripts/plant_bugs.py 'API*' probe    # bugs whose name matches
    .venv/bin/python scripts/plant_bugs.py --all-failures  # every failing test, not the first
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="only bugs whose name matches (glob or part)")
    ap.add_argument("--all-failures", action="store_true",
                    help="run each bug's tests to the end and list every failure")
    ap.add_argument("--bugs", default=str(ROOT / "scripts" / "planted_bugs.json"))
    args = ap.parse_args()
    bugs = json.loads(Path(args.bugs).read_text())
    if args.names:
        bugs = [b for b in bugs if any(fnmatch.fnmatch(b["name"], n) or n in b["name"]
                                       for n in args.names)]
    bad = 0
    with tempfile.TemporaryDirectory(prefix="morphclimb-plant-") as tmp:
        work = Path(tmp)
        for part in ("src", "tests"):
            shutil.copytree(ROOT / part, work / part,
                            ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", work)
        env = dict(os.environ, PYTHONPATH=str(work / "src"))
        print("| planted bug | file | promise it breaks | caught by |")
        print("| --- | --- | --- | --- |")
        for b in bugs:
            path = work / b["file"]
            src = path.read_text()
            if b["old"] not in src:
                print(f"| {b['name']} | `{b['file']}` | {b['promise']} | STALE: its code "
                      "is gone |", flush=True)
                bad += 1
                continue
            path.write_text(src.replace(b["old"], b["new"], 1))
            try:
                cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       *([] if args.all_failures else ["-x"]), *b["tests"]]
                r = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                                   timeout=1800)
            finally:
                path.write_text(src)
            failed = [line.split(" ", 1)[1].split(" - ")[0] for line in r.stdout.splitlines()
                      if line.startswith(("FAILED ", "ERROR "))]
            caught = ", ".join(f"`{f}`" for f in failed) if r.returncode else "SURVIVED"
            bad += not r.returncode
            print(f"| {b['name']} | `{b['file']}` | {b['promise']} | {caught} |", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
