"""Approximate network morphisms (LEMONADE): valid children, their costs, the output change,
the rules (L1 pruning, rank-1 separable factorisation, scale folding), and NASH untouched."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from morphclimb import Arch, MorphismError, Node, build, starting_arch, weights_of
from morphclimb.build import Concat, GlobalAvgPool, WeightedAdd
from morphclimb.flops import forward_flops
from morphclimb.morphisms import (
    ALL,
    APPROXIMATE,
    REGISTRY,
    apply_morphism,
    apply_random_morphisms,
    deeper,
    output_change,
    prune,
    remove_layer,
    remove_skip,
    separable,
    skip,
)
from morphclimb.morphisms.separable import factorise
from test_morphisms_props import one_thread, perturb  # noqa: F401  (shared helpers)

START = starting_arch(in_channels=3, num_classes=5, image_size=8, widths=(4, 8, 8))
F64 = torch.float64


# ----------------------------------------------------------------------------- helpers
def grown(seed: int, n: int | None = None):
    """START grown by random exact morphisms (NASH's), with generic float64 weights."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 9)) if n is None else n
    sd = weights_of(build(START, seed=seed, dtype=F64))
    arch, sd, _ = apply_random_morphisms(START, sd, n, rng)
    return arch, perturb(sd, seed), rng


def probe_batch(seed: int, n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=F64)


def logits(arch, sd, x):
    net = build(arch, sd).eval()
    with torch.no_grad():
        return net(x)


def measured_change(a, sd, b, sd2, x) -> float:
    y = logits(a, sd, x)
    return ((logits(b, sd2, x) - y).norm() / y.norm()).item()


def module_flops(net) -> int:
    """Forward FLOPs per image counted from a built module's tensors (forward hooks)."""
    arch = net.arch
    total = [0]

    def hook(m, ins, out):
        o = out[0].numel()
        if isinstance(m, torch.nn.Conv2d):
            kh, kw = m.kernel_size
            f = 2 * (m.in_channels // m.groups) * kh * kw * o + (o if m.bias is not None else 0)
        elif isinstance(m, torch.nn.Linear):
            f = 2 * m.in_features * m.out_features + (o if m.bias is not None else 0)
        elif isinstance(m, torch.nn.BatchNorm2d):
            f = 4 * o
        elif isinstance(m, torch.nn.ReLU):
            f = o
        elif isinstance(m, torch.nn.MaxPool2d):
            f = (m.kernel_size ** 2 - 1) * o
        elif isinstance(m, WeightedAdd):
            f = 2 * len(ins) * o
        elif isinstance(m, GlobalAvgPool):
            f = ins[0][0].numel()
        elif isinstance(m, (Concat, torch.nn.Identity)):
            f = 0
        else:
            raise AssertionError(f"no FLOP rule for {type(m).__name__}")
        total[0] += f

    hooks = [layer.register_forward_hook(hook) for layer in net.layers.values()]
    with torch.no_grad():
        net(torch.zeros(1, *arch.shapes[arch.input.id], dtype=F64))
    for h in hooks:
        h.remove()
    return total[0]


def check_child(arch, sd, child, child_sd, full, x, y_parent=None):
    """The child loads strictly, runs with valid shapes, its costs match the built module, and
    the recorded change is the one measured here."""
    net = build(child, child_sd).eval()  # loads strictly: exactly the keys and shapes
    with torch.no_grad():
        y = net(x)
    assert y.shape == (len(x), arch.channels(arch.output)) and torch.isfinite(y).all()
    assert child.num_params == sum(p.numel() for p in net.parameters()), full
    assert forward_flops(child) == module_flops(net), full
    y0 = logits(arch, sd, x) if y_parent is None else y_parent
    assert full["change"] == pytest.approx(((y - y0).norm() / y0.norm()).item(),
                                           rel=1e-9, abs=1e-12), full


# ----------------------------------------------------------------------------- NASH untouched
def test_nash_sampler_draws_exactly_as_before():
    """Pinned before the approximate morphisms existed: the records, archs and the rng state
    after apply_random_morphisms, and every weight, for seeds 0-3 (8 morphisms each)."""
    hr, hw = hashlib.sha256(), hashlib.sha256()
    for seed in range(4):
        sd = weights_of(build(START, seed=seed, dtype=F64))
        rng = np.random.default_rng(seed)
        arch, w, applied = apply_random_morphisms(START, sd, 8, rng)
        hr.update(json.dumps(applied, sort_keys=True).encode())
        hr.update(json.dumps(arch.to_dict(), sort_keys=True).encode())
        hr.update(str(rng.integers(2**62)).encode())
        for k in sorted(w):
            hw.update(k.encode())
            hw.update(w[k].detach().cpu().contiguous().numpy().tobytes())
    assert hr.hexdigest() == "6101da30109a0401600abbbfd4e7a7c5ea1337bc51d2bf0d2766d68f7436318c"
    assert hw.hexdigest() == "7410eba8af784b2cb3616ed07e4d44307e85cb255029719695959c026c5ba917"
    assert list(REGISTRY) == ["deeper", "wider", "skip"]
    assert not any(m.approximate for m in REGISTRY.values())


def test_approximate_operators_are_registered_apart_and_marked():
    assert set(APPROXIMATE) == {"remove_layer", "remove_skip", "prune", "separable"}
    assert not set(APPROXIMATE) & set(REGISTRY) and ALL == {**REGISTRY, **APPROXIMATE}
    assert all(m.approximate and m.name == k and "change" in m.outputs
               for k, m in APPROXIMATE.items())
    sd = perturb(weights_of(build(START, seed=0, dtype=F64)), 0)
    a1, s1, r1 = apply_random_morphisms(START, sd, 6, np.random.default_rng(3))
    a2, s2, r2 = apply_random_morphisms(START, sd, 6, np.random.default_rng(3), approximate=False)
    assert r1 == r2 and a1 == a2 and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert all(r["op"] in REGISTRY for r in r1)


def test_random_approximate_sampling_journals_the_change_and_replays():
    x = probe_batch(0)
    sd = perturb(weights_of(build(START, seed=1, dtype=F64)), 1)
    arch, w, applied = apply_random_morphisms(START, sd, 12, np.random.default_rng(11), x,
                                              approximate=True)
    assert json.loads(json.dumps(applied)) == applied
    assert {r["op"] for r in applied} & set(APPROXIMATE)
    assert all(("change" in r) == (r["op"] in APPROXIMATE) for r in applied)
    a, s = START, sd
    for r in applied:
        a2, s2 = apply_morphism(a, s, r, np.random.default_rng(0), x)
        if r["op"] in APPROXIMATE:
            assert r["change"] == pytest.approx(measured_change(a, s, a2, s2, x), rel=1e-9,
                                                abs=1e-12)
        a, s = a2, s2
    assert a.to_dict() == arch.to_dict()


# ----------------------------------------------------------------------------- every op, many nets
@pytest.mark.parametrize("seed", range(16))
def test_every_approximate_op_on_random_grown_networks(seed):
    arch, sd, rng = grown(seed)
    before = {k: v.clone() for k, v in sd.items()}
    x = probe_batch(seed)
    y = logits(arch, sd, x)
    for name, m in APPROXIMATE.items():
        cands = m.candidates(arch)
        if not cands:
            continue
        recs = [m.sample(arch, rng), cands[-1]]
        for rec in recs:
            child, child_sd, full = m.apply(arch, sd, rec, rng, x)
            assert full["op"] == name and {k: full[k] for k in rec} == rec
            check_child(arch, sd, child, child_sd, full, x, y)
            again, again_sd = apply_morphism(arch, sd, full, np.random.default_rng(0))
            assert again == child and all(torch.equal(again_sd[k], child_sd[k])
                                          for k in child_sd)
    assert all(torch.equal(sd[k], before[k]) for k in before) and sd.keys() == before.keys()


@pytest.mark.parametrize("seed", range(6))
def test_exact_morphisms_stay_exact_after_approximate_ones(seed):
    """Depthwise convs, pruned and shortened nets: deeper, wider and skip still fit and are exact
    (wider and concat skips re-lay dwconv channels)."""
    arch, sd, rng = grown(seed, n=4)
    x = probe_batch(seed)
    for name in ("separable", "prune", "separable"):
        if APPROXIMATE[name].choices(arch):
            arch, sd, _ = APPROXIMATE[name].apply(arch, sd, APPROXIMATE[name].sample(arch, rng),
                                                  rng)
    assert arch.count("dwconv") >= 1
    y = logits(arch, sd, x)
    for m in REGISTRY.values():
        for rec in m.candidates(arch)[::3]:
            child, child_sd, _ = m.apply(arch, sd, rec, rng)
            assert (logits(child, child_sd, x) - y).abs().max() <= 1e-10 * y.abs().max(), rec
            assert child.num_params == sum(p.numel() for p in build(child, child_sd).parameters())


def test_output_change_is_zero_for_exact_morphisms_and_relative():
    arch, sd, rng = grown(4, n=3)
    x = probe_batch(1)
    for m in REGISTRY.values():
        child, child_sd, _ = m.apply(arch, sd, m.sample(arch, rng), rng)
        assert output_change(arch, sd, child, child_sd, x) < 1e-12
    doubled = dict(sd)
    doubled["layers.fc.weight"] = 2 * sd["layers.fc.weight"]
    doubled["layers.fc.bias"] = 2 * sd["layers.fc.bias"]
    assert output_change(arch, sd, arch, doubled, x) == pytest.approx(1.0, rel=1e-12)
    assert output_change(arch, sd, arch, doubled, x.float()) == pytest.approx(1.0, rel=1e-12)


# ----------------------------------------------------------------------------- remove layer
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_probe", [False, True])
def test_removing_a_just_inserted_deeper_layer_changes_nothing(seed, with_probe):
    arch, sd, rng = grown(seed)
    x = probe_batch(seed + 7)
    for after in [n.id for n in arch.nodes if n.op == "relu" and len(arch.shapes[n.id]) == 3]:
        a, s, full = REGISTRY["deeper"].apply(
            arch, sd, {"op": "deeper", "after": after, "kernel": 3}, rng,
            probe_batch(seed, 16) if with_probe else None)
        child, child_sd, rec = APPROXIMATE["remove_layer"].apply(
            a, s, {"op": "remove_layer", "conv": full["new"][0]}, rng, x)
        assert rec["removed"] == full["new"] and rec["change"] < 1e-12
        assert child == arch and all(torch.equal(child_sd[k], sd[k]) for k in sd)
        assert child_sd.keys() == sd.keys()


def test_remove_layer_rewires_and_refuses_channel_changing_layers():
    sd = perturb(weights_of(build(START, dtype=F64)), 0)
    rng = np.random.default_rng(0)
    assert [c["conv"] for c in APPROXIMATE["remove_layer"].candidates(START)] == ["conv3"]
    a, s = remove_layer(START, sd, rng)
    assert "conv3" not in a.by_id and a["gap"].inputs == ("pool2",)
    assert not any(k.startswith(("layers.conv3.", "layers.bn3.")) for k in s)
    for conv, msg in (("conv2", "maps 4 channels to 8"), ("bn1", "'bn1' is a bn node")):
        with pytest.raises(MorphismError, match=msg):
            remove_layer(START, sd, rng, conv=conv)
    # a separable conv is removed with its depthwise half
    a2, s2 = separable(START, sd, rng, conv="conv3")
    a3, _, rec = APPROXIMATE["remove_layer"].apply(a2, s2, {"op": "remove_layer",
                                                            "conv": "conv3"}, rng)
    assert rec["removed"] == ["dw4", "conv3", "bn3", "relu3"] and a3 == a


# ----------------------------------------------------------------------------- remove skip
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["add", "concat"])
def test_removing_a_just_added_skip_restores_the_parent(seed, mode):
    arch, sd, rng = grown(seed)
    pairs = [c for c in REGISTRY["skip"].candidates(arch) if c["mode"] == mode]
    x = probe_batch(seed)
    for rec in pairs[:: max(1, len(pairs) // 3)]:
        a, s, full = REGISTRY["skip"].apply(arch, sd, rec, rng)
        child, child_sd, out = APPROXIMATE["remove_skip"].apply(
            a, s, {"op": "remove_skip", "merge": full["new"][-1], "branch": 1}, rng, x)
        assert out["removed"] == full["new"] and out["change"] < 1e-12
        assert child == arch and child_sd.keys() == sd.keys()
        assert all(torch.equal(child_sd[k], sd[k]) for k in sd), rec


def residual(w0: float):
    """START with an identity block after relu2 and an add skip around it, the add weighted
    (w0, 0): dropping the branch is exact only if w0 is folded into the readers."""
    rng = np.random.default_rng(0)
    sd = perturb(weights_of(build(START, dtype=F64)), 0)
    a, s = deeper(START, sd, rng, after="relu2", kernel=3)
    a, s = skip(a, s, rng, mode="add", source="relu2", target="relu6")
    s["layers.add7.weight"] = torch.tensor([w0, 0.0], dtype=F64)
    return a, s


@pytest.mark.parametrize("w0", [0.3, 1.0, 2.5])
def test_remove_skip_folds_the_remaining_weight_into_the_readers(w0):
    a, s = residual(w0)
    x = probe_batch(0)
    child, child_sd, rec = APPROXIMATE["remove_skip"].apply(
        a, s, {"op": "remove_skip", "merge": "add7", "branch": 1}, np.random.default_rng(0), x)
    assert child["pool2"].inputs == ("relu6",) and "add7" not in child.by_id
    assert rec["change"] < 1e-12
    assert torch.allclose(child_sd["layers.conv3.weight"], w0 * s["layers.conv3.weight"])


def test_fold_through_batch_norm_is_exact_in_eval_mode():
    """add -> bn: the running statistics absorb the factor (also when v' would be negative)."""
    nodes = (Node("input", "input", channels=3, size=(8, 8)),
             Node("c1", "conv", ("input",), channels=4, kernel=3),
             Node("c2", "conv", ("input",), channels=4, kernel=3),
             Node("a", "add", ("c1", "c2")), Node("b", "bn", ("a",)), Node("r", "relu", ("b",)),
             Node("g", "gap", ("r",)), Node("fc", "linear", ("g",), channels=3))
    arch = Arch(nodes, "fc")
    x = probe_batch(2)
    for w0, var in ((0.4, 1.3), (3.0, 1e-6)):
        sd = perturb(weights_of(build(arch, dtype=F64)), 1)
        sd["layers.a.weight"] = torch.tensor([w0, 0.0], dtype=F64)
        sd["layers.b.running_var"] = torch.full((4,), var, dtype=F64)
        child, child_sd, rec = APPROXIMATE["remove_skip"].apply(
            arch, sd, {"op": "remove_skip", "merge": "a", "branch": 1},
            np.random.default_rng(0), x)
        assert child["b"].inputs == ("c1",) and rec["removed"] == ["c2", "a"]
        assert rec["change"] < 1e-10, (w0, var)
        assert (child_sd["layers.b.running_var"] >= 0).all()


# the readers fold_scale writes a factor into, and the ops that pass it on (its docstring)
FOLDS_INTO, PASSES_ON = ("conv", "dwconv", "linear", "add", "bn"), ("relu", "maxpool", "gap")


def _fold_refused(arch, node_id):
    """Whether a reader of `node_id` (or of a relu/max-pool/gap after it) is none of the ops
    a factor can be written into: a concat would need one per channel."""
    scaled = {node_id}
    for n in arch.nodes[arch.position[node_id] + 1:]:
        if scaled & set(n.inputs):
            if n.op in PASSES_ON:
                scaled.add(n.id)
            elif n.op not in FOLDS_INTO:
                return True
    return False


@pytest.mark.parametrize("seed", range(6))
def test_fold_scale_is_the_readers_fed_a_times_the_node(seed):
    """fold_scale(arch, w, node, a): with its weights the network fed x computes what the
    original computes with node's output multiplied by a (eval mode), for every node and
    factors small, large and large enough to clamp a BN's variance; None exactly where a
    concat reads it; the identity for a = 1; None for a <= 0."""
    from morphclimb.morphisms._graph import fold_scale
    rng = np.random.default_rng(seed)
    sd = weights_of(build(START, seed=seed, dtype=F64))
    arch, sd, _ = apply_random_morphisms(START, sd, 6, rng, approximate=True)
    sd = perturb(sd, seed)
    x = probe_batch(seed)
    folded_some = refused_some = 0
    for n in arch.nodes[1:]:
        if n.id == arch.output:
            continue
        for a in (0.5, 2.0, 1000.0):
            folded = fold_scale(arch, sd, n.id, a)
            assert (folded is None) == _fold_refused(arch, n.id), (n.id, a)
            if folded is None:
                refused_some += 1
                continue
            net = build(arch, sd).eval()
            net.layers[n.id].register_forward_hook(lambda m, i, out, a=a: out * a)
            with torch.no_grad():
                want = net(x)
            got = logits(arch, folded, x)
            assert torch.allclose(got, want, rtol=1e-9, atol=1e-9 * want.abs().max()), \
                (n.id, n.op, a)
            folded_some += 1
        same = fold_scale(arch, sd, n.id, 1.0)
        assert same is not None and all(same[k] is sd[k] for k in sd)
        assert fold_scale(arch, sd, n.id, 0.0) is None
        assert fold_scale(arch, sd, n.id, -2.0) is None
    assert folded_some > 0


def test_fold_scale_keeps_a_batch_norm_s_statistics_those_of_its_new_input():
    """A BN reading the node: its running mean and variance become those of x rather than
    a x (m / a and (v + eps) / a^2 - eps, the eps kept where eval mode adds it), gamma and
    beta unchanged; only where that variance would be negative (a large a) it is 0 and gamma
    takes up the rest: gamma a sqrt(eps) / sqrt(v + eps)."""
    from morphclimb.build import BN_EPS
    from morphclimb.morphisms._graph import fold_scale
    nodes = (Node("input", "input", channels=3, size=(8, 8)),
             Node("c1", "conv", ("input",), channels=4, kernel=3), Node("b", "bn", ("c1",)),
             Node("r", "relu", ("b",)), Node("g", "gap", ("r",)),
             Node("fc", "linear", ("g",), channels=3))
    arch = Arch(nodes, "fc")
    sd = perturb(weights_of(build(arch, dtype=F64)), 2)
    m, v = sd["layers.b.running_mean"], sd["layers.b.running_var"]
    g, beta = sd["layers.b.weight"], sd["layers.b.bias"]
    assert bool((v > 0.1).all()) and bool((v < 10).all())
    for a in (0.5, 3.0):
        f = fold_scale(arch, sd, "c1", a)
        torch.testing.assert_close(f["layers.b.running_mean"], m / a, rtol=1e-12, atol=0)
        torch.testing.assert_close(f["layers.b.running_var"], (v + BN_EPS) / a ** 2 - BN_EPS,
                                   rtol=1e-12, atol=0)
        torch.testing.assert_close(f["layers.b.weight"], g, rtol=1e-12, atol=0)
        assert f["layers.b.bias"] is beta
    f = fold_scale(arch, sd, "c1", 1e4)       # (v + eps) / a^2 < eps: clamped
    assert bool((f["layers.b.running_var"] == 0).all())
    torch.testing.assert_close(f["layers.b.weight"],
                               g * 1e4 * (BN_EPS ** 0.5) / torch.sqrt(v + BN_EPS),
                               rtol=1e-12, atol=0)


def test_remove_skip_of_a_wider_merge_and_of_a_concat_relays_consumers():
    nodes = (Node("input", "input", channels=3, size=(8, 8)),
             Node("c1", "conv", ("input",), channels=4, kernel=3), Node("r1", "relu", ("c1",)),
             Node("c2", "conv", ("r1",), channels=4, kernel=1, bias=True),
             Node("a1", "add", ("r1", "c2", "r1")),
             Node("cat", "concat", ("a1", "c2", "r1")),
             Node("b", "bn", ("cat",)), Node("c3", "conv", ("b",), channels=5, kernel=3),
             Node("g", "gap", ("c3",)), Node("fc", "linear", ("g",), channels=3))
    arch = Arch(nodes, "fc")
    sd = perturb(weights_of(build(arch, dtype=F64)), 3)
    rng = np.random.default_rng(0)
    child, csd = remove_skip(arch, sd, rng, merge="a1", branch=1)
    assert child["a1"].inputs == ("r1", "r1")
    assert torch.equal(csd["layers.a1.weight"], sd["layers.a1.weight"][[0, 2]])
    child, csd = remove_skip(arch, sd, rng, merge="cat", branch=1)
    assert child["cat"].inputs == ("a1", "r1") and child.channels("cat") == 8
    keep = [0, 1, 2, 3, 8, 9, 10, 11]
    assert torch.equal(csd["layers.c3.weight"], sd["layers.c3.weight"][:, keep])
    assert torch.equal(csd["layers.b.running_mean"], sd["layers.b.running_mean"][keep])
    zero = dict(sd)  # with zero weights from the dropped channels, dropping them is exact
    zero["layers.c3.weight"] = sd["layers.c3.weight"].clone()
    zero["layers.c3.weight"][:, 4:8] = 0
    x = probe_batch(4)
    _, _, rec = APPROXIMATE["remove_skip"].apply(
        arch, zero, {"op": "remove_skip", "merge": "cat", "branch": 1}, rng, x)
    assert rec["change"] < 1e-12
    with pytest.raises(MorphismError, match="branch must be"):
        remove_skip(arch, sd, rng, merge="cat", branch=0)


# ----------------------------------------------------------------------------- prune
def test_prune_keeps_the_filters_with_the_largest_l1_norm():
    sd = perturb(weights_of(build(START, dtype=F64)), 0)
    norms = torch.tensor([5.0, 1.0, 7.0, 3.0, 8.0, 2.0, 6.0, 4.0], dtype=F64)
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    w = w / w.abs().sum(dim=(1, 2, 3), keepdim=True) * norms[:, None, None, None]
    w[1] *= -1  # the sign does not matter, the L1 norm does
    sd["layers.conv2.weight"] = w
    rng = np.random.default_rng(0)
    x = probe_batch(0)
    for factor, want in ((2, [0, 2, 4, 6]), (4, [2, 4])):
        child, csd, rec = APPROXIMATE["prune"].apply(
            START, sd, {"op": "prune", "conv": "conv2", "factor": factor}, rng, x)
        assert rec["kept"] == want and rec["convs"] == ["conv2"]
        assert child["conv2"].channels == len(want)
        assert torch.equal(csd["layers.conv2.weight"], w[want])
        for p in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(csd[f"layers.bn2.{p}"], sd[f"layers.bn2.{p}"][want])
        assert torch.equal(csd["layers.conv3.weight"], sd["layers.conv3.weight"][:, want])
        check_child(START, sd, child, csd, rec, x)
    # zero weights out of the pruned filters: pruning them is exact
    z = dict(sd)
    z["layers.conv3.weight"] = sd["layers.conv3.weight"].clone()
    z["layers.conv3.weight"][:, [1, 3, 5, 7]] = 0
    _, _, rec = APPROXIMATE["prune"].apply(
        START, z, {"op": "prune", "conv": "conv2", "factor": 2}, rng, x)
    assert rec["change"] < 1e-12


def test_prune_narrows_a_conv_bias_with_its_filters():
    """A conv with a bias (a user's arch) keeps the biases of the filters it keeps: the child's
    conv computes exactly the parent's kept channels, and its weights are exactly those its
    architecture has."""
    from morphclimb.morphisms._graph import activation
    from morphclimb.spec import with_node
    arch = START.replace([with_node(n, bias=True) if n.id == "conv2" else n
                          for n in START.nodes])
    sd = perturb(weights_of(build(arch, dtype=F64)), 5)
    x = probe_batch(5)
    for factor in (2, 4):
        child, csd, rec = APPROXIMATE["prune"].apply(
            arch, sd, {"op": "prune", "conv": "conv2", "factor": factor},
            np.random.default_rng(0), x)
        kept = rec["kept"]
        assert len(kept) == 8 // factor
        assert set(csd) == set(weights_of(build(child)))
        assert torch.equal(csd["layers.conv2.bias"], sd["layers.conv2.bias"][kept])
        assert torch.allclose(activation(child, csd, x, "conv2"),
                              activation(arch, sd, x, "conv2")[:, kept], rtol=1e-12)


def test_prune_of_the_last_input_of_a_three_way_concat_keeps_its_place():
    """cat(r1: 4, r2: 6, r3: 8 channels) -> conv: pruning conv3 (the last input) keeps
    channels 0-9 of cat and 10 + the kept of conv3; the reader's columns follow."""
    nodes = (Node("input", "input", channels=3, size=(8, 8)),
             Node("c1", "conv", ("input",), channels=4, kernel=3), Node("r1", "relu", ("c1",)),
             Node("c2", "conv", ("input",), channels=6, kernel=3), Node("r2", "relu", ("c2",)),
             Node("c3", "conv", ("input",), channels=8, kernel=3), Node("r3", "relu", ("c3",)),
             Node("cat", "concat", ("r1", "r2", "r3")),
             Node("c4", "conv", ("cat",), channels=5, kernel=1),
             Node("g", "gap", ("c4",)), Node("fc", "linear", ("g",), channels=3))
    arch = Arch(nodes, "fc")
    sd = perturb(weights_of(build(arch, dtype=F64)), 6)
    child, csd, rec = APPROXIMATE["prune"].apply(
        arch, sd, {"op": "prune", "conv": "c3", "factor": 2}, np.random.default_rng(0))
    keep = list(range(10)) + [10 + k for k in rec["kept"]]
    assert len(rec["kept"]) == 4 and child.channels("cat") == 14
    assert torch.equal(csd["layers.c4.weight"], sd["layers.c4.weight"][:, keep])
    x = probe_batch(6)
    from morphclimb.morphisms._graph import activation
    assert torch.equal(activation(child, csd, x, "cat"), activation(arch, sd, x, "cat")[:, keep])


def test_prune_prunes_add_partners_together_by_their_summed_norm():
    a, s = residual(1.0)  # conv2 and conv4 both feed add7
    s = dict(s)
    n2 = torch.tensor([9.0, 0.1, 0.1, 0.1, 1.0, 1.0, 1.0, 1.0], dtype=F64)
    n4 = torch.tensor([0.0, 5.0, 4.0, 3.0, 1.0, 1.0, 1.0, 1.0], dtype=F64)
    for conv, n in (("conv2", n2), ("conv4", n4)):
        w = torch.rand(s[f"layers.{conv}.weight"].shape, dtype=F64) + 0.1
        s[f"layers.{conv}.weight"] = w / w.sum(dim=(1, 2, 3), keepdim=True) * n[:, None, None, None]
    child, csd, rec = APPROXIMATE["prune"].apply(
        a, s, {"op": "prune", "conv": "conv4", "factor": 2}, np.random.default_rng(0),
        probe_batch(0))
    assert rec["convs"] == ["conv2", "conv4"] and rec["kept"] == [0, 1, 2, 3]  # sums 9, 5.1, ..
    assert child["conv2"].channels == child["conv4"].channels == 4
    assert torch.equal(csd["layers.conv4.weight"], s["layers.conv4.weight"][:4, :4])
    check_child(a, s, child, csd, rec, probe_batch(0))


def test_prune_refuses_what_cannot_shrink():
    n = [Node("input", "input", channels=3, size=(8, 8)),
         Node("conv1", "conv", ("input",), channels=4, kernel=3), Node("relu1", "relu", ("conv1",)),
         Node("conv2", "conv", ("relu1",), channels=4, kernel=3), Node("relu2", "relu", ("conv2",)),
         Node("cat", "concat", ("relu1", "relu2")),
         Node("conv3", "conv", ("input",), channels=8, kernel=3), Node("relu3", "relu", ("conv3",)),
         Node("add", "add", ("cat", "relu3")), Node("relu4", "relu", ("add",)),
         Node("gap", "gap", ("relu4",)), Node("fc", "linear", ("gap",), channels=2)]
    arch = Arch(tuple(n), "fc")
    sd = weights_of(build(arch, dtype=F64))
    assert APPROXIMATE["prune"].candidates(arch) == []
    assert not any(c["merge"] == "cat" for c in APPROXIMATE["remove_skip"].candidates(arch))
    rng = np.random.default_rng(0)
    with pytest.raises(MorphismError, match="'cat', a concat"):
        prune(arch, sd, rng, conv="conv3", factor=2)
    with pytest.raises(MorphismError, match="add 'add'"):
        prune(arch, sd, rng, conv="conv1", factor=2)
    with pytest.raises(MorphismError, match="add 'add'"):
        remove_skip(arch, sd, rng, merge="cat", branch=1)
    with pytest.raises(MorphismError, match="factor must be"):
        prune(START, weights_of(build(START)), rng, conv="conv1", factor=8)


# ----------------------------------------------------------------------------- separable
def test_separable_factorisation_is_the_best_rank_one_fit_per_channel():
    w = torch.randn(6, 5, 3, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    w[:, 2] = 0  # a zero slice: identity depthwise filter, zero pointwise column
    d, p = factorise(w)
    assert d.shape == (5, 1, 3, 3) and p.shape == (6, 5, 1, 1)
    approx = p[:, :, 0, 0, None, None] * d[None, :, 0]
    for i in range(5):
        s = torch.linalg.svdvals(w[:, i].reshape(6, 9))
        err = (w[:, i] - approx[:, i]).norm()
        assert err == pytest.approx(s[1:].norm().item(), abs=1e-12)
        j = d[i].abs().argmax()
        assert d[i].flatten()[j] > 0
    assert torch.equal(d[2, 0], torch.tensor([[0, 0, 0], [0, 1.0, 0], [0, 0, 0]], dtype=F64))
    assert not p[:, 2].any()
    rank1 = torch.randn(6, 1, 1, 1, dtype=F64) * torch.randn(1, 5, 3, 3, dtype=F64)
    d, p = factorise(rank1)
    assert torch.allclose(p[:, :, 0, 0, None, None] * d[None, :, 0], rank1, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_separable_of_an_identity_conv_is_exact_and_adds_a_depthwise_op(seed):
    arch, sd, rng = grown(seed)
    a, s, full = REGISTRY["deeper"].apply(arch, sd, REGISTRY["deeper"].sample(arch, rng), rng)
    conv = full["new"][0]
    x = probe_batch(seed)
    child, csd, rec = APPROXIMATE["separable"].apply(
        a, s, {"op": "separable", "conv": conv}, rng, x)
    dw = rec["new"][0]
    assert child[dw].op == "dwconv" and child[dw].inputs == a[conv].inputs
    assert child[conv].inputs == (dw,) and child[conv].kernel == 1
    assert child[conv].channels == a[conv].channels
    assert rec["change"] < 1e-12
    check_child(a, s, child, csd, rec, x)
    c, k = a.channels(conv), full["kernel"]
    assert child.num_params == a.num_params - c * c * k * k + c * k * k + c * c
    with pytest.raises(MorphismError, match="1x1 already"):
        separable(child, csd, rng, conv=conv)
