"""Architecture specs: an immutable, validated, JSON-serialisable DAG of layers (no torch import)."""

from __future__ import annotations

import dataclasses
import heapq
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .errors import ArchError

FORMAT = "morphclimb.arch/1"
_ATTRS = ("channels", "kernel", "size", "bias")
_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Shape = tuple  # (C, H, W) for feature maps, (C,) for vectors


@dataclass(frozen=True)
class Node:
    """One layer: a stable id, an op, the ids it reads, and the op's attributes."""

    id: str
    op: str
    inputs: tuple[str, ...] = ()
    channels: int | None = None
    kernel: int | None = None
    size: tuple[int, int] | None = None
    bias: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """This node as a JSON-ready dict (attributes that are unset are left out)."""
        d: dict[str, Any] = {"id": self.id, "op": self.op, "inputs": list(self.inputs)}
        for name in _ATTRS:
            value = getattr(self, name)
            if value is not None:
                d[name] = list(value) if name == "size" else value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        """The node described by `d` (as written by `to_dict`)."""
        if not isinstance(d, dict):
            raise ArchError(f"a node must be a JSON object, got {type(d).__name__}: {d!r}")
        unknown = set(d) - {"id", "op", "inputs", *_ATTRS}
        name = d.get("id", "?")
        if unknown:
            raise ArchError(f"node '{name}': unknown field(s) {sorted(unknown)}; "
                            f"known fields are id, op, inputs, {', '.join(_ATTRS)}")
        if "id" not in d or "op" not in d:
            raise ArchError(f"node {d!r}: every node needs an 'id' and an 'op'")
        inputs = d.get("inputs", [])
        if not isinstance(inputs, (list, tuple)) or not all(isinstance(i, str) for i in inputs):
            raise ArchError(f"node '{name}': 'inputs' must be a list of node ids, got {inputs!r}")
        size = d.get("size")
        if size is not None:
            if not isinstance(size, (list, tuple)) or len(size) != 2:
                raise ArchError(f"node '{name}': 'size' must be [height, width], got {size!r}")
            size = tuple(size)
        return cls(id=d["id"], op=d["op"], inputs=tuple(inputs), channels=d.get("channels"),
                   kernel=d.get("kernel"), size=size, bias=d.get("bias"))

    def describe(self) -> str:
        """A short human-readable description, e.g. 'conv 3x3, 64'."""
        op = OPS.get(self.op)
        return op.describe(self) if op is not None and op.describe is not None else self.op


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Arch:
    """An immutable CNN architecture: nodes (kept in topological order) and the output node's id."""

    nodes: tuple[Node, ...]
    output: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        ordered = _validate(self.nodes, self.output)
        object.__setattr__(self, "nodes", ordered)
        if self.num_params > MAX_PARAMS:
            raise ArchError(f"an architecture of {self.num_params:,} parameters; at most "
                            f"{MAX_PARAMS:,} are read")

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `Arch.from_dict(a.to_dict()) == a` exactly."""
        return {"format": FORMAT, "nodes": [n.to_dict() for n in self.nodes], "output": self.output}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Arch:
        """The architecture described by `d`; raises ArchError naming the problem."""
        if not isinstance(d, dict):
            raise ArchError(f"an architecture must be a JSON object, got {type(d).__name__}")
        fmt = d.get("format", FORMAT)
        if fmt != FORMAT:
            raise ArchError(f"unknown architecture format {fmt!r}; this version reads {FORMAT!r}")
        unknown = set(d) - {"format", "nodes", "output"}
        if unknown:
            raise ArchError(f"unknown architecture field(s) {sorted(unknown)}; "
                            "known fields are format, nodes, output")
        if not isinstance(d.get("nodes"), list) or "output" not in d:
            raise ArchError("an architecture needs a 'nodes' list and an 'output' node id")
        return cls(tuple(Node.from_dict(n) for n in d["nodes"]), d["output"])

    # ----------------------------------------------------------------- derived views
    @cached_property
    def by_id(self) -> dict[str, Node]:
        """Node id -> node."""
        return {n.id: n for n in self.nodes}

    @cached_property
    def shapes(self) -> dict[str, Shape]:
        """Node id -> output shape without the batch dimension."""
        return _infer_shapes(self.nodes)

    @cached_property
    def consumers(self) -> dict[str, tuple[str, ...]]:
        """Node id -> ids of the nodes that read it, in topological order."""
        out: dict[str, list[str]] = {n.id: [] for n in self.nodes}
        for n in self.nodes:
            for i in dict.fromkeys(n.inputs):
                out[i].append(n.id)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def position(self) -> dict[str, int]:
        """Node id -> index in the topological order."""
        return {n.id: k for k, n in enumerate(self.nodes)}

    @property
    def input(self) -> Node:
        """The input node."""
        return self.nodes[0]

    def __getitem__(self, node_id: str) -> Node:
        return self.by_id[node_id]

    def __len__(self) -> int:
        return len(self.nodes)

    def channels(self, node_id: str) -> int:
        """Number of channels (or features) of the node's output."""
        return self.shapes[node_id][0]

    def weight_shapes(self, node_id: str) -> dict[str, Shape]:
        """State-dict entries of one node (parameters and buffers): name -> shape."""
        n = self.by_id[node_id]
        return OPS[n.op].weights(n, [self.shapes[i] for i in n.inputs])

    def node_params(self, node_id: str) -> int:
        """Number of trainable parameters of one node."""
        untrained = OPS[self.by_id[node_id].op].buffers
        return sum(math.prod(s) for name, s in self.weight_shapes(node_id).items()
                   if name not in untrained)

    @cached_property
    def num_params(self) -> int:
        """Total number of trainable parameters."""
        return sum(self.node_params(n.id) for n in self.nodes)

    def count(self, op: str) -> int:
        """Number of nodes with this op."""
        return sum(1 for n in self.nodes if n.op == op)

    def data_mismatch(self, channels: int, image_size, num_classes: int,
                      theirs: str) -> str | None:
        """Why this network cannot read `channels`-channel images of `image_size` and predict
        `num_classes` classes ("reads ... ; `theirs` ..."), or None when it can."""
        node = self.input
        have = (node.channels, tuple(node.size))
        want = (channels, tuple(image_size))
        if have != want:
            return (f"reads {have[0]}-channel {have[1][0]}x{have[1][1]} images; {theirs} "
                    f"{want[0]}-channel {want[1][0]}x{want[1][1]} images")
        out = self.channels(self.output)
        if out != num_classes or len(self.shapes[self.output]) != 1:
            return f"predicts {out} outputs per image; {theirs} {num_classes} classes"
        return None

    def next_id(self, prefix: str, taken: set[str] | frozenset = frozenset()) -> str:
        """A fresh node id `prefix<k>`, with k one more than any number used in this arch."""
        k = 0
        for n in self.nodes:
            m = re.search(r"(\d+)$", n.id)
            if m:
                k = max(k, int(m.group(1)) + 1)
        while f"{prefix}{k}" in self.by_id or f"{prefix}{k}" in taken:
            k += 1
        return f"{prefix}{k}"

    def replace(self, nodes: tuple[Node, ...] | list[Node], output: str | None = None) -> Arch:
        """A new validated Arch with these nodes."""
        return Arch(tuple(nodes), self.output if output is None else output)

    def summary(self) -> str:
        """A readable table: layer, op, inputs, output shape and parameters, with totals."""
        return format_table(self.nodes, self.shapes, self.node_params) + (
            f"\n{len(self.nodes)} nodes, {self.count('conv')} conv, "
            f"{self.num_params:,} parameters")

    def __repr__(self) -> str:
        return (f"Arch({len(self.nodes)} nodes, {self.count('conv')} conv, "
                f"{self.num_params:,} params, output={self.output!r})")


def has_bias(n: Node) -> bool:
    """Whether a conv/linear node has a bias (conv default: no, linear default: yes)."""
    return n.bias if n.bias is not None else n.op == "linear"


# --------------------------------------------------------------------------- ops
# What each op is, without torch: fields, inputs, output shape, weights. Its torch side (the
# module and the same computation as a function of its weights) is build.LAYERS.
@dataclass(frozen=True)
class Op:
    """One kind of node. `shape` and `weights` get the node and its input shapes; `shape`
    raises ArchError(problem) for inputs that do not fit."""

    shape: Callable[[Node, list[Shape]], Shape]  # the output shape
    required: frozenset = frozenset()  # fields a node must have
    optional: frozenset = frozenset()  # fields it may have
    inputs: tuple[int, int | None] = (1, 1)  # min and max number of inputs (None: no max)
    weights: Callable[[Node, list[Shape]], dict[str, Shape]] = lambda n, ins: {}  # state dict
    buffers: frozenset = frozenset()  # names in `weights` that are not trained
    per_channel: bool = False  # output channel k is computed from input channel k alone
    describe: Callable[[Node], str] | None = None  # for tables; default: the op's name
    # forward FLOPs per image from (node, input shapes, output shape); conventions: flops.py
    flops: Callable[[Node, list[Shape], Shape], int] = lambda n, ins, out: 0


def _need_map(n: Node, s: Shape) -> None:
    if len(s) != 3:
        raise ArchError(f"'{n.op}' needs a feature map (C, H, W) input, got shape {s}")


def _same_shapes(n: Node, ins: list[Shape]) -> Shape:
    if any(s != ins[0] for s in ins):
        detail = ", ".join(f"{i}: {'x'.join(map(str, s))}" for i, s in zip(n.inputs, ins))
        raise ArchError(f"add needs inputs of one shape (channels and size), got {detail}")
    return ins[0]


def _concat_shape(n: Node, ins: list[Shape]) -> Shape:
    for s in ins:
        _need_map(n, s)
    if any(s[1:] != ins[0][1:] for s in ins):
        detail = ", ".join(f"{i}: {'x'.join(map(str, s))}" for i, s in zip(n.inputs, ins))
        raise ArchError(f"concat needs inputs of one spatial size, got {detail}")
    return (sum(s[0] for s in ins), *ins[0][1:])


def _map_op(shape: Callable[[Node, Shape], Shape]) -> Callable[[Node, list[Shape]], Shape]:
    """The shape function of a one-input op that needs a feature map."""
    def check(n: Node, ins: list[Shape]) -> Shape:
        _need_map(n, ins[0])
        return shape(n, ins[0])
    return check


def _pool_shape(n: Node, s: Shape) -> Shape:
    c, h, w = s
    if h // n.kernel < 1 or w // n.kernel < 1:
        raise ArchError(f"a {n.kernel}x{n.kernel} max-pool of a {h}x{w} map leaves nothing")
    return (c, h // n.kernel, w // n.kernel)


def _linear_shape(n: Node, ins: list[Shape]) -> Shape:
    if len(ins[0]) != 1:
        raise ArchError(f"linear needs a vector input (put a 'gap' before it), got shape "
                        f"{ins[0]}")
    return (n.channels,)


def _with_bias(n: Node, weight: Shape) -> dict[str, Shape]:
    return {"weight": weight, "bias": (n.channels,)} if has_bias(n) else {"weight": weight}


def _input_describe(n: Node) -> str:
    if n.size is not None and len(n.size) == 2:
        return f"input {n.channels}x{n.size[0]}x{n.size[1]}"
    return "input"


def _bn_weights(n: Node, ins: list[Shape]) -> dict[str, Shape]:
    c = ins[0][:1]
    return {"weight": c, "bias": c, "running_mean": c, "running_var": c, "num_batches_tracked": ()}


def _size(s: Shape) -> int:
    return math.prod(s)


def _conv_flops(n: Node, ins: list[Shape], out: Shape) -> int:
    return 2 * ins[0][0] * n.kernel ** 2 * _size(out) + (_size(out) if has_bias(n) else 0)


def _dwconv_weights(n: Node, ins: list[Shape]) -> dict[str, Shape]:
    c = ins[0][0]
    w = {"weight": (c, 1, n.kernel, n.kernel)}
    return {**w, "bias": (c,)} if has_bias(n) else w


def _dwconv_flops(n: Node, ins: list[Shape], out: Shape) -> int:
    return 2 * n.kernel ** 2 * _size(out) + (_size(out) if has_bias(n) else 0)


def _linear_flops(n: Node, ins: list[Shape], out: Shape) -> int:
    return 2 * ins[0][0] * n.channels + (n.channels if has_bias(n) else 0)


OPS: dict[str, Op] = {
    "input": Op(lambda n, ins: (n.channels, *n.size), required=frozenset({"channels", "size"}),
                inputs=(0, 0), describe=_input_describe),
    "conv": Op(_map_op(lambda n, s: (n.channels, *s[1:])),
               required=frozenset({"channels", "kernel"}), optional=frozenset({"bias"}),
               weights=lambda n, ins: _with_bias(n, (n.channels, ins[0][0], n.kernel, n.kernel)),
               describe=lambda n: f"conv {n.kernel}x{n.kernel}, {n.channels}",
               flops=_conv_flops),
    # depthwise conv (one k x k filter per channel, 'same' padding, as many channels out as in):
    # the first half of a depthwise-separable conv, placed by the approximate `separable` morphism
    "dwconv": Op(_map_op(lambda n, s: s), required=frozenset({"kernel"}),
                 optional=frozenset({"bias"}), per_channel=True, weights=_dwconv_weights,
                 describe=lambda n: f"dwconv {n.kernel}x{n.kernel}", flops=_dwconv_flops),
    "bn": Op(_map_op(lambda n, s: s), per_channel=True,
             weights=_bn_weights,
             buffers=frozenset({"running_mean", "running_var", "num_batches_tracked"}),
             flops=lambda n, ins, out: 4 * _size(out)),
    "relu": Op(lambda n, ins: ins[0], per_channel=True, flops=lambda n, ins, out: _size(out)),
    "maxpool": Op(_map_op(_pool_shape), required=frozenset({"kernel"}), per_channel=True,
                  describe=lambda n: f"maxpool {n.kernel}x{n.kernel}",
                  flops=lambda n, ins, out: (n.kernel ** 2 - 1) * _size(out)),
    "add": Op(_same_shapes, inputs=(2, None), weights=lambda n, ins: {"weight": (len(ins),)},
              flops=lambda n, ins, out: 2 * len(ins) * _size(out)),
    "concat": Op(_concat_shape, inputs=(2, None)),
    "gap": Op(_map_op(lambda n, s: s[:1]), per_channel=True,
              flops=lambda n, ins, out: _size(ins[0])),
    "linear": Op(_linear_shape, required=frozenset({"channels"}), optional=frozenset({"bias"}),
                 weights=lambda n, ins: _with_bias(n, (n.channels, ins[0][0])),
                 describe=lambda n: f"linear {n.channels}", flops=_linear_flops),
}


def format_table(nodes, shapes: dict, params=None) -> str:
    """The nodes as a fixed-width table (shapes that could not be inferred show as '?')."""
    rows = [("layer", "op", "inputs", "output", "params")]
    for n in nodes:
        shape = shapes.get(n.id)
        shape_s = "x".join(str(s) for s in shape) if shape else "?"
        p = ""
        if params is not None and shape is not None:
            try:
                p = f"{params(n.id):,}"
            except (KeyError, TypeError):
                p = "?"
        rows.append((n.id, n.describe(), ",".join(n.inputs) or "-",
                     shape_s, p))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = ["  ".join(r[c].ljust(widths[c]) for c in range(5)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- validation
def _fail(node: Node | str, problem: str, nodes, shapes=None) -> ArchError:
    name = node.id if isinstance(node, Node) else node
    op = f" ({node.op})" if isinstance(node, Node) else ""
    table = format_table(nodes, shapes or {})
    return ArchError(f"node '{name}'{op}: {problem}\n\n{table}")


# Bounds on what an architecture may hold, far beyond the networks a search grows (ResNet-110
# has 390 nodes, 64 channels, 1.7 M parameters): an architecture read from a file past them
# is refused before any time or memory is spent on it.
MAX_NODES = 4096
MAX_CHANNELS = 1 << 16
MAX_KERNEL = 63
MAX_SIDE = 16384
MAX_PARAMS = 1 << 31


def _validate(nodes: tuple[Node, ...], output: str) -> tuple[Node, ...]:
    if not nodes:
        raise ArchError("an architecture needs at least one node (an 'input')")
    if len(nodes) > MAX_NODES:
        raise ArchError(f"an architecture of {len(nodes):,} nodes; at most {MAX_NODES:,} are "
                        "read")
    seen: dict[str, Node] = {}
    for n in nodes:
        if not isinstance(n, Node):
            raise ArchError(f"expected Node objects, got {type(n).__name__}: {n!r}")
        if not isinstance(n.id, str) or not _ID_RE.match(n.id):
            raise _fail(str(n.id), "ids must be identifiers (letters, digits, '_', not "
                        "starting with a digit)", nodes)
        if n.id in seen:
            raise _fail(n, "duplicate id; every node needs its own id", nodes)
        seen[n.id] = n
        _check_attrs(n, nodes)
    for n in nodes:
        for i in n.inputs:
            if i not in seen:
                raise _fail(n, f"dangling input '{i}': no node has that id", nodes)
            if i == n.id:
                raise _fail(n, "reads its own output (a cycle)", nodes)
    inputs = [n for n in nodes if n.op == "input"]
    if len(inputs) != 1:
        raise ArchError(f"an architecture needs exactly one 'input' node, found "
                        f"{len(inputs)}\n\n{format_table(nodes, {})}")
    ordered = _toposort(nodes)
    if output not in seen:
        raise ArchError(f"output '{output}' is not a node id\n\n{format_table(ordered, {})}")
    if ordered[0].op != "input":  # a node without inputs other than 'input' is caught above
        raise _fail(ordered[0], "only the input node may have no inputs", ordered)
    shapes = _infer_shapes(ordered, strict=True)
    out_node = seen[output]
    if out_node.op != "linear":
        raise _fail(out_node, "the output node must be a 'linear' layer (the class scores)",
                    ordered, shapes)
    _check_reaches_output(ordered, output, shapes)
    return ordered


def _check_attrs(n: Node, nodes) -> None:
    if n.op not in OPS:
        raise _fail(n, f"unknown op '{n.op}'; known ops are {', '.join(OPS)}", nodes)
    op = OPS[n.op]
    required, optional, (lo, hi) = op.required, op.optional, op.inputs
    for name in _ATTRS:
        value = getattr(n, name)
        if name in required and value is None:
            raise _fail(n, f"'{n.op}' needs the field '{name}'", nodes)
        if value is not None and name not in required | optional:
            raise _fail(n, f"'{n.op}' takes no field '{name}'", nodes)
    if not isinstance(n.inputs, tuple):
        raise _fail(n, "inputs must be a tuple of node ids", nodes)
    if len(n.inputs) < lo or (hi is not None and len(n.inputs) > hi):
        want = f"exactly {lo}" if lo == hi else f"at least {lo}"
        raise _fail(n, f"'{n.op}' takes {want} input(s), got {len(n.inputs)}", nodes)
    if n.channels is not None and (not _is_int(n.channels) or not 1 <= n.channels <= MAX_CHANNELS):
        raise _fail(n, f"channels must be an integer from 1 to {MAX_CHANNELS:,}, got "
                    f"{_short(n.channels)}", nodes)
    if n.kernel is not None and (not _is_int(n.kernel) or not 1 <= n.kernel <= MAX_KERNEL):
        raise _fail(n, f"kernel must be an integer from 1 to {MAX_KERNEL}, got "
                    f"{_short(n.kernel)}", nodes)
    if n.op in ("conv", "dwconv") and n.kernel % 2 == 0:
        raise _fail(n, f"{n.op} kernels must be odd ('same' padding), got {n.kernel}", nodes)
    if n.bias is not None and not isinstance(n.bias, bool):
        raise _fail(n, f"bias must be true or false, got {n.bias!r}", nodes)
    if n.size is not None and (len(n.size) != 2 or not all(_is_int(s) and 0 < s <= MAX_SIDE
                                                           for s in n.size)):
        raise _fail(n, f"size must be two integers from 1 to {MAX_SIDE:,}, got "
                    f"{_short(n.size)}", nodes)


def _short(v: Any) -> str:
    """repr(v), cut to a readable length (a damaged file may hold a 5,000-digit number)."""
    if isinstance(v, int) and abs(v) >= 10 ** 30:
        return f"a number of {v.bit_length():,} bits"
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _toposort(nodes: tuple[Node, ...]) -> tuple[Node, ...]:
    index = {n.id: k for k, n in enumerate(nodes)}
    indegree = {n.id: len(set(n.inputs)) for n in nodes}
    readers: dict[str, list[str]] = {n.id: [] for n in nodes}
    for n in nodes:
        for i in set(n.inputs):
            readers[i].append(n.id)
    heap = [index[k] for k, d in indegree.items() if d == 0]
    heapq.heapify(heap)
    out: list[Node] = []
    while heap:
        n = nodes[heapq.heappop(heap)]
        out.append(n)
        for r in readers[n.id]:
            indegree[r] -= 1
            if indegree[r] == 0:
                heapq.heappush(heap, index[r])
    if len(out) != len(nodes):
        stuck = [n.id for n in nodes if indegree[n.id] > 0]
        raise _fail(stuck[0], f"is part of a cycle (nodes {', '.join(stuck)} depend on each "
                    "other); an architecture must be acyclic", nodes)
    return tuple(out)


def _infer_shapes(nodes, strict: bool = False) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {}
    for n in nodes:
        ins = [shapes[i] for i in n.inputs]
        shapes[n.id] = _shape_of(n, ins, nodes, shapes)
    return shapes


def _shape_of(n: Node, ins: list[Shape], nodes, shapes) -> Shape:
    try:
        return OPS[n.op].shape(n, ins)
    except ArchError as e:
        raise _fail(n, str(e), nodes, shapes) from None


def _check_reaches_output(nodes, output: str, shapes) -> None:
    live = {output}
    for n in reversed(nodes):
        if n.id in live:
            live.update(n.inputs)
    for n in nodes:
        if n.id not in live:
            raise _fail(n, f"does not contribute to the output '{output}'; remove it or "
                        "connect it", nodes, shapes)


def with_node(node: Node, **changes: Any) -> Node:
    """A copy of `node` with some fields changed."""
    return dataclasses.replace(node, **changes)
