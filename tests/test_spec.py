"""Architecture specs: JSON round trip, validation messages, the table, the builder."""

from __future__ import annotations

import json

import pytest
import torch

import morphclimb as mc
from morphclimb.spec import Arch, Node


def _d(nodes, output="fc"):
    return {"nodes": nodes, "output": output}


INPUT = {"id": "input", "op": "input", "channels": 3, "size": [8, 8]}
HEAD = [{"id": "g", "op": "gap", "inputs": ["c"]},
        {"id": "fc", "op": "linear", "inputs": ["g"], "channels": 2}]


def test_json_round_trip_is_exact():
    a = mc.starting_arch(in_channels=1, num_classes=7, image_size=(12, 20), widths=(3, 5, 7))
    text = json.dumps(a.to_dict())
    b = Arch.from_dict(json.loads(text))
    assert a == b and json.dumps(b.to_dict()) == text
    assert b.shapes["fc"] == (7,) and b.shapes["relu3"] == (7, 3, 5)


def test_starting_arch_shape_and_params():
    a = mc.starting_arch()
    assert [n.op for n in a.nodes] == ["input"] + ["conv", "bn", "relu", "maxpool"] * 2 + [
        "conv", "bn", "relu", "gap", "linear"]
    assert a.num_params == sum(p.numel() for p in mc.build(a).parameters())
    with pytest.raises(mc.ArchError, match="at least 4x4"):
        mc.starting_arch(image_size=3)


@pytest.mark.parametrize("nodes, output, message", [
    ([INPUT, {"id": "c", "op": "conv", "inputs": ["x"], "channels": 4, "kernel": 3}, *HEAD],
     "fc", "node 'c' (conv): dangling input 'x'"),
    ([INPUT, {"id": "c", "op": "relu", "inputs": ["d"]}, {"id": "d", "op": "relu", "inputs": ["c"]},
      *HEAD], "fc", "part of a cycle"),
    ([INPUT, {"id": "c", "op": "conv", "inputs": ["input"], "channels": 4, "kernel": 3},
      {"id": "a", "op": "add", "inputs": ["c", "input"]},
      {"id": "g", "op": "gap", "inputs": ["a"]},
      {"id": "fc", "op": "linear", "inputs": ["g"], "channels": 2}], "fc",
     "node 'a' (add): add needs inputs of one shape (channels and size), got c: 4x8x8, input: "
     "3x8x8"),
    ([INPUT, {"id": "p", "op": "maxpool", "inputs": ["input"], "kernel": 2},
      {"id": "c", "op": "add", "inputs": ["p", "input"]}, *HEAD], "fc",
     "node 'c' (add): add needs inputs of one shape"),
    ([INPUT, {"id": "c", "op": "softmax2d", "inputs": ["input"]}, *HEAD], "fc",
     "node 'c' (softmax2d): unknown op 'softmax2d'"),
    ([INPUT, {"id": "c", "op": "conv", "inputs": ["input"], "channels": 4, "kernel": 4}, *HEAD],
     "fc", "conv kernels must be odd"),
    ([INPUT, {"id": "c", "op": "conv", "inputs": ["input"], "channels": 0, "kernel": 3}, *HEAD],
     "fc", "channels must be an integer from 1 to 65,536, got 0"),
    # bounds: a damaged arch.json must not make anyone allocate or lay out for minutes
    ([INPUT, {"id": "c", "op": "conv", "inputs": ["input"], "channels": 10 ** 9, "kernel": 3},
      *HEAD], "fc", "channels must be an integer from 1 to 65,536, got 1000000000"),
    ([INPUT, {"id": "c", "op": "conv", "inputs": ["input"], "channels": 10 ** 40, "kernel": 3},
      *HEAD], "fc", "got a number of 133 bits"),
    ([INPUT, {"id": "c", "op": "conv", "inputs": ["input"], "channels": 4, "kernel": 65},
      *HEAD], "fc", "kernel must be an integer from 1 to 63, got 65"),
    ([{"id": "input", "op": "input", "channels": 3, "size": [8, 20000]},
      {"id": "c", "op": "relu", "inputs": ["input"]}, *HEAD], "fc",
     "size must be two integers from 1 to 16,384, got (8, 20000)"),
    ([INPUT, *({"id": f"r{k}", "op": "relu", "inputs": [f"r{k - 1}" if k else "input"]}
               for k in range(4100)),
      {"id": "g", "op": "gap", "inputs": ["r4099"]},
      {"id": "fc", "op": "linear", "inputs": ["g"], "channels": 2}], "fc",
     "an architecture of 4,103 nodes; at most 4,096 are read"),
    ([INPUT, {"id": "a", "op": "conv", "inputs": ["input"], "channels": 65536, "kernel": 1},
      {"id": "c", "op": "conv", "inputs": ["a"], "channels": 65536, "kernel": 1}, *HEAD], "fc",
     "an architecture of 4,295,294,978 parameters; at most 2,147,483,648 are read"),
    ([INPUT, {"id": "c", "op": "conv", "inputs": ["input"], "kernel": 3}, *HEAD], "fc",
     "'conv' needs the field 'channels'"),
    ([INPUT, {"id": "c", "op": "relu", "inputs": ["input"]}, {"id": "c", "op": "relu",
                                                              "inputs": ["input"]}, *HEAD],
     "fc", "node 'c' (relu): duplicate id"),
    ([INPUT, {"id": "c", "op": "relu", "inputs": ["input"]},
      {"id": "fc", "op": "linear", "inputs": ["c"], "channels": 2}], "fc",
     "linear needs a vector input"),
    ([INPUT, {"id": "c", "op": "relu", "inputs": ["input"]}, *HEAD], "g",
     "node 'g' (gap): the output node must be a 'linear' layer"),
    ([INPUT, {"id": "c", "op": "relu", "inputs": ["input"]},
      {"id": "z", "op": "relu", "inputs": ["input"]}, *HEAD], "fc",
     "node 'z' (relu): does not contribute to the output 'fc'"),
    ([INPUT, {"id": "c", "op": "maxpool", "inputs": ["input"], "kernel": 16}, *HEAD], "fc",
     "max-pool of a 8x8 map leaves nothing"),
    ([INPUT, {"id": "c", "op": "relu", "inputs": ["input"], "kernel": 3}, *HEAD], "fc",
     "'relu' takes no field 'kernel'"),
    ([INPUT, {"id": "c", "op": "add", "inputs": ["input"]}, *HEAD], "fc",
     "'add' takes at least 2 input(s), got 1"),
    ([INPUT, {"id": "2c", "op": "relu", "inputs": ["input"]}, *HEAD], "fc",
     "ids must be identifiers"),
])
def test_malformed_specs_are_rejected_with_the_node_named(nodes, output, message):
    with pytest.raises(mc.ArchError) as info:
        Arch.from_dict(_d(nodes, output))
    text = str(info.value)
    assert message in text, text


def test_error_prints_the_graph_and_unknown_fields_are_named():
    with pytest.raises(mc.ArchError) as info:
        Arch.from_dict(_d([INPUT, {"id": "c", "op": "conv", "inputs": ["zz"], "channels": 4,
                                   "kernel": 3}, *HEAD]))
    assert "layer" in str(info.value) and "conv 3x3, 4" in str(info.value)
    with pytest.raises(mc.ArchError, match="unknown field"):
        Arch.from_dict(_d([dict(INPUT, color="red")]))
    with pytest.raises(mc.ArchError, match="unknown architecture format"):
        Arch.from_dict({"format": "other/9", "nodes": [], "output": "fc"})
    with pytest.raises(mc.ArchError, match="exactly one 'input'"):
        Arch.from_dict(_d([INPUT, dict(INPUT, id="input2"), {"id": "c", "op": "relu", "inputs": ["input"]}, *HEAD]))


def test_nodes_given_out_of_order_are_sorted_topologically():
    a = mc.starting_arch()
    shuffled = Arch(tuple(reversed(a.nodes)), "fc")
    assert shuffled == a


def test_summary_table_lists_layers_shapes_and_params():
    text = mc.starting_arch().summary()
    assert "conv3  conv 3x3, 128  pool2   128x8x8   73,728" in text
    assert "94,762 parameters" in text


def test_build_reproduces_outputs_bit_for_bit():
    a = mc.starting_arch(image_size=16, widths=(4, 8, 8))
    net = mc.build(a, seed=3).eval()
    x = torch.randn(5, 3, 16, 16)
    again = mc.build(a, mc.weights_of(net)).eval()
    assert torch.equal(net(x), again(x))
    assert torch.equal(mc.build(a, seed=3).eval()(x), net(x))   # seeded init, global RNG untouched
    state = torch.random.get_rng_state()
    mc.build(a, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())


def test_build_dtype_follows_weights_and_channels_last_works():
    a = mc.starting_arch(image_size=8, widths=(4, 8, 8))
    sd = {k: v.double() if v.is_floating_point() else v
          for k, v in mc.build(a).state_dict().items()}
    net = mc.build(a, sd).eval()
    assert next(net.parameters()).dtype == torch.float64
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    cl = mc.build(a, sd).eval().to(memory_format=torch.channels_last)
    y = cl(x.to(memory_format=torch.channels_last))
    assert torch.allclose(y, net(x), atol=1e-12)


def test_wrong_weights_are_reported():
    a = mc.starting_arch(image_size=8, widths=(4, 8, 8))
    b = mc.starting_arch(image_size=8, widths=(4, 8, 16))
    with pytest.raises(mc.ArchError, match="wrong shape"):
        mc.build(a, mc.build(b).state_dict())
    sd = mc.build(a).state_dict()
    sd.pop("layers.conv1.weight")
    with pytest.raises(mc.ArchError, match="missing"):
        mc.build(a, sd)


def test_forward_walks_a_precomputed_order():
    a = mc.starting_arch(image_size=8, widths=(4, 8, 8))
    net = mc.build(a)
    assert len(net._steps) == len(a.nodes) - 1
    assert Node("x", "relu", ("input",)).describe() == "relu"


def every_op() -> Arch:
    """A small network with one node of every op (conv with and linear without bias)."""
    return Arch((Node("input", "input", channels=3, size=(8, 8)),
                 Node("c1", "conv", ("input",), channels=4, kernel=3),
                 Node("b1", "bn", ("c1",)), Node("r1", "relu", ("b1",)),
                 Node("p1", "maxpool", ("r1",), kernel=2),
                 Node("d1", "dwconv", ("p1",), kernel=3, bias=True),
                 Node("c2", "conv", ("d1",), channels=4, kernel=1, bias=True),
                 Node("a1", "add", ("p1", "c2", "p1")),
                 Node("cat", "concat", ("a1", "p1")), Node("g", "gap", ("cat",)),
                 Node("fc", "linear", ("g",), channels=5, bias=False)), "fc")


def test_op_tables_agree_with_the_modules():
    """spec.OPS names each op's weights; build.LAYERS' modules must hold exactly those."""
    from morphclimb.build import LAYERS, expected_shapes
    from morphclimb.spec import OPS
    a = every_op()
    assert {n.op for n in a.nodes} == set(OPS) == set(LAYERS)
    net = mc.build(a, seed=0)
    assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == list(
        expected_shapes(a).items())
    assert sum(p.numel() for p in net.parameters()) == a.num_params == (
        4 * 27 + 8 + (4 * 9 + 4) + 20 + 3 + 40)


def test_layer_run_computes_what_the_module_computes_in_train_mode():
    """build.LAYERS[op].run (what the morphisms run a probe through) == the module, bit for bit."""
    from morphclimb.build import LAYERS, key
    a = every_op()
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) if v.is_floating_point()
          else v for k, v in mc.build(a).state_dict().items()}
    sd["layers.b1.running_var"] = sd["layers.b1.running_var"].abs()
    net = mc.build(a, sd).train()
    seen = {}

    def keep(node_id):
        def hook(module, inputs, output):
            seen[node_id] = inputs, output
        return hook

    for node_id, layer in net.layers.items():
        layer.register_forward_hook(keep(node_id))
    net(torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64))
    for n in a.nodes[1:]:
        xs, y = seen[n.id]
        w = {name: sd[key(n.id, name)] for name in a.weight_shapes(n.id)}
        assert torch.equal(LAYERS[n.op].run(n, list(xs), w), y), n.id
