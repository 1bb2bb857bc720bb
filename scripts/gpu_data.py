#!/usr/bin/env python3
"""Put the CIFAR-10 JPEG archive into gpu-data/ (git-ignored) so that it travels with the tree.

    python3 scripts/gpu_data.py                  # copy ../shared/data/cifar10-jpeg.tar.gz
    python3 scripts/gpu_data.py --decode         # ... and decode it to gpu-data/cifar10-jpeg.npz
    python3 scripts/gpu_data.py --src PATH       # another copy of the archive

The archive (19 MB) is what travels: the decoded .npz (185 MB of raw pixels) is made where the
benchmark runs (benchmarks/gpu.py does it on first use, in ~5-10 s, straight from the archive:
the 60,000 files are never unpacked). The copy's SHA-256 is checked against the one published
in ../shared/data/README.md. See docs/gpu.md.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SHA256 = "a20f75dab73b9c5c6f54e35c84da477e385f34a4615399fdbaef48b0e1e1c437"
DEFAULT_SRC = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
DEST = ROOT / "gpu-data" / "cifar10-jpeg.tar.gz"


def sha256(path: Path) -> str:
    # not morphclimb.data.archive.sha256_file: importing the package needs numpy and Pillow,
    # and the copy must work under a bare python3
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, default=DEFAULT_SRC, help="the archive to copy")
    p.add_argument("--dest", type=Path, default=DEST, help="where the copy goes")
    p.add_argument("--decode", action="store_true", help="also decode it to an .npz beside it")
    args = p.parse_args(argv)
    dest = args.dest
    if dest.is_file() and sha256(dest) == SHA256:
        print(f"{dest} is already there (sha256 ok)")
    else:
        if not args.src.is_file():
            print(f"no archive at {args.src}; pass --src PATH", file=sys.stderr)
            return 1
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(args.src, tmp)
        digest = sha256(tmp)
        if digest != SHA256:
            tmp.unlink()
            print(f"{args.src}: sha256 {digest} is not the published {SHA256}", file=sys.stderr)
            return 1
        tmp.replace(dest)
        print(f"copied {args.src} -> {dest} ({dest.stat().st_size / 1e6:.1f} MB, sha256 ok)")
    if args.decode:   # needs the package's dependencies (numpy, pillow); the copy needs none
        sys.path.insert(0, str(ROOT / "src"))
        from morphclimb.data.archive import archive_to_npz
        npz = archive_to_npz(dest)
        print(f"decoded -> {npz} ({npz.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
