"""Unit tests of the morphisms: structure, every candidate, learning, replay and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import morphclimb
from morphclimb import Arch, MorphismError, Node, build, starting_arch, weights_of
from morphclimb.morphisms import (
    REGISTRY,
    apply_morphism,
    apply_random_morphisms,
    deeper,
    skip,
    wider,
)

START = starting_arch(in_channels=3, num_classes=5, image_size=12, widths=(4, 8, 8))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convs run far faster single-threaded on a shared, oversubscribed CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def weights(arch=START, dtype=torch.float64, seed=0):
    sd = weights_of(build(arch, seed=seed, dtype=dtype))
    g = torch.Generator().manual_seed(seed)
    for k in sd:  # non-trivial BN statistics so that BN mistakes show
        if k.endswith("running_mean") or (k.endswith("bias") and ".bn" in k):
            sd[k] = 0.2 * torch.randn(sd[k].shape, generator=g, dtype=dtype)
        elif k.endswith("running_var") or (k.endswith("weight") and ".bn" in k):
            sd[k] = 0.5 + torch.rand(sd[k].shape, generator=g, dtype=dtype)
    return sd


def out(arch, sd, x, train=False):
    net = build(arch, sd).train(train)
    with torch.no_grad():
        return net(x)


def assert_exact(a, sd, b, sd2, rtol=1e-10, x=None):
    x = torch.randn(3, 3, 12, 12, dtype=torch.float64) if x is None else x
    y = out(a, sd, x)
    assert (out(b, sd2, x) - y).abs().max() <= rtol * y.abs().max()


def grown(n=6, seed=3):
    arch, sd, _ = apply_random_morphisms(START, weights(), n, np.random.default_rng(seed))
    return arch, sd


def test_public_api_is_exported():
    for name in ("REGISTRY", "apply_morphism", "apply_random_morphisms", "deeper", "wider", "skip"):
        assert name in morphclimb.__all__ and hasattr(morphclimb, name)
    assert set(REGISTRY) == {"deeper", "wider", "skip"}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_candidate_is_exact(name):
    arch, sd = grown()
    m = REGISTRY[name]
    cands = m.candidates(arch)
    assert cands and all(c["op"] == name for c in cands)
    x = torch.randn(3, 3, 12, 12, dtype=torch.float64)
    for rec in cands[:: max(1, len(cands) // 12)]:
        child, child_sd = apply_morphism(arch, sd, rec, np.random.default_rng(0))
        assert_exact(arch, sd, child, child_sd, x=x)
        build(child, child_sd)  # loads strictly
        assert all(v.dtype == torch.float64 for v in child_sd.values() if v.is_floating_point())


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_parent_untouched_and_unchanged_nodes_shared(name):
    arch, sd = grown()
    before = {k: v.clone() for k, v in sd.items()}
    child, child_sd, rec = REGISTRY[name].apply(arch, sd, REGISTRY[name].sample(
        arch, np.random.default_rng(1)), np.random.default_rng(1))
    assert all(torch.equal(sd[k], before[k]) for k in before) and sd.keys() == before.keys()
    touched = set(rec.get("new", [])) | set(rec.get("convs", []))
    for k in sd:
        node = k.split(".")[1]
        if node not in touched and child_sd[k].shape == sd[k].shape:
            assert child_sd[k] is sd[k] or torch.equal(child_sd[k], sd[k])


def test_deeper_inserts_identity_block_and_rewires():
    sd = weights()
    a, s = deeper(START, sd, np.random.default_rng(0), after="relu2", kernel=5)
    conv, bn, relu = "conv4", "bn5", "relu6"
    assert [n.id for n in a.nodes][8:11] == [conv, bn, relu]
    assert a[conv].inputs == ("relu2",) and a[conv].kernel == 5 and a[conv].channels == 8
    assert a["pool2"].inputs == (relu,)
    w = s[f"layers.{conv}.weight"]
    assert w.sum() == 8 and torch.equal(w[:, :, 2, 2], torch.eye(8, dtype=w.dtype))
    assert torch.equal(s[f"layers.{bn}.running_mean"], torch.zeros(8, dtype=torch.float64))
    assert_exact(START, sd, a, s)
    # the smallest odd kernel, 1x1, is a valid record too (the search draws 3 or 5)
    a, s = apply_morphism(START, sd, {"op": "deeper", "after": "relu2", "kernel": 1},
                          np.random.default_rng(0))
    assert a[conv].kernel == 1 and torch.equal(s[f"layers.{conv}.weight"][:, :, 0, 0],
                                               torch.eye(8, dtype=torch.float64))
    assert_exact(START, sd, a, s)


def test_deeper_with_probe_uses_batch_statistics_and_is_exact_in_train_mode():
    sd = weights(dtype=torch.float32)
    probe = torch.randn(16, 3, 12, 12)
    a, s = deeper(START, sd, np.random.default_rng(0), probe, after="relu2", kernel=3)
    net = build(START, sd).train()
    act = {}
    net.layers["relu2"].register_forward_hook(lambda m, i, o: act.setdefault("r", o))
    y = net(probe)
    mean = act["r"].mean(dim=(0, 2, 3))
    assert torch.allclose(s["layers.bn5.running_mean"], mean.detach(), atol=1e-6)
    assert torch.allclose(s["layers.bn5.bias"], mean.detach(), atol=1e-6)
    y2 = build(a, s).train()(probe)
    assert (y2 - y).abs().max() <= 1e-4 * max(1.0, y.abs().max().item())
    assert_exact(START, sd, a, s, rtol=1e-5, x=torch.randn(3, 3, 12, 12))


def residual():
    """START with an identity block after relu2 and an add skip around it (a residual block)."""
    rng = np.random.default_rng(0)
    a, s = deeper(START, weights(), rng, after="relu2", kernel=3)
    return skip(a, s, rng, mode="add", source="relu2", target="relu6")


def test_skip_add_makes_a_zero_weighted_merge():
    a, s = residual()
    assert a["add7"].inputs == ("relu6", "relu2") and a["pool2"].inputs == ("add7",)
    assert s["layers.add7.weight"].tolist() == [1.0, 0.0]
    a2, s2 = skip(a, s, np.random.default_rng(0), mode="add", source="relu1", target="relu3")
    pool, conv, add = "pool8", "conv9", "add10"
    assert a2[pool].kernel == 4 and a2[conv].kernel == 1 and a2[conv].channels == 8
    assert a2[add].inputs == ("relu3", conv) and a2["gap"].inputs == (add,)
    assert_exact(a, s, a2, s2)


def test_wider_widens_add_partners_together_with_fresh_filters():
    a, s = residual()
    a2, s2 = wider(a, s, np.random.default_rng(0), conv="conv2", factor=2)
    assert a2["conv2"].channels == 16 and a2["conv4"].channels == 16
    w = s2["layers.conv4.weight"]  # reads and writes the widened component
    assert torch.equal(w[:8, :8], s["layers.conv4.weight"]) and not w[:8, 8:].any()
    new = s2["layers.conv2.weight"][8:].flatten(1)
    old = s2["layers.conv2.weight"][:8].flatten(1)
    assert torch.cdist(new, old).min() > 1e-3  # no new filter copies an old one
    assert not s2["layers.conv3.weight"][:, 8:].any()
    assert_exact(a, s, a2, s2)


def test_concat_skip_lays_out_consumers_and_propagates_through_concats():
    sd = weights()
    rng = np.random.default_rng(0)
    a, s = skip(START, sd, rng, mode="concat", source="relu1", target="relu2")
    assert a["cat5"].inputs == ("relu2", "pool4") and a.channels("cat5") == 12
    assert a["pool2"].inputs == ("cat5",)
    assert not s["layers.conv3.weight"][:, 8:].any()
    a2, s2 = wider(a, s, rng, conv="conv2", factor=4)  # cat5 now has 32 + 4 channels
    w = s2["layers.conv3.weight"]
    assert torch.equal(w[:, :8], s["layers.conv3.weight"][:, :8])
    assert torch.equal(w[:, 32:], s["layers.conv3.weight"][:, 8:]) and not w[:, 8:32].any()
    assert_exact(START, sd, a2, s2)


def test_widening_into_a_concat_moves_a_batch_norm_after_it_channel_by_channel():
    """cat(relu1: 4, relu2: 8) -> bn -> relu -> conv: widening conv1 x2 puts relu1's old
    channels at 0-3 and relu2's at 8-15 of the new cat; the BN keeps each channel's
    statistics and affine there, the 4 new ones get the identity (mean 0, var 1, gamma 1,
    beta 0), and the network computes what it did (eval mode)."""
    n = [Node("input", "input", channels=3, size=(8, 8)),
         Node("conv1", "conv", ("input",), channels=4, kernel=3), Node("relu1", "relu", ("conv1",)),
         Node("conv2", "conv", ("input",), channels=8, kernel=3), Node("relu2", "relu", ("conv2",)),
         Node("cat", "concat", ("relu1", "relu2")), Node("bn", "bn", ("cat",)),
         Node("relu3", "relu", ("bn",)), Node("conv3", "conv", ("relu3",), channels=4, kernel=3),
         Node("gap", "gap", ("conv3",)), Node("fc", "linear", ("gap",), channels=2)]
    a = Arch(tuple(n), "fc")
    sd = weights(a)
    b, s = wider(a, sd, np.random.default_rng(0), conv="conv1", factor=2)
    old = list(range(4)) + list(range(8, 16))
    new = [4, 5, 6, 7]
    for p, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0),
                    ("running_var", 1.0)):
        t = s[f"layers.bn.{p}"]
        assert t.shape == (16,) and torch.equal(t[old], sd[f"layers.bn.{p}"]), p
        assert bool((t[new] == fill).all()), p
    assert_exact(a, sd, b, s, x=torch.randn(2, 3, 8, 8, dtype=torch.float64))


def test_widening_a_conv_with_a_bias_gives_its_new_filters_zero_bias():
    """A user's conv with a bias: widened, it keeps its biases in front and its new filters
    start at bias 0, its weights are exactly those the architecture has, and the network
    computes what it did."""
    from morphclimb.spec import with_node
    a = START.replace([with_node(n, bias=True) if n.id == "conv2" else n for n in START.nodes])
    sd = weights(a)
    b, s = wider(a, sd, np.random.default_rng(0), conv="conv2", factor=2)
    assert set(s) == set(weights_of(build(b)))
    bias = s["layers.conv2.bias"]
    assert bias.shape == (16,) and torch.equal(bias[:8], sd["layers.conv2.bias"])
    assert not bias[8:].any()
    assert_exact(a, sd, b, s)


@pytest.mark.parametrize("k", [3, 5])
def test_widening_into_a_depthwise_conv_passes_the_new_channels_through(k):
    """cat(relu1: 4, relu2: 8) -> depthwise k x k conv (with a bias, a user's) -> bn: widening
    conv1 x2 gives the depthwise conv 16 channels, the old filters and biases at the old
    channels' places (0-3, 8-15), and at the new ones (4-7) the identity filter (1 at the
    centre) and bias 0; the network computes what it did."""
    n = [Node("input", "input", channels=3, size=(8, 8)),
         Node("conv1", "conv", ("input",), channels=4, kernel=3), Node("relu1", "relu", ("conv1",)),
         Node("conv2", "conv", ("input",), channels=8, kernel=3), Node("relu2", "relu", ("conv2",)),
         Node("cat", "concat", ("relu1", "relu2")),
         Node("dw", "dwconv", ("cat",), kernel=k, bias=True), Node("bn", "bn", ("dw",)),
         Node("relu3", "relu", ("bn",)), Node("conv3", "conv", ("relu3",), channels=4, kernel=3),
         Node("gap", "gap", ("conv3",)), Node("fc", "linear", ("gap",), channels=2)]
    a = Arch(tuple(n), "fc")
    sd = weights(a)
    b, s = wider(a, sd, np.random.default_rng(0), conv="conv1", factor=2)
    assert set(s) == set(weights_of(build(b)))
    old, new = list(range(4)) + list(range(8, 16)), [4, 5, 6, 7]
    w = s["layers.dw.weight"]
    assert w.shape == (16, 1, k, k) and torch.equal(w[old], sd["layers.dw.weight"])
    eye = torch.zeros(1, k, k, dtype=w.dtype)
    eye[0, k // 2, k // 2] = 1.0
    assert all(torch.equal(w[c], eye) for c in new)
    bias = s["layers.dw.bias"]
    assert torch.equal(bias[old], sd["layers.dw.bias"]) and not bias[new].any()
    assert_exact(a, sd, b, s, x=torch.randn(2, 3, 8, 8, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_new_filters_are_he_normal_draws_seeded_from_the_generator(dtype):
    """A widened conv's new filters: N(0, 2 / fan_in) drawn on the CPU by a torch.Generator
    seeded with the morphism generator's next integer below 2^62, in float64 for float64
    weights and float32 otherwise, then cast to the weights' dtype (so a journal's record
    replays them, whatever the device). fan_in counts the inputs of one filter: here 1 (a 1x1
    conv reading one channel) and 4 x 3 x 3."""
    n = [Node("input", "input", channels=1, size=(8, 8)),
         Node("conv1", "conv", ("input",), channels=4, kernel=1), Node("relu1", "relu", ("conv1",)),
         Node("conv2", "conv", ("relu1",), channels=2, kernel=3), Node("relu2", "relu", ("conv2",)),
         Node("gap", "gap", ("relu2",)), Node("fc", "linear", ("gap",), channels=2)]
    a = Arch(tuple(n), "fc")
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights(a).items()}
    draw = torch.float64 if dtype == torch.float64 else torch.float32
    for conv, shape, fan_in in (("conv1", (4, 1, 1, 1), 1), ("conv2", (2, 4, 3, 3), 36)):
        _, s = apply_morphism(a, sd, {"op": "wider", "conv": conv, "factor": 2},
                              np.random.default_rng(5))
        seed = int(np.random.default_rng(5).integers(2**62))
        want = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=draw)
        want = (want * (2.0 / fan_in) ** 0.5).to(dtype)
        new = s[f"layers.{conv}.weight"][shape[0]:]
        assert new.dtype == dtype and torch.equal(new, want), conv
    # an add skip between different widths: its 1x1 projection (2 <- 4 channels) likewise
    b, s = apply_morphism(a, sd, {"op": "skip", "mode": "add", "source": "relu1",
                                  "target": "relu2"}, np.random.default_rng(5))
    proj = next(n.id for n in b.nodes if n.op == "conv" and n.id not in a.by_id)
    seed = int(np.random.default_rng(5).integers(2**62))
    want = torch.randn((2, 4, 1, 1), generator=torch.Generator().manual_seed(seed), dtype=draw)
    want = (want * (2.0 / 4) ** 0.5).to(dtype)
    got = s[f"layers.{proj}.weight"]
    assert got.dtype == dtype and torch.equal(got, want)


def tied_arch():
    """conv3's channels are tied by an add to a concat: neither side may grow alone."""
    n = [Node("input", "input", channels=3, size=(8, 8)),
         Node("conv1", "conv", ("input",), channels=4, kernel=3), Node("relu1", "relu", ("conv1",)),
         Node("conv2", "conv", ("relu1",), channels=4, kernel=3), Node("relu2", "relu", ("conv2",)),
         Node("cat", "concat", ("relu1", "relu2")),
         Node("conv3", "conv", ("input",), channels=8, kernel=3), Node("relu3", "relu", ("conv3",)),
         Node("add", "add", ("cat", "relu3")), Node("relu4", "relu", ("add",)),
         Node("gap", "gap", ("relu4",)), Node("fc", "linear", ("gap",), channels=2)]
    return Arch(tuple(n), "fc")


def test_invalid_positions_are_excluded_and_rejected():
    a = tied_arch()
    sd = weights(a)
    assert REGISTRY["wider"].candidates(a) == []
    assert not any(c["target"] == "relu3" for c in REGISTRY["skip"].candidates(a)
                   if c["mode"] == "concat")
    assert any(c["target"] == "relu3" for c in REGISTRY["skip"].candidates(a) if c["mode"] == "add")
    rng = np.random.default_rng(0)
    for record, message in [
            ({"op": "wider", "conv": "conv3", "factor": 2},
             "wider: conv 'conv3' cannot be widened: its channels are tied through an add to "
             "'cat', a concat node, which cannot grow new channels"),
            ({"op": "wider", "conv": "conv1", "factor": 2},
             "wider: conv 'conv1' cannot be widened: the new channels would reach add 'add' "
             "(through a concat) on one side only, so its inputs would no longer match"),
            ({"op": "skip", "mode": "concat", "source": "relu1", "target": "relu3"},
             "skip: a concat skip from 'relu1' into 'relu3' would change the channels of only "
             "one input of add 'add'; use mode 'add' or another target")]:
        with pytest.raises(MorphismError) as e:
            apply_morphism(a, sd, record, rng)
        assert str(e.value) == message
    a2, s2 = apply_random_morphisms(a, sd, 8, np.random.default_rng(5))[:2]
    assert_exact(a, sd, a2, s2, x=torch.randn(2, 3, 8, 8, dtype=torch.float64))


def test_a_conv_added_to_the_input_cannot_be_widened():
    """input + conv1 (3 channels each): the input's channels are the data's, so conv1 may not
    grow, while conv2 after the addition may."""
    n = [Node("input", "input", channels=3, size=(8, 8)),
         Node("conv1", "conv", ("input",), channels=3, kernel=3), Node("relu1", "relu", ("conv1",)),
         Node("add", "add", ("input", "relu1")),
         Node("conv2", "conv", ("add",), channels=4, kernel=3), Node("relu2", "relu", ("conv2",)),
         Node("gap", "gap", ("relu2",)), Node("fc", "linear", ("gap",), channels=2)]
    a = Arch(tuple(n), "fc")
    assert [c["conv"] for c in REGISTRY["wider"].candidates(a)] == ["conv2", "conv2"]
    with pytest.raises(MorphismError) as e:
        apply_morphism(a, weights(a), {"op": "wider", "conv": "conv1", "factor": 2},
                       np.random.default_rng(0))
    assert str(e.value) == ("wider: conv 'conv1' cannot be widened: its channels are tied "
                            "through an add to 'input', a input node, which cannot grow new "
                            "channels")


RELUS = "(candidates: relu1, relu2, relu3)"
CONVS = "(candidates: conv1, conv2, conv3)"
ENDS = "(candidates: relu1, pool1, relu2, pool2, relu3)"
DEEPER_FIELDS = "a deeper record has fields ['after', 'kernel']"
ODD = "deeper: kernel must be an odd positive integer (3 or 5 in the search), got"
AT_LEAST_2 = "wider: factor must be an integer of at least 2 (2 or 4 in the search), got"


@pytest.mark.parametrize("record, message", [
    ({"op": "deeper", "after": "relu99", "kernel": 3},
     f"deeper: 'after' 'relu99' is not a node of this architecture {RELUS}"),
    ({"op": "deeper", "after": 7, "kernel": 3},
     f"deeper: 'after' 7 is not a node of this architecture {RELUS}"),
    ({"op": "deeper", "after": "conv1", "kernel": 3},
     f"deeper: 'after' 'conv1' is a conv node, but it must be a relu node {RELUS}"),
    ({"op": "deeper", "after": "relu1", "kernel": 4}, f"{ODD} 4"),
    ({"op": "deeper", "after": "relu1", "kernel": -1}, f"{ODD} -1"),
    ({"op": "deeper", "after": "relu1", "kernel": True}, f"{ODD} True"),
    ({"op": "deeper", "after": "relu1", "kernel": 3.0}, f"{ODD} 3.0"),
    ({"op": "deeper", "after": "relu1"},
     f"deeper record {{'op': 'deeper', 'after': 'relu1'}}: missing field(s) ['kernel']; "
     f"{DEEPER_FIELDS}"),
    ({"op": "deeper", "after": "relu1", "kernel": 3, "x": 1},
     f"deeper record {{'op': 'deeper', 'after': 'relu1', 'kernel': 3, 'x': 1}}: unknown "
     f"field(s) ['x']; {DEEPER_FIELDS}"),
    ({"op": "deeper", "kernel": 3, "y": 2, "x": 1},
     f"deeper record {{'op': 'deeper', 'kernel': 3, 'y': 2, 'x': 1}}: missing field(s) "
     f"['after']; unknown field(s) ['x', 'y']; {DEEPER_FIELDS}"),
    ({"op": "wider", "conv": "bn1", "factor": 2},
     f"wider: 'conv' 'bn1' is a bn node, but it must be a conv node {CONVS}"),
    ({"op": "wider", "conv": "conv9", "factor": 2},
     f"wider: 'conv' 'conv9' is not a node of this architecture {CONVS}"),
    ({"op": "wider", "conv": "conv1", "factor": 1}, f"{AT_LEAST_2} 1"),
    ({"op": "wider", "conv": "conv1", "factor": True}, f"{AT_LEAST_2} True"),
    ({"op": "wider", "conv": "conv1", "factor": "2"}, f"{AT_LEAST_2} '2'"),
    ({"op": "skip", "mode": "add", "source": "relu3", "target": "relu1"},
     "skip: source 'relu3' must come before target 'relu1' in the network (a skip from a node "
     "to itself or backwards makes a cycle)"),
    ({"op": "skip", "mode": "add", "source": "relu1", "target": "relu1"},
     "skip: source 'relu1' must come before target 'relu1' in the network (a skip from a node "
     "to itself or backwards makes a cycle)"),
    ({"op": "skip", "mode": "add", "source": "relu1", "target": "pool1"},
     "skip: target 'pool1' is computed from source 'relu1' by relu/maxpool alone, so a skip "
     "between them would bypass no layer"),
    ({"op": "skip", "mode": "add", "source": "conv1", "target": "relu3"},
     f"skip: source 'conv1' is a conv node, but it must be a relu or maxpool or add or concat "
     f"node {ENDS}"),
    ({"op": "skip", "mode": "add", "source": "relu1", "target": "relu9"},
     f"skip: target 'relu9' is not a node of this architecture {ENDS}"),
    ({"op": "skip", "mode": "sum", "source": "relu1", "target": "relu3"},
     "skip: mode must be 'concat' or 'add', got 'sum'"),
    ({"op": "shrink"}, "unknown morphism 'shrink'; known ops are deeper, wider, skip (exact) "
     "and remove_layer, remove_skip, prune, separable (approximate)"),
])
def test_bad_records_say_exactly_what_is_wrong(record, message):
    """Each rejection names the operator, the field, the value and what would be valid."""
    with pytest.raises(MorphismError) as e:
        apply_morphism(START, weights(), record, np.random.default_rng(0))
    assert str(e.value) == message


def _linear_only():
    """input -> gap -> fc: no conv, no relu, no feature map after the input."""
    return Arch((Node("input", "input", (), channels=3, size=(12, 12)),
                 Node("gap", "gap", ("input",)), Node("fc", "linear", ("gap",), channels=5)),
                "fc")


def _vector_relu():
    """START with a ReLU after global average pooling (a vector, not a feature map)."""
    nodes = [n for n in START.nodes if n.id != "fc"]
    return Arch(tuple(nodes) + (Node("relu4", "relu", ("gap",)),
                                Node("fc", "linear", ("relu4",), channels=5)), "fc")


def test_rejections_where_nothing_or_no_map_fits():
    a = _linear_only()
    sd = weights(a)
    with pytest.raises(MorphismError) as e:
        apply_morphism(a, sd, {"op": "wider", "conv": "gap", "factor": 2},
                       np.random.default_rng(0))
    assert str(e.value) == ("wider: 'conv' 'gap' is a gap node, but it must be a conv node "
                            "(candidates: none)")
    with pytest.raises(MorphismError) as e:
        apply_morphism(a, sd, {"op": "wider", "conv": "conv1", "factor": 2},
                       np.random.default_rng(0))
    assert str(e.value) == ("wider: 'conv' 'conv1' is not a node of this architecture "
                            "(candidates: none)")
    for fn in (deeper, wider, skip):
        with pytest.raises(MorphismError) as e:
            fn(a, sd, np.random.default_rng(0))
        assert str(e.value) == f"{fn.__name__}: no valid position in this architecture"
    with pytest.raises(MorphismError) as e:
        apply_random_morphisms(a, sd, 1, np.random.default_rng(0))
    assert str(e.value) == f"no morphism can be applied to this architecture: {a!r}"
    v = _vector_relu()
    with pytest.raises(MorphismError) as e:
        deeper(v, weights(v), np.random.default_rng(0), after="relu4", kernel=3)
    assert str(e.value) == ("deeper: relu 'relu4' acts on a vector (8,), not a feature map, so "
                            "no conv can follow it")
    with pytest.raises(MorphismError) as e:
        skip(v, weights(v), np.random.default_rng(0), mode="add", source="relu1", target="relu4")
    assert str(e.value) == "skip: 'relu4' is not a feature map (shape (8,))"


@pytest.mark.parametrize("n_relus", [12, 13, 15])
def test_a_long_candidate_list_is_cut_after_twelve(n_relus):
    a, sd = START, weights()
    for _ in range(n_relus - 3):   # START has 3 relus
        a, sd = deeper(a, sd, np.random.default_rng(0), after="relu1", kernel=3)
    relus = [n.id for n in a.nodes if n.op == "relu"]
    assert len(relus) == n_relus
    with pytest.raises(MorphismError) as e:
        apply_morphism(a, sd, {"op": "deeper", "after": "x", "kernel": 3},
                       np.random.default_rng(0))
    more = ", ..." if n_relus > 12 else ""
    assert str(e.value) == ("deeper: 'after' 'x' is not a node of this architecture "
                            f"(candidates: {', '.join(relus[:12])}{more})")


@pytest.mark.parametrize("probe, message", [
    (torch.zeros(2, 3, 12), "the probe must be a float tensor of shape (N, C, H, W), got "
     "Tensor (2, 3, 12)"),
    (torch.zeros(2, 3, 12, 12, dtype=torch.long), "the probe must be a float tensor of shape "
     "(N, C, H, W), got Tensor (2, 3, 12, 12)"),
    ([[0.0]], "the probe must be a float tensor of shape (N, C, H, W), got list ()"),
    (torch.zeros(2, 3, 8, 8), "the probe batch has shape (2, 3, 8, 8), but the network reads "
     "(N, 3, 12, 12)"),
])
def test_a_bad_probe_is_refused_with_its_shape(probe, message):
    for fn in (deeper, wider, skip):
        with pytest.raises(MorphismError) as e:
            fn(START, weights(), np.random.default_rng(0), probe)
        assert str(e.value) == message


def test_morphisms_keep_the_weights_device_and_dtype():
    """New tensors are made where the parent's weights live (here the meta device, as a GPU
    run's would be on the GPU), in their dtype: a child never mixes devices."""
    sd = {k: v.to("meta") for k, v in weights(dtype=torch.float32).items()}
    for rec in ({"op": "deeper", "after": "relu2", "kernel": 3},
                {"op": "skip", "mode": "add", "source": "relu1", "target": "relu3"},
                {"op": "skip", "mode": "concat", "source": "pool1", "target": "relu3"}):
        _, out = apply_morphism(START, sd, rec, np.random.default_rng(0))
        new = {k: v for k, v in out.items() if k not in sd or v.shape != sd[k].shape}
        assert new and {v.device.type for v in out.values()} == {"meta"}, rec
        assert {v.dtype for v in new.values() if v.is_floating_point()} == {torch.float32}


def test_skip_needs_integer_size_ratio_and_matching_inputs():
    a = starting_arch(image_size=10, widths=(4, 8, 8))  # 10x10, 5x5, 2x2
    with pytest.raises(MorphismError, match="not an integer multiple"):
        skip(a, weights(a), np.random.default_rng(0), mode="add", source="relu2", target="relu3")
    with pytest.raises(MorphismError, match="do not fit"):
        deeper(a, weights(), np.random.default_rng(0), after="relu1", kernel=3)
    with pytest.raises(MorphismError, match="probe"):
        deeper(START, weights(), np.random.default_rng(0), torch.zeros(2, 3, 8, 8), after="relu1")


@pytest.mark.parametrize("size, pairs", [
    # 12x9: relu1 12x9, pool1/relu2 6x4, pool2/relu3 3x2; 9 is no multiple of 4 or 2
    ((12, 9), [("pool1", "relu2"), ("pool1", "pool2"), ("pool1", "relu3"), ("relu2", "relu3"),
               ("pool2", "relu3")]),
    ((9, 12), [("pool1", "relu2"), ("pool1", "pool2"), ("pool1", "relu3"), ("relu2", "relu3"),
               ("pool2", "relu3")]),
    # 12x6: pool1/relu2 6x3, pool2/relu3 3x1; 12/3 = 4 but 6/1 = 6, 6/3 = 2 but 3/1 = 3
    ((12, 6), [("relu1", "relu2"), ("pool1", "relu2"), ("pool2", "relu3")]),
])
def test_skips_need_the_same_integer_ratio_in_height_and_width(size, pairs):
    """On rectangular maps a skip is valid only where both sides shrink by one integer."""
    a = starting_arch(in_channels=3, num_classes=5, image_size=size, widths=(4, 8, 8))
    got = REGISTRY["skip"].candidates(a)
    for mode in ("add", "concat"):
        assert [(r["source"], r["target"]) for r in got if r["mode"] == mode] == pairs
    if size == (12, 9):
        with pytest.raises(MorphismError) as e:
            skip(a, weights(a), np.random.default_rng(0), mode="add", source="relu1",
                 target="relu2")
        assert str(e.value) == ("skip: source 'relu1' (12x9) is not an integer multiple of "
                                "target 'relu2' (6x4) in both height and width")
    a2, sd2 = skip(a, weights(a), np.random.default_rng(0), mode="concat", source=pairs[0][0],
                   target=pairs[0][1])
    assert_exact(a, weights(a), a2, sd2, x=torch.randn(2, 3, *size, dtype=torch.float64))


def test_a_skip_that_bypasses_only_relus_and_maxpools_is_void():
    """relu1 -> pool1 -> relu4 -> conv2: relu4 is computed from pool1 and relu1 by maxpool and
    ReLU alone, so skips from either into relu4 bypass no layer (they would not be morphisms
    that add anything); a ReLU in the chain does not end it."""
    nodes = []
    for n in START.nodes:
        if n.id == "conv2":
            nodes.append(Node("relu4", "relu", ("pool1",)))
            n = Node("conv2", "conv", ("relu4",), channels=n.channels, kernel=n.kernel)
        nodes.append(n)
    a = Arch(tuple(nodes), "fc")
    targets = {(r["source"], r["target"]) for r in REGISTRY["skip"].candidates(a)}
    assert not {("relu1", "relu4"), ("pool1", "relu4")} & targets
    assert {("relu1", "relu2"), ("relu4", "relu2")} <= targets
    for source in ("relu1", "pool1"):
        with pytest.raises(MorphismError) as e:
            skip(a, weights(a), np.random.default_rng(0), mode="add", source=source,
                 target="relu4")
        assert str(e.value) == (f"skip: target 'relu4' is computed from source '{source}' by "
                                "relu/maxpool alone, so a skip between them would bypass no "
                                "layer")


def test_random_morphisms_are_deterministic_and_replay():
    sd = weights()
    a1, s1, applied = apply_random_morphisms(START, sd, 8, np.random.default_rng(7))
    a2, s2, applied2 = apply_random_morphisms(START, sd, 8, np.random.default_rng(7))
    assert applied == applied2 and a1 == a2 and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert json.loads(json.dumps(applied)) == applied and len(applied) == 8
    a3, s3 = START, sd
    for rec in applied:
        a3, s3 = apply_morphism(a3, s3, rec, np.random.default_rng(0))
    assert a3.to_dict() == a1.to_dict()
    assert_exact(START, sd, a3, s3)


def train(arch, sd, steps=6, seed=0):
    """A few SGD steps on random data; returns the net and every parameter's gradient history."""
    net = build(arch, {k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(seed)
    grads: dict[str, list[torch.Tensor]] = {}
    for _ in range(steps):
        x, y = torch.randn(8, 3, 12, 12, generator=g), torch.randint(0, 5, (8,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        for name, p in net.named_parameters():
            grads.setdefault(name, []).append(p.grad.detach().clone())
        opt.step()
    return {k: v.detach() for k, v in net.state_dict().items()}, grads


def test_new_layers_learn():
    a, s = deeper(START, weights(), np.random.default_rng(0), after="relu2", kernel=3)
    trained, _ = train(a, s)
    for k in ("layers.conv4.weight", "layers.bn5.weight", "layers.bn5.bias"):
        assert not torch.allclose(trained[k], s[k].float())

    a, s = wider(START, weights(), np.random.default_rng(0), conv="conv2", factor=2)
    trained, grads = train(a, s)
    seen = torch.stack([g.flatten(1).abs().sum(1) for g in grads["layers.conv2.weight"]])
    assert (seen[:, 8:].amax(0) > 0).all()  # every new channel got gradient at some step
    assert trained["layers.conv3.weight"][:, 8:].abs().amax() > 0

    a, s = skip(START, weights(), np.random.default_rng(0), mode="concat", source="relu1",
                target="relu2")
    trained, _ = train(a, s)
    assert trained["layers.conv3.weight"][:, 8:].abs().amin(dim=(1, 2, 3)).min() > 0

    a, s = skip(START, weights(), np.random.default_rng(0), mode="add", source="relu1",
                target="relu3")
    trained, _ = train(a, s)
    assert trained["layers.add6.weight"][1] != 0
    assert not torch.allclose(trained["layers.conv5.weight"], s["layers.conv5.weight"].float())


# ------------------------------------------------------------------ the functions' own paths
@pytest.mark.parametrize("fn", [deeper, wider, skip])
def test_nothing_given_samples_as_the_search_does(fn):
    """deeper/wider/skip with no field given draw the record their operator's `sample`
    draws from the same generator: the search's own draw, exact as every other."""
    m = REGISTRY[fn.__name__]
    want = m.sample(START, np.random.default_rng(7))
    a, sd = fn(START, weights(), np.random.default_rng(7))
    b, sd2 = apply_morphism(START, weights(), want, np.random.default_rng(7))
    assert a.to_dict() == b.to_dict() and a.to_dict() != START.to_dict()
    assert_exact(START, weights(), a, sd)


def test_some_fields_given_fix_them_and_sample_the_rest():
    picked = set()
    for seed in range(12):
        a, sd = wider(START, weights(), np.random.default_rng(seed), conv="conv2")
        width = {n.id: n.channels for n in a.nodes}["conv2"]
        assert width in (8 * 2, 8 * 4)         # conv2's 8 filters, times 2 or 4
        picked.add(width)
        assert_exact(START, weights(), a, sd)
    assert picked == {16, 32}
    with pytest.raises(MorphismError, match=r"^wider: no valid position with \{'conv': 'bn1'\}"):
        wider(START, weights(), np.random.default_rng(0), conv="bn1")


def test_apply_morphism_passes_the_probe_and_checks_it():
    probe = torch.randn(8, 3, 12, 12, dtype=torch.float64)
    record = {"op": "deeper", "after": "relu2", "kernel": 3}
    a, sd = apply_morphism(START, weights(), record, np.random.default_rng(0), probe)
    b, sd2 = deeper(START, weights(), np.random.default_rng(0), probe, after="relu2", kernel=3)
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    new_bn = [k for k in sd if k.endswith("running_mean") and k not in weights()]
    assert new_bn and all(sd[k].abs().sum() > 0 for k in new_bn)   # the probe's statistics
    bad = torch.randn(8, 1, 12, 12, dtype=torch.float64)          # one channel, not three
    for fn in (wider, skip):
        with pytest.raises(MorphismError, match="probe"):
            fn(START, weights(), np.random.default_rng(0), bad)


@pytest.mark.parametrize("record", ["wider", 3, None])
def test_a_record_that_is_not_a_dict_is_refused_by_name(record):
    from morphclimb.morphisms import APPROXIMATE
    known = (f"known ops are {', '.join(REGISTRY)} (exact) and {', '.join(APPROXIMATE)} "
             "(approximate)")
    with pytest.raises(MorphismError) as e:
        apply_morphism(START, weights(), record, np.random.default_rng(0))
    assert str(e.value) == f"unknown morphism {record!r}; {known}"


@pytest.mark.parametrize("record", ["deeper", ["after", "kernel"], None])
def test_an_operator_applied_to_a_record_that_is_not_a_dict(record):
    """The operators in REGISTRY are public too: `apply` names what it got instead."""
    with pytest.raises(MorphismError) as e:
        REGISTRY["deeper"].apply(START, weights(), record, np.random.default_rng(0))
    assert str(e.value) == f"a morphism record must be a dict, got {type(record).__name__}"


@pytest.mark.parametrize("record, message", [
    (dict(source="relu3", target="relu1"), "skip: source 'relu3' must come before target "
     "'relu1' in the network (a skip from a node to itself or backwards makes a cycle)"),
    (dict(source="relu1", target="pool1"), "skip: target 'pool1' is computed from source "
     "'relu1' by relu/maxpool alone, so a skip between them would bypass no layer"),
    (dict(source="conv1", target="relu3"), "skip: source 'conv1' is a conv node, but it must "
     "be a relu or maxpool or add or concat node (candidates: relu1, pool1, relu2, pool2, "
     "relu3)"),
    (dict(source="relu1", target="gap"), "skip: target 'gap' is a gap node, but it must be a "
     "relu or maxpool or add or concat node (candidates: relu1, pool1, relu2, pool2, relu3)"),
])
def test_skip_errors_say_exactly_what_is_wrong(record, message):
    with pytest.raises(MorphismError) as e:
        apply_morphism(START, weights(), {"op": "skip", "mode": "add", **record},
                       np.random.default_rng(0))
    assert str(e.value) == message
    a = starting_arch(image_size=10, widths=(4, 8, 8))   # 10x10, 5x5, 2x2
    with pytest.raises(MorphismError) as e:
        skip(a, weights(a), np.random.default_rng(0), mode="add", source="relu2", target="relu3")
    assert str(e.value) == ("skip: source 'relu2' (5x5) is not an integer multiple of target "
                            "'relu3' (2x2) in both height and width")


@pytest.mark.parametrize("n", [-1, True, 1.5, "3"])
def test_the_number_of_morphisms_is_checked(n):
    with pytest.raises(MorphismError) as e:
        apply_random_morphisms(START, weights(), n, np.random.default_rng(0))
    assert str(e.value) == f"the number of morphisms must be a non-negative integer, got {n!r}"


@pytest.mark.parametrize("rng", [42, None, np.random.RandomState(0)])
def test_the_generator_must_be_a_numpy_generator(rng):
    """A seed or the legacy RandomState would draw other morphisms than the journal says."""
    record = {"op": "deeper", "after": "relu1", "kernel": 3}
    for call in (lambda: apply_morphism(START, weights(), record, rng),
                 lambda: apply_random_morphisms(START, weights(), 1, rng)):
        with pytest.raises(TypeError) as e:
            call()
        assert str(e.value) == ("rng must be a numpy.random.Generator, got "
                                f"{type(rng).__name__}")


def test_no_morphism_leaves_the_network_as_it_is():
    a, sd, recs = apply_random_morphisms(START, weights(), 0, np.random.default_rng(0))
    assert a.to_dict() == START.to_dict() and recs == []
    assert all(torch.equal(sd[k], v) for k, v in weights().items())


def test_random_morphisms_with_a_probe_replay_with_it():
    probe = torch.randn(8, 3, 12, 12, dtype=torch.float64)
    a, sd, recs = apply_random_morphisms(START, weights(), 6, np.random.default_rng(11), probe)
    assert any(r["op"] == "deeper" for r in recs)
    b, sd2 = START, weights()
    for r in recs:
        b, sd2 = apply_morphism(b, sd2, r, np.random.default_rng(0), probe)
    assert a.to_dict() == b.to_dict()
    new_bn = [k for k in sd if k.endswith("running_mean") and k not in weights()]
    assert any(sd[k].abs().sum() > 0 for k in new_bn)   # the probe's statistics, not zeros
    assert all(torch.allclose(sd[k], sd2[k]) for k in new_bn)
