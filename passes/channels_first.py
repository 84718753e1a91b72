"""Channels-last blocks rewritten channels-first, so that what is pointwise in space can be tiled.

ConvNeXt (and models written like it) computes per-pixel work in NHWC:
``permute(0, 2, 3, 1) -> LayerNorm(C) -> Linear -> GELU -> Linear -> permute(0, 3, 1, 2)``.
Every op between the two permutes acts on the last dimension alone, so the
chain is the same function as, in NCHW, a per-pixel LayerNorm over channels
(:class:`halocut.ir.ops.ChannelNorm`), 1x1 convolutions and the same
elementwise ops, which tile like any convolution. :func:`channels_first`
finds each such chain (a permute to NHWC whose value flows through one
user after another, each a LayerNorm over the last dimension, a linear
layer or an elementwise op, into the permute back) and replaces it by that
form; anything else between the permutes (attention, reshapes, a second
user) leaves the chain as it is. Linear weights become 1x1 conv weights,
unchanged; only float summation order differs.

>>> import torch
>>> from torch import fx, nn
>>> class Block(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.norm, self.fc = nn.LayerNorm(4), nn.Linear(4, 8)
...     def forward(self, x):
...         return torch.relu(self.fc(self.norm(x.permute(0, 2, 3, 1)))).permute(0, 3, 1, 2)
>>> block = Block()
>>> rewritten = channels_first(fx.symbolic_trace(block))
>>> [n.op for n in rewritten.graph.nodes]
['placeholder', 'call_module', 'call_module', 'call_function', 'output']
>>> x = torch.randn(1, 4, 5, 5)
>>> bool(torch.allclose(rewritten(x), block(x), atol=1e-5))
True
"""

from __future__ import annotations

import copy
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from halocut.ir.ops import POINTWISE, ChannelNorm, op_kind

TO_LAST, TO_FIRST = (0, 2, 3, 1), (0, 3, 1, 2)


def channels_first(graph_module: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``graph_module`` with every channels-last per-pixel chain written channels-first."""
    rewritten = copy.deepcopy(graph_module)
    changed = False
    for node in list(rewritten.graph.nodes):
        if node.graph is rewritten.graph and _permute_dims(node) == TO_LAST:
            chain = _chain(rewritten, node)
            if chain is not None:
                _rewrite(rewritten, node, *chain)
                changed = True
    if changed:
        rewritten.graph.eliminate_dead_code()
        rewritten.graph.lint()
        rewritten.recompile()
    return rewritten


def _permute_dims(node: fx.Node) -> tuple[int, ...] | None:
    if node.op == "call_method" and node.target == "permute":
        dims = node.args[1:]
    elif node.op == "call_function" and node.target in (torch.permute, torch.Tensor.permute):
        dims = node.args[1:]
    else:
        return None
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = dims[0]
    return tuple(dims) if all(isinstance(d, int) for d in dims) else None


def _chain(gm: fx.GraphModule, start: fx.Node) -> tuple[list[fx.Node], fx.Node] | None:
    """The last-dimension ops from the permute to NHWC to the permute back, or None if it is not one."""
    chain, value = [], start
    while len(value.users) == 1:
        (user,) = value.users
        if user.args[:1] != (value,) or any(n.op != "get_attr" for n in user.all_input_nodes if n is not value):
            return None
        if _permute_dims(user) == TO_FIRST:
            return chain, user
        if _last_dim_op(gm, user) is None:
            return None
        chain.append(user)
        value = user
    return None


def _last_dim_op(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """"norm", "linear" or "pointwise" for an op that acts on the last dimension alone (None: not one)."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
            return "norm"
        if type(module) is nn.Linear:
            return "linear"
    elif node.op == "call_function" and node.target is F.layer_norm:
        shape = node.args[1] if len(node.args) > 1 else node.kwargs.get("normalized_shape")
        tensors = [_argument(node, i, k) for i, k in ((2, "weight"), (3, "bias"))]
        if len(tuple(shape)) == 1 and all(t is None or t.op == "get_attr" for t in tensors):
            return "norm"
    elif node.op == "call_function" and node.target is F.linear:
        if all(t is None or t.op == "get_attr" for t in (_argument(node, 1, "weight"), _argument(node, 2, "bias"))):
            return "linear"
    if node.op != "placeholder" and len(node.all_input_nodes) == 1 and op_kind(node, gm) in POINTWISE:
        return "pointwise"
    return None


def _argument(node: fx.Node, index: int, name: str):
    return node.args[index] if len(node.args) > index else node.kwargs.get(name)


def _tensor(gm: fx.GraphModule, node: fx.Node | None) -> torch.Tensor | None:
    return None if node is None else operator.attrgetter(node.target)(gm)


def _replacement(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The channels-first module of a norm or linear node (None: an elementwise op, kept as it is)."""
    kind = _last_dim_op(gm, node)
    if kind == "pointwise":
        return None
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        weight, bias = module.weight, module.bias
        eps = getattr(module, "eps", None)
    else:
        offset = 2 if kind == "norm" else 1
        weight, bias = (_tensor(gm, _argument(node, offset + i, n)) for i, n in enumerate(("weight", "bias")))
        eps = _argument(node, 4, "eps") if kind == "norm" else None
        eps = 1e-5 if eps is None else eps
    if kind == "norm":
        return ChannelNorm(weight, bias, float(eps))
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(weight.detach().reshape(*weight.shape, 1, 1))
        if bias is not None:
            conv.bias.copy_(bias.detach())
    return conv


def _rewrite(gm: fx.GraphModule, to_last: fx.Node, chain: list[fx.Node], to_first: fx.Node) -> None:
    value = to_last.args[0]
    for node in chain:
        module = _replacement(gm, node)
        if module is None:
            node.args = (value, *node.args[1:])
            value = node
            continue
        if node.op == "call_module":  # the same node and name, its module swapped
            gm.add_submodule(node.target, module)
            node.args, node.kwargs = (value,), {}
            value = node
            continue
        target = f"{node.name}_channels_first"
        gm.add_submodule(target, module)
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(target, (value,))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        value = new
    to_first.replace_all_uses_with(value)
    gm.graph.erase_node(to_first)
    if not to_last.users:
        gm.graph.erase_node(to_last)
