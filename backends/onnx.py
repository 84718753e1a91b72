"""ONNX backend: TensorRT-ready ONNX for Jetson boards (opset 17; 16 for TensorRT 8.5), verified with onnxruntime.

TensorRT-ready means static shapes, FP32 weights, constants folded, a graph
cleaned and sorted by onnx-graphsurgeon, ``onnx.checker`` passing with the full
check, and, for a Jetson board's part (``Target.tensorrt``), only ops that TensorRT version's ONNX parser
takes (:data:`TENSORRT_OPS`, from its own operator documentation); an FP16 variant
(inputs and outputs kept FP32) is written when the target asks for it.

>>> import torch, tempfile
>>> from pathlib import Path
>>> from torch import fx, nn
>>> from halocut.backends.base import Part, Target
>>> part = Part("p", fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())), (torch.randn(1, 3, 8, 8),),
...             ("x",), ("y",))
>>> out = Path(tempfile.mkdtemp())
>>> artifact = emit(part, Target("onnx"), out)
>>> load(artifact, out)([part.example_inputs[0].numpy()])[0].shape
(1, 4, 6, 6)
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime
import torch

from halocut.backends.base import Artifact, Part, Runner, Target, cached_emit
from halocut.ir.errors import HalocutError, one_line

OPSET = 17
# The ONNX operators a TensorRT version's ONNX parser takes: the "Y" rows of the operator support matrix in
# onnx-tensorrt's docs/operators.md of that release (github.com/onnx/onnx-tensorrt, branch release/8.5-GA: "TensorRT
# 8.5 supports operators up to Opset 17"; TensorRT 8.5.2 is JetPack 5.1's, for Jetson Xavier and Orin). It
# lists LayerNormalization as not supported (TensorRT 8.6 added it). Only a Jetson board's parts (a target with
# ``tensorrt``) are checked; the per-op restrictions the matrix names (e.g. Conv weights must be initializers) are not.
TENSORRT_OPS = {
    "8.5": frozenset({
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
    }),
}
JETSON_TENSORRT = "8.5"  # the version a Jetson board's parts are checked against
# The opset a TensorRT version's parts are exported at: 8.5 parses opset 17 but lacks its LayerNormalization; at
# opset 16 the exporter writes layer_norm as ReduceMean, Sub, Pow, Sqrt and Div, which it parses (ViT, Swin).
TENSORRT_OPSET = {"8.5": 16}


def emit(part: Part, target: Target, out_dir: Path) -> Artifact:
    """Emit through the build cache (see :func:`halocut.backends.base.cached_emit`)."""
    opset = TENSORRT_OPSET.get(target.tensorrt, OPSET)
    return cached_emit(_emit, part, target, out_dir, salt=f"{torch.__version__}/{onnx.__version__}/opset{opset}")


def _emit(part: Part, target: Target, out_dir: Path) -> Artifact:
    """Write ``<part>.onnx`` (and ``<part>.fp16.onnx`` if asked) into ``out_dir``; paths are relative to it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = _clean(_export(part, TENSORRT_OPSET.get(target.tensorrt, OPSET)), part)  # the opset its parser takes
    _check(model, part.name, target.tensorrt)
    path = Path(f"{part.name}.onnx")
    onnx.save(model, out_dir / path)
    extra = ()
    if target.fp16:
        from onnxconverter_common import float16

        half = float16.convert_float_to_float16(model, keep_io_types=True)
        onnx.checker.check_model(half, full_check=True)
        extra = (Path(f"{part.name}.fp16.onnx"),)
        onnx.save(half, out_dir / extra[0])
    return Artifact(part.name, "onnx", target, path, extra)


def runnable(target: Target) -> bool:
    return True


def load(artifact: Artifact, build_dir: Path, threads: int | None = None) -> Runner:
    """An onnxruntime CPU session of the artifact; ``threads`` intra-op threads (None: onnxruntime's default,
    every core, too many beside other actors on one machine)."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(build_dir / artifact.path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        return session.run(None, {name: np.ascontiguousarray(x) for name, x in zip(names, inputs)})
    return run


def _export(part: Part, opset: int = OPSET) -> onnx.ModelProto:
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated; dynamo=True needs onnxscript
            warnings.simplefilter("ignore")
            torch.onnx.export(part.module, part.example_inputs, buffer, input_names=list(part.input_names),
                              output_names=list(part.output_names), opset_version=opset, dynamo=False,
                              do_constant_folding=True)
    except Exception as error:
        message = one_line(error)
        raise HalocutError(f"part '{part.name}': ONNX export failed: {message}") from None
    return onnx.load_from_string(buffer.getvalue())


def _clean(model: onnx.ModelProto, part: Part) -> onnx.ModelProto:
    """Fold constants, drop dead nodes, sort; stamp the static shapes the example run gave, then infer the rest."""
    graph = gs.import_onnx(model)
    graph.fold_constants().cleanup().toposort()
    for tensor, example in zip(graph.inputs, part.example_inputs):
        tensor.shape, tensor.dtype = list(example.shape), np.float32
    for tensor, example in zip(graph.outputs, part.example_outputs()):
        tensor.shape, tensor.dtype = list(example.shape), np.float32
    return onnx.shape_inference.infer_shapes(gs.export_onnx(graph), strict_mode=True)


def _check(model: onnx.ModelProto, name: str, tensorrt: str | None) -> None:
    onnx.checker.check_model(model, full_check=True)
    if tensorrt is not None:
        if tensorrt not in TENSORRT_OPS:
            raise HalocutError(f"part '{name}': no operator table for TensorRT {tensorrt}; known: "
                               f"{', '.join(TENSORRT_OPS)}")
        unsupported = sorted({node.op_type for node in model.graph.node} - TENSORRT_OPS[tensorrt])
        if unsupported:
            raise HalocutError(f"part '{name}': ops TensorRT {tensorrt} does not support: {', '.join(unsupported)}")
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims):
            raise HalocutError(f"part '{name}': tensor '{value.name}' has a dynamic shape")
    for initializer in model.graph.initializer:
        if initializer.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            raise HalocutError(f"part '{name}': weight '{initializer.name}' is "
                               f"{onnx.TensorProto.DataType.Name(initializer.data_type)}, not FP32")
