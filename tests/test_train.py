"""Tests of the trainer (SGDR schedule, fit, evaluate), augmentation and device settings."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from morphclimb import ConfigError, DataError, TrainingError, build, starting_arch
from morphclimb.augment import crop_flip, normalizer, random_crop_flip, to_float
from morphclimb.device import auto_settings, cpu_supports_bf16, num_threads, resolve_device
from morphclimb.train import TrainConfig, evaluate, fit, predict_proba, sgdr_lr

try:
    from morphclimb.data import ImageData
except ImportError:  # the data layer is not there yet: a stand-in with the same two fields
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class ImageData:  # type: ignore[no-redef]
        x: np.ndarray
        y: np.ndarray

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
SMALL = dict(widths=(8, 16, 16))
FAST = TrainConfig(batch_size=32, bf16=False, channels_last=False)


def synthetic(n: int, seed: int = 0, classes: int = 4, size: int = 16) -> ImageData:
    """Separable images: each class has its own mean colour, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])[:classes]
    x = colours[y][:, None, None, :] + rng.normal(0, 40, (n, size, size, 3))
    return ImageData(np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64))


def small_net(seed: int = 0, classes: int = 4, size: int = 16):
    return build(starting_arch(num_classes=classes, image_size=size, **SMALL), seed=seed)


def mini_subset(n: int):
    """n images of the bundled mini CIFAR-10 if the data layer has it, else synthetic data."""
    try:
        from morphclimb.data import load_dataset
        split = load_dataset("mini-cifar10").split(seed=0)
        idx = np.sort(np.random.default_rng(0).choice(len(split.train), n, replace=False))
        return split.train.subset(idx), split.val, split.mean, split.std, 10
    except Exception:  # noqa: BLE001 - no data layer / no bundled set: fall back
        return synthetic(n, size=32), synthetic(256, seed=1, size=32), MEAN, STD, 4


# ----------------------------------------------------------------------------- schedule
def test_sgdr_values_start_middle_end():
    assert sgdr_lr(0, 100, 0.05, 0.0) == pytest.approx(0.05)
    assert sgdr_lr(50, 100, 0.05, 0.0) == pytest.approx(0.025)
    assert sgdr_lr(25, 100, 0.05, 0.01) == pytest.approx(0.01 + 0.02 * (1 + math.cos(math.pi / 4)))
    assert sgdr_lr(100, 100, 0.05, 0.001) == pytest.approx(0.001)
    assert sgdr_lr(0, 0, 0.05, 0.0) == 0.05  # an empty run stays at lr_start
    values = [sgdr_lr(s, 40, 0.1, 0.0) for s in range(41)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # monotone decay


class LrSpy:
    """Records the learning rate of every optimizer step."""

    def __init__(self, monkeypatch):
        self.lrs: list[float] = []
        original = torch.optim.SGD.step

        def step(opt, *args, **kwargs):
            self.lrs.append(opt.param_groups[0]["lr"])
            return original(opt, *args, **kwargs)

        monkeypatch.setattr(torch.optim.SGD, "step", step)


def test_sgdr_per_batch_and_restart_on_every_fit(monkeypatch):
    spy = LrSpy(monkeypatch)
    data, net = synthetic(100), small_net()  # 100 // 32 = 3 steps per epoch
    config = TrainConfig(batch_size=32, lr_start=0.04, lr_end=0.004, bf16=False)
    first = fit(net, data, epochs=2, config=config, mean=MEAN, std=STD, seed=0)
    assert spy.lrs == pytest.approx([sgdr_lr(s, 6, 0.04, 0.004) for s in range(6)])
    assert [r.lr for r in first.records] == pytest.approx([0.022, 0.004])
    spy.lrs.clear()
    fit(net, data, epochs=1, config=config, mean=MEAN, std=STD, seed=1)
    assert spy.lrs == pytest.approx([sgdr_lr(s, 3, 0.04, 0.004) for s in range(3)])
    assert spy.lrs[0] == pytest.approx(0.04)  # restarted


def test_constant_mode(monkeypatch):
    spy = LrSpy(monkeypatch)
    config = TrainConfig(batch_size=32, lr_start=0.03, sgdr=False, bf16=False)
    result = fit(small_net(), synthetic(64), epochs=2, config=config, mean=MEAN, std=STD, seed=0)
    assert spy.lrs == [0.03] * 4
    assert [r.lr for r in result.records] == [0.03, 0.03]


@pytest.mark.parametrize("field, value", [
    ("batch_size", 0), ("batch_size", 1.5), ("lr_start", -0.1), ("lr_start", float("nan")),
    ("lr_end", -1.0), ("momentum", 1.0), ("weight_decay", -1e-4), ("sgdr", 1),
    ("bf16", "yes"), ("threads", 0), ("eval_batch_size", 0), ("crop_pad", -1),
    ("crop_pad", 1.5)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_config_nesterov_needs_momentum():
    with pytest.raises(ConfigError, match="nesterov"):
        TrainConfig(momentum=0.0)
    TrainConfig(momentum=0.0, nesterov=False)


# ----------------------------------------------------------------------------- fit
def test_training_lowers_loss_on_real_images():
    train, val, mean, std, classes = mini_subset(512)
    net = build(starting_arch(num_classes=classes), seed=0)
    before = evaluate(net, train, mean=mean, std=std)
    result = fit(net, train, epochs=6, config=TrainConfig(batch_size=64), mean=mean, std=std,
                 seed=0)
    after = evaluate(net, train, mean=mean, std=std)
    assert len(result.records) == 6 and result.images == 6 * 512
    assert result.records[-1].loss < result.records[0].loss
    assert after.loss < before.loss - 0.1
    assert evaluate(net, val, mean=mean, std=std).accuracy > 1.5 / classes
    assert result.images_per_second > 0 and result.seconds > 0


def test_same_seed_same_weights_and_global_rng_untouched():
    data = synthetic(96)
    rng_state = torch.get_rng_state()
    nets = [small_net(), small_net(), small_net()]
    for net, seed in zip(nets, (3, 3, 4), strict=True):
        fit(net, data, epochs=2, config=FAST, mean=MEAN, std=STD, seed=seed)
    assert torch.equal(torch.get_rng_state(), rng_state)
    a, b, c = (n.state_dict() for n in nets)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_partial_batch_dropped_and_tiny_sets_train_as_one_batch():
    records = []
    result = fit(small_net(), synthetic(70), epochs=2, config=FAST, mean=MEAN, std=STD, seed=0,
                 callback=records.append)
    assert [r.images for r in result.records] == [64, 64]  # 70 // 32 full batches
    assert records == list(result.records) and [r.epoch for r in records] == [1, 2]
    tiny = fit(small_net(), synthetic(10), epochs=1, config=FAST, mean=MEAN, std=STD, seed=0)
    assert tiny.records[0].images == 10
    assert dict(tiny.records[0])["images"] == 10 == tiny.records[0].to_dict()["images"]


def test_zero_epochs_leaves_weights_alone():
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = fit(net, synthetic(64), epochs=0, config=FAST, mean=MEAN, std=STD, seed=0)
    assert result.records == () and result.images == 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


class NanAfter(torch.nn.Module):
    """Wraps a net; its forward returns NaN logits from the k-th call on."""

    def __init__(self, net, k: int):
        super().__init__()
        self.net, self.k, self.calls = net, k, 0

    def forward(self, x):
        self.calls += 1
        out = self.net(x)
        return out * float("nan") if self.calls >= self.k else out


def test_nan_loss_raises_with_epoch_and_step():
    data = synthetic(128)  # 4 steps per epoch at batch 32
    with pytest.raises(TrainingError, match=r"epoch 2, step 2 of 4"):
        fit(NanAfter(small_net(), 6), data, epochs=3, config=FAST, mean=MEAN, std=STD, seed=0)
    net = small_net()
    with torch.no_grad():
        net.layers.fc.bias[0] = float("inf")
    with pytest.raises(TrainingError, match=r"epoch 1, step 1 "):
        fit(net, data, epochs=1, config=FAST, mean=MEAN, std=STD, seed=0)


def test_bf16_channels_last_keep_fp32_state_and_contiguous_weights():
    net = small_net()
    config = TrainConfig(batch_size=32, bf16=True, channels_last=True)
    result = fit(net, synthetic(64), epochs=1, config=config, mean=MEAN, std=STD, seed=0)
    assert result.settings["bf16"] and result.settings["channels_last"]
    for name, t in net.state_dict().items():
        if t.is_floating_point():
            assert t.dtype == torch.float32, name
        assert t.is_contiguous(), name  # so checkpoints (safetensors) can be written
    assert net.layers.bn1.running_var.dtype == torch.float32
    assert not torch.equal(net.layers.bn1.running_mean, torch.zeros(8))


def test_bf16_accuracy_close_to_fp32():
    data, val = synthetic(256, seed=0), synthetic(256, seed=1)
    acc = {}
    for bf16 in (False, True):
        net = small_net()
        config = TrainConfig(batch_size=32, bf16=bf16, channels_last=bf16)
        fit(net, data, epochs=3, config=config, mean=MEAN, std=STD, seed=0)
        acc[bf16] = evaluate(net, val, mean=MEAN, std=STD).accuracy
    assert acc[False] > 0.9 and abs(acc[True] - acc[False]) < 0.05, acc


def test_threads_set_during_fit_and_restored():
    before = torch.get_num_threads()
    seen = []
    fit(small_net(), synthetic(64), epochs=1, mean=MEAN, std=STD, seed=0,
        config=TrainConfig(batch_size=32, threads=1, bf16=False),
        callback=lambda r: seen.append(torch.get_num_threads()))
    assert seen == [1] and torch.get_num_threads() == before
    with num_threads(None):
        assert torch.get_num_threads() == before


def test_fit_rejects_bad_arguments():
    net, data = small_net(), synthetic(64)
    with pytest.raises(ConfigError, match="epochs"):
        fit(net, data, epochs=-1, config=FAST, mean=MEAN, std=STD, seed=0)
    with pytest.raises(ConfigError, match="mean and std"):
        fit(net, data, epochs=1, config=FAST, mean=(0.5,), std=(0.2,), seed=0)
    with pytest.raises(DataError, match=r"labels must lie in 0\.\.3"):
        fit(net, ImageData(data.x, data.y + 4), epochs=1, config=FAST, mean=MEAN, std=STD, seed=0)
    with pytest.raises(DataError, match="uint8"):
        fit(net, SimpleNamespace(x=data.x.astype(np.float32), y=data.y), epochs=1, config=FAST,
            mean=MEAN, std=STD, seed=0)


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_and_predict_match_hand_computation():
    data, net = synthetic(50, seed=2), small_net(seed=1)
    net.train()
    res = evaluate(net, data, mean=MEAN, std=STD, batch_size=16)
    assert net.training  # mode restored
    net.eval()
    x = (torch.from_numpy(data.x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        logits = net(x)
    y = torch.from_numpy(data.y)
    assert res.n == 50
    assert res.accuracy == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert res.loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    probs = predict_proba(net, data.x, mean=MEAN, std=STD, batch_size=7)
    assert probs.shape == (50, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, torch.softmax(logits, 1).numpy(), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- augmentation
def test_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (2, 2, 2, 2))
    shifts = set()
    for i in range(len(x)):
        matches = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                   if torch.equal(out[i], _window(padded[i], dy, dx, f))]
        assert len(matches) == 1, i
        shifts.add(matches[0])
    assert len({s[:2] for s in shifts}) > 4 and {s[2] for s in shifts} == {False, True}


def _window(img, dy, dx, flip):
    w = img[:, dy:dy + 8, dx:dx + 8]
    return w.flip(-1) if flip else w


def test_crop_flip_with_given_offsets():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    out = crop_flip(x, 1, torch.tensor([0, 1]), torch.tensor([2, 1]), torch.tensor([True, False]))
    padded = F.pad(x, (1, 1, 1, 1))
    assert torch.equal(out[0], padded[0, :, 0:4, 2:6].flip(-1))
    assert torch.equal(out[1], x[1])  # offset (1, 1) with pad 1 and no flip is the identity


def test_flip_only_and_determinism():
    x = torch.randint(0, 256, (64, 3, 6, 6), dtype=torch.uint8)
    out = random_crop_flip(x, 0, torch.Generator().manual_seed(5))
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x, strict=True)])
    assert bool((flipped | kept).all()) and 10 < int(flipped.sum()) < 54
    again = random_crop_flip(x, 0, torch.Generator().manual_seed(5))
    other = random_crop_flip(x, 0, torch.Generator().manual_seed(6))
    assert torch.equal(out, again) and not torch.equal(out, other)
    with pytest.raises(ConfigError, match=r"needs a \(B, C, H, W\) batch, got shape \(3, 6"):
        random_crop_flip(x[0], 4, torch.Generator())


@pytest.mark.parametrize("settings, pads", [
    ({}, {4}), ({"crop_pad": 2}, {2}), ({"crop_pad": 0}, {0}), ({"augment": False}, set())])
def test_fit_crops_with_the_configured_padding(monkeypatch, settings, pads):
    import morphclimb.train as train_mod
    from morphclimb.config import SearchConfig
    from morphclimb.nash import train_config
    seen, real = set(), train_mod.crop_flip

    def spy(x, pad, *rest):
        seen.add(pad)
        return real(x, pad, *rest)

    monkeypatch.setattr(train_mod, "crop_flip", spy)
    cfg = train_config(SearchConfig(**settings, batch_size=32, bf16=False, channels_last=False))
    fit(small_net(), synthetic(64), epochs=1, config=cfg, mean=MEAN, std=STD, seed=0)
    assert seen == pads


def test_normalise_and_memory_format():
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    scale, shift = normalizer((0.1, 0.2, 0.3), (0.5, 0.25, 0.2), 3, "cpu")
    out = to_float(x, scale, shift, channels_last=True)
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.25, 0.2]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (x.float() / 255 - mean) / std)
    assert out.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ConfigError, match="std must be positive"):
        normalizer((0.1,), (0.0,), 1, "cpu")


# ----------------------------------------------------------------------------- device
def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected == resolve_device("auto").type
    with pytest.raises(ConfigError, match="cuda:99"):
        resolve_device("cuda:99")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu-please")


def test_auto_settings_cpu():
    s = auto_settings("cpu")
    assert set(s) == {"bf16", "channels_last", "threads"}
    assert s["bf16"] == cpu_supports_bf16() and s["threads"] >= 1
    assert isinstance(s["channels_last"], bool)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_on_cuda_with_auto_settings():
    train, val, mean, std, classes = mini_subset(1024)
    net = build(starting_arch(num_classes=classes), seed=0)
    result = fit(net, train, epochs=4, config=TrainConfig(), mean=mean, std=std, seed=0,
                 device="cuda")
    assert result.settings["device"].startswith("cuda")
    assert next(net.parameters()).device.type == "cuda"
    assert net.layers.bn1.running_mean.dtype == torch.float32
    assert result.records[-1].loss < result.records[0].loss
    ev = evaluate(net, val, mean=mean, std=std)
    assert ev.accuracy > 1.5 / classes
    probs = predict_proba(net, val.x[:10], mean=mean, std=std, device="cuda")
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
