"""Property tests: every morphism is exact on architectures grown by random morphisms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morphclimb import build, starting_arch, weights_of
from morphclimb.morphisms import REGISTRY, apply_random_morphisms

START = starting_arch(in_channels=3, num_classes=5, image_size=12, widths=(4, 8, 8))
MAX_PARAMS = 120_000  # stop growing before a network gets slow to test
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convs run far faster single-threaded on a shared, oversubscribed CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturb(sd: dict, seed: int) -> dict:
    """Generic weights: noise on every weight, random BN statistics, random add weights."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        r = torch.rand(v.shape, generator=g, dtype=torch.float64).to(v.dtype)
        n = torch.randn(v.shape, generator=g, dtype=torch.float64).to(v.dtype)
        if k.endswith("running_var") or (".bn" in k and k.endswith("weight")) or ".add" in k:
            out[k] = 0.5 + r
        elif k.endswith("running_mean") or k.endswith("bias"):
            out[k] = 0.1 * n
        else:
            out[k] = v + 0.3 * n * (v.std() if v.numel() > 1 else 1.0)
    return out


def grown(seed: int, n: int, dtype: torch.dtype):
    """START grown by up to n random morphisms (stopping at MAX_PARAMS), with generic weights."""
    arch, sd = START, weights_of(build(START, seed=seed, dtype=dtype))
    rng = np.random.default_rng(seed)
    for _ in range(n):
        a, s, _ = apply_random_morphisms(arch, sd, 1, rng)
        if a.num_params > MAX_PARAMS:
            break
        arch, sd = a, s
    return arch, perturb(sd, seed), rng


def outputs(arch, sd, x, train: bool = False) -> torch.Tensor:
    net = build(arch, sd)
    net.train(train)
    with torch.no_grad():
        return net(x)


def check_all_ops(seed: int, n: int, dtype: torch.dtype, rtol: float, probe: bool) -> None:
    arch, sd, rng = grown(seed, n, dtype)
    before = {k: v.clone() for k, v in sd.items()}
    arch_before = arch.to_dict()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 12, 12, generator=g, dtype=torch.float64).to(dtype)
    batch = torch.randn(4, 3, 12, 12, generator=g, dtype=torch.float64).to(dtype) if probe else None
    y = outputs(arch, sd, x)
    y_train = outputs(arch, sd, batch, train=True) if probe else None
    for name, m in REGISTRY.items():
        choices = m.choices(arch)
        if not choices:
            continue
        record = m.sample(arch, rng, choices)
        child, child_sd, full = m.apply(arch, sd, record, rng, batch)
        assert all(v.dtype == sd[k].dtype for k, v in child_sd.items() if k in sd)
        err = (outputs(child, child_sd, x) - y).abs().max().item()
        assert err <= rtol * y.abs().max().item(), (name, full, err)
        if probe:
            err = (outputs(child, child_sd, batch, train=True) - y_train).abs().max().item()
            assert err <= 1e-4 * max(1.0, y_train.abs().max().item()), (name, full, err)
    assert arch.to_dict() == arch_before
    assert sd.keys() == before.keys()
    assert all(torch.equal(sd[k], before[k]) for k in sd)


@settings(max_examples=80, **SETTINGS)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 10))
def test_exact_in_eval_mode_float32(seed, n):
    check_all_ops(seed, n, torch.float32, rtol=1e-5, probe=False)


@settings(max_examples=70, **SETTINGS)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 10))
def test_exact_in_eval_mode_float64(seed, n):
    check_all_ops(seed, n, torch.float64, rtol=1e-10, probe=False)


@settings(max_examples=60, **SETTINGS)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 10))
def test_exact_in_train_mode_on_the_probe_batch(seed, n):
    check_all_ops(seed, n, torch.float32, rtol=1e-5, probe=True)
