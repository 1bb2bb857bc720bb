"""Turn an Arch (and optional weights) into a plain `nn.Module` that walks a precomputed order."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ArchError
from .spec import Arch, Node, Shape, has_bias

PREFIX = "layers."  # state-dict keys are PREFIX + node id + "." + weight name
BN_EPS = 1e-5  # the eps of every BatchNorm (PyTorch's default)


def weighted_sum(xs: list[torch.Tensor] | tuple, weight: torch.Tensor) -> torch.Tensor:
    """xs[0] * weight[0] + xs[1] * weight[1] + ..., in that order, in the inputs' dtype."""
    w = weight.to(xs[0].dtype)
    out = xs[0] * w[0]
    for k in range(1, len(xs)):
        out = out + xs[k] * w[k]
    return out


class WeightedAdd(nn.Module):
    """Sum of inputs, each scaled by a learnable scalar (Type IV: a new branch starts at 0)."""

    def __init__(self, n: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return weighted_sum(xs, self.weight)


class Concat(nn.Module):
    """Concatenation along channels (Type II skip connection)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class GlobalAvgPool(nn.Module):
    """Mean over the spatial dimensions: (N, C, H, W) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class Layer(NamedTuple):
    """The torch side of an op (its fields, shapes and weight names are in spec.OPS).

    `make(node, input shapes)` is the module; its state dict must hold exactly the weights
    spec.OPS names. `run(node, inputs, weights)` computes the same as a function of the node's
    weights (name -> tensor), BatchNorm with batch statistics as the module in train mode;
    the morphisms run probe batches through it.
    """

    make: Callable[[Node, list[Shape]], nn.Module]
    run: Callable[[Node, list[torch.Tensor], Mapping[str, torch.Tensor]], torch.Tensor] | None


LAYERS: dict[str, Layer] = {
    "input": Layer(lambda n, ins: nn.Identity(), None),  # fed, not run
    "conv": Layer(
        lambda n, ins: nn.Conv2d(ins[0][0], n.channels, n.kernel, padding=n.kernel // 2,
                                 bias=has_bias(n)),
        lambda n, xs, w: F.conv2d(xs[0], w["weight"], w.get("bias"), padding=n.kernel // 2)),
    "dwconv": Layer(
        lambda n, ins: nn.Conv2d(ins[0][0], ins[0][0], n.kernel, padding=n.kernel // 2,
                                 groups=ins[0][0], bias=has_bias(n)),
        lambda n, xs, w: F.conv2d(xs[0], w["weight"], w.get("bias"), padding=n.kernel // 2,
                                  groups=xs[0].shape[1])),
    "bn": Layer(
        lambda n, ins: nn.BatchNorm2d(ins[0][0], eps=BN_EPS),
        lambda n, xs, w: F.batch_norm(xs[0], None, None, w["weight"], w["bias"], training=True,
                                      eps=BN_EPS)),
    "relu": Layer(lambda n, ins: nn.ReLU(), lambda n, xs, w: F.relu(xs[0])),
    "maxpool": Layer(lambda n, ins: nn.MaxPool2d(n.kernel, n.kernel),
                     lambda n, xs, w: F.max_pool2d(xs[0], n.kernel, n.kernel)),
    "add": Layer(lambda n, ins: WeightedAdd(len(ins)),
                 lambda n, xs, w: weighted_sum(xs, w["weight"])),
    "concat": Layer(lambda n, ins: Concat(), lambda n, xs, w: torch.cat(xs, dim=1)),
    "gap": Layer(lambda n, ins: GlobalAvgPool(), lambda n, xs, w: xs[0].mean(dim=(2, 3))),
    "linear": Layer(
        lambda n, ins: nn.Linear(ins[0][0], n.channels, bias=has_bias(n)),
        lambda n, xs, w: F.linear(xs[0], w["weight"], w.get("bias"))),
}


def make_layer(arch: Arch, node: Node) -> nn.Module:
    """The torch module for one node of `arch` (input channels inferred from the spec)."""
    if node.op not in LAYERS:
        raise ArchError(f"node '{node.id}': no builder for op '{node.op}'")
    return LAYERS[node.op].make(node, [arch.shapes[i] for i in node.inputs])


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
        # the CPU generator only: torch.manual_seed would reseed every CUDA generator too
        # (and not restore them), which a CUDA graph capture in another thread may be using
        torch.default_generator.manual_seed(seed)
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


def key(node_id: str, name: str) -> str:
    """The state-dict key of one weight of one node."""
    return f"{PREFIX}{node_id}.{name}"


def expected_shapes(arch: Arch) -> dict[str, tuple[int, ...]]:
    """State-dict key -> tensor shape that build(arch) has."""
    return {key(n.id, name): shape for n in arch.nodes
            for name, shape in arch.weight_shapes(n.id).items()}


def check_weights(arch: Arch, state_dict: Mapping[str, torch.Tensor],
                  error: type[Exception] = ArchError) -> None:
    """Raise `error` unless `state_dict` has exactly the keys and shapes of build(arch)."""
    want = expected_shapes(arch)
    missing = sorted(set(want) - set(state_dict))
    extra = sorted(set(state_dict) - set(want))
    bad = sorted(k for k in set(want) & set(state_dict) if tuple(state_dict[k].shape) != want[k])
    if missing or extra or bad:
        parts = [f"missing {missing[:8]}"] if missing else []
        parts += [f"unexpected {extra[:8]}"] if extra else []
        if bad:
            parts.append("wrong shape " + ", ".join(
                f"{k}: {tuple(state_dict[k].shape)} != {want[k]}" for k in bad[:8]))
        raise error("the weights do not fit the architecture: " + "; ".join(parts))


def load_weights(net: Network, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load weights into `net`, with an error that lists every missing, extra or misshapen key."""
    check_weights(net.arch, state_dict)
    net.load_state_dict(dict(state_dict), strict=True)


def weights_of(net: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a network's state dict (what morphisms and checkpoints take)."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}
