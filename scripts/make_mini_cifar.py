#!/usr/bin/env python
"""Build the bundled mini CIFAR-10 (src/morphclimb/data/bundled/mini_cifar10.npz), reproducibly.

Reads the CIFAR-10 JPEG image-folder archive (cifar10-jpeg.tar.gz: cifar10-jpeg/{train,test}/
<class>/NNNN.jpg) directly, picks a seeded, class-balanced choice of files per class and stores
their JPEG bytes unchanged, back to back, in a deflate-compressed .npz with fixed zip timestamps
(so the same inputs give a byte-identical file). morphclimb decodes them on load.

    .venv/bin/python scripts/make_mini_cifar.py --archive ../shared/data/cifar10-jpeg.tar.gz
"""

from __future__ import annotations

import argparse
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "src" / "morphclimb" / "data" / "bundled" / "mini_cifar10.npz"
DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_jpegs(archive: Path) -> dict[str, bytes]:
    """Every .jpg member of the archive, keyed by its path inside it."""
    out = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                out[member.name] = tar.extractfile(member).read()
    return out


def choose(files: dict[str, bytes], part: str, per_class: int, rng: np.random.Generator):
    """Seeded choice of `per_class` files per class: (jpeg bytes list, labels, file numbers)."""
    blobs, labels, numbers = [], [], []
    for label, name in enumerate(CLASSES):
        prefix = f"cifar10-jpeg/{part}/{name}/"
        names = sorted(k for k in files if k.startswith(prefix))
        if len(names) < per_class:
            raise SystemExit(f"{prefix}: only {len(names)} files, {per_class} wanted")
        picked = np.sort(rng.choice(len(names), size=per_class, replace=False))
        for i in picked:
            blobs.append(files[names[i]])
            labels.append(label)
            numbers.append(int(Path(names[i]).stem))
    return blobs, np.array(labels, dtype=np.int64), np.array(numbers, dtype=np.int32)


def packed(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated bytes (uint8) and their N + 1 offsets (int64)."""
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz readable by numpy.load, with fixed timestamps and maximum deflate compression."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def main() -> None:
    """Parse arguments, build the file, print what was written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = read_jpegs(args.archive)
    rng = np.random.default_rng(args.seed)
    train, y, train_numbers = choose(files, "train", args.train_per_class, rng)
    test, y_test, test_numbers = choose(files, "test", args.test_per_class, rng)
    x_encoded, x_offsets = packed(train)
    x_test_encoded, x_test_offsets = packed(test)
    write_npz(args.out, {
        "x_encoded": x_encoded, "x_offsets": x_offsets, "y": y,
        "x_test_encoded": x_test_encoded, "x_test_offsets": x_test_offsets, "y_test": y_test,
        "classes": np.array(CLASSES), "train_file_numbers": train_numbers,
        "test_file_numbers": test_numbers,
    })
    print(f"archive  {args.archive}  sha256 {sha256(args.archive)}")
    print(f"wrote    {args.out}  {args.out.stat().st_size:,} bytes  sha256 {sha256(args.out)}")
    print(f"images   train {len(y):,} ({args.train_per_class}/class), test {len(y_test):,} "
          f"({args.test_per_class}/class), seed {args.seed}")


if __name__ == "__main__":
    main()
