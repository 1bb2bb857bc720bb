"""Architecture drawings (paper Figures 3-5): the main path as a column of boxes, skips at the side.

Conv-BN-ReLU chains are folded into one box. The main path follows each node's first input back
from the output (skip morphisms put the existing path first). Skip branches that pass through
layers of their own (max-pool, 1x1 conv) are drawn in lanes to the right of the main column;
direct skips from one main-path layer to another are drawn in lanes to the left. Additions are
solid blue, concatenations dashed orange.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch

from .spec import Arch, Node

ROW = 0.5          # inches per row
BOX_H = 0.32       # box height (inches)
MAIN_W = 2.5       # main-path box width
SIDE_W = 1.5       # side-branch box width
SIDE_LANE = 1.75   # width of a lane holding side boxes
EDGE_LANE = 0.2    # width of a lane holding only a direct skip edge
FONT = 8.5

STYLE = {  # edge kind -> (colour, line style, legend label)
    "main": ("#222222", "-", "main path"),
    "add": ("#1f5fbf", "-", "skip by addition (+)"),
    "concat": ("#e07b00", "--", "skip by concatenation (||)"),
    "other": ("#777777", ":", "other connection"),
}
FILL = {"conv": "#dbe8f7", "maxpool": "#fde3c0", "add": "#c9dcf5", "concat": "#ffd9a8",
        "gap": "#e4e4e4", "linear": "#d5d5d5", "input": "#ffffff", "bn": "#eeeeee",
        "relu": "#eeeeee"}


@dataclass
class Block:
    """One drawn box: a run of nodes folded together (e.g. conv, bn, relu)."""

    nodes: list[Node]
    inputs: list[str] = field(default_factory=list)   # ids of the blocks it reads
    row: int = 0
    x: float = 0.0
    main: bool = False

    @property
    def id(self) -> str:
        """The block's id: that of its last node (what consumers read)."""
        return self.nodes[-1].id

    @property
    def op(self) -> str:
        """The op of its first node (what the box is coloured by)."""
        return self.nodes[0].op


def block_label(nodes: list[Node], arch: Arch) -> str:
    """The box text, e.g. 'Conv-BN-ReLU 3x3, 64', 'max-pool 2x2', 'concat, 96'."""
    first = nodes[0]
    if first.op == "conv":
        names = {"conv": "Conv", "bn": "BN", "relu": "ReLU"}
        chain = "-".join(names[n.op] for n in nodes) if len(nodes) > 1 else "conv"
        return f"{chain} {first.kernel}x{first.kernel}, {first.channels}"
    if first.op == "bn":
        return "-".join({"bn": "BN", "relu": "ReLU"}[n.op] for n in nodes)
    if first.op == "relu":
        return "ReLU"
    if first.op == "maxpool":
        return f"max-pool {first.kernel}x{first.kernel}"
    if first.op == "add":
        return f"add (+), {arch.channels(first.id)}"
    if first.op == "concat":
        return f"concat (||), {arch.channels(first.id)}"
    if first.op == "gap":
        return "global avg-pool"
    if first.op == "linear":
        return f"FC {first.channels}" + (" + softmax" if first.id == arch.output else "")
    if first.op == "input":
        c, h, w = arch.shapes[first.id]
        return f"input {h}x{w}x{c}"
    return first.op


def fold(arch: Arch) -> dict[str, Block]:
    """Blocks in topological order, keyed by block id; conv->bn->relu chains become one block."""
    owner: dict[str, Block] = {}
    blocks: list[Block] = []
    follows = {"bn": ("conv",), "relu": ("conv", "bn")}
    for n in arch.nodes:
        if n.op in follows and len(n.inputs) == 1:
            prev = owner.get(n.inputs[0])
            if (prev is not None and prev.id == n.inputs[0] and prev.nodes[-1].op in follows[n.op]
                    and arch.consumers[n.inputs[0]] == (n.id,) and n.inputs[0] != arch.output):
                prev.nodes.append(n)
                owner[n.id] = prev
                continue
        b = Block([n], [owner[i].id for i in n.inputs])
        owner[n.id] = b
        blocks.append(b)
    return {b.id: b for b in blocks}


def main_path(blocks: dict[str, Block], output: str) -> list[str]:
    """Block ids from input to output, following each block's first input."""
    path = [output]
    while blocks[path[-1]].inputs:
        path.append(blocks[path[-1]].inputs[0])
    return path[::-1]


def _assign_rows(blocks: dict[str, Block], main: list[str]) -> None:
    on_main = set(main)
    prev_main = -1
    for b in blocks.values():  # topological order
        row = 1 + max((blocks[i].row for i in b.inputs), default=-1)
        if b.id in on_main:
            row = max(row, prev_main + 1)
            prev_main = row
            b.main = True
        b.row = row


def _chains(blocks: dict[str, Block], consumers: dict[str, list[str]]) -> list[list[str]]:
    """Off-main blocks split into chains (links where one block is the other's only reader)."""
    chains: list[list[str]] = []
    for k, b in blocks.items():  # topological order
        if b.main:
            continue
        u = b.inputs[0] if len(b.inputs) == 1 else None
        if u is not None and not blocks[u].main and consumers[u] == [k]:
            next(c for c in chains if c[-1] == u).append(k)
        else:
            chains.append([k])
    return chains


def _lanes(items: list[tuple[int, int, int]]) -> list[int]:
    """Greedy interval packing: (lo, hi, width) -> first lane index of each item."""
    ends: list[int] = []  # last occupied row per lane
    out = [0] * len(items)
    for k in sorted(range(len(items)), key=lambda k: (items[k][0], -items[k][1])):
        lo, hi, w = items[k]
        lane = 0
        while any(lane + j < len(ends) and ends[lane + j] > lo for j in range(w)):
            lane += 1
        while len(ends) < lane + w:
            ends.append(-1)
        for j in range(w):
            ends[lane + j] = hi
        out[k] = lane
    return out


@dataclass
class Layout:
    """Positions of every block, plus the skip edges and their lanes."""

    blocks: dict[str, Block]
    main: list[str]
    direct: list[tuple[str, str, float]]   # main -> main skips: (source, target, lane x)
    n_rows: int
    x_min: float
    x_max: float


def layout(arch: Arch) -> Layout:
    """Fold the network into blocks and place them (units: inches; rows go down)."""
    blocks = fold(arch)
    main = main_path(blocks, arch.output)
    _assign_rows(blocks, main)
    consumers: dict[str, list[str]] = {k: [] for k in blocks}
    for b in blocks.values():
        for i in b.inputs:
            consumers[i].append(b.id)
    chains = _chains(blocks, consumers)
    items = [(min(blocks[i].row for i in blocks[c[0]].inputs),
              max(blocks[k].row for k in consumers[c[-1]]), 1) for c in chains]
    right = _lanes(items)
    x0 = MAIN_W / 2 + 0.35 + SIDE_LANE / 2
    for chain, lane in zip(chains, right):
        for k in chain:
            blocks[k].x = x0 + lane * SIDE_LANE
    succ = {a: b for a, b in zip(main, main[1:])}
    direct = [(i, b.id) for b in blocks.values() if b.main for i in b.inputs
              if blocks[i].main and succ.get(i) != b.id]
    left = _lanes([(blocks[s].row, blocks[t].row, 1) for s, t in direct])
    xs = [-MAIN_W / 2 - 0.25 - lane * EDGE_LANE for lane in left]
    n_right = max((lane + 1 for lane in right), default=0)
    x_min = min(xs, default=-MAIN_W / 2) - 0.3
    x_max = (MAIN_W / 2 + 0.35 + n_right * SIDE_LANE) if n_right else MAIN_W / 2 + 0.3
    return Layout(blocks, main, [(s, t, x) for (s, t), x in zip(direct, xs)],
                  1 + max(b.row for b in blocks.values()), x_min, x_max + 0.1)


def _y(row: float) -> float:
    return -row * ROW


def _kind(arch: Arch, target: str, blocks: dict[str, Block]) -> str:
    op = blocks[target].nodes[0].op
    return op if op in ("add", "concat") else "other"


def _draw_edge(ax, pts, kind: str, arrow: bool = True) -> None:
    colour, style, _ = STYLE[kind]
    xs, ys = zip(*pts)
    lw = 1.1 if kind == "main" else 1.4
    ax.plot(xs[:-1] + (xs[-1],), ys, color=colour, linestyle=style, linewidth=lw, zorder=1,
            solid_capstyle="butt")
    if arrow:
        ax.annotate("", xy=pts[-1], xytext=pts[-2], zorder=2,
                    arrowprops=dict(arrowstyle="-|>", color=colour, lw=lw,
                                    shrinkA=0, shrinkB=0, mutation_scale=9))


def _side_kind(arch: Arch, lay: Layout) -> dict[str, str]:
    """Edge style of each off-main block: that of the first join (add/concat) it leads into."""
    out: dict[str, str] = {}
    readers: dict[str, list[str]] = {k: [] for k in lay.blocks}
    for b in lay.blocks.values():
        for i in b.inputs:
            readers[i].append(b.id)
    for k in reversed(list(lay.blocks)):
        if lay.blocks[k].main:
            continue
        kinds = [_kind(arch, r, lay.blocks) if lay.blocks[r].op in ("add", "concat")
                 else out.get(r, "other") for r in readers[k]]
        out[k] = next((x for x in kinds if x != "other"), "other")
    return out


def _edges(ax, arch: Arch, lay: Layout) -> None:
    bl = lay.blocks
    half, gap = BOX_H / 2, (ROW - BOX_H) / 2
    right = MAIN_W / 2
    side = _side_kind(arch, lay)
    for a, b in zip(lay.main, lay.main[1:]):
        _draw_edge(ax, [(0, _y(bl[a].row) - half), (0, _y(bl[b].row) + half)], "main")
    for s, t, x in lay.direct:
        ys, yt = _y(bl[s].row) - 0.08, _y(bl[t].row) + 0.08
        _draw_edge(ax, [(-MAIN_W / 2, ys), (x, ys), (x, yt), (-MAIN_W / 2, yt)],
                   _kind(arch, t, bl))
    for b in bl.values():
        for i in b.inputs:
            u = bl[i]
            if u.main and b.main:
                continue
            kind = (b.op if b.op in ("add", "concat") else
                    side[b.id] if not b.main else side[u.id])
            yu, yb = _y(u.row), _y(b.row)
            if u.main:      # leave the main column below the source, in the gap under it
                yg = yu - half - gap * 0.45
                pts = [(right, yu), (right + 0.15, yu), (right + 0.15, yg), (b.x, yg),
                       (b.x, yb + half)]
            elif b.main:    # enter the main column from the right, in the gap above it
                yg = yb + half + gap * 0.55
                pts = [(u.x, yu - half), (u.x, yg), (right + 0.3, yg), (right + 0.3, yb),
                       (right, yb)]
            elif abs(u.x - b.x) < 1e-9:
                pts = [(u.x, yu - half), (b.x, yb + half)]
            else:
                yg = yb + half + gap * 0.5
                pts = [(u.x, yu - half), (u.x, yg), (b.x, yg), (b.x, yb + half)]
            _draw_edge(ax, pts, kind)


def _boxes(ax, arch: Arch, lay: Layout) -> None:
    for b in lay.blocks.values():
        w = MAIN_W if b.main else SIDE_W
        x, y = b.x - w / 2, _y(b.row) - BOX_H / 2
        ax.add_patch(FancyBboxPatch((x, y), w, BOX_H, boxstyle="round,pad=0,rounding_size=0.05",
                                    facecolor=FILL.get(b.op, "#ffffff"), edgecolor="#333333",
                                    linewidth=0.8, zorder=3))
        ax.text(b.x, _y(b.row), block_label(b.nodes, arch), ha="center", va="center",
                fontsize=FONT if b.main else FONT - 0.5, zorder=4, family="DejaVu Sans")


def draw_arch(arch: Arch, title: str | None = None) -> Figure:
    """A matplotlib Figure of `arch`; its height grows with depth, width with skip lanes."""
    lay = layout(arch)
    width = max(lay.x_max - lay.x_min, 5.2)
    chars = max(int(width * 72 / ((FONT + 1.5) * 0.62)), 20)   # title wrapped to the width
    lines = textwrap.wrap(title, chars) if title else []
    top = 0.6 + 0.3 * len(lines) + (0.05 if lines else 0)
    height = lay.n_rows * ROW + top + 0.2
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    x_min = lay.x_min - (width - (lay.x_max - lay.x_min)) / 2
    ax.set_xlim(x_min, x_min + width)
    ax.set_ylim(_y(lay.n_rows - 1) - ROW / 2 - 0.2, ROW / 2 + top - 0.25)
    ax.axis("off")
    _edges(ax, arch, lay)
    _boxes(ax, arch, lay)
    kinds = {"main"}
    kinds |= {_kind(arch, b.id, lay.blocks) for b in lay.blocks.values()
              if b.op in ("add", "concat")}
    handles = [Line2D([], [], color=STYLE[k][0], linestyle=STYLE[k][1], lw=1.6, label=STYLE[k][2])
               for k in STYLE if k in kinds]
    y_top = ROW / 2 + top - 0.25
    if lines:
        ax.text(x_min + 0.15, y_top - 0.12, "\n".join(lines), ha="left", va="top",
                fontsize=FONT + 1.5, weight="bold", linespacing=1.25)
    fig.legend(handles=handles, loc="upper left", ncol=len(handles), fontsize=FONT - 0.5,
               frameon=False, bbox_to_anchor=(0.0, 1 - (0.12 + 0.3 * len(lines)) / height),
               handlelength=2.2, columnspacing=1.2)
    return fig


def drawing_width(arch: Arch) -> float:
    """Width in inches of `draw_arch(arch)`."""
    lay = layout(arch)
    return max(lay.x_max - lay.x_min, 5.2)


def arch_caption(arch: Arch) -> str:
    """A one-line description: layers, conv layers, skips by kind, parameters."""
    return (f"{len(arch)} layers ({arch.count('conv')} conv, {arch.count('add')} add, "
            f"{arch.count('concat')} concat), {arch.num_params:,} parameters")
