"""The closed vocabulary of op kinds and how fx nodes map onto it.

The same op reaches the graph as a module (``nn.ReLU``), a function
(``F.relu``, ``torch.relu``), a tensor method (``x.relu()``), a Python operator
(``operator.add``) or an ATen overload (``aten.relu_.default``, from
``torch.export``). :func:`op_kind` names its kind; :func:`call_arguments`
gives its arguments by name, whichever form it was written in.

>>> import operator
>>> op_kind_of_function(operator.add)
'add'
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx, nn

KINDS = frozenset({
    "conv2d", "conv_transpose2d", "linear", "matmul", "batchnorm2d",
    "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "silu", "gelu",
    "softmax", "maxpool2d", "avgpool2d", "adaptive_avgpool2d", "adaptive_maxpool2d", "lrn",
    "add", "sub", "mul", "div", "cat", "flatten", "reshape", "permute", "transpose",
    "slice", "getitem", "chunk", "mean", "reorg", "pixel_shuffle", "upsample", "pad",
    "dropout", "identity", "size", "channel_norm", "unknown",
})

# The kind sets every floor shares (one definition each).
# Per-element ops of one input: a tile of the output needs the same tile of the input; fused into the kernel
# that feeds them by TensorRT, TVM and ncnn.
POINTWISE = frozenset({"relu", "relu6", "leaky_relu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "silu",
                       "gelu", "batchnorm2d", "dropout", "identity"})
# Kinds that only relabel or forward their input: no arithmetic, no new data, no time.
# "size" is arithmetic on shapes (x.size(0), channels // groups): it yields no tensor.
FREE = frozenset({"flatten", "reshape", "dropout", "identity", "getitem", "size"})
# Kinds whose output depends on their whole input: they end a spatially splittable region.
WHOLE_INPUT = frozenset({"adaptive_avgpool2d", "adaptive_maxpool2d", "linear", "flatten", "reshape", "mean",
                         "softmax", "matmul", "permute", "transpose"})
# Kinds with multiply-adds (the FLOP convention of halocut.ir.layers).
KERNELS_WITH_MACS = frozenset({"conv2d", "conv_transpose2d", "linear", "matmul"})

class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each pixel of an (N, C, H, W) tensor: what ConvNeXt computes as
    ``permute(0, 2, 3, 1) -> LayerNorm(C) -> permute(0, 3, 1, 2)``, written in channels-first form
    (``halocut.passes.channels_first``), so a tile of the output needs the same tile of the input."""

    def __init__(self, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = None if weight is None else nn.Parameter(weight.detach().clone().reshape(1, -1, 1, 1))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone().reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        y = centred * torch.rsqrt((centred * centred).mean(dim=1, keepdim=True) + self.eps)
        y = y if self.weight is None else y * self.weight
        return y if self.bias is None else y + self.bias


_MODULE_KINDS: dict[type, str] = {
    nn.Conv2d: "conv2d", nn.ConvTranspose2d: "conv_transpose2d", nn.Linear: "linear",
    nn.BatchNorm2d: "batchnorm2d", nn.ReLU: "relu", nn.ReLU6: "relu6", nn.LeakyReLU: "leaky_relu",
    nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid",
    nn.SiLU: "silu", nn.GELU: "gelu", nn.Softmax: "softmax",
    nn.MaxPool2d: "maxpool2d", nn.AvgPool2d: "avgpool2d",
    nn.AdaptiveAvgPool2d: "adaptive_avgpool2d", nn.AdaptiveMaxPool2d: "adaptive_maxpool2d",
    nn.LocalResponseNorm: "lrn", nn.Flatten: "flatten", nn.Dropout: "dropout", nn.Dropout2d: "dropout",
    nn.Identity: "identity", nn.PixelUnshuffle: "reorg", nn.PixelShuffle: "pixel_shuffle",
    nn.Upsample: "upsample", nn.UpsamplingNearest2d: "upsample", nn.UpsamplingBilinear2d: "upsample",
    nn.ZeroPad2d: "pad", nn.ConstantPad2d: "pad", ChannelNorm: "channel_norm",
}

# Function, method and ATen names (in-place trailing "_" removed) -> kind.
_NAME_KINDS: dict[str, str] = {
    "conv2d": "conv2d", "convolution": "conv2d", "conv_transpose2d": "conv_transpose2d",
    "linear": "linear", "addmm": "linear", "matmul": "matmul", "mm": "matmul", "bmm": "matmul",
    "batch_norm": "batchnorm2d", "_native_batch_norm_legit_no_training": "batchnorm2d",
    "relu": "relu", "relu6": "relu6", "leaky_relu": "leaky_relu", "sigmoid": "sigmoid", "tanh": "tanh",
    "hardswish": "hardswish", "hardsigmoid": "hardsigmoid", "silu": "silu", "gelu": "gelu",
    "softmax": "softmax", "_softmax": "softmax",
    "max_pool2d": "maxpool2d", "max_pool2d_with_indices": "maxpool2d", "avg_pool2d": "avgpool2d",
    "adaptive_avg_pool2d": "adaptive_avgpool2d", "_adaptive_avg_pool2d": "adaptive_avgpool2d",
    "adaptive_max_pool2d": "adaptive_maxpool2d", "local_response_norm": "lrn",
    "add": "add", "iadd": "add", "sub": "sub", "isub": "sub", "mul": "mul", "imul": "mul",
    "truediv": "div", "div": "div", "cat": "cat", "concat": "cat", "concatenate": "cat",
    "flatten": "flatten", "view": "reshape", "reshape": "reshape", "_unsafe_view": "reshape",
    "permute": "permute", "transpose": "transpose", "contiguous": "identity", "clone": "identity",
    "dropout": "dropout", "feature_dropout": "dropout", "stochastic_depth": "dropout", "alias": "identity",
    "chunk": "chunk", "split": "chunk", "mean": "mean",
    "pixel_unshuffle": "reorg", "pixel_shuffle": "pixel_shuffle", "interpolate": "upsample",
    "upsample_nearest2d": "upsample",
    "pad": "pad", "constant_pad_nd": "pad", "size": "size", "dim": "size",
}

# Positional parameter names of the Python-level forms (torch.X, F.X, Tensor.X with self
# as "input", operator.X); ATen overloads are normalised from their own schema instead.
_SIGNATURES: dict[str, tuple[str, ...]] = {
    "conv2d": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "conv_transpose2d": ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"),
    "linear": ("input", "weight", "bias"),
    "batchnorm2d": ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
    "leaky_relu": ("input", "negative_slope"),
    "softmax": ("input", "dim"),
    "maxpool2d": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    "avgpool2d": ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    "adaptive_avgpool2d": ("input", "output_size"),
    "adaptive_maxpool2d": ("input", "output_size"),
    "cat": ("tensors", "dim"),
    "flatten": ("input", "start_dim", "end_dim"),
    "reorg": ("input", "downscale_factor"),
    "pixel_shuffle": ("input", "upscale_factor"),
    "upsample": ("input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias"),
    "pad": ("input", "pad", "mode", "value"),
    "chunk": ("input", "chunks", "dim"),
    "mean": ("input", "dim", "keepdim"),
}

_TORCH_MODULE_PREFIXES = ("torch", "_operator", "operator")


def op_kind_of_function(target: Any) -> str:
    """Kind of a ``call_function`` target, ``"unknown"`` if it is not a torch or operator op."""
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        name = (target.overloadpacket if isinstance(target, torch._ops.OpOverload) else target).__name__
    elif (getattr(target, "__module__", None) or "").startswith(_TORCH_MODULE_PREFIXES) or \
            getattr(operator, getattr(target, "__name__", ""), None) is target:
        name = getattr(target, "__name__", "")
    else:
        return "unknown"
    return _kind_of_name(name)


def op_kind(node: fx.Node, root: nn.Module) -> str:
    """The kind of a call node, from its target in any of its written forms."""
    if node.op == "call_module":
        module = root.get_submodule(node.target)
        return next((kind for cls, kind in _MODULE_KINDS.items() if type(module) is cls), "unknown")
    if node.op == "call_method":
        return _kind_of_name(node.target)
    if node.op == "call_function":
        kind = op_kind_of_function(node.target)
        if kind == "getitem" or node.target is operator.getitem:
            source = node.args[0]
            is_tensor = isinstance(source, fx.Node) and source.meta.get("type") is torch.Tensor
            return "slice" if is_tensor else "getitem"
        return kind
    raise ValueError(f"{node.op} node '{node.name}' is not a call")


def _kind_of_name(name: str) -> str:
    if name == "getitem":
        return "getitem"
    base = name[:-1] if name.endswith("_") and not name.startswith("_") else name
    return _NAME_KINDS.get(name) or _NAME_KINDS.get(base) or "unknown"


def target_name(node: fx.Node, root: nn.Module) -> str:
    """A readable name of what a node calls: ``torch.nn.Conv2d``, ``aten.relu_.default``, ``Tensor.view``."""
    if node.op == "call_module":
        cls = type(root.get_submodule(node.target))
        module = "torch.nn" if cls.__module__.startswith("torch.nn.modules") else cls.__module__
        return f"{module}.{cls.__qualname__}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    module = getattr(target, "__module__", None) or ""
    return f"{module}.{getattr(target, '__name__', repr(target))}".lstrip(".")


def call_arguments(node: fx.Node, root: nn.Module, kind: str) -> dict[str, Any]:
    """Arguments of a function, method or ATen call by parameter name (modules: empty)."""
    if node.op == "call_module":
        return {}
    if isinstance(node.target, torch._ops.OpOverload):
        normalized = node.normalized_arguments(root, normalize_to_only_use_kwargs=True)
        if normalized is not None:
            return dict(normalized.kwargs)
    names = _SIGNATURES.get(kind, ("input",))
    arguments = dict(zip(names, node.args))
    arguments.update(node.kwargs)
    if "self" in arguments:
        arguments["input"] = arguments.pop("self")
    return arguments
