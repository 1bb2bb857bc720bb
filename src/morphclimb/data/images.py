"""Decoding image files or bytes with Pillow into uint8 H x W x C arrays."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

# Pillow modes we keep as they are, by channel count; others are converted first.
_KEEP = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_CONVERT = {"1": "L", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "La": "LA",
            "RGBa": "RGBA", "RGBX": "RGB", "PA": "RGBA"}
# The Pillow mode of each channel count.
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
# The mode images of a given channel count are promoted to when a dataset mixes counts.
_PROMOTE = {(1, 3): "RGB", (1, 4): "RGBA", (2, 3): "RGBA", (2, 4): "RGBA", (3, 4): "RGBA",
            (1, 2): "LA"}


def decode(source: str | Path | bytes | memoryview, where: str | Path) -> np.ndarray:
    """Decode one image (a path or encoded bytes) to uint8 (H, W, C); `where` names it."""
    try:
        fp = io.BytesIO(source) if isinstance(source, (bytes, memoryview)) else source
        with Image.open(fp) as im:
            im = _normalise(im, where)
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            Image.DecompressionBombError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot decode image {where}: {e}") from e
    return arr[:, :, None] if arr.ndim == 2 else arr


def _normalise(im: Image.Image, where) -> Image.Image:
    """Convert to one of L, LA, RGB, RGBA (palette images keep their transparency)."""
    mode = im.mode
    if mode in _KEEP:
        return im
    if mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if mode in _CONVERT:
        return im.convert(_CONVERT[mode])
    raise DataError(f"image {where} has Pillow mode {mode!r}; only 8-bit grey, grey+alpha, RGB "
                    f"and RGBA images (and ones convertible to them) are supported")


def stack(arrays: Sequence[np.ndarray], names: Sequence[str | Path]) -> np.ndarray:
    """Stack decoded images into (N, H, W, C), promoting channel counts if they are mixed.

    Raises DataError naming two files when the images have different sizes.
    """
    if not arrays:
        raise DataError("no images to stack")
    size = arrays[0].shape[:2]
    for arr, name in zip(arrays, names, strict=True):
        if arr.shape[:2] != size:
            h, w = size
            raise DataError(f"images have different sizes: {names[0]} is {w}x{h} but {name} is "
                            f"{arr.shape[1]}x{arr.shape[0]} (width x height); resize them to "
                            f"one size first")
    counts = sorted({a.shape[2] for a in arrays})
    if len(counts) > 1:
        mode = _PROMOTE.get((counts[0], counts[-1]), "RGBA")
        target = {"LA": 2, "RGB": 3, "RGBA": 4}[mode]
        arrays = [a if a.shape[2] == target else _promote(a, mode) for a in arrays]
    out = np.empty((len(arrays), *arrays[0].shape), dtype=np.uint8)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def _promote(arr: np.ndarray, mode: str) -> np.ndarray:
    """Convert one decoded image to `mode` (e.g. grey -> RGB) with Pillow."""
    im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).convert(mode)
    out = np.asarray(im)
    return out[:, :, None] if out.ndim == 2 else out


def convert_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """One decoded image (H, W, C) with `channels` channels, converted as `stack` promotes.

    Grey -> RGB and the other promotions are exactly what a dataset mixing channel counts does
    to its images; a reduction (e.g. RGB -> grey, RGBA -> RGB) is Pillow's conversion.
    """
    if arr.shape[2] == channels:
        return arr
    if channels not in _MODES:
        raise DataError(f"cannot convert images to {channels} channels (1 to 4 are supported)")
    return _promote(arr, _MODES[channels])


def resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One decoded image (H, W, C) resized to `size` (H, W) by Pillow's bicubic filter.

    The same as resizing the file with Pillow's `Image.resize` defaults before decoding it.
    """
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    out = np.asarray(im.resize((w, h), Image.Resampling.BICUBIC))
    return out[:, :, None] if out.ndim == 2 else out


def decode_packed(data: np.ndarray, offsets: np.ndarray, where: str | Path) -> np.ndarray:
    """Decode images stored back to back in `data` (uint8) at `offsets` (N + 1 int64)."""
    buf = memoryview(np.ascontiguousarray(data, dtype=np.uint8)).cast("B")
    n = len(offsets) - 1
    arrays = []
    for i in range(n):
        arr = decode(buf[offsets[i]:offsets[i + 1]], f"{where} [image {i}]")
        if i == 0:
            out = np.empty((n, *arr.shape), dtype=np.uint8)
        elif arr.shape != out.shape[1:]:  # mixed sizes or channels: take the general path
            arrays = [out[j] for j in range(i)] + [arr]
            break
        out[i] = arr
    else:
        return out
    arrays += [decode(buf[offsets[j]:offsets[j + 1]], f"{where} [image {j}]")
               for j in range(i + 1, n)]
    return stack(arrays, [f"{where} [image {j}]" for j in range(n)])
