"""Batched on-device augmentation and normalisation: whole batches at once, no per-sample Python."""

from __future__ import annotations

from collections.abc import Sequence

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
    """(scale, shift) of shape (1, C, 1, 1) so that x_uint8 * scale - shift == (x/255-mean)/std."""
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


def images_to_device(x, device: torch.device | str) -> torch.Tensor:
    """uint8 images (N, H, W, C) as a contiguous uint8 (N, C, H, W) tensor on `device`."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
        raise DataError(f"images must be a uint8 array (N, H, W, C), got "
                        f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    return torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2).contiguous()


def labels_to_device(y, n: int, device: torch.device | str,
                     classes: int | None = None) -> torch.Tensor:
    """n integer labels (in 0..classes-1 when classes is given) as int64 on `device`."""
    if not isinstance(y, np.ndarray) or y.ndim != 1 or len(y) != n:
        raise DataError(f"labels must be a 1-d array with one label per image ({n}), got "
                        f"{getattr(y, 'shape', type(y).__name__)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {y.dtype}")
    if n and (y.min() < 0 or (classes is not None and y.max() >= classes)):
        raise DataError(f"labels must lie in 0..{'?' if classes is None else classes - 1} (the "
                        f"model's outputs), got {y.min()}..{y.max()}")
    return torch.from_numpy(y.astype(np.int64, copy=False)).to(device)
