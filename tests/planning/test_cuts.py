"""The crossing counts of one sweep (planning speed, issue 12 item 8) against their definition, over models with
branches, concats, residuals and skip connections."""

import pytest

from halocut.compiler.prepare import prepare_model
from halocut.ir.graph import compute_nodes
from halocut.planning.search.cuts import UNCUTTABLE, crossings, cut_positions


def by_definition(graph, position):
    """Values made before ``position`` (the input included) that a node from ``position`` on reads; one that is
    not a tensor (no tensor_meta) counts UNCUTTABLE."""
    nodes = compute_nodes(graph)
    before = {n.name for n in nodes[:position]} | {n.name for n in graph.graph.nodes if n.op == "placeholder"}
    crossing = {s for n in nodes[position:] for s in n.all_input_nodes if s.name in before}
    return sum(1 if "tensor_meta" in s.meta or s.op == "placeholder" else UNCUTTABLE for s in crossing)


@pytest.mark.parametrize("model, shape", [("googlenet", (1, 3, 64, 64)), ("densenet121", (1, 3, 64, 64)),
                                          ("unet", None), ("resnet18", (1, 3, 64, 64)), ("fpn_detector", None)])
def test_the_sweep_counts_what_crosses_every_position(model, shape):
    graph = prepare_model(model, shape).graph
    count = len(compute_nodes(graph))
    counts = crossings(graph)
    assert counts == [by_definition(graph, p) for p in range(count + 1)]
    assert max(counts) > 1  # branches: the case a sweep can get wrong
    assert cut_positions(graph, 1) == [p for p in range(count + 1) if p in (0, count) or counts[p] <= 1]


def test_no_cut_falls_where_a_value_that_is_not_a_tensor_crosses():
    """ViT's attention returns (output, None), read by a getitem: planning cut there and met no size (KeyError
    'tensor_meta' in the zoo); the tuple is not a value a part can send."""
    graph = prepare_model("vit_b_32", (1, 3, 224, 224)).graph
    nodes = compute_nodes(graph)
    attention = [i for i, n in enumerate(nodes) if "tensor_meta" not in n.meta]
    assert attention and all(crossings(graph)[i + 1] >= UNCUTTABLE for i in attention)
    assert not set(cut_positions(graph, 2)) & {i + 1 for i in attention}
