"""The shape every morphism operator shares: where it can go, how to pick, how to apply."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..build import check_weights
from ..errors import MorphismError
from ..spec import Arch
from ._graph import check_probe
from .measure import output_change

StateDict = dict[str, torch.Tensor]
# choices(arch) -> [(position, [option, ...]), ...], only positions with at least one option
Choices = list[tuple[Any, list[Any]]]


@dataclass(frozen=True)
class Morphism:
    """One operator: `choices` lists valid positions and their options, `record` turns a choice
    into a record, `apply_record` applies a record (returning the record with output fields)."""

    name: str
    choices: Callable[[Arch], Choices]
    record: Callable[[Any, Any], dict[str, Any]]
    apply_record: Callable[..., tuple[Arch, StateDict, dict[str, Any]]]
    fields: tuple[str, ...]  # the record's input fields, besides "op"
    outputs: tuple[str, ...]  # output-only fields, accepted and ignored on input
    # approximate (LEMONADE): the child need not compute what the parent computed; `apply`
    # with a probe batch records the relative change of the output in the field "change"
    approximate: bool = False

    def candidates(self, arch: Arch) -> list[dict[str, Any]]:
        """Every valid record for `arch` (input fields only)."""
        return [self.record(p, o) for p, opts in self.choices(arch) for o in opts]

    def sample(self, arch: Arch, rng: np.random.Generator,
               choices: Choices | None = None) -> dict[str, Any]:
        """A record: a position uniformly among valid ones, then an option uniformly."""
        choices = self.choices(arch) if choices is None else choices
        if not choices:
            raise MorphismError(f"{self.name}: no valid position in this architecture")
        pos, opts = choices[int(rng.integers(len(choices)))]
        return self.record(pos, opts[int(rng.integers(len(opts)))])

    def apply(self, arch: Arch, state_dict: Mapping[str, torch.Tensor], record: Mapping,
              rng: np.random.Generator, probe: torch.Tensor | None = None
              ) -> tuple[Arch, StateDict, dict[str, Any]]:
        """Apply one record; returns (arch, state_dict, record with its output fields).

        An approximate operator given a probe batch adds "change": `output_change` of the
        child against the parent on that batch."""
        check_record(self, record)
        check_weights(arch, state_dict, MorphismError)
        probe = check_probe(arch, state_dict, probe)
        new_arch, new_sd, full = self.apply_record(arch, state_dict, dict(record), rng, probe)
        if self.approximate and probe is not None:
            full["change"] = output_change(arch, state_dict, new_arch, new_sd, probe)
        return new_arch, new_sd, full

    def run(self, arch: Arch, state_dict: Mapping[str, torch.Tensor], rng: np.random.Generator,
            probe: torch.Tensor | None, given: dict[str, Any]) -> tuple[Arch, StateDict]:
        """Apply with the `given` fields fixed and the rest sampled uniformly from `rng`."""
        given = {k: v for k, v in given.items() if v is not None}
        if len(given) == len(self.fields):
            record = {"op": self.name, **given}
        elif not given:
            record = self.sample(arch, rng)
        else:
            fits = [r for r in self.candidates(arch) if all(r[k] == v for k, v in given.items())]
            if not fits:
                raise MorphismError(f"{self.name}: no valid position with {given}")
            record = fits[int(rng.integers(len(fits)))]
        new_arch, new_sd, _ = self.apply(arch, state_dict, record, rng, probe)
        return new_arch, new_sd


def check_record(m: Morphism, record: Mapping) -> None:
    """MorphismError unless `record` has exactly the fields `m` needs (plus output-only ones)."""
    if not isinstance(record, Mapping):
        raise MorphismError(f"a morphism record must be a dict, got {type(record).__name__}")
    missing = [f for f in m.fields if f not in record]
    unknown = sorted(set(record) - {"op", *m.fields, *m.outputs})
    if missing or unknown:
        raise MorphismError(f"{m.name} record {dict(record)!r}: "
                            + (f"missing field(s) {missing}" if missing else "")
                            + ("; " if missing and unknown else "")
                            + (f"unknown field(s) {unknown}" if unknown else "")
                            + f"; a {m.name} record has fields {list(m.fields)}")


def need_node(arch: Arch, name: str, node_id: Any, what: str, ops: tuple[str, ...]) -> None:
    """MorphismError unless `node_id` names a node of `arch` whose op is one of `ops`."""
    allowed = [n.id for n in arch.nodes if n.op in ops]
    listing = ", ".join(allowed[:12]) + (", ..." if len(allowed) > 12 else "")
    if not isinstance(node_id, str) or node_id not in arch.by_id:
        raise MorphismError(f"{name}: {what} {node_id!r} is not a node of this architecture "
                            f"(candidates: {listing or 'none'})")
    op = arch[node_id].op
    if op not in ops:
        raise MorphismError(f"{name}: {what} '{node_id}' is a {op} node, but it must be a "
                            f"{' or '.join(ops)} node (candidates: {listing or 'none'})")


def need_int(name: str, field: str, value: Any, allowed: Callable[[int], bool], rule: str) -> int:
    """MorphismError unless `value` is an int satisfying `allowed`."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not allowed(value):
        raise MorphismError(f"{name}: {field} must be {rule}, got {value!r}")
    return int(value)
