"""IR analysis: every call node of an fx graph gets ``node.meta["layer"]``, a :class:`LayerInfo`.

FLOP convention: ``flops`` counts the multiply-adds of conv, transposed conv,
linear and matmul layers at 2 FLOPs each; bias additions are not counted, and
every other op (activations, pooling, additions, batch norm, reshapes) counts
0 FLOPs: those ops are bound by memory traffic, which ``output_bytes`` gives.
This is the convention of the published figures (torchvision's model tables,
fvcore, darknet's BFLOPs line), so totals compare with them directly.

>>> from halocut.compiler.frontend import load_model
>>> loaded = load_model("lenet5")
>>> layers = annotate_layers(loaded.graph_module, loaded.input_shape)
>>> summary = summarize(loaded.graph_module)
>>> summary.total_flops, summary.total_params
(1303440, 62006)
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import _extract_tensor_metadata
from torch.nn.modules.utils import _pair

from halocut.ir.errors import HalocutError, one_line
from halocut.ir.ops import call_arguments, op_kind, target_name

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerInfo:
    """What the planners, halo rules and cost models know of one call node."""

    kind: str
    target: str
    attrs: dict[str, Any] = field(default_factory=dict)
    input_shapes: tuple[Shape, ...] = ()
    output_shapes: tuple[Shape, ...] = ()
    dtype: str = "float32"
    flops: int = 0
    params: int = 0
    param_bytes: int = 0
    output_bytes: int = 0

    @property
    def output_shape(self) -> Shape:
        """The single output's shape; ``()`` for nodes with no or several tensor outputs."""
        return self.output_shapes[0] if len(self.output_shapes) == 1 else ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return asdict(self)


@dataclass(frozen=True)
class ModelSummary:
    """Totals over a graph's annotated layers."""

    layers: tuple[tuple[str, LayerInfo], ...]
    total_flops: int
    total_params: int
    total_param_bytes: int
    total_output_bytes: int


class LayerProp(fx.Interpreter):
    """Run a graph once on example inputs, recording shapes and a LayerInfo per call node.

    Like fx's ``ShapeProp`` it stores ``tensor_meta`` and ``type`` in ``node.meta``;
    in addition each call node gets ``node.meta["layer"]``. A node whose op
    rejects its inputs raises a :class:`HalocutError` naming that layer.
    """

    def __init__(self, graph_module: fx.GraphModule):
        super().__init__(graph_module)
        self.extra_traceback = False  # our errors already name the layer, in one line
        self._counted: set[int] = set()
        self._input_text = ""

    def propagate(self, *args: torch.Tensor) -> Any:
        self._input_text = ", ".join(",".join(map(str, a.shape)) for a in args)
        with torch.no_grad():
            return self.run(*args)

    def run_node(self, node: fx.Node) -> Any:
        if node.op not in ("call_module", "call_function", "call_method"):
            result = super().run_node(node)
        else:
            try:
                result = super().run_node(node)
            except Exception as error:
                raise HalocutError(self._rejection(node, error)) from None
        node.meta["type"] = type(result)
        tensor_meta = _tensor_meta(result)
        if tensor_meta is not None:
            node.meta["tensor_meta"] = tensor_meta
        if node.op in ("call_module", "call_function", "call_method"):
            node.meta["layer"] = self._layer(node, result)
        return result

    def _rejection(self, node: fx.Node, error: Exception) -> str:
        shapes = [tuple(v.shape) for v in _tensors(self._concrete_args(node))]
        message = one_line(error)
        return (f"input shape {self._input_text}: layer '{node.name}' ({target_name(node, self.module)}) "
                f"rejects its input {', '.join(map(str, shapes)) or '()'}: {message}")

    def _concrete_args(self, node: fx.Node) -> tuple:
        args, kwargs = self.fetch_args_kwargs_from_env(node)
        return tuple(args) + tuple(kwargs.values())

    def _layer(self, node: fx.Node, result: Any) -> LayerInfo:
        kind = op_kind(node, self.module)
        module = self.module.get_submodule(node.target) if node.op == "call_module" else None
        named = call_arguments(node, self.module, kind)
        arguments = {k: fx.node.map_arg(v, lambda n: self.env[n]) for k, v in named.items()}
        if kind == "conv2d" and arguments.get("transposed"):
            kind = "conv_transpose2d"
        outputs = list(_tensors(result))
        if not outputs:
            kind = "size"
        inputs = [t for t in _tensors(self._concrete_args(node)) if not isinstance(t, nn.Parameter)]
        attrs = _ATTRS.get(kind, _no_attrs)(module, arguments, inputs, outputs)
        params = self._new_parameters(module, self._concrete_args(node))
        dtype = str(outputs[0].dtype).removeprefix("torch.") if outputs else "float32"
        return LayerInfo(
            kind=kind,
            target=target_name(node, self.module) if kind != "unknown" else _unknown_target(node, self.module),
            attrs=attrs,
            input_shapes=tuple(tuple(t.shape) for t in inputs),
            output_shapes=tuple(tuple(t.shape) for t in outputs),
            dtype=dtype,
            flops=_flops(kind, attrs, inputs, outputs),
            params=sum(p.numel() for p in params),
            param_bytes=sum(p.numel() * p.element_size() for p in params),
            output_bytes=sum(t.numel() * t.element_size() for t in outputs),
        )

    def _new_parameters(self, module: nn.Module | None, arguments: tuple) -> list[nn.Parameter]:
        candidates = list(module.parameters()) if module is not None else \
            [t for t in _tensors(arguments) if isinstance(t, nn.Parameter)]
        fresh = [p for p in candidates if id(p) not in self._counted]
        self._counted.update(id(p) for p in fresh)
        return fresh


def annotate_layers(graph_module: fx.GraphModule, input_shape: Shape) -> dict[str, LayerInfo]:
    """Propagate a zero input of ``input_shape`` and annotate every call node; returns name -> LayerInfo."""
    LayerProp(graph_module).propagate(torch.zeros(input_shape))
    return {n.name: n.meta["layer"] for n in graph_module.graph.nodes if "layer" in n.meta}


def summarize(graph_module: fx.GraphModule) -> ModelSummary:
    """Totals of an annotated graph (run :func:`annotate_layers` first)."""
    layers = tuple((n.name, n.meta["layer"]) for n in graph_module.graph.nodes if "layer" in n.meta)
    if not layers:
        raise HalocutError("graph has no annotated layers: run annotate_layers first")
    infos = [info for _, info in layers]
    return ModelSummary(
        layers=layers,
        total_flops=sum(i.flops for i in infos),
        total_params=sum(i.params for i in infos),
        total_param_bytes=sum(i.param_bytes for i in infos),
        total_output_bytes=sum(i.output_bytes for i in infos),
    )


def _tensors(value: Any):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _tensor_meta(value: Any):
    if isinstance(value, torch.Tensor):
        return _extract_tensor_metadata(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return type(value)(_extract_tensor_metadata(v) for v in value)
    return None


def _unknown_target(node: fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        cls = type(root.get_submodule(node.target))
        return f"{cls.__module__}.{cls.__qualname__} (module '{node.target}')"
    return target_name(node, root)


# --- attributes per kind: (module or None, named arguments, input tensors, output tensors) -> dict

def _no_attrs(module, arguments, inputs, outputs) -> dict:
    return {}


def _four_sides(padding: Any, kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """Padding as (top, bottom, left, right); resolves torch's ``'same'`` and ``'valid'``."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return (total[0] // 2, total[0] - total[0] // 2, total[1] // 2, total[1] - total[1] // 2)
    ph, pw = _pair(padding)
    return (ph, ph, pw, pw)


def _conv_attrs(module, arguments, inputs, outputs) -> dict:
    if module is not None:
        kernel, stride, dilation = tuple(module.kernel_size), tuple(module.stride), tuple(module.dilation)
        padding, groups, bias = module.padding, module.groups, module.bias is not None
        padding_mode = module.padding_mode
    else:
        kernel = tuple(arguments["weight"].shape[2:])
        stride, dilation = _pair(arguments.get("stride", 1)), _pair(arguments.get("dilation", 1))
        padding, groups = arguments.get("padding", 0), arguments.get("groups", 1)
        bias, padding_mode = arguments.get("bias") is not None, "zeros"
    return {"in_channels": inputs[0].shape[1], "out_channels": outputs[0].shape[1],
            "kernel": tuple(kernel), "stride": tuple(_pair(stride)), "dilation": tuple(_pair(dilation)),
            "padding": _four_sides(padding, tuple(kernel), tuple(_pair(dilation))),
            "groups": groups, "bias": bias, "padding_mode": padding_mode}


def _linear_attrs(module, arguments, inputs, outputs) -> dict:
    if module is not None:
        return {"in_features": module.in_features, "out_features": module.out_features,
                "bias": module.bias is not None}
    if "mat1" in arguments:  # aten.addmm(bias, input, weight.t())
        return {"in_features": arguments["mat1"].shape[-1], "out_features": outputs[0].shape[-1], "bias": True}
    weight = arguments["weight"]
    return {"in_features": weight.shape[1], "out_features": weight.shape[0],
            "bias": arguments.get("bias") is not None}


def _pool_attrs(module, arguments, inputs, outputs, kind_is_avg: bool = False) -> dict:
    source = vars(module) if module is not None else arguments
    kernel = _pair(source["kernel_size"])
    stride = source.get("stride") or kernel
    dilation = _pair(source.get("dilation", 1))
    attrs = {"kernel": tuple(kernel), "stride": tuple(_pair(stride)), "dilation": tuple(dilation),
             "padding": _four_sides(source.get("padding", 0), kernel, dilation),
             "ceil_mode": bool(source.get("ceil_mode", False))}
    if kind_is_avg:
        attrs["count_include_pad"] = bool(source.get("count_include_pad", True))
        attrs["divisor_override"] = source.get("divisor_override")
    return attrs


def _adaptive_attrs(module, arguments, inputs, outputs) -> dict:
    return {"output_size": tuple(outputs[0].shape[-2:])}


def _spatial_scale_attrs(module, arguments, inputs, outputs) -> dict:
    """Mode, align_corners and, per axis, the ratio PyTorch maps output to input coordinates with.

    ``F.interpolate`` uses ``1 / scale_factor`` when a scale is given (and not
    recomputed), ``in / out`` when a size is; ``align_corners=True`` uses
    ``(in - 1) / (out - 1)`` for the linear modes whatever was given.
    """
    source = vars(module) if module is not None else arguments
    (h_in, w_in), (h_out, w_out) = inputs[0].shape[-2:], outputs[0].shape[-2:]
    mode = source.get("mode") or "nearest"
    size = source.get("size", source.get("output_size"))
    scale = source.get("scale_factor", source.get("scale_factors"))
    align_corners = bool(source.get("align_corners")) and mode in ("linear", "bilinear", "bicubic", "trilinear")
    given = None if size is not None or scale is None or source.get("recompute_scale_factor") else \
        tuple(float(v) for v in (scale if isinstance(scale, (tuple, list)) else (scale, scale)))
    ratio = tuple((i - 1) / (o - 1) if o > 1 else 0.0 for i, o in ((h_in, h_out), (w_in, w_out))) if align_corners \
        else tuple(1.0 / g if given and g > 0 else i / o for g, i, o in
                   zip(given or (None, None), (h_in, w_in), (h_out, w_out)))
    return {"scale": (h_out / h_in, w_out / w_in), "mode": mode, "align_corners": align_corners,
            "ratio": ratio, "by_size": size is not None, "antialias": bool(source.get("antialias"))}


def _pixel_shuffle_attrs(module, arguments, inputs, outputs) -> dict:
    return {"factor": int(module.upscale_factor if module is not None else arguments["upscale_factor"])}


def _reorg_attrs(module, arguments, inputs, outputs) -> dict:
    factor = module.downscale_factor if module is not None else arguments["downscale_factor"]
    return {"stride": int(factor)}


def _pad_attrs(module, arguments, inputs, outputs) -> dict:
    if module is not None:
        left, right, top, bottom = module.padding
        return {"padding": (top, bottom, left, right), "mode": "constant", "value": float(module.value)}
    pads = list(arguments["pad"]) + [0] * 4
    left, right, top, bottom = pads[:4]
    return {"padding": (top, bottom, left, right), "mode": arguments.get("mode", "constant"),
            "value": float(arguments.get("value") or 0.0)}


def _dim_attrs(name: str, default: Any):
    def attrs(module, arguments, inputs, outputs) -> dict:
        return {name: getattr(module, name, default) if module is not None else arguments.get(name, default)}
    return attrs


def _flatten_attrs(module, arguments, inputs, outputs) -> dict:
    if module is not None:
        return {"start_dim": module.start_dim, "end_dim": module.end_dim}
    return {"start_dim": arguments.get("start_dim", 0), "end_dim": arguments.get("end_dim", -1)}


def _batchnorm_attrs(module, arguments, inputs, outputs) -> dict:
    eps = module.eps if module is not None else arguments.get("eps", 1e-5)
    return {"num_features": inputs[0].shape[1], "eps": float(eps)}


def _leaky_attrs(module, arguments, inputs, outputs) -> dict:
    slope = module.negative_slope if module is not None else arguments.get("negative_slope", 0.01)
    return {"negative_slope": float(slope)}


_ATTRS = {
    "conv2d": _conv_attrs, "conv_transpose2d": _conv_attrs, "linear": _linear_attrs,
    "maxpool2d": _pool_attrs, "avgpool2d": functools.partial(_pool_attrs, kind_is_avg=True),
    "adaptive_avgpool2d": _adaptive_attrs, "adaptive_maxpool2d": _adaptive_attrs,
    "upsample": _spatial_scale_attrs, "reorg": _reorg_attrs, "pixel_shuffle": _pixel_shuffle_attrs,
    "pad": _pad_attrs,
    "cat": _dim_attrs("dim", 0), "softmax": _dim_attrs("dim", None), "flatten": _flatten_attrs,
    "batchnorm2d": _batchnorm_attrs, "leaky_relu": _leaky_attrs,
}


def _flops(kind: str, attrs: dict, inputs: list, outputs: list) -> int:
    if not outputs:
        return 0
    out = outputs[0]
    if kind == "conv2d":
        kh, kw = attrs["kernel"]
        return 2 * out.numel() * (attrs["in_channels"] // attrs["groups"]) * kh * kw
    if kind == "conv_transpose2d":
        kh, kw = attrs["kernel"]
        return 2 * inputs[0].numel() * (attrs["out_channels"] // attrs["groups"]) * kh * kw
    if kind == "linear":
        return 2 * out.numel() * attrs["in_features"]
    if kind == "matmul":
        return 2 * out.numel() * inputs[0].shape[-1]
    return 0


def value_bytes(node: fx.Node, region=None) -> float:
    """Bytes of a node's value (float32 for a graph input), or of a region's share of a feature map.

    This is what a transfer of the value, or of a tile of it, moves. A value that is not a tensor (a
    module's ``(output, None)``) has no ``tensor_meta``; its layer still counts the tensors it holds.
    """
    layer = node.meta.get("layer")
    meta = node.meta.get("tensor_meta")
    if layer is None and not hasattr(meta, "shape"):
        raise HalocutError(f"node '{node.name}': its value is not a tensor, so it has no size to send")
    total = float(layer.output_bytes if layer is not None else meta.shape.numel() * 4)
    if region is None:
        return total
    height, width = tuple(meta.shape)[-2:]
    return total * region.height * region.width / float(height * width)

