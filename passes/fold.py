"""Fold eval-mode batch norms into the layer before them; drop dropout and ``nn.Identity``.

What is folded, in both forms a traced graph can take:

- module form (``torch.fx.symbolic_trace``): an ``nn.BatchNorm2d`` call right
  after an ``nn.Conv2d`` call, and an ``nn.BatchNorm1d`` call right after an
  ``nn.Linear`` call;
- ATen form (``torch.export``): ``aten.batch_norm.default`` or
  ``aten._native_batch_norm_legit_no_training.default`` (read through its
  ``getitem(_, 0)``) right after ``aten.conv2d`` / ``aten.convolution``
  (not transposed) or ``aten.linear``, when every weight and statistic is a
  ``get_attr`` of the graph module.

"Right after" means the layer's output has the batch norm as its only user.
A linear layer is folded only when its output is 2-D (N, features), or when
the graph carries no shapes, which is how ``BatchNorm1d`` follows ``Linear``.
Every other batch norm stays as it is.

Eval-mode dropout (``nn.Dropout*`` modules, ``F.dropout*``, ``torch.dropout``,
ATen dropout, torchvision's stochastic depth) and ``nn.Identity`` calls are
bypassed; ``contiguous`` and ``clone`` are kept. Folding changes parameter
counts, so ``node.meta["layer"]`` is dropped from the changed layers: annotate
the result again.
"""

from __future__ import annotations

import copy
import functools
import operator
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

from halocut.ir.errors import HalocutError
from halocut.ir.ops import call_arguments, op_kind

aten = torch.ops.aten

Fuser = Callable[..., tuple[nn.Parameter, nn.Parameter]]

_MODULE_FUSERS: dict[tuple[type, type], Fuser] = {
    (nn.Conv2d, nn.BatchNorm2d): fuse_conv_bn_weights,
    (nn.Linear, nn.BatchNorm1d): fuse_linear_bn_weights,
}

_ATEN_FUSERS: dict[object, Fuser] = {
    aten.conv2d.default: fuse_conv_bn_weights,
    aten.conv2d.padding: fuse_conv_bn_weights,
    aten.convolution.default: fuse_conv_bn_weights,
    aten.linear.default: fuse_linear_bn_weights,
}

_ATEN_NORMS = frozenset({aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default})

# Dropout functions op_kind does not name "dropout".
_FUNCTIONAL_DROPOUTS = frozenset({F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout})

# Weight and bias positions shared by every layer op in _ATEN_FUSERS.
_WEIGHT_INDEX, _BIAS_INDEX = 1, 2


class _NormStats(NamedTuple):
    """Running mean, running variance, eps, scale and shift of a batch norm, in fusion-function order."""

    mean: torch.Tensor
    var: torch.Tensor
    eps: float
    weight: torch.Tensor | None
    bias: torch.Tensor | None


def fold_batchnorm(graph_module: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``graph_module`` with batch norms folded and eval-mode identities removed.

    The input is not modified. Raises :class:`HalocutError` naming the layer
    when a batch norm or a dropout is in training mode.

    >>> import torch
    >>> from torch import fx, nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout()).eval()
    >>> folded = fold_batchnorm(fx.symbolic_trace(model))
    >>> [node.target for node in folded.graph.nodes if node.op == "call_module"]
    ['0', '2']
    >>> x = torch.randn(1, 3, 16, 16)
    >>> torch.allclose(folded(x), model(x), atol=1e-6)
    True
    """
    _refuse_training(graph_module)
    folded = copy.deepcopy(graph_module)
    for node in list(folded.graph.nodes):
        if _is_eval_identity(node, folded):
            _bypass(node)
    for node in list(folded.graph.nodes):
        if node.op == "call_module" and isinstance(folded.get_submodule(node.target), _BatchNorm):
            _fold_module_norm(folded, node)
        elif node.op == "call_function" and node.target in _ATEN_NORMS:
            _fold_aten_norm(folded, node)
    _erase_unused_attributes(folded.graph)
    folded.delete_all_unused_submodules()
    folded.graph.lint()
    folded.recompile()
    return folded


def _refuse_training(graph_module: fx.GraphModule) -> None:
    for node in graph_module.graph.nodes:
        if _is_training_norm(node, graph_module):
            raise HalocutError(f"layer '{_layer_name(node)}': BatchNorm in training mode cannot be folded; "
                               "call model.eval()")
        if _is_dropout(node, graph_module) and _dropout_is_active(node, graph_module):
            raise HalocutError(f"layer '{_layer_name(node)}': dropout in training mode is not an identity; "
                               "call model.eval()")


def _is_training_norm(node: fx.Node, root: nn.Module) -> bool:
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        return isinstance(module, _BatchNorm) and module.training
    if node.op == "call_function" and op_kind(node, root) == "batchnorm2d":
        arguments = call_arguments(node, root, "batchnorm2d")
        # Without running statistics a batch norm normalises by batch statistics in eval mode too.
        return bool(arguments.get("training")) and arguments.get("running_mean") is not None
    return False


def _layer_name(node: fx.Node) -> str:
    if node.op == "call_module":
        return node.target
    stack = node.meta.get("nn_module_stack")
    return next(reversed(stack.values()))[0] if stack else node.name


def _is_dropout(node: fx.Node, root: nn.Module) -> bool:
    if node.op == "call_module":
        return isinstance(root.get_submodule(node.target), _DropoutNd)
    if node.op == "call_function":
        return node.target in _FUNCTIONAL_DROPOUTS or op_kind(node, root) == "dropout"
    return False


def _dropout_is_active(node: fx.Node, root: nn.Module) -> bool:
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        return module.training and module.p > 0
    normalized = node.normalized_arguments(root, normalize_to_only_use_kwargs=True)
    arguments = normalized.kwargs if normalized is not None else call_arguments(node, root, "dropout")
    training = arguments.get("training", arguments.get("train", True))
    return bool(training) and arguments.get("p", 0.5) != 0


def _is_eval_identity(node: fx.Node, root: nn.Module) -> bool:
    if node.op == "call_module" and type(root.get_submodule(node.target)) is nn.Identity:
        return True
    return _is_dropout(node, root)


def _bypass(node: fx.Node) -> None:
    source = node.args[0] if node.args else node.kwargs["input"]
    node.replace_all_uses_with(source)
    node.graph.erase_node(node)


def _sole_producer(norm_node: fx.Node, source: object) -> fx.Node | None:
    """The node feeding ``norm_node`` if the norm is its only user."""
    if isinstance(source, fx.Node) and list(source.users) == [norm_node]:
        return source
    return None


def _fold_module_norm(graph_module: fx.GraphModule, norm_node: fx.Node) -> None:
    norm = graph_module.get_submodule(norm_node.target)
    producer = _sole_producer(norm_node, norm_node.args[0] if norm_node.args else None)
    if producer is None or producer.op != "call_module" or norm.running_mean is None:
        return
    layer = graph_module.get_submodule(producer.target)
    fuse = _MODULE_FUSERS.get((type(layer), type(norm)))
    if fuse is None or not _fits(fuse, producer, layer.weight, norm.running_mean):
        return
    stats = _NormStats(norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias)
    fused = copy.deepcopy(layer)
    fused.weight, fused.bias = fuse(layer.weight, layer.bias, *_filled(stats))
    _install_module(graph_module, producer, fused)
    _replace(norm_node, producer)


def _fold_aten_norm(graph_module: fx.GraphModule, norm_node: fx.Node) -> None:
    arguments = call_arguments(norm_node, graph_module, "batchnorm2d")
    producer = _sole_producer(norm_node, arguments["input"])
    readers = _tuple_readers(norm_node)
    if producer is None or readers is None or arguments.get("training"):
        return
    fuse = _ATEN_FUSERS.get(producer.target)
    layer_arguments = call_arguments(producer, graph_module, "conv2d")
    if fuse is None or layer_arguments.get("transposed"):
        return
    tensors = _fetch_all(graph_module, [layer_arguments["weight"], layer_arguments.get("bias"),
                                        arguments["running_mean"], arguments["running_var"],
                                        arguments.get("weight"), arguments.get("bias")])
    if tensors is None:
        return
    weight, bias, mean, var, scale, shift = tensors
    if weight is None or mean is None or var is None or not _fits(fuse, producer, weight, mean):
        return
    stats = _NormStats(mean, var, arguments["eps"], scale, shift)
    fused_weight, fused_bias = fuse(weight, bias, *_filled(stats))
    base = _attribute_base(layer_arguments["weight"].target)
    with graph_module.graph.inserting_before(producer):
        weight_node = _add_parameter(graph_module, f"{base}_weight_folded", fused_weight)
        bias_node = _add_parameter(graph_module, f"{base}_bias_folded", fused_bias)
    _set_argument(producer, _WEIGHT_INDEX, "weight", weight_node)
    _set_argument(producer, _BIAS_INDEX, "bias", bias_node)
    producer.meta.pop("layer", None)
    for reader in readers:
        _replace(reader, producer)
    _replace(norm_node, producer)


def _tuple_readers(norm_node: fx.Node) -> list[fx.Node] | None:
    """The ``getitem(_, 0)`` users of a norm that returns a tuple; None when a user reads another item."""
    if norm_node.target is aten.batch_norm.default:
        return []
    users = list(norm_node.users)
    if all(user.target is operator.getitem and user.args[1] == 0 for user in users):
        return users
    return None


def _fits(fuse: Fuser, producer: fx.Node, weight: torch.Tensor, mean: torch.Tensor) -> bool:
    """Whether the norm's channels (dim 1) are the layer's output features."""
    channels = mean.shape[0]
    if fuse is fuse_linear_bn_weights:
        return channels in (weight.shape[0], 1) and _rank(producer) in (None, 2)
    return channels == weight.shape[0]


def _rank(node: fx.Node) -> int | None:
    value = node.meta.get("val", node.meta.get("tensor_meta"))
    shape = getattr(value, "shape", None)
    return None if shape is None else len(shape)


def _filled(stats: _NormStats) -> _NormStats:
    """An affine-free norm scales by 1 and shifts by 0 (the linear fuser needs both tensors)."""
    weight = torch.ones_like(stats.mean) if stats.weight is None else stats.weight
    bias = torch.zeros_like(stats.mean) if stats.bias is None else stats.bias
    return stats._replace(weight=weight, bias=bias)


def _fetch_all(root: nn.Module, sources: list) -> list[torch.Tensor | None] | None:
    """Tensors behind ``get_attr`` nodes (None stays None); None if any source is computed."""
    tensors = []
    for source in sources:
        if source is None:
            tensors.append(None)
        elif isinstance(source, fx.Node) and source.op == "get_attr":
            tensors.append(functools.reduce(getattr, source.target.split("."), root))
        else:
            return None
    return tensors


def _attribute_base(target: str) -> str:
    owner = target.rsplit(".", 1)[0] if "." in target else target
    return owner.replace(".", "_")


def _add_parameter(graph_module: fx.GraphModule, name: str, value: nn.Parameter) -> fx.Node:
    unique, index = name, 1
    while hasattr(graph_module, unique):
        unique, index = f"{name}_{index}", index + 1
    graph_module.register_parameter(unique, value)
    return graph_module.graph.get_attr(unique)


def _set_argument(node: fx.Node, index: int, name: str, value: fx.Node) -> None:
    if len(node.args) > index:
        node.update_arg(index, value)
    elif name in node.kwargs or len(node.args) < index:
        node.update_kwarg(name, value)
    else:
        node.args = (*node.args, value)


def _install_module(graph_module: fx.GraphModule, producer: fx.Node, fused: nn.Module) -> None:
    """Put the fused layer in place of the old one, or beside it when another call shares the old one."""
    callers = [n for n in graph_module.graph.nodes if n.op == "call_module" and n.target == producer.target]
    if len(callers) == 1:
        graph_module.set_submodule(producer.target, fused)
    else:
        name, index = f"{producer.target}_folded", 1
        while _has_submodule(graph_module, name):
            name, index = f"{producer.target}_folded_{index}", index + 1
        graph_module.add_submodule(name, fused)
        producer.target = name
    producer.meta.pop("layer", None)


def _has_submodule(root: nn.Module, target: str) -> bool:
    try:
        root.get_submodule(target)
    except AttributeError:
        return False
    return True


def _replace(node: fx.Node, replacement: fx.Node) -> None:
    node.replace_all_uses_with(replacement)
    node.graph.erase_node(node)


def _erase_unused_attributes(graph: fx.Graph) -> None:
    # Only get_attr nodes: a general dead-code pass would also drop unused in-place calls.
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
