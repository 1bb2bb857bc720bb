"""Batched on-device augmentation and normalisation: whole batches at once, no per-sample Python.

Also the device copy cache: `device_images` / `device_labels` upload a numpy array to an
accelerator once and hand the same device tensor to every later fit or evaluation of that
array (see `CACHED_DEVICE_TYPES`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, DataError


def crop_flip_indices(batch: int, height: int, width: int, pad: int,
                      generator: torch.Generator, device: torch.device | str = "cpu",
                      flip: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (row offsets, column offsets, flip mask) for a batch, drawn from `generator`.

    Offsets are in [0, 2*pad] (the top-left corner of the crop inside the padded image).
    """
    dy = torch.randint(0, 2 * pad + 1, (batch,), generator=generator, device=device)
    dx = torch.randint(0, 2 * pad + 1, (batch,), generator=generator, device=device)
    if flip:
        flips = torch.rand(batch, generator=generator, device=device) < 0.5
    else:
        flips = torch.zeros(batch, dtype=torch.bool, device=device)
    return dy, dx, flips


def crop_flip(x: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor,
              flips: torch.Tensor) -> torch.Tensor:
    """Zero-pad `x` (B, C, H, W) by `pad`, crop H x W at (dy, dx) and mirror where `flips`.

    One gather over the whole batch; works for any dtype (uint8 included) and device.
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    hp, wp = h + 2 * pad, w + 2 * pad
    cols = torch.arange(w, device=x.device)
    cols = torch.where(flips[:, None], cols.flip(0), cols) + dx[:, None]  # (B, W)
    rows = torch.arange(h, device=x.device) + dy[:, None]  # (B, H)
    index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, hp * wp).gather(2, index).reshape(b, c, h, w)


def random_crop_flip(x_uint8: torch.Tensor, pad: int, generator: torch.Generator,
                     flip: bool = True) -> torch.Tensor:
    """Random pad-and-crop (shift by up to `pad` pixels) and random horizontal flip of a batch.

    `x_uint8` is (B, C, H, W) on any device; `generator` must live on the same device. The
    output is a new contiguous (B, C, H, W) tensor of the same dtype.
    """
    if x_uint8.dim() != 4:
        raise ConfigError(f"random_crop_flip needs a (B, C, H, W) batch, got shape "
                          f"{tuple(x_uint8.shape)}")
    if not isinstance(pad, int) or pad < 0:
        raise ConfigError(f"pad must be a non-negative integer, got {pad!r}")
    b, _, h, w = x_uint8.shape
    dy, dx, flips = crop_flip_indices(b, h, w, pad, generator, x_uint8.device, flip)
    return crop_flip(x_uint8, pad, dy, dx, flips)


def normalizer(mean: Sequence[float], std: Sequence[float], channels: int,
               device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of shape (1, C, 1, 1) so that x_uint8 * scale - shift == (x/255-mean)/std.

    The one definition of the input normalisation: training, evaluation and exported models
    all use it (only `probe_images` differs, see there).
    """
    mean_t = torch.as_tensor(tuple(mean), dtype=torch.float64)
    std_t = torch.as_tensor(tuple(std), dtype=torch.float64)
    if mean_t.shape != (channels,) or std_t.shape != (channels,):
        raise ConfigError(f"mean and std need one value per channel ({channels}), got "
                          f"mean={tuple(mean)!r}, std={tuple(std)!r}")
    if not bool(torch.all(std_t > 0)) or not bool(torch.all(torch.isfinite(mean_t))):
        raise ConfigError(f"std must be positive and mean finite, got mean={tuple(mean)!r}, "
                          f"std={tuple(std)!r}")
    scale = (1.0 / (255.0 * std_t)).to(torch.float32).view(1, channels, 1, 1).to(device)
    shift = (mean_t / std_t).to(torch.float32).view(1, channels, 1, 1).to(device)
    return scale, shift


def to_float(x_uint8: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
             channels_last: bool = False) -> torch.Tensor:
    """Normalised float32 batch ((x/255 - mean)/std) in the requested memory format."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(x_uint8.shape, dtype=torch.float32, device=x_uint8.device,
                      memory_format=fmt)
    torch.mul(x_uint8, scale, out=out)
    return out.sub_(shift)


def probe_images(x_uint8: np.ndarray, mean: Sequence[float], std: Sequence[float]
                 ) -> torch.Tensor:
    """uint8 images (N, H, W, C) as a normalised contiguous (N, C, H, W) CPU batch: the probe
    batch that sets new BatchNorm statistics in the morphisms.

    Computed literally as (x/255 - mean)/std in the dtype of torch.tensor(mean) (float32 for
    Python floats), which differs from `to_float` in the last bit. The probe fixes the weights
    of every deeper child, so this stays as it is: runs and seeds reproduce.
    """
    x = images_to_device(x_uint8, "cpu").float().div_(255)
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    return ((x - mean_t) / std_t).contiguous()


def images_to_device(x, device: torch.device | str) -> torch.Tensor:
    """uint8 images (N, H, W, C) as a contiguous uint8 (N, C, H, W) tensor on `device`."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
        raise DataError(f"images must be a uint8 array (N, H, W, C), got "
                        f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    return torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2).contiguous()


def labels_to_device(y, n: int, device: torch.device | str,
                     classes: int | None = None) -> torch.Tensor:
    """n integer labels (in 0..classes-1 when classes is given) as int64 on `device`."""
    check_labels(y, n, classes)
    return _labels(y, device)


def _labels(y: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(y.astype(np.int64, copy=False)).to(device)


def check_labels(y, n: int, classes: int | None = None) -> None:
    """DataError unless `y` is a 1-d integer array of n labels in 0..classes-1."""
    if not isinstance(y, np.ndarray) or y.ndim != 1 or len(y) != n:
        raise DataError(f"labels must be a 1-d array with one label per image ({n}), got "
                        f"{getattr(y, 'shape', type(y).__name__)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {y.dtype}")
    if n and (y.min() < 0 or (classes is not None and y.max() >= classes)):
        raise DataError(f"labels must lie in 0..{'?' if classes is None else classes - 1} (the "
                        f"model's outputs), got {y.min()}..{y.max()}")


# ----------------------------------------------------------------------------- device cache
# Device types whose copies are cached. On the CPU the "upload" is one permuting copy
# (milliseconds against minutes of training) and caching would double the data's memory, so
# the CPU path makes its copy per call, as it always did.
CACHED_DEVICE_TYPES = frozenset({"cuda", "mps"})
MAX_CACHED = 32   # entries (arrays x devices); the oldest goes first

_cache: dict[tuple, tuple[weakref.ref, torch.Tensor]] = {}
_cache_lock = threading.Lock()


def _device_key(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def _cached(kind: str, arr: np.ndarray, device: torch.device,
            make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """`make()` (arr's copy on `device`), made once per (array object, device) and reused.

    Entries are keyed by the array's identity and dropped when the array is garbage collected
    (a weak reference), so a new array never sees another's copy. An array changed in place
    after its first use on a device keeps its old copy there: call clear_device_cache().
    """
    if device.type not in CACHED_DEVICE_TYPES:
        return make()
    key = (kind, id(arr), _device_key(device))
    hit = _cache.get(key)
    if hit is not None and hit[0]() is arr:
        return hit[1]
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0]() is arr:
            return hit[1]
        with torch.inference_mode(False):  # usable by training too, if first made in eval
            tensor = make()
        if device.type == "cuda":  # other threads' streams may read it as soon as it is cached
            torch.cuda.current_stream(device).synchronize()

        def forget(ref, key=key):
            entry = _cache.get(key)
            if entry is not None and entry[0] is ref:
                _cache.pop(key, None)

        _cache[key] = (weakref.ref(arr, forget), tensor)
        while len(_cache) > MAX_CACHED:
            _cache.pop(next(iter(_cache)), None)
    return tensor


def device_images(x, device: torch.device | str) -> torch.Tensor:
    """images_to_device(x, device), cached per array on accelerators (not on the CPU)."""
    dev = torch.device(device)
    if not isinstance(x, np.ndarray):
        return images_to_device(x, dev)  # raises the usual DataError
    return _cached("x", x, dev, lambda: images_to_device(x, dev))


def device_labels(y, n: int, device: torch.device | str,
                  classes: int | None = None) -> torch.Tensor:
    """labels_to_device(y, n, device, classes), cached per array on accelerators.

    The labels are checked on every call (cheap), so a model with fewer outputs than the
    labels need is still refused.
    """
    check_labels(y, n, classes)
    dev = torch.device(device)
    return _cached("y", y, dev, lambda: _labels(y, dev))


def clear_device_cache() -> int:
    """Drop every cached device copy; returns how many there were."""
    with _cache_lock:
        count = len(_cache)
        _cache.clear()
    return count


def cached_entries() -> int:
    """How many device copies are cached now."""
    return len(_cache)
