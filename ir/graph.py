"""Queries on an fx graph that every floor asks: its compute nodes, its outputs, a node's activation inputs.

>>> from torch import fx, nn
>>> gm = fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
>>> [n.name for n in compute_nodes(gm)], [n.name for n in output_nodes(gm)]
(['_0', '_1'], ['_1'])
>>> [[n.name for n in hop] for hop in split_hops(compute_nodes(gm), ["_0", None])]
[['_0'], ['_1']]
"""

from __future__ import annotations

from typing import Sequence

from torch import fx

from halocut.ir.errors import HalocutError

COMPUTE_OPS = ("call_module", "call_function", "call_method")


def compute_nodes(graph_module: fx.GraphModule) -> list[fx.Node]:
    """The nodes a plan assigns: calls, in graph order."""
    return [n for n in graph_module.graph.nodes if n.op in COMPUTE_OPS]


def output_nodes(graph_module: fx.GraphModule) -> list[fx.Node]:
    """The nodes whose values the graph returns, in the order it returns them."""
    (returned,) = [n.args[0] for n in graph_module.graph.nodes if n.op == "output"]
    outputs: list[fx.Node] = []
    fx.node.map_arg(returned, outputs.append)
    return outputs


def tensor_inputs(node: fx.Node) -> list[fx.Node]:
    """The node's activation inputs: tensors computed by the graph, not weights or buffers."""
    return [n for n in node.all_input_nodes if n.op != "get_attr" and "tensor_meta" in n.meta]


def volume_nodes(graph_module: fx.GraphModule, names: Sequence[str]) -> list[fx.Node]:
    """The named nodes in graph order; an unknown name is an error."""
    by_name = {n.name: n for n in graph_module.graph.nodes}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise HalocutError(f"no node named {', '.join(repr(m) for m in missing)} in the graph")
    wanted = set(names)
    return [n for n in graph_module.graph.nodes if n.name in wanted]


def split_hops(volume: Sequence[fx.Node], untils: Sequence[str | None]) -> list[list[fx.Node]]:
    """A tile's volume split into its chain's hops: hop ``i`` ends at ``untils[i]`` (the last hop's is None)."""
    hops: list[list[fx.Node]] = [[]]
    boundaries = [u for u in untils if u is not None]
    for node in volume:
        hops[-1].append(node)
        if boundaries and node.name == boundaries[0]:
            hops.append([])
            boundaries.pop(0)
    return hops
