"""model_0: the NASH paper's starting network (Conv-MaxPool-Conv-MaxPool-Conv-FC), any size."""

from __future__ import annotations

from .errors import ArchError
from .spec import Arch, Node

DEFAULT_WIDTHS = (32, 64, 128)


def starting_arch(in_channels: int = 3, num_classes: int = 10,
                  image_size: int | tuple[int, int] = 32,
                  widths: tuple[int, int, int] = DEFAULT_WIDTHS, kernel: int = 3) -> Arch:
    """The paper's model_0: Conv-MaxPool-Conv-MaxPool-Conv-FC-Softmax, each Conv a Conv-BN-ReLU.

    The FC layer reads a global average pool of the last block, so any image size works; the
    softmax is applied by the loss (the network returns logits). Default widths 32-64-128
    double at each max-pool, as is conventional for CIFAR-sized convnets.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(widths) != 3:
        raise ArchError(f"starting_arch needs three widths (one per conv), got {widths!r}")
    if min(size) < 4:
        raise ArchError(f"starting_arch needs images of at least 4x4 (two 2x2 max-pools), "
                        f"got {size[0]}x{size[1]}")
    nodes = [Node("input", "input", channels=in_channels, size=size)]
    prev = "input"
    for b, width in enumerate(widths, start=1):
        nodes += [Node(f"conv{b}", "conv", (prev,), channels=width, kernel=kernel),
                  Node(f"bn{b}", "bn", (f"conv{b}",)),
                  Node(f"relu{b}", "relu", (f"bn{b}",))]
        prev = f"relu{b}"
        if b < 3:
            nodes.append(Node(f"pool{b}", "maxpool", (prev,), kernel=2))
            prev = f"pool{b}"
    nodes += [Node("gap", "gap", (prev,)), Node("fc", "linear", ("gap",), channels=num_classes)]
    return Arch(tuple(nodes), "fc")
