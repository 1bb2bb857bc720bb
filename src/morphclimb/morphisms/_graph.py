"""Graph and tensor helpers shared by the morphisms: ids, channel-tied components, re-layouts."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import numpy as np
import torch

from ..build import LAYERS, key
from ..errors import MorphismError
from ..spec import OPS, Arch, has_bias

PRESERVING = frozenset(op for op, o in OPS.items() if o.per_channel)  # channels one-to-one
# A layout of a node's output after a morphism: (new channel count, new position of each old one).
Layout = tuple[int, tuple[int, ...]]


class LayoutConflict(Exception):
    """An add would receive inputs whose channels were re-laid differently (internal)."""

    def __init__(self, node_id: str):
        super().__init__(node_id)
        self.node_id = node_id


def new_ids(arch: Arch, prefixes: Iterable[str]) -> list[str]:
    """Fresh ids, numbered upwards from `arch.next_id` (e.g. conv14, bn15, relu16): its number
    is above every number an id of `arch` ends in, so each is new whatever its prefix."""
    k = int(re.search(r"(\d+)$", arch.next_id("x")).group(1))
    return [f"{p}{k + i}" for i, p in enumerate(prefixes)]


def components(arch: Arch) -> dict[str, str]:
    """Node id -> a representative of its channel-tied component (joined by PRESERVING and add)."""
    parent = {n.id: n.id for n in arch.nodes}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for n in arch.nodes:
        if n.op in PRESERVING or n.op == "add":
            for i in n.inputs:
                a, b = find(n.id), find(i)
                if a != b:
                    parent[b] = a
    return {k: find(k) for k in parent}


def propagate(arch: Arch, seeds: Mapping[str, Layout]) -> dict[str, Layout]:
    """The layout of every node whose channels move when the `seeds` nodes get new layouts.

    Channel-preserving ops pass a layout on, a concat combines its inputs' layouts, and an add
    needs all its inputs laid out alike (else LayoutConflict names it); conv/linear stop it.
    """
    lay: dict[str, Layout] = {}
    for n in arch.nodes:
        if n.id in seeds:
            lay[n.id] = seeds[n.id]
            continue
        ins = [lay.get(i) for i in n.inputs]
        if all(x is None for x in ins):
            continue
        if n.op in PRESERVING:
            lay[n.id] = ins[0]
        elif n.op == "add":
            if any(x != ins[0] for x in ins):
                raise LayoutConflict(n.id)
            lay[n.id] = ins[0]
        elif n.op == "concat":
            total, pos = 0, []
            for i, x in zip(n.inputs, ins):
                if x is None:
                    c = arch.channels(i)
                    pos.extend(range(total, total + c))
                    total += c
                else:
                    pos.extend(total + p for p in x[1])
                    total += x[0]
            lay[n.id] = (total, tuple(pos))
    return lay


def dtype_device(state_dict: Mapping[str, torch.Tensor]) -> tuple[torch.dtype, torch.device]:
    """The floating dtype and the device of the weights."""
    for v in state_dict.values():
        if torch.is_tensor(v) and v.is_floating_point():
            return v.dtype, v.device
    return torch.float32, torch.device("cpu")


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int,
              dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """He-normal weights N(0, 2/fan_in), as a tensor of `dtype` on `device`.

    Drawn on the CPU by a torch.Generator seeded from `rng` (about 3x faster than numpy's
    normal sampler), so the same rng gives the same weights whatever the device.
    """
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    t = torch.randn(shape, generator=gen, dtype=draw_dtype)
    t.mul_(math.sqrt(2.0 / max(fan_in, 1)))
    return t.to(dtype=dtype, device=device)


def _where(pos: tuple[int, ...] | None, n: int, device) -> torch.Tensor | slice:
    """Index of the old entries: a slice when they stay in front (the common case), else a tensor."""
    if pos is None or pos == tuple(range(n)):
        return slice(0, n)
    return torch.tensor(pos, device=device)


def _spread(t: torch.Tensor, layout: Layout, fill: float) -> torch.Tensor:
    out = torch.full((layout[0],), fill, dtype=t.dtype, device=t.device)
    out[_where(layout[1], len(t), t.device)] = t
    return out


def _relayout_weight(w: torch.Tensor, lin: Layout | None, lout: Layout | None,
                     rng: np.random.Generator) -> torch.Tensor:
    """Old weights moved to their new rows/columns; zeros at new columns; He rows at new rows."""
    n_out, n_in = w.shape[:2]
    new_out = lout[0] if lout else n_out
    new_in = lin[0] if lin else n_in
    rows = _where(lout[1] if lout else None, n_out, w.device)
    cols = _where(lin[1] if lin else None, n_in, w.device)
    out = w.new_zeros((new_out, new_in, *w.shape[2:]))
    if isinstance(rows, slice) or isinstance(cols, slice):
        out[rows, cols] = w
    else:
        out[rows[:, None], cols[None, :]] = w
    if new_out > n_out:
        fresh = torch.ones(new_out, dtype=torch.bool, device=w.device)
        fresh[rows] = False
        idx = fresh.nonzero().squeeze(1)
        fan_in = new_in * math.prod(w.shape[2:])
        new = he_normal(rng, (len(idx), new_in, *w.shape[2:]), fan_in, w.dtype, w.device)
        if isinstance(rows, slice):
            out[n_out:] = new
        else:
            out[idx] = new
    return out


def relayout(arch: Arch, state_dict: Mapping[str, torch.Tensor], lay: Mapping[str, Layout],
             rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A new state dict for `arch` (already re-shaped) from the old one and the layouts `lay`.

    Conv/linear weights keep old entries at their new positions and get zero input weights
    for new input channels; a conv whose own output has a layout is being widened and gets
    He-normal filters for its new output channels. BN gets gamma=1, beta=0, mean 0, var 1 at
    new channels. Untouched nodes keep their tensors (shared, not copied).
    """
    out = dict(state_dict)
    for n in arch.nodes:
        if n.op in ("conv", "linear"):
            lin = lay.get(n.inputs[0])
            lout = lay.get(n.id) if n.op == "conv" else None
            if lin is None and lout is None:
                continue
            out[key(n.id, "weight")] = _relayout_weight(state_dict[key(n.id, "weight")],
                                                        lin, lout, rng)
            if lout is not None and has_bias(n):
                out[key(n.id, "bias")] = _spread(state_dict[key(n.id, "bias")], lout, 0.0)
        elif n.op == "bn" and n.id in lay:
            for p, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0),
                            ("running_var", 1.0)):
                out[key(n.id, p)] = _spread(state_dict[key(n.id, p)], lay[n.id], fill)
        elif n.op == "dwconv" and n.id in lay:  # new channels pass through (centre one-hot)
            w = state_dict[key(n.id, "weight")]
            k = w.shape[-1]
            new = w.new_zeros((lay[n.id][0], *w.shape[1:]))
            new[:, 0, k // 2, k // 2] = 1.0
            new[_where(lay[n.id][1], len(w), w.device)] = w
            out[key(n.id, "weight")] = new
            if has_bias(n):
                out[key(n.id, "bias")] = _spread(state_dict[key(n.id, "bias")], lay[n.id], 0.0)
    return out


def rewire(arch: Arch, old: str, new: str, inserted: list, after: str) -> list:
    """The nodes with every reader of `old` reading `new`, and `inserted` placed after `after`."""
    from ..spec import with_node

    nodes = []
    for n in arch.nodes:
        if old in n.inputs:
            n = with_node(n, inputs=tuple(new if i == old else i for i in n.inputs))
        nodes.append(n)
        if n.id == after:
            nodes.extend(inserted)
    return nodes


def ancestors(arch: Arch, node_id: str) -> set[str]:
    """`node_id` and every node it depends on."""
    need = {node_id}
    for n in reversed(arch.nodes[: arch.position[node_id] + 1]):
        if n.id in need:
            need.update(n.inputs)
    return need


def activation(arch: Arch, state_dict: Mapping[str, torch.Tensor], probe: torch.Tensor,
               node_id: str) -> torch.Tensor:
    """The output of `node_id` on `probe`, with every BN in train mode (batch statistics)."""
    need = ancestors(arch, node_id)
    vals = {arch.input.id: probe}
    with torch.no_grad():
        for n in arch.nodes[1:]:
            if n.id in need:
                w = {name: state_dict[key(n.id, name)] for name in arch.weight_shapes(n.id)}
                vals[n.id] = LAYERS[n.op].run(n, [vals[i] for i in n.inputs], w)
    return vals[node_id]


def check_probe(arch: Arch, state_dict: Mapping[str, torch.Tensor],
                probe: torch.Tensor | None) -> torch.Tensor | None:
    """The probe batch in the weights' dtype and device, or MorphismError if it does not fit."""
    if probe is None:
        return None
    if not torch.is_tensor(probe) or probe.dim() != 4 or not probe.is_floating_point():
        raise MorphismError("the probe must be a float tensor of shape (N, C, H, W), got "
                            f"{type(probe).__name__} {tuple(getattr(probe, 'shape', ()))}")
    want = arch.shapes[arch.input.id]
    if tuple(probe.shape[1:]) != tuple(want):
        raise MorphismError(f"the probe batch has shape {tuple(probe.shape)}, but the network "
                            f"reads (N, {', '.join(map(str, want))})")
    dtype, device = dtype_device(state_dict)
    return probe.to(dtype=dtype, device=device)


# --------------------------------------------------------------------------- removing channels
# The approximate morphisms take channels away; `Keep` names the old channels a node keeps
# (ascending indices into its old channels).
Keep = tuple[int, ...]


def narrow_propagate(arch: Arch, seeds: Mapping[str, Keep]) -> dict[str, Keep]:
    """The kept channels of every node whose channels shrink when the `seeds` nodes keep only
    theirs (computed on the parent arch). Like `propagate`: per-channel ops pass it on, a concat
    combines its inputs' kept channels, an add needs all its inputs to keep the same channels
    (else LayoutConflict names it), conv/linear stop it."""
    keep: dict[str, Keep] = {}
    for n in arch.nodes:
        if n.id in seeds:
            keep[n.id] = tuple(seeds[n.id])
            continue
        ins = [keep.get(i) for i in n.inputs]
        if all(x is None for x in ins):
            continue
        if n.op in PRESERVING:
            keep[n.id] = ins[0]
        elif n.op == "add":
            if any(x != ins[0] for x in ins):
                raise LayoutConflict(n.id)
            keep[n.id] = ins[0]
        elif n.op == "concat":
            total, pos = 0, []
            for i, x in zip(n.inputs, ins):
                c = arch.channels(i)
                pos.extend(total + p for p in (range(c) if x is None else x))
                total += c
            keep[n.id] = tuple(pos)
    return keep


def _take(t: torch.Tensor, idx: Keep | None, dim: int = 0) -> torch.Tensor:
    if idx is None:
        return t
    return t.index_select(dim, torch.tensor(idx, dtype=torch.long, device=t.device))


def narrow(parent: Arch, child: Arch, state_dict: Mapping[str, torch.Tensor],
           keep: Mapping[str, Keep]) -> dict[str, torch.Tensor]:
    """The child's state dict: every child node's weights from the parent's, with the channels
    in `keep` (by parent node id, from `narrow_propagate`) selected; a conv or linear layer
    reading a narrowed node keeps the matching input columns. Nodes the child lacks lose their
    weights; untouched tensors are shared."""
    out = weights_for(child, state_dict)
    for n in child.nodes:
        if n.id not in parent.by_id:
            continue
        old = parent[n.id]
        if n.op in ("conv", "linear"):
            lin = keep.get(old.inputs[0])
            lout = keep.get(n.id) if n.op == "conv" else None
            if lin is None and lout is None:
                continue
            w = _take(_take(state_dict[key(n.id, "weight")], lout, 0), lin, 1)
            out[key(n.id, "weight")] = w
            if lout is not None and has_bias(n):
                out[key(n.id, "bias")] = _take(state_dict[key(n.id, "bias")], lout)
        elif n.op in ("bn", "dwconv") and n.id in keep:
            for name in child.weight_shapes(n.id):
                t = state_dict[key(n.id, name)]
                out[key(n.id, name)] = t if t.dim() == 0 else _take(t, keep[n.id])
    return out


def weights_for(arch: Arch, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of `state_dict` that belong to nodes of `arch` (shared, not copied)."""
    from ..build import PREFIX
    return {k: v for k, v in state_dict.items()
            if k[len(PREFIX):].split(".", 1)[0] in arch.by_id}


def live(nodes: Iterable, output: str) -> list:
    """The nodes the output depends on, in their order (the rest are dead after a removal)."""
    nodes = list(nodes)
    need = {output}
    for n in reversed(nodes):
        if n.id in need:
            need.update(n.inputs)
    return [n for n in nodes if n.id in need]


def fold_scale(arch: Arch, state_dict: Mapping[str, torch.Tensor], node_id: str,
               a: float) -> dict[str, torch.Tensor] | None:
    """Weights under which the readers of `node_id`, fed x, compute what they computed when fed
    a * x (a > 0), or None where that cannot be written into them.

    conv, dwconv and linear readers scale their weights by a, an add its weight for that input,
    a BN its running mean by 1/a (and variance so that eval mode is exact: v' = (v + eps)/a^2 -
    eps, gamma adjusted if that would be negative); relu, max-pool and gap pass the factor on
    to their readers (positively homogeneous); a concat reader would need a per-channel factor
    and is not supported (None).
    """
    from ..build import BN_EPS
    if not a > 0:
        return None
    if a == 1:
        return dict(state_dict)
    out = dict(state_dict)
    scaled = {node_id}
    for n in arch.nodes[arch.position[node_id] + 1:]:
        hits = [k for k, i in enumerate(n.inputs) if i in scaled]
        if not hits:
            continue
        if n.op in ("relu", "maxpool", "gap"):
            scaled.add(n.id)
        elif n.op in ("conv", "dwconv", "linear"):
            out[key(n.id, "weight")] = state_dict[key(n.id, "weight")] * a
        elif n.op == "add":
            w = state_dict[key(n.id, "weight")].clone()
            w[hits] = w[hits] * a
            out[key(n.id, "weight")] = w
        elif n.op == "bn":
            m, v = state_dict[key(n.id, "running_mean")], state_dict[key(n.id, "running_var")]
            g = state_dict[key(n.id, "weight")]
            v2 = ((v + BN_EPS) / a ** 2 - BN_EPS).clamp_min(0.0)
            out[key(n.id, "running_mean")] = m / a
            out[key(n.id, "running_var")] = v2
            out[key(n.id, "weight")] = g * (a * torch.sqrt(v2 + BN_EPS) / torch.sqrt(v + BN_EPS))
        else:
            return None
    return out
