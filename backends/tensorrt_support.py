"""Will a Jetson's TensorRT parse this ONNX part? A static check, since TensorRT's parser needs a GPU.

Each TensorRT version a Jetson's JetPack ships has a :class:`TensorRT` record: the operators its ONNX parser
takes, the highest opset it reads, and the restrictions that matter for CNN graphs. They come from onnx-tensorrt's
``docs/operators.md`` of that release's branch (github.com/onnx/onnx-tensorrt, ``release/8.2-GA``,
``release/8.5-GA``; read as branches ``8.2-GA`` and ``8.5-GA`` of its mirror), and, where that table is silent, from
the same branch's ``builtin_op_importers.cpp`` (the Pad modes). :func:`sanitize` is ``polygraphy surgeon sanitize
--fold-constants`` through polygraphy's own API (it runs without a GPU).

>>> import onnx
>>> from onnx import helper, TensorProto
>>> x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
>>> y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
>>> model = helper.make_model(helper.make_graph([helper.make_node("Reciprocal", ["x"], ["y"])], "g", [x], [y]),
...                           opset_imports=[helper.make_opsetid("", 13)])
>>> problems(model, TENSORRT["8.5"])
[]
>>> problems(model, TENSORRT["8.2"])
['ops TensorRT 8.2 does not support: Reciprocal']
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from halocut.ir.errors import HalocutError

# The "Y" rows of release/8.5-GA's docs/operators.md ("TensorRT 8.5 supports operators up to Opset 17"; TensorRT
# 8.5.2 is JetPack 5.1's, for Jetson Xavier and Orin). It lists LayerNormalization as not supported (8.6 added it).
OPS_8_5 = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum",
    "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements",
    "GatherND", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual",
    "GridSample", "GRU", "HardSigmoid", "HardSwish", "Identity", "If", "ImageScaler", "InstanceNormalization",
    "IsNaN", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LpNormalization", "LpPool", "LRN",
    "LSTM", "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mod", "Mul", "Neg",
    "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu",
    "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range",
    "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence",
    "RNN", "RoiAlign", "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape",
    "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign",
    "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK",
    "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
})
# release/8.2-GA's docs/operators.md ("TensorRT 8.2 supports operators up to Opset 13"; TensorRT 8.2.1 is JetPack
# 4.6.1-4.6.x's, the last JetPack for Jetson Nano and TX2): its "Y" rows are 8.5's less these 13 (the two tables
# diffed row by row), which it marks N or does not list (HardSwish, GridSample, Trilu).
OPS_8_2 = OPS_8_5 - {"GridSample", "HardSwish", "MeanVarianceNormalization", "Mod", "NonZero", "OneHot",
                     "RandomNormal", "RandomNormalLike", "Reciprocal", "RoiAlign", "Shrink", "Trilu", "Xor"}

# Restrictions column, both branches: Resize's modes; "`axes` must be an initializer" (Slice, Squeeze; Unsqueeze:
# "a constant tensor"); InstanceNormalization's "`scale` and biases `B` must be initializers"; pooling "2D or 3D
# only", MaxPool's "`Indices` output tensor unsupported". 8.2 only: Conv and ConvTranspose "Weights `W` must be an
# initializer" (8.5's importer builds a convolution from tensor weights, and its table drops the restriction).
# Where the table is silent, the importers (builtin_op_importers.cpp, onnx2trt_utils.cpp of each branch): Pad takes
# the modes constant, reflect and edge; pooling asserts "dilations other than 1" unsupported; a linear Resize
# scales at most the last 3 dimensions; 8.2's Resize asserts "scales must be an initializer" (8.5 takes a tensor).
RESIZE_MODES = ("nearest", "linear")
RESIZE_COORDINATES = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
RESIZE_NEAREST = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
PAD_MODES = ("constant", "reflect", "edge")
CONSTANT_INPUTS = {"Slice": {3: "axes"}, "Squeeze": {1: "axes"}, "Unsqueeze": {1: "axes"},
                   "InstanceNormalization": {1: "scale", 2: "B"}}
CONSTANT_INPUTS_8_2 = {**CONSTANT_INPUTS, "Conv": {1: "W", 2: "B"}, "ConvTranspose": {1: "W", 2: "B"},
                       "Resize": {2: "scales"}}  # an empty name (Resize by `sizes`) is no input
CHECKED = ("ops", "opset", "conv weights", "pad modes", "resize modes", "constant inputs", "pooling")


@dataclass(frozen=True)
class TensorRT:
    """What one TensorRT version's ONNX parser takes; ``export_opset`` is the opset its parts are written at."""

    version: str
    max_opset: int
    export_opset: int
    ops: frozenset[str]
    source: str
    constant_inputs: dict[str, dict[int, str]]  # op -> input index -> its name in the table

    def checked(self) -> list[str]:
        return [c for c in CHECKED if c != "conv weights" or "Conv" in self.constant_inputs]


MATRIX = "github.com/onnx/onnx-tensorrt/blob/release/{}-GA/docs/operators.md"
TENSORRT = {
    "8.2": TensorRT("8.2", 13, 13, OPS_8_2, MATRIX.format("8.2"), CONSTANT_INPUTS_8_2),
    # 8.5 reads opset 17 but lacks its LayerNormalization: at opset 16 the exporter writes layer_norm as
    # ReduceMean, Sub, Pow, Sqrt and Div, which it parses (ViT, Swin).
    "8.5": TensorRT("8.5", 17, 16, OPS_8_5, MATRIX.format("8.5"), CONSTANT_INPUTS),
}
SANITIZE = "polygraphy surgeon sanitize --fold-constants"


def tensorrt(version: str, part: str) -> TensorRT:
    """The record of a TensorRT version; an unknown one names the known ones."""
    if version not in TENSORRT:
        raise HalocutError(f"part '{part}': no operator table for TensorRT {version}; known: {', '.join(TENSORRT)}")
    return TENSORRT[version]


def check(model: onnx.ModelProto, part: str, trt: TensorRT) -> list[str]:
    """Refuse (one line naming the part, the version and every problem) what ``trt`` would not parse; returns
    the names of the checks made."""
    found = problems(model, trt)
    if found:
        raise HalocutError(f"part '{part}': TensorRT {trt.version} would not parse it: {'; '.join(found)}")
    return trt.checked()


def problems(model: onnx.ModelProto, trt: TensorRT) -> list[str]:
    """Every reason ``trt``'s ONNX parser would refuse ``model`` (empty: none found)."""
    found = []
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > trt.max_opset:
        found.append(f"opset {opset} is above TensorRT {trt.version}'s {trt.max_opset}")
    unsupported = sorted({n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")
                          or n.op_type not in trt.ops})
    if unsupported:
        found.append(f"ops TensorRT {trt.version} does not support: {', '.join(unsupported)}")
    initializers = {i.name: i for i in model.graph.initializer}
    constants = set(initializers) | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    for node in model.graph.node:
        found += [f"{node.op_type} '{node.name}': {p}" for p in _node_problems(node, constants, initializers, trt)]
    return found


def _node_problems(node: onnx.NodeProto, constants: set[str], initializers: dict, trt: TensorRT) -> list[str]:
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    text = {k: v.decode() for k, v in attributes.items() if isinstance(v, bytes)}
    found = []
    for index, name in trt.constant_inputs.get(node.op_type, {}).items():
        if index < len(node.input) and node.input[index] and node.input[index] not in constants:
            found.append(f"`{name}` must be an initializer (conv weights)" if node.op_type.startswith("Conv") else
                         f"`{name}` must be an initializer, not '{node.input[index]}'")
    if node.op_type == "Pad" and text.get("mode", "constant") not in PAD_MODES:
        found.append(f"Pad mode '{text['mode']}' (TensorRT {trt.version}: {', '.join(PAD_MODES)})")
    if node.op_type == "Resize":
        for key, allowed, default in (("mode", RESIZE_MODES, "nearest"),
                                      ("coordinate_transformation_mode", RESIZE_COORDINATES, "half_pixel"),
                                      ("nearest_mode", RESIZE_NEAREST, "round_prefer_floor")):
            if text.get(key, default) not in allowed:
                found.append(f"Resize {key} '{text[key]}' (TensorRT {trt.version}: {', '.join(allowed)})")
        scales = initializers.get(node.input[2]) if len(node.input) > 2 else None
        if text.get("mode") == "linear" and scales is not None and any(
                v != 1 for v in onnx.numpy_helper.to_array(scales).ravel()[:-3]):
            found.append("a linear Resize scales at most the last 3 dimensions")
    if node.op_type in ("MaxPool", "AveragePool"):
        if len(attributes.get("kernel_shape", ())) not in (2, 3):
            found.append("2D or 3D pooling only")
        if any(d != 1 for d in attributes.get("dilations", ())):
            found.append(f"dilations {list(attributes['dilations'])}: pooling takes dilations of 1 only")
        if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
            found.append("the `Indices` output is unsupported")
    return found


def sanitize(model: onnx.ModelProto) -> onnx.ModelProto:
    """What ``polygraphy surgeon sanitize --fold-constants`` writes: constants folded until nothing changes."""
    from polygraphy.backend.onnx.loader import fold_constants
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        return fold_constants(model)
