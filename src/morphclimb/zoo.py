"""Known-good start points written in morphclimb's own spec: the CIFAR ResNets (He et al. 2016).

`resnet(depth)` is the CIFAR ResNet of depth 6n + 2 (8, 20, 32, 56, ...): a 3x3 stem conv, then
three stages of n basic blocks (Conv-BN-ReLU-Conv-BN, plus the block's input, then ReLU) with
16, 32 and 64 channels, global average pooling and a linear layer. `width` multiplies every
channel count (a wide variant: `resnet20x4` has 64-128-256 channels).

What differs from the published network, so that every network morphism applies unchanged:

- downsampling is a 2x2 max-pool in front of stages 2 and 3 (the spec has no strided
  convolution); the published network strides the stage's first conv by 2. The convolutions
  then run at the same resolutions as the published ones, so FLOPs are about the same;
- the shortcut that changes the channel count is a 1x1 convolution with BatchNorm (He et al.'s
  option B) reading the pooled tensor, where the CIFAR paper pads with zeros (option A);
- each addition is morphclimb's weighted addition (one learnable scale per input, starting at 1).

ResNet-20 has 272,492 parameters here against the published 269,722 (projections 2,752,
addition scales 18); ResNet-8 78,048, ResNet-32 466,936, ResNet-56 855,824.

Any input size of at least 4x4 and any channel count work, as for model_0.
"""

from __future__ import annotations

import re

from .errors import ArchError
from .spec import Arch, Node

WIDTHS = (16, 32, 64)
NAMES = ("resnet8", "resnet20", "resnet32", "resnet56", "resnet20x4")   # listed in --help
_NAME = re.compile(r"^resnet(\d+)(?:x(\d+))?$")


def is_zoo_name(name: str) -> bool:
    """Whether `name` names a start point of this module (resnet<depth>[x<width>], with a
    depth of 6n + 2 >= 8 and a width >= 1)."""
    m = _NAME.match(name)
    if m is None:
        return False
    depth, width = int(m.group(1)), int(m.group(2) or 1)
    return depth >= 8 and (depth - 2) % 6 == 0 and width >= 1


AUTO = ("resnet8", "resnet20", "resnet32", "resnet56")   # what reference=auto chooses among


def closest(params: int, candidates: tuple[str, ...] = AUTO,
            channels: int = 3, classes: int = 10, size: int = 32) -> str:
    """The candidate start point whose parameter count is closest to `params` (by ratio)."""
    import math
    return min(candidates, key=lambda n: abs(math.log(
        zoo_arch(n, channels, classes, size).num_params / max(params, 1))))


def closest_then_smaller(params: int, candidates: tuple[str, ...] = AUTO,
                         channels: int = 3, classes: int = 10, size: int = 32) -> list[str]:
    """`closest` first, then each smaller candidate (by parameters), down to the smallest:
    the order in which an `auto` reference tries them."""
    sized = sorted(candidates, key=lambda n: zoo_arch(n, channels, classes, size).num_params)
    i = sized.index(closest(params, candidates, channels, classes, size))
    return sized[i::-1]


def resnet(depth: int = 20, in_channels: int = 3, num_classes: int = 10,
           image_size: int | tuple[int, int] = 32, width: int = 1) -> Arch:
    """The CIFAR ResNet of `depth` (6n + 2) in morphclimb's spec (see the module's notes)."""
    if depth < 8 or (depth - 2) % 6:
        raise ArchError(f"a CIFAR ResNet has depth 6n + 2 (8, 20, 32, 44, 56, ...), got {depth}")
    if width < 1:
        raise ArchError(f"resnet width multiplier must be >= 1, got {width}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if min(size) < 4:
        raise ArchError(f"a ResNet start point needs images of at least 4x4 (two 2x2 "
                        f"max-pools), got {size[0]}x{size[1]}")
    n = (depth - 2) // 6
    nodes = [Node("input", "input", channels=in_channels, size=size),
             Node("stem", "conv", ("input",), channels=WIDTHS[0] * width, kernel=3),
             Node("stem_bn", "bn", ("stem",)), Node("stem_relu", "relu", ("stem_bn",))]
    prev, prev_ch = "stem_relu", WIDTHS[0] * width
    for s, base in enumerate(WIDTHS, start=1):
        ch = base * width
        if s > 1:
            nodes.append(Node(f"pool{s}", "maxpool", (prev,), kernel=2))
            prev = f"pool{s}"
        for b in range(1, n + 1):
            p = f"s{s}b{b}"
            nodes += [Node(f"{p}_conv1", "conv", (prev,), channels=ch, kernel=3),
                      Node(f"{p}_bn1", "bn", (f"{p}_conv1",)),
                      Node(f"{p}_relu1", "relu", (f"{p}_bn1",)),
                      Node(f"{p}_conv2", "conv", (f"{p}_relu1",), channels=ch, kernel=3),
                      Node(f"{p}_bn2", "bn", (f"{p}_conv2",))]
            short = prev
            if prev_ch != ch:
                nodes += [Node(f"{p}_proj", "conv", (prev,), channels=ch, kernel=1),
                          Node(f"{p}_proj_bn", "bn", (f"{p}_proj",))]
                short = f"{p}_proj_bn"
            nodes += [Node(f"{p}_add", "add", (f"{p}_bn2", short)),
                      Node(f"{p}_relu2", "relu", (f"{p}_add",))]
            prev, prev_ch = f"{p}_relu2", ch
    nodes += [Node("gap", "gap", (prev,)), Node("fc", "linear", ("gap",), channels=num_classes)]
    return Arch(tuple(nodes), "fc")


def zoo_arch(name: str, in_channels: int, num_classes: int,
             image_size: int | tuple[int, int]) -> Arch:
    """The start point called `name` (resnet<depth> or resnet<depth>x<width>) for the data."""
    m = _NAME.match(name)
    if m is None:
        raise ArchError(f"unknown start point {name!r}; known: {', '.join(NAMES)} "
                        f"(resnet<6n+2>, optionally x<width>)")
    return resnet(int(m.group(1)), in_channels, num_classes, image_size,
                  width=int(m.group(2) or 1))
