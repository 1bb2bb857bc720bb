"""Shared fixtures: a tiny learnable image dataset written as an .npz file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # tiny convolutions: one thread is fastest and deterministic


def make_tiny_npz(path, n_train=192, n_test=48, size=8, classes=4, seed=0):
    """Write a small dataset whose classes differ by colour and stripe pattern."""
    rng = np.random.default_rng(seed)

    def part(n):
        y = np.arange(n) % classes
        rng.shuffle(y)
        x = rng.integers(0, 90, size=(n, size, size, 3))
        for k in range(classes):
            m = y == k
            x[m, :, :, k % 3] += 120
            if k >= 3:
                x[m, ::2, :, :] += 40
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    x, y = part(n_train)
    xt, yt = part(n_test)
    np.savez(path, x=x, y=y, x_test=xt, y_test=yt,
             classes=np.array([f"c{k}" for k in range(classes)]))
    return path


@pytest.fixture
def tiny_npz(tmp_path):
    return str(make_tiny_npz(tmp_path / "tiny.npz"))


TINY = dict(n_steps=2, n_neigh=3, n_nm=2, epoch_pretrain=1, epoch_neigh=1, epoch_final=1,
            widths=(4, 8, 8), batch_size=32, probe_size=16, device="cpu", threads=1,
            eval_batch_size=64, bf16=False, channels_last=False)
