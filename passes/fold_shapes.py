"""Fold shape arithmetic to constants: ``x.size(0)``, ``x.shape[-2:]``, ``channels // groups``.

Input shapes are static in halocut, so every call that yields no tensor (an
int, a ``torch.Size``, a tuple of ints) has one value for the graph's input
shape. :func:`fold_shapes` runs the graph once on a zero input of that shape,
writes those values into their users' arguments and erases the calls, so that
planners, the simulator and the slicer only ever see nodes that carry tensors
(and move bytes). A ``torch.Size`` becomes a tuple of ints.

>>> import torch
>>> from torch import fx, nn
>>> class Flat(nn.Module):
...     def forward(self, x):
...         return torch.relu(x).view(x.size(0), -1)
>>> folded = fold_shapes(fx.symbolic_trace(Flat()), (1, 3, 4, 4))
>>> [n.target for n in folded.graph.nodes if n.op == "call_method"]
['view']
>>> folded(torch.ones(1, 3, 4, 4)).shape
torch.Size([1, 48])
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import fx

from halocut.ir.graph import COMPUTE_OPS

_SCALARS = (int, float, bool, type(None), str)


def fold_shapes(graph_module: fx.GraphModule, input_shape: tuple[int, ...]) -> fx.GraphModule:
    """A copy of ``graph_module`` whose tensor-free calls are replaced by their constant values."""
    folded = copy.deepcopy(graph_module)
    values = _values(folded, input_shape)
    constant = {n: _constant(values[n]) for n in folded.graph.nodes
                if n.op in COMPUTE_OPS and n in values and _is_constant(values[n])}
    if not constant:
        return folded
    for node in folded.graph.nodes:
        if node.op in COMPUTE_OPS or node.op == "output":
            node.args = fx.node.map_arg(node.args, lambda n: constant.get(n, n))
            node.kwargs = fx.node.map_arg(node.kwargs, lambda n: constant.get(n, n))
    for node in reversed(list(folded.graph.nodes)):
        if node in constant and not node.users:
            folded.graph.erase_node(node)
    folded.graph.lint()
    folded.recompile()
    return folded


def _values(graph_module: fx.GraphModule, input_shape: tuple[int, ...]) -> dict[fx.Node, Any]:
    interpreter = fx.Interpreter(graph_module, garbage_collect_values=False)
    with torch.no_grad():
        interpreter.run(torch.zeros(input_shape))
    return dict(interpreter.env)


def _is_constant(value: Any) -> bool:
    if isinstance(value, _SCALARS) or isinstance(value, torch.Size):
        return True
    if isinstance(value, (tuple, list)):
        return all(_is_constant(v) for v in value)
    return False


def _constant(value: Any) -> Any:
    if isinstance(value, torch.Size):
        return tuple(int(d) for d in value)
    if isinstance(value, (tuple, list)):
        return type(value)(_constant(v) for v in value)
    return value
