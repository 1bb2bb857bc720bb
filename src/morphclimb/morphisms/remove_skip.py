"""Remove a skip connection (approximate): drop one branch of an add or a concat."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..build import key
from ..errors import MorphismError
from ..spec import Arch, with_node
from ._graph import Keep, LayoutConflict, fold_scale, live, narrow, narrow_propagate, rewire
from .base import Choices, Morphism, StateDict, need_int, need_node

MERGES = ("add", "concat")


def _kept(arch: Arch, merge: str, branch: int) -> Keep:
    """The channels of a concat that remain without input `branch`."""
    out, total = [], 0
    for k, i in enumerate(arch[merge].inputs):
        c = arch.channels(i)
        if k != branch:
            out.extend(range(total, total + c))
        total += c
    return tuple(out)


def check(arch: Arch, merge: Any, branch: Any) -> None:
    """MorphismError unless input `branch` (>= 1) of add/concat `merge` can be dropped."""
    need_node(arch, "remove_skip", merge, "'merge'", MERGES)
    n = len(arch[merge].inputs)
    need_int("remove_skip", "branch", branch, lambda v: 1 <= v < n,
             f"the index of one of the inputs after the first of '{merge}' (1 to {n - 1})")
    if arch[merge].op == "concat":
        try:
            narrow_propagate(arch, {merge: _kept(arch, merge, branch)})
        except LayoutConflict as e:
            raise MorphismError(
                f"remove_skip: dropping input {branch} of concat '{merge}' would take channels "
                f"from only one input of add '{e.node_id}'") from None


def choices(arch: Arch) -> Choices:
    """Every add/concat, each with the inputs after the first that can be dropped."""
    out = []
    for n in arch.nodes:
        if n.op not in MERGES:
            continue
        ok = []
        for b in range(1, len(n.inputs)):
            try:
                check(arch, n.id, b)
                ok.append(b)
            except MorphismError:
                pass
        if ok:
            out.append((n.id, ok))
    return out


def record(merge: str, branch: int) -> dict[str, Any]:
    """The record for dropping input `branch` of `merge`."""
    return {"op": "remove_skip", "merge": merge, "branch": branch}


def apply_record(arch: Arch, sd: Mapping[str, torch.Tensor], rec: dict[str, Any],
                 rng: np.random.Generator, probe: torch.Tensor | None = None
                 ) -> tuple[Arch, StateDict, dict[str, Any]]:
    """Drop the branch; a merge left with one input is removed (its readers read that input)."""
    merge, b = rec["merge"], rec["branch"]
    check(arch, merge, b)
    m = arch[merge]
    ins = m.inputs[:b] + m.inputs[b + 1:]
    keep = {merge: _kept(arch, merge, b)} if m.op == "concat" else {}
    sd = dict(sd)
    if len(ins) >= 2:
        nodes = [with_node(n, inputs=ins) if n.id == merge else n for n in arch.nodes]
        if m.op == "add":
            w = sd[key(merge, "weight")]
            sd[key(merge, "weight")] = torch.cat([w[:b], w[b + 1:]])
    else:
        if m.op == "add":  # the remaining input had weight w0: fold it into the readers
            folded = fold_scale(arch, sd, merge, float(sd[key(merge, "weight")][0]))
            sd = sd if folded is None else folded
        nodes = [n for n in rewire(arch, merge, ins[0], [], ins[0]) if n.id != merge]
    new_arch = arch.replace(live(nodes, arch.output))
    out = narrow(arch, new_arch, sd, narrow_propagate(arch, keep))
    removed = [n.id for n in arch.nodes if n.id not in new_arch.by_id]
    return new_arch, out, {**record(merge, b), "removed": removed}


MORPHISM = Morphism("remove_skip", choices, record, apply_record, fields=("merge", "branch"),
                    outputs=("removed", "change"), approximate=True)


def remove_skip(arch: Arch, state_dict: Mapping[str, torch.Tensor], rng: np.random.Generator,
                probe: torch.Tensor | None = None, *, merge: str | None = None,
                branch: int | None = None) -> tuple[Arch, StateDict]:
    """Drop a branch (an input after the first) of an add or concat (sampled unless given)."""
    return MORPHISM.run(arch, state_dict, rng, probe, {"merge": merge, "branch": branch})
