"""Training throughput: morphclimb's fit() vs a hand-written DataLoader loop vs the bare model step.

    .venv/bin/python benchmarks/throughput.py [--images 2048] [--repeats 3] [--device cpu]
    .venv/bin/python benchmarks/throughput.py --accuracy [--epochs 10]   # bf16 vs fp32 accuracy

For (a) the starting network and (b) one grown from it by 10 random morphisms, one training
epoch is timed three ways (medians over repeats, after a warm-up):
  fit     morphclimb.train.fit: data on the device as uint8, batched crop+flip, per-batch SGDR,
          the device's auto settings (bf16 autocast / channels_last / threads).
  hand    what a user writes by hand: a torch Dataset whose __getitem__ pads, crops, flips and
          normalises one image with torch ops, a DataLoader (batch 128, shuffle, num_workers=0),
          fp32, default memory format, SGD + a per-batch cosine scheduler.
  bare    only forward + backward + optimizer step, in fit's precision and memory format, on
          batches prepared in advance (no data or augmentation cost): the ceiling for fit.
It also prints achieved GFLOP/s (3x the forward FLOPs counted from the Arch) against fp32 and
bf16 matrix-multiply rates measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from morphclimb import Arch, Node, build, starting_arch, weights_of
from morphclimb.device import auto_settings, resolve_device, speed_settings
from morphclimb.train import TrainConfig, evaluate, fit


def grown_network(n: int = 10):
    """starting_arch() grown by n random morphisms (a hand-made wider net if they are missing)."""
    arch = starting_arch()
    try:
        from morphclimb.morphisms import apply_random_morphisms
    except ImportError:
        print("NOTE: morphclimb.apply_random_morphisms is not available yet; using a hand-made "
              "grown network (extra conv blocks, a concat and an add skip, wider layers).")
        return _hand_grown(), "hand-made stand-in for a 10-morphism network"
    net = build(arch, seed=0)
    grown, weights, *_ = apply_random_morphisms(arch, weights_of(net), n,
                                                np.random.default_rng(0))
    return build(grown, weights).arch, f"starting_arch + {n} random morphisms (rng 0)"


def _hand_grown() -> Arch:
    nodes = [Node("input", "input", channels=3, size=(32, 32))]

    def block(name, src, ch):
        return [Node(f"conv{name}", "conv", (src,), channels=ch, kernel=3),
                Node(f"bn{name}", "bn", (f"conv{name}",)), Node(f"relu{name}", "relu", (f"bn{name}",))]
    nodes += block("1", "input", 48) + block("1b", "relu1", 48)
    nodes += [Node("cat1", "concat", ("relu1", "relu1b")), Node("pool1", "maxpool", ("cat1",), kernel=2)]
    nodes += block("2", "pool1", 96) + block("2b", "relu2", 96)
    nodes += [Node("add2", "add", ("relu2", "relu2b")), Node("pool2", "maxpool", ("add2",), kernel=2)]
    nodes += block("3", "pool2", 160) + block("3b", "relu3", 160)
    nodes += [Node("gap", "gap", ("relu3b",)), Node("fc", "linear", ("gap",), channels=10)]
    return Arch(tuple(nodes), "fc")


def forward_flops(arch: Arch) -> int:
    """Forward FLOPs per image: conv 2*Cin*Cout*k*k*H*W, linear 2*in*out, cheap ops per element."""
    total = 0
    for n in arch.nodes:
        shape = arch.shapes[n.id]
        elems = int(np.prod(shape))
        if n.op == "conv":
            total += 2 * arch.channels(n.inputs[0]) * n.channels * n.kernel ** 2 * elems // n.channels
        elif n.op == "linear":
            total += 2 * arch.channels(n.inputs[0]) * n.channels
        elif n.op == "bn":
            total += 4 * elems
        elif n.op in ("relu", "add", "maxpool"):
            total += elems * (2 * len(n.inputs) if n.op == "add" else 1)
        elif n.op == "gap":
            total += int(np.prod(arch.shapes[n.inputs[0]]))
    return total


def matmul_gflops(dtype: torch.dtype, device: torch.device, size: int = 2048, reps: int = 7):
    """Median GFLOP/s of a size x size matrix multiply in `dtype`."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=g, device=device).to(dtype)
    b = torch.randn(size, size, generator=g, device=device).to(dtype)
    times = _timed(lambda: torch.mm(a, b), reps, device)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, reps: int, device: torch.device, warmup: int = 1) -> list[float]:
    out = []
    for k in range(warmup + reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        if k >= warmup:
            out.append(time.perf_counter() - t)
    return out


class HandDataset(torch.utils.data.Dataset):
    """Per-sample pad-4 + random crop + random flip + normalise, written with plain torch ops."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean, std):
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = self.x[i].permute(2, 0, 1).float().div(255)          # ToTensor
        img = F.pad(img, (4, 4, 4, 4))                               # RandomCrop(32, padding=4)
        top, left = (int(v) for v in torch.randint(0, 9, (2,)))
        img = img[:, top:top + 32, left:left + 32]
        if torch.rand(()) < 0.5:                                     # RandomHorizontalFlip
            img = img.flip(-1)
        return (img - self.mean) / self.std, self.y[i]               # Normalize


def hand_epoch(model, data, mean, std, device) -> float:
    """Images/s of one epoch of the loop a user would write by hand."""
    loader = torch.utils.data.DataLoader(HandDataset(data.x, data.y, mean, std), batch_size=128,
                                         shuffle=True, num_workers=0, drop_last=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=len(loader))
    model.train()
    _sync(device)
    t, n = time.perf_counter(), 0
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        n += len(yb)
    _sync(device)
    return n / (time.perf_counter() - t)


def bare_epoch(model, batches, bf16: bool, device) -> float:
    """Images/s of forward+backward+step alone on prepared batches."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    model.train()
    _sync(device)
    with speed_settings(device, None):  # the same backend settings as fit (cuDNN autotuning)
        t = time.perf_counter()
        for xb, yb in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
    return sum(len(y) for _, y in batches) / (time.perf_counter() - t)


def prepared_batches(data, mean, std, cl: bool, device):
    x = torch.from_numpy(data.x).permute(0, 3, 1, 2).float().div(255).to(device)
    x = (x - torch.tensor(mean, device=device).view(1, 3, 1, 1)) / torch.tensor(
        std, device=device).view(1, 3, 1, 1)
    y = torch.from_numpy(data.y).to(device)
    fmt = torch.channels_last if cl else torch.contiguous_format
    return [(x[i:i + 128].contiguous(memory_format=fmt), y[i:i + 128])
            for i in range(0, len(y) - 127, 128)]


def load_data(n: int | None):
    """(train, val, mean, std, label) from the bundled mini CIFAR-10, else random images."""
    try:
        from morphclimb.data import load_dataset
        split = load_dataset("mini-cifar10").split(seed=0)
        train = split.train
        if n is not None and n < len(train):  # a random subset (the split is ordered by class)
            train = train.subset(np.sort(np.random.default_rng(0).choice(len(train), n, False)))
        return train, split.val, split.mean, split.std, "bundled mini CIFAR-10"
    except Exception as exc:  # noqa: BLE001 - throughput does not depend on the pixels
        rng = np.random.default_rng(0)
        n = n or 4096
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        data = SimpleNamespace(x=x, y=rng.integers(0, 10, n).astype(np.int64))
        return data, None, (0.5,) * 3, (0.25,) * 3, f"random images ({type(exc).__name__})"


def machine_info(device: torch.device, settings: dict) -> list[str]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [f"CPU: {cpu}, {os.cpu_count()} cores; torch {torch.__version__}; python "
             f"{platform.python_version()}; load average {os.getloadavg()[0]:.2f} (1 min)"]
    if device.type == "cuda":
        lines.append(f"GPU: {torch.cuda.get_device_name(device)}")
    lines.append(f"device {device}; fit settings: bf16={settings['bf16']}, channels_last="
                 f"{settings['channels_last']}, threads={settings['threads'] or torch.get_num_threads()}")
    return lines


def throughput(arch: Arch, data, mean, std, device, repeats: int) -> dict:
    """Median images/s of the three ways for one architecture."""
    config = TrainConfig()
    s = auto_settings(device)
    small = SimpleNamespace(x=data.x[:256], y=data.y[:256])
    fresh = lambda: build(arch, seed=0, device=device)  # noqa: E731
    batches = prepared_batches(data, mean, std, s["channels_last"], device)
    bare_model = fresh().to(memory_format=torch.channels_last if s["channels_last"]
                            else torch.contiguous_format)
    fit(fresh(), small, epochs=1, config=config, mean=mean, std=std, seed=0)  # warm-up
    hand_epoch(fresh(), small, mean, std, device)
    bare_epoch(bare_model, batches[:2], s["bf16"], device)
    out = {"fit": [], "hand": [], "bare": []}
    for r in range(repeats):
        res = fit(fresh(), data, epochs=1, config=config, mean=mean, std=std, seed=r)
        out["fit"].append(res.images_per_second)
        out["hand"].append(hand_epoch(fresh(), data, mean, std, device))
        out["bare"].append(bare_epoch(bare_model, batches, s["bf16"], device))
    return {k: statistics.median(v) for k, v in out.items()}


def run_throughput(args) -> None:
    device = resolve_device(args.device)
    settings = auto_settings(device)
    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    data, _, mean, std, source = load_data(args.images)
    grown, grown_label = grown_network()
    nets = [("starting_arch()", starting_arch()), (grown_label, grown)]
    print("\n".join(machine_info(device, settings)))
    size = 8192 if device.type == "cuda" else 2048
    peak32 = matmul_gflops(torch.float32, device, size)
    peak16 = matmul_gflops(torch.bfloat16, device, size)
    print(f"matmul peak ({size}^3, median of 7): fp32 {peak32:.0f} GFLOP/s, "
          f"bf16 {peak16:.0f} GFLOP/s")
    grown_n = min(args.grown_images or len(data.y), len(data.y))
    print(f"data: {len(data.y)} images of {source} ({grown_n} for the grown network); batch 128; "
          f"one epoch per measurement; median of {args.repeats} repeats\n")
    print("| network | params | fwd MFLOP/img | fit img/s | hand img/s | bare img/s "
          "| fit/hand | fit/bare | fit GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, (name, arch) in enumerate(nets):
        part = data if k == 0 or not args.grown_images else SimpleNamespace(
            x=data.x[:args.grown_images], y=data.y[:args.grown_images])
        r = throughput(arch, part, mean, std, device, args.repeats)
        flops = forward_flops(arch)
        print(f"| {name} | {arch.num_params:,} | {flops / 1e6:.1f} | {r['fit']:.0f} | "
              f"{r['hand']:.0f} | {r['bare']:.0f} | {r['fit'] / r['hand']:.2f}x | "
              f"{r['fit'] / r['bare']:.2f} | {3 * flops * r['fit'] / 1e9:.1f} |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


def run_accuracy(args) -> None:
    """Train starting_arch() fp32 and bf16 on the mini set; compare validation accuracy."""
    device = resolve_device(args.device)
    train, val, mean, std, source = load_data(None)
    if val is None:
        sys.exit(f"--accuracy needs the bundled mini CIFAR-10 ({source})")
    print("\n".join(machine_info(device, auto_settings(device))))
    print(f"starting_arch(), {args.epochs} epochs SGDR on {len(train.y)} train images of {source}, "
          f"validation on {len(val.y)}\n")
    print("| precision | seed | val accuracy | val loss | train img/s |")
    print("|---|---|---|---|---|")
    for seed in range(args.seeds):
        for bf16 in (False, True):
            net = build(starting_arch(), seed=seed, device=device)
            cfg = TrainConfig(bf16=bf16, channels_last=auto_settings(device)["channels_last"])
            res = fit(net, train, epochs=args.epochs, config=cfg, mean=mean, std=std, seed=seed)
            ev = evaluate(net, val, mean=mean, std=std)
            print(f"| {'bf16 autocast' if bf16 else 'fp32'} | {seed} | {ev.accuracy:.4f} | "
                  f"{ev.loss:.4f} | {res.images_per_second:.0f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2048, help="training images per epoch")
    p.add_argument("--grown-images", type=int, default=1024,
                   help="images per epoch for the grown network (0: same as --images)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--accuracy", action="store_true", help="bf16 vs fp32 accuracy instead")
    p.add_argument("--epochs", type=int, default=10, help="epochs for --accuracy")
    p.add_argument("--seeds", type=int, default=2, help="seeds for --accuracy")
    args = p.parse_args()
    if args.accuracy:
        run_accuracy(args)
    else:
        run_throughput(args)


if __name__ == "__main__":
    main()
