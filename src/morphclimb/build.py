"""Turn an Arch (and optional weights) into a plain `nn.Module` that walks a precomputed order."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .errors import ArchError
from .spec import Arch, Node, has_bias

PREFIX = "layers."


class WeightedAdd(nn.Module):
    """Sum of inputs, each scaled by a learnable scalar (Type IV: a new branch starts at 0)."""

    def __init__(self, n: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(xs[0].dtype)
        out = xs[0] * w[0]
        for k in range(1, len(xs)):
            out = out + xs[k] * w[k]
        return out


class Concat(nn.Module):
    """Concatenation along channels (Type II skip connection)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class GlobalAvgPool(nn.Module):
    """Mean over the spatial dimensions: (N, C, H, W) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def make_layer(arch: Arch, node: Node) -> nn.Module:
    """The torch module for one node of `arch` (input channels inferred from the spec)."""
    op = node.op
    if op == "conv":
        cin = arch.channels(node.inputs[0])
        return nn.Conv2d(cin, node.channels, node.kernel, padding=node.kernel // 2,
                         bias=has_bias(node))
    if op == "bn":
        return nn.BatchNorm2d(arch.channels(node.id))
    if op == "relu":
        return nn.ReLU()
    if op == "maxpool":
        return nn.MaxPool2d(node.kernel, node.kernel)
    if op == "add":
        return WeightedAdd(len(node.inputs))
    if op == "concat":
        return Concat()
    if op == "gap":
        return GlobalAvgPool()
    if op == "linear":
        return nn.Linear(arch.channels(node.inputs[0]), node.channels, bias=has_bias(node))
    if op == "input":
        return nn.Identity()
    raise ArchError(f"node '{node.id}': no builder for op '{op}'")


class Network(nn.Module):
    """A network built from an Arch; `forward(x)` returns class scores (logits)."""

    def __init__(self, arch: Arch):
        super().__init__()
        self.arch = arch
        self.layers = nn.ModuleDict({n.id: make_layer(arch, n) for n in arch.nodes
                                     if n.op != "input"})
        slot = {n.id: k for k, n in enumerate(arch.nodes)}
        last_use: dict[str, int] = {}
        for k, n in enumerate(arch.nodes):
            for i in n.inputs:
                last_use[i] = k
        steps = []
        for k, n in enumerate(arch.nodes[1:], start=1):
            free = tuple(sorted({slot[i] for i in n.inputs if last_use[i] == k
                                 and i != arch.output}))
            steps.append((k, self.layers[n.id], tuple(slot[i] for i in n.inputs), free))
        self._steps = tuple(steps)
        self._n = len(arch.nodes)
        self._out = slot[arch.output]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vals: list = [None] * self._n
        vals[0] = x
        for k, layer, ins, free in self._steps:
            if len(ins) == 1:
                vals[k] = layer(vals[ins[0]])
            else:
                vals[k] = layer(*[vals[i] for i in ins])
            for f in free:
                vals[f] = None
        return vals[self._out]

    def extra_repr(self) -> str:
        return repr(self.arch)


def _float_dtype(state_dict: Mapping[str, torch.Tensor]) -> torch.dtype | None:
    for v in state_dict.values():
        if torch.is_tensor(v) and v.is_floating_point():
            return v.dtype
    return None


def build(arch: Arch, state_dict: Mapping[str, torch.Tensor] | None = None, *,
          seed: int = 0, dtype: torch.dtype | None = None,
          device: torch.device | str | None = None) -> Network:
    """Build `arch` as an nn.Module, loading `state_dict` if given, else initialised from `seed`.

    Without weights, PyTorch's default initialisation runs under a private RNG seeded with
    `seed` (the global RNG is left untouched). The dtype follows the weights unless given.
    """
    if not isinstance(arch, Arch):
        raise TypeError(f"build() needs an Arch, got {type(arch).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Network(arch)
    if dtype is None and state_dict is not None:
        dtype = _float_dtype(state_dict)
    if dtype is not None:
        net = net.to(dtype)
    if state_dict is not None:
        load_weights(net, state_dict)
    if device is not None:
        net = net.to(device)
    return net


def load_weights(net: Network, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load weights into `net`, with an error that lists every missing, extra or misshapen key."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state_dict))
    extra = sorted(set(state_dict) - set(own))
    bad = sorted(k for k in set(own) & set(state_dict)
                 if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"missing {missing[:8]}")
        if extra:
            parts.append(f"unexpected {extra[:8]}")
        if bad:
            parts.append("wrong shape " + ", ".join(
                f"{k}: {tuple(state_dict[k].shape)} != {tuple(own[k].shape)}" for k in bad[:8]))
        raise ArchError("weights do not fit the architecture: " + "; ".join(parts))
    net.load_state_dict(dict(state_dict), strict=True)


def weights_of(net: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a network's state dict (what morphisms and checkpoints take)."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}
