"""Tests of the data layer: every loader on files written in its format, downloads, splits."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from morphclimb.data import (
    CIFAR_SOURCES,
    Dataset,
    ImageData,
    Split,
    dataset_info,
    load_cifar,
    load_dataset,
    load_npz,
)
from morphclimb.data import arrays as arrays_mod
from morphclimb.data import folder as folder_mod
from morphclimb.errors import DataError

C10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ---------------------------------------------------------------- official CIFAR files

def _planar(x: np.ndarray) -> np.ndarray:
    """N x 32 x 32 x 3 -> the official N x 3072 channel-planar rows."""
    return x.transpose(0, 3, 1, 2).reshape(len(x), 3072)


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 4, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Write cifar-10-batches-py/ in the official format; return (x, y, x_test, y_test)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    x = rng.integers(0, 256, (5 * per_batch, 32, 32, 3), dtype=np.uint8)
    y = np.arange(5 * per_batch) % 10
    for i in range(5):
        sl = slice(i * per_batch, (i + 1) * per_batch)
        _dump(folder / f"data_batch_{i + 1}", {
            b"batch_label": f"training batch {i + 1} of 5".encode(), b"labels": y[sl].tolist(),
            b"data": _planar(x[sl]), b"filenames": [b"img.png"] * per_batch})
    xt = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
    yt = (np.arange(per_batch) * 3) % 10
    _dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": yt.tolist(),
                                  b"data": _planar(xt), b"filenames": [b"t.png"] * per_batch})
    _dump(folder / "batches.meta", {b"num_cases_per_batch": per_batch,
                                    b"label_names": [c.encode() for c in C10], b"num_vis": 3072})
    return x, y, xt, yt


def write_cifar100(root: Path, n: int = 12) -> tuple[np.ndarray, ...]:
    """Write cifar-100-python/ in the official format."""
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    x, xt = (rng.integers(0, 256, (k, 32, 32, 3), dtype=np.uint8) for k in (n, n // 2))
    y, yt = np.arange(n) * 7 % 100, np.arange(n // 2) * 13 % 100
    for name, xs, ys in (("train", x, y), ("test", xt, yt)):
        _dump(folder / name, {b"filenames": [b"f.png"] * len(xs), b"batch_label": b"x",
                              b"fine_labels": ys.tolist(), b"coarse_labels": (ys // 5).tolist(),
                              b"data": _planar(xs)})
    _dump(folder / "meta", {b"fine_label_names": [f"c{i:02d}".encode() for i in range(100)],
                            b"coarse_label_names": [f"s{i}".encode() for i in range(20)]})
    return x, y, xt, yt


def test_cifar10_official_files(tmp_path):
    x, y, xt, yt = write_cifar10(tmp_path)
    ds = load_dataset("cifar10", root=tmp_path, download=False)
    assert ds.name == "cifar10" and ds.classes == C10 and ds.num_classes == 10
    assert np.array_equal(ds.train.x, x) and np.array_equal(ds.train.y, y)
    assert np.array_equal(ds.test.x, xt) and np.array_equal(ds.test.y, yt)
    assert ds.train.x.flags.c_contiguous and ds.train.y.dtype == np.int64
    assert (ds.image_size, ds.channels) == ((32, 32), 3)


def test_cifar100_fine_labels(tmp_path):
    x, y, xt, yt = write_cifar100(tmp_path)
    ds = load_dataset("cifar100", root=tmp_path, download=False)
    assert ds.num_classes == 100 and ds.classes[7] == "c07"
    assert np.array_equal(ds.train.x, x) and np.array_equal(ds.train.y, y)
    assert np.array_equal(ds.test.y, yt)


def test_cifar_missing_folder_without_download(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-batches-py not found.*download=True"):
        load_dataset("cifar10", root=tmp_path, download=False)


def test_cifar_missing_and_corrupt_batches(tmp_path):
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"missing file .*data_batch_3"):
        load_cifar("cifar10", tmp_path, download=False)
    (folder / "data_batch_3").write_bytes(b"\x80\x02}q\x00(X")  # truncated pickle
    with pytest.raises(DataError, match=r"corrupt file .*data_batch_3"):
        load_cifar("cifar10", tmp_path, download=False)


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    _dump(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": Evil()})
    with pytest.raises(DataError, match=r"corrupt file .*test_batch.*refusing to load posix"):
        load_cifar("cifar10", tmp_path, download=False)


def test_cifar_label_out_of_range(tmp_path):
    x, y, _, _ = write_cifar10(tmp_path)
    y = y[:4].copy()
    y[2] = 10
    _dump(tmp_path / "cifar-10-batches-py" / "data_batch_1",
          {b"labels": y.tolist(), b"data": _planar(x[:4])})
    with pytest.raises(DataError, match=r"data_batch_1: label 10 at index 2 is out of range"):
        load_cifar("cifar10", tmp_path, download=False)


# ---------------------------------------------------------------- downloads (127.0.0.1 only)

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (base url, served dir)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()
    httpd.server_close()


def _archive(src_root: Path, folder: str, dest: Path) -> str:
    """tar.gz `src_root/folder` as the official archives are laid out; return its md5."""
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src_root / folder, arcname=folder)
    return hashlib.md5(dest.read_bytes()).hexdigest()


def test_download_quiet_and_checked(tmp_path, server, capsys):
    url, www = server
    x, y, _, _ = write_cifar10(tmp_path / "src")
    md5 = _archive(tmp_path / "src", "cifar-10-batches-py", www / "cifar-10-python.tar.gz")
    root = tmp_path / "data"
    ds = load_cifar("cifar10", root, url=f"{url}/cifar-10-python.tar.gz", md5=md5)
    assert np.array_equal(ds.train.x, x) and np.array_equal(ds.train.y, y)
    assert (root / "cifar-10-python.tar.gz").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py",
                                                      "cifar-10-python.tar.gz"]
    assert capsys.readouterr() == ("", "")


def test_download_through_load_dataset_with_progress(tmp_path, server, capsys, monkeypatch):
    url, www = server
    write_cifar100(tmp_path / "src")
    md5 = _archive(tmp_path / "src", "cifar-100-python", www / "c100.tar.gz")
    monkeypatch.setitem(CIFAR_SOURCES, "cifar100", dataclasses.replace(
        CIFAR_SOURCES["cifar100"], url=f"{url}/c100.tar.gz", md5=md5))
    ds = load_dataset("cifar100", root=tmp_path / "data", progress=True)
    assert len(ds.train) == 12
    err = capsys.readouterr().err
    assert "c100.tar.gz" in err and "100%" in err


def test_download_checksum_failure(tmp_path, server):
    url, www = server
    write_cifar10(tmp_path / "src")
    md5 = _archive(tmp_path / "src", "cifar-10-batches-py", www / "cifar-10-python.tar.gz")
    root = tmp_path / "data"
    with pytest.raises(DataError, match=f"checksum mismatch .*expected md5 {'0' * 32}, got {md5}"):
        load_cifar("cifar10", root, url=f"{url}/cifar-10-python.tar.gz", md5="0" * 32)
    assert list(root.iterdir()) == []  # nothing half-downloaded is left behind


def test_download_http_error(tmp_path, server):
    url, _ = server
    with pytest.raises(DataError, match=r"could not download .*/missing.tar.gz.*404"):
        load_cifar("cifar10", tmp_path, url=f"{url}/missing.tar.gz", md5="0" * 32)


def test_existing_archive_is_checked_and_truncated_archive_reported(tmp_path):
    write_cifar10(tmp_path / "src")
    root = tmp_path / "data"
    root.mkdir()
    full = tmp_path / "full.tar.gz"
    _archive(tmp_path / "src", "cifar-10-batches-py", full)
    cut = root / "cifar-10-python.tar.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(DataError, match=r"existing file .*cifar-10-python.tar.gz: expected md5"):
        load_cifar("cifar10", root, md5="1" * 32)
    cut_md5 = hashlib.md5(cut.read_bytes()).hexdigest()
    with pytest.raises(DataError, match=r"cannot unpack .*cifar-10-python.tar.gz.*truncated"):
        load_cifar("cifar10", root, md5=cut_md5)
    assert not (root / "cifar-10-batches-py").exists()


@pytest.mark.parametrize("kind", ["escape", "symlink"])
def test_unsafe_archive_members_refused(tmp_path, kind):
    root = tmp_path / "data"
    root.mkdir()
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../evil.txt" if kind == "escape" else "cifar-10-batches-py/x")
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info, io.BytesIO(b"") if kind == "escape" else None)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    pattern = "would be written outside" if kind == "escape" else "links and devices are refused"
    with pytest.raises(DataError, match=pattern):
        load_cifar("cifar10", root, md5=md5)
    assert not (tmp_path / "evil.txt").exists() and not (root / "cifar-10-batches-py").exists()


# ---------------------------------------------------------------- image-folder trees

def _img(path: Path, arr: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path, **kw)


def write_tree(root: Path, channels: int = 3, size=(6, 5), per_class: int = 3) -> dict:
    """cat/dog/emu classes; PNG (exact) for train, JPEG for test. Returns {relpath: array}."""
    rng = np.random.default_rng(2)
    written = {}
    for part, ext in (("train", "png"), ("test", "jpg")):
        for cls in ("dog", "cat", "emu"):
            for i in range(per_class):
                arr = rng.integers(0, 256, (*size, channels), dtype=np.uint8)
                if ext == "jpg":  # one flat colour, which JPEG keeps almost exactly
                    arr = np.broadcast_to(arr[:1, :1], arr.shape).copy()
                rel = f"{part}/{cls}/{i:03d}.{ext}"
                _img(root / rel, arr, **({"quality": 95} if ext == "jpg" else {}))
                written[rel] = arr
    return written


def test_folder_tree_png_and_jpeg(tmp_path):
    written = write_tree(tmp_path / "pets")
    ds = load_dataset(str(tmp_path / "pets"), root=tmp_path / "cache")
    assert ds.name == "pets" and ds.classes == ("cat", "dog", "emu")
    assert ds.train.x.shape == (9, 6, 5, 3) and ds.test.x.shape == (9, 6, 5, 3)
    assert ds.train.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert np.array_equal(ds.train.x[3], written["train/dog/000.png"])  # PNG is lossless
    assert np.abs(ds.test.x[0].astype(int) - written["test/cat/000.jpg"]).max() <= 3
    assert (tmp_path / "pets" / ".morphclimb-cache.npz").is_file()


@pytest.mark.parametrize("channels", [1, 4])
def test_folder_grey_and_rgba(tmp_path, channels):
    rng = np.random.default_rng(3)
    for cls in ("a", "b"):
        for part in ("train", "test"):
            _img(tmp_path / part / cls / "0.png",
                 rng.integers(0, 256, (4, 4, channels), dtype=np.uint8))
    ds = load_dataset(tmp_path)
    assert ds.channels == channels and ds.image_size == (4, 4)


def test_folder_mixed_grey_and_rgb_promoted(tmp_path):
    grey = np.full((4, 4, 1), 77, np.uint8)
    _img(tmp_path / "train/a/0.png", grey)
    _img(tmp_path / "train/b/0.png", np.zeros((4, 4, 3), np.uint8))
    _img(tmp_path / "test/a/0.png", grey)
    _img(tmp_path / "test/b/0.png", grey)
    ds = load_dataset(tmp_path)
    assert ds.channels == 3 and np.all(ds.train.x[0] == 77)


def test_folder_cache_reused_and_invalidated(tmp_path, monkeypatch):
    root = tmp_path / "pets"
    write_tree(root)
    first = load_dataset(root)
    real = folder_mod.decode

    def boom(*a):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(folder_mod, "decode", boom)
    again = load_dataset(root)
    assert np.array_equal(first.train.x, again.train.x)
    new = np.full((6, 5, 3), 200, np.uint8)
    _img(root / "train/cat/001.png", new)
    os.utime(root / "train/cat/001.png", ns=(1, 1))  # a changed mtime alone invalidates it
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(root)
    monkeypatch.setattr(folder_mod, "decode", real)
    assert np.array_equal(load_dataset(root).train.x[1], new)


def test_folder_cache_falls_back_when_tree_not_writable(tmp_path, monkeypatch):
    root = tmp_path / "pets"
    write_tree(root)
    (root / ".morphclimb-cache.npz").mkdir()  # the cache cannot be written there
    first = load_dataset(root, root=tmp_path / "cache")
    cached = list((tmp_path / "cache" / "folders").glob("pets-*.npz"))
    assert len(cached) == 1
    monkeypatch.setattr(folder_mod, "decode", lambda *a: 1 / 0)
    assert np.array_equal(load_dataset(root, root=tmp_path / "cache").train.x, first.train.x)


def test_folder_without_test_holds_out_a_sixth(tmp_path):
    for cls in ("a", "b"):
        for i in range(12):
            _img(tmp_path / f"train/{cls}/{i}.png", np.full((2, 2, 3), i, np.uint8))
    ds = load_dataset(tmp_path)
    assert (len(ds.train), len(ds.test)) == (20, 4)
    assert np.bincount(ds.test.y).tolist() == [2, 2]


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match=r"no such file or directory: .*nowhere"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no train/ folder in .*"):
        load_dataset(tmp_path)
    write_tree(tmp_path / "t")
    (tmp_path / "t/train/fox").mkdir()
    (tmp_path / "t/test/fox").mkdir()
    with pytest.raises(DataError, match=r"class folder .*train/fox has no images"):
        load_dataset(tmp_path / "t")
    _img(tmp_path / "t/train/fox/0.png", np.zeros((6, 5, 3), np.uint8))
    with pytest.raises(DataError, match=r"missing \[\], extra \['gnu'\]"):
        (tmp_path / "t/test/gnu").mkdir()
        load_dataset(tmp_path / "t")


def test_folder_mixed_sizes_and_corrupt_image(tmp_path):
    write_tree(tmp_path)
    _img(tmp_path / "train/dog/009.png", np.zeros((7, 5, 3), np.uint8))
    with pytest.raises(DataError, match=r"different sizes: .*train/cat/000.png is 5x6 but "
                                        r".*train/dog/009.png is 5x7"):
        load_dataset(tmp_path)
    (tmp_path / "train/dog/009.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"cannot decode image .*train/dog/009.png"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------- .npz files

def test_npz_with_test_arrays_and_classes(tmp_path):
    rng = np.random.default_rng(4)
    x, xt = rng.integers(0, 256, (10, 3, 3, 2), np.uint8), rng.integers(0, 256, (4, 3, 3, 2),
                                                                         np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10) % 3, x_test=xt, y_test=np.array([0, 1, 2, 0]),
             classes=np.array(["r", "s", "t"]))
    ds = load_dataset(tmp_path / "d.npz")
    assert ds.name == "d" and ds.classes == ("r", "s", "t") and ds.channels == 2
    assert np.array_equal(ds.train.x, x) and np.array_equal(ds.test.x, xt)


def test_npz_without_test_holds_out_a_stratified_sixth(tmp_path):
    y = np.repeat([0, 1, 2], 12)
    x = np.arange(36, dtype=np.uint8).reshape(36, 1, 1, 1)
    np.savez_compressed(tmp_path / "d.npz", x=x, y=y.astype(np.int32))
    a, b = load_npz(tmp_path / "d.npz"), load_npz(tmp_path / "d.npz")
    assert a.classes == ("0", "1", "2") and (len(a.train), len(a.test)) == (30, 6)
    assert np.bincount(a.test.y).tolist() == [2, 2, 2]
    assert np.array_equal(a.test.x, b.test.x)  # seeded
    assert not set(a.test.x.ravel()) & set(a.train.x.ravel())


def test_npz_encoded_images(tmp_path):
    rng = np.random.default_rng(5)
    imgs = rng.integers(0, 256, (3, 4, 4, 3), np.uint8)
    blobs = []
    for im in imgs:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    np.savez(tmp_path / "e.npz", x_encoded=np.frombuffer(b"".join(blobs), np.uint8),
             x_offsets=offsets, y=np.array([0, 1, 1]), x_test=imgs[:1], y_test=np.array([1]))
    ds = load_npz(tmp_path / "e.npz")
    assert np.array_equal(ds.train.x, imgs)
    other = io.BytesIO()
    Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(other, format="PNG")
    for blob, pattern in ((other.getvalue(), r"\[image 0\] is 4x4 but .*\[image 2\] is 4x5"),
                          (blobs[2][:20], r"cannot decode image .*e.npz:x_encoded \[image 2\]")):
        data = b"".join(blobs[:2]) + blob
        np.savez(tmp_path / "e.npz", x_encoded=np.frombuffer(data, np.uint8), y=np.array([0, 1, 1]),
                 x_offsets=np.array([0, len(blobs[0]), len(blobs[0]) + len(blobs[1]), len(data)]))
        with pytest.raises(DataError, match=pattern):
            load_npz(tmp_path / "e.npz")


@pytest.mark.parametrize("arrays, pattern", [
    ({"x": np.zeros((2, 2, 2, 3), np.float32), "y": np.zeros(2)}, r"'x' is a float32 array"),
    ({"x": np.zeros((2, 2, 2), np.uint8), "y": np.zeros(2, int)}, r"shape \(2, 2, 2\); expected"),
    ({"x": np.zeros((2, 2, 2, 1), np.uint8), "y": np.zeros(3, int)}, r"'y' is a int64 array of "
                                                                     r"shape \(3,\); expected 2"),
    ({"x": np.zeros((2, 2, 2, 1), np.uint8), "y": np.zeros(2)}, r"'y' is a float64"),
    ({"y": np.zeros(2, int)}, r"no 'x' array"),
    ({"x": np.zeros((2, 1, 1, 1), np.uint8), "y": np.array([0, 2]),
      "classes": np.array(["a", "b"])}, r"\(y\): label 2 at index 1 is out of range \[0, 2\)"),
    ({"x": np.zeros((2, 1, 1, 1), np.uint8), "y": np.array([0, -1])}, r"label -1 at index 1"),
    ({"x": np.zeros((2, 1, 1, 1), np.uint8), "y": np.array([0, 1]),
      "x_test": np.zeros((1, 1, 1, 1), np.uint8)}, r"no 'y_test' array"),
])
def test_npz_errors(tmp_path, arrays, pattern):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(tmp_path / "bad.npz")
    assert "bad.npz" in str(info.value)


def test_npz_corrupt_and_dispatch_errors(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(DataError, match=r"corrupt file .*junk.npz"):
        load_dataset(tmp_path / "junk.npz")
    with pytest.raises(DataError, match=r"missing file .*gone.npz"):
        load_npz(tmp_path / "gone.npz")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type '.txt'"):
        load_dataset(tmp_path / "a.txt")
    with pytest.raises(DataError, match=r"unknown dataset 'imagenet'; known names: mini-cifar10, "
                                        r"cifar10, cifar100"):
        load_dataset("imagenet")


# ---------------------------------------------------------------- splits and containers

def fake(name: str, per_class: int, classes: int = 10, size: int = 2, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    n = per_class * classes
    y = rng.permutation(np.arange(n) % classes)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    test = ImageData(x[:classes], np.arange(classes))
    return Dataset(name, ImageData(x, y), test, tuple(f"k{i}" for i in range(classes)))


def test_cifar_split_is_the_papers_40k_10k():
    ds = fake("cifar10", 5000)
    s = ds.split()
    assert (len(s.train), len(s.val), len(s.test)) == (40_000, 10_000, 10)
    assert np.bincount(s.val.y).tolist() == [1000] * 10
    assert len(s.train_full) == 50_000 and isinstance(s, Split)
    again, other = ds.split(), ds.split(seed=1)
    assert np.array_equal(s.val.x, again.val.x) and not np.array_equal(s.val.x, other.val.x)


def test_split_disjoint_stratified_and_stats():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    x = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1).repeat(2, axis=3)
    ds = Dataset("other", ImageData(x, y), ImageData(x[:3], y[:3]), ("a", "b", "c"))
    s = ds.split()  # default 0.2 for datasets not named cifar10/cifar100
    assert np.bincount(s.val.y).tolist() == [10, 6, 4]
    ids_train, ids_val = set(s.train.x[:, 0, 0, 0]), set(s.val.x[:, 0, 0, 0])
    assert not ids_train & ids_val and len(ids_train | ids_val) == 100
    flat = s.train.x.reshape(-1, 2) / 255.0
    assert np.allclose(s.mean, flat.mean(0)) and np.allclose(s.std, flat.std(0))
    assert len(ds.split(val=7).val) == 7 and s.num_classes == 3 and s.channels == 2


@pytest.mark.parametrize("val, pattern", [
    (100, r"val=100 asks for 100 of 100"), (1.5, r"fraction must lie in \(0, 1\)"),
    ("x", r"val must be an int"), (True, r"val must be an int"),
])
def test_split_rejects_bad_val(val, pattern):
    ds = fake("other", 10)
    with pytest.raises(DataError, match=pattern):
        ds.split(val=val)


def test_split_needs_a_training_image_in_every_class():
    ds = Dataset("d", ImageData(np.zeros((4, 1, 1, 1), np.uint8), np.array([0, 0, 1, 1])),
                 ImageData(np.zeros((1, 1, 1, 1), np.uint8), np.array([2])), ("a", "b", "c"))
    with pytest.raises(DataError, match=r"class 'c' has 0 training images"):
        ds.split(val=1)
    with pytest.raises(DataError, match=r"cifar10.*val=10000 asks for 10000 of 100"):
        fake("cifar10", 10).split()


def test_containers_validate():
    with pytest.raises(DataError, match=r"uint8 array of shape \(N, H, W, C\), got float64"):
        ImageData(np.zeros((1, 2, 2, 3)), np.zeros(1, int))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        ImageData(np.zeros((2, 2, 2, 3), np.uint8), np.zeros(3, int))
    d = ImageData(np.zeros((3, 2, 2, 1), np.uint8), np.array([0, 1, 2], np.int32))
    assert d.y.dtype == np.int64 and len(d.subset([0, 2])) == 2
    assert len(ImageData.concat(d, d.subset(slice(0, 1)))) == 4
    with pytest.raises(DataError, match="cannot concatenate"):
        ImageData.concat(d, ImageData(np.zeros((1, 3, 3, 1), np.uint8), np.zeros(1, int)))
    with pytest.raises(DataError, match=r"dataset 'd' \(test\): label 5 at index 0"):
        Dataset("d", d, ImageData(d.x[:1], np.array([5])), ("a", "b", "c"))


# ---------------------------------------------------------------- the bundled mini CIFAR-10

def test_bundled_mini_cifar10():
    assert arrays_mod.MINI_CIFAR10.stat().st_size <= 6_000_000
    ds = load_dataset()
    assert ds.name == "mini-cifar10" and ds.classes == C10
    assert ds.train.x.shape == (10_000, 32, 32, 3) and len(ds.test) == 2_000
    assert np.bincount(ds.train.y).tolist() == [1000] * 10
    assert np.bincount(ds.test.y).tolist() == [200] * 10
    means = ds.train.x.reshape(-1, 3).mean(0)
    assert np.allclose(means, [125.3, 122.9, 113.9], atol=3)  # CIFAR-10's channel means
    s = ds.split()
    assert (len(s.train), len(s.val)) == (8000, 2000)
    ds.train.x[0] = 0  # callers get their own writable copy
    assert load_dataset("mini-cifar10").train.x[0].any()
    info = dataset_info(s)
    assert info["sizes"] == {"train": 8000, "val": 2000, "test": 2000}
    assert info["image_size"] == [32, 32] and info["classes"][0] == "airplane"
    assert dataset_info(ds)["sizes"] == {"train": 10_000, "test": 2_000}
