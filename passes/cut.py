"""Cut a graph into stages at partition points: mechanism only, the caller decides where.

Built on fx's ``split_module``. Tensors that cross a cut, including residual
branches that skip over a whole stage, become stage inputs and outputs named
after the nodes that produce them.

>>> import torch
>>> from torch import fx, nn
>>> gm = fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)))
>>> [(s.inputs, s.outputs) for s in cut_stages(gm, ["_1"])]
[(('input_1',), ('_1',)), (('_1',), ('_2',))]
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable, Sequence

from torch import fx
from torch.fx.passes.split_module import split_module

from halocut.ir.errors import HalocutError
from halocut.ir.graph import compute_nodes

ORIGINAL_NAME = "halocut_name"


@dataclass(frozen=True)
class StagePart:
    """A standalone stage: its module takes ``inputs`` and returns ``outputs`` (original node names)."""

    module: fx.GraphModule
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def __call__(self, values: dict) -> dict:
        """Run on a name -> value environment; returns the stage's outputs by name."""
        result = self.module(*(values[name] for name in self.inputs))
        return dict(zip(self.outputs, result if len(self.outputs) > 1 else (result,)))


def cut_stages(graph_module: fx.GraphModule,
               partition: Callable[[fx.Node], int] | Sequence[str]) -> list[StagePart]:
    """Cut into stages by a callback ``node -> stage index`` or after each named boundary node."""
    assign = partition if callable(partition) else _boundaries(graph_module, list(partition))
    stage_of = {n.name: _index(assign, n) for n in compute_nodes(graph_module)}
    _check_order(graph_module, stage_of)
    for node in graph_module.graph.nodes:
        node.meta[ORIGINAL_NAME] = node.name  # split_module renames nodes but copies their meta
    split = split_module(graph_module, graph_module, lambda n: stage_of[n.name], keep_original_order=True)
    attributes = {n.name: n.target for n in graph_module.graph.nodes if n.op == "get_attr"}
    stages = []
    for index in range(max(stage_of.values()) + 1):
        module = _with_own_weights(getattr(split, f"submod_{index}"), graph_module, attributes)
        inputs = tuple(n.name for n in module.graph.nodes if n.op == "placeholder")
        (returned,) = [n.args[0] for n in module.graph.nodes if n.op == "output"]
        outputs = tuple(r.meta[ORIGINAL_NAME] for r in (returned if isinstance(returned, (tuple, list)) else (returned,)))
        stages.append(StagePart(module, inputs, outputs))
    return stages


def _with_own_weights(module: fx.GraphModule, root: fx.GraphModule, attributes: dict[str, str]) -> fx.GraphModule:
    """split_module passes tensor attributes in as inputs; a standalone stage carries them itself."""
    first_op = next(n for n in module.graph.nodes if n.op != "placeholder")
    for node in [n for n in module.graph.nodes if n.op == "placeholder" and n.name in attributes]:
        value = operator.attrgetter(attributes[node.name])(root)
        name = f"_w_{node.name}"
        setattr(module, name, value)
        with module.graph.inserting_before(first_op):
            replacement = module.graph.get_attr(name)
        node.replace_all_uses_with(replacement)
        module.graph.erase_node(node)
    module.graph.lint()
    module.recompile()
    return module


def _index(assign: Callable[[fx.Node], int], node: fx.Node) -> int:
    index = assign(node)
    if not isinstance(index, int) or index < 0:
        raise HalocutError(f"partition callback gave {index!r} for node '{node.name}': expected an int >= 0")
    return index


def _boundaries(graph_module: fx.GraphModule, names: list[str]) -> Callable[[fx.Node], int]:
    nodes = {n.name: n for n in graph_module.graph.nodes}
    order = {n.name: i for i, n in enumerate(compute_nodes(graph_module))}
    for name in names:
        if name not in nodes:
            raise HalocutError(f"cannot cut after '{name}': no such node")
        if name not in order:
            raise HalocutError(f"cannot cut after '{name}': it is a {nodes[name].op} node, not a layer")
    positions = [order[name] for name in names]
    if positions != sorted(set(positions)):
        raise HalocutError(f"cut points {names} must be distinct and in graph order")
    if positions and positions[-1] == len(order) - 1:
        raise HalocutError(f"cannot cut after '{names[-1]}': it is the last layer, the stage after it would be empty")

    def assign(node: fx.Node) -> int:
        return sum(order[node.name] > p for p in positions)
    return assign


def _check_order(graph_module: fx.GraphModule, stage_of: dict[str, int]) -> None:
    used = sorted(set(stage_of.values()))
    if used != list(range(len(used))):
        raise HalocutError(f"stage indices {used} must be 0..{len(used) - 1} with none empty")
    for node in compute_nodes(graph_module):
        for source in node.all_input_nodes:
            if source.name in stage_of and stage_of[source.name] > stage_of[node.name]:
                raise HalocutError(f"node '{node.name}' in stage {stage_of[node.name]} reads '{source.name}' "
                                   f"from the later stage {stage_of[source.name]}")
