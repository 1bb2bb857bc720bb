"""Skip connections: concatenation (Type II) or weighted addition (Type IV)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..build import key
from ..errors import MorphismError
from ..spec import Arch, Node
from ._graph import LayoutConflict, dtype_device, he_normal, new_ids, propagate, relayout, rewire
from .base import Choices, Morphism, StateDict, need_node

ENDS = ("relu", "maxpool", "add", "concat")  # ops a skip may start from or lead into
MODES = ("concat", "add")


def _ends(arch: Arch) -> list[str]:
    return [n.id for n in arch.nodes if n.op in ENDS and len(arch.shapes[n.id]) == 3]


def _ratio(arch: Arch, source: str, target: str) -> int | None:
    """r such that the source map is exactly r times the target map in H and W, else None."""
    (_, hs, ws), (_, ht, wt) = arch.shapes[source], arch.shapes[target]
    if hs % ht or ws % wt or hs // ht != ws // wt:
        return None
    return hs // ht


def _bypassed(arch: Arch, target: str) -> set[str]:
    """Nodes from which `target` follows through relu/maxpool alone (a skip from them is void)."""
    out, cur = set(), target
    while arch[cur].op in ("relu", "maxpool"):
        cur = arch[cur].inputs[0]
        out.add(cur)
    return out


def _concat_seed(arch: Arch, source: str, target: str) -> dict:
    ct = arch.channels(target)
    return {target: (ct + arch.channels(source), tuple(range(ct)))}


def pairs(arch: Arch) -> dict[str, list[tuple[str, str]]]:
    """Mode -> every valid (source, target) pair for that mode."""
    ends = _ends(arch)
    ok: dict[tuple[str, int], bool] = {}
    out: dict[str, list[tuple[str, str]]] = {m: [] for m in MODES}
    for j, t in enumerate(ends):
        void = _bypassed(arch, t)
        for s in ends[:j]:
            if s in void or _ratio(arch, s, t) is None:
                continue
            out["add"].append((s, t))
            memo = (t, arch.channels(s))
            if memo not in ok:
                try:
                    propagate(arch, _concat_seed(arch, s, t))
                    ok[memo] = True
                except LayoutConflict:
                    ok[memo] = False
            if ok[memo]:
                out["concat"].append((s, t))
    return out


def choices(arch: Arch) -> Choices:
    """The modes that have a valid pair, each with its pairs (mode first, then pair, uniformly)."""
    return [(m, p) for m, p in pairs(arch).items() if p]


def record(mode: str, pair: tuple[str, str]) -> dict[str, Any]:
    """The record for a `mode` skip from pair[0] into pair[1]."""
    return {"op": "skip", "mode": mode, "source": pair[0], "target": pair[1]}


def check(arch: Arch, mode: Any, source: Any, target: Any) -> int:
    """The pooling ratio of a valid skip, or MorphismError naming what is wrong."""
    if mode not in MODES:
        raise MorphismError(f"skip: mode must be 'concat' or 'add', got {mode!r}")
    need_node(arch, "skip", source, "source", ENDS)
    need_node(arch, "skip", target, "target", ENDS)
    for end in (source, target):
        if len(arch.shapes[end]) != 3:
            raise MorphismError(f"skip: '{end}' is not a feature map (shape {arch.shapes[end]})")
    if arch.position[source] >= arch.position[target]:
        raise MorphismError(f"skip: source '{source}' must come before target '{target}' in the "
                            "network (a skip from a node to itself or backwards makes a cycle)")
    if source in _bypassed(arch, target):
        raise MorphismError(f"skip: target '{target}' is computed from source '{source}' by "
                            "relu/maxpool alone, so a skip between them would bypass no layer")
    r = _ratio(arch, source, target)
    if r is None:
        raise MorphismError(
            f"skip: source '{source}' ({'x'.join(map(str, arch.shapes[source][1:]))}) is not an "
            f"integer multiple of target '{target}' "
            f"({'x'.join(map(str, arch.shapes[target][1:]))}) in both height and width")
    if mode == "concat":
        try:
            propagate(arch, _concat_seed(arch, source, target))
        except LayoutConflict as e:
            raise MorphismError(
                f"skip: a concat skip from '{source}' into '{target}' would change the channels "
                f"of only one input of add '{e.node_id}'; use mode 'add' or another target"
            ) from None
    return r


def apply_record(arch: Arch, sd: Mapping[str, torch.Tensor], rec: dict[str, Any],
                 rng: np.random.Generator, probe: torch.Tensor | None = None
                 ) -> tuple[Arch, StateDict, dict[str, Any]]:
    """Merge (max-pooled) source into target; the new branch starts with zero influence."""
    mode, source, target = rec["mode"], rec["source"], rec["target"]
    r = check(arch, mode, source, target)
    ct, cs = arch.channels(target), arch.channels(source)
    proj = mode == "add" and cs != ct
    prefixes = ["pool"] * (r > 1) + ["conv"] * proj + ["add" if mode == "add" else "cat"]
    ids = new_ids(arch, prefixes)
    new, src = [], source
    if r > 1:
        new.append(Node(ids[len(new)], "maxpool", (src,), kernel=r))
        src = new[-1].id
    if proj:
        new.append(Node(ids[len(new)], "conv", (src,), channels=ct, kernel=1))
        src = new[-1].id
    merge = Node(ids[-1], mode if mode == "add" else "concat", (target, src))
    new.append(merge)
    new_arch = arch.replace(rewire(arch, target, merge.id, new, target))

    dtype, device = dtype_device(sd)
    if mode == "add":
        out = dict(sd)
        out[key(merge.id, "weight")] = torch.tensor([1.0, 0.0], dtype=dtype, device=device)
        if proj:
            out[key(ids[-2], "weight")] = he_normal(rng, (ct, cs, 1, 1), cs, dtype, device)
    else:
        out = relayout(new_arch, sd, propagate(new_arch, {merge.id: (ct + cs, tuple(range(ct)))}),
                       rng)
    return new_arch, out, {**record(mode, (source, target)), "new": [n.id for n in new]}


MORPHISM = Morphism("skip", choices, record, apply_record, fields=("mode", "source", "target"),
                    outputs=("new",))


def skip(arch: Arch, state_dict: Mapping[str, torch.Tensor], rng: np.random.Generator,
         probe: torch.Tensor | None = None, *, mode: str | None = None,
         source: str | None = None, target: str | None = None) -> tuple[Arch, StateDict]:
    """Add an exact skip connection (mode, then pair, sampled unless given)."""
    return MORPHISM.run(arch, state_dict, rng, probe,
                        {"mode": mode, "source": source, "target": target})
