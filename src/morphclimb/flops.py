"""Floating-point operations of an architecture, counted from its spec (no torch needed).

Each op's count is its `flops` entry in spec.OPS; the conventions there (per image, forward
pass, a multiply-add counts as 2 FLOPs):

* conv: 2 * C_in * C_out * k * k * H * W (+ H * W * C_out for a bias); the convs keep the
  spatial size ('same' padding), so H x W is the output map.
* dwconv (depthwise, one k x k filter per channel): 2 * C * k * k * H * W (+ H * W * C for
  a bias).
* linear: 2 * in * out (+ out for a bias).
* bn: 4 per element in training (subtract mean, divide by std, scale, shift; the batch
  statistics themselves are another ~3 per element, counted in `training_flops` through the
  factor 3 like everything else); relu: 1 per element; add: 2 per element and input (each
  input is scaled by its learnable weight, then summed); maxpool: k * k - 1 comparisons per
  output element; gap: 1 per input element; concat and input: 0 (memory only).

Training one image costs about 3x its forward pass (the backward pass computes the gradients
with respect to both inputs and weights, each about as expensive as the forward pass):
`training_flops(arch) = 3 * forward_flops(arch)`, the usual convention; the SGD update
(about 10 FLOPs per parameter per batch) is left out.
"""

from __future__ import annotations

from .spec import OPS, Arch, Node

TRAIN_FACTOR = 3


def node_flops(arch: Arch, node: Node) -> int:
    """Forward FLOPs of one node for one image (its op's entry in spec.OPS)."""
    ins = [arch.shapes[i] for i in node.inputs]
    return OPS[node.op].flops(node, ins, arch.shapes[node.id])


def forward_flops(arch: Arch) -> int:
    """Forward FLOPs per image of the whole network."""
    return sum(node_flops(arch, n) for n in arch.nodes)


def training_flops(arch: Arch) -> int:
    """FLOPs to train on one image (forward + backward), by the 3x-forward convention."""
    return TRAIN_FACTOR * forward_flops(arch)


def flops_by_op(arch: Arch) -> dict[str, int]:
    """Forward FLOPs per image summed by op (only ops that occur), largest first."""
    out: dict[str, int] = {}
    for n in arch.nodes:
        out[n.op] = out.get(n.op, 0) + node_flops(arch, n)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
