"""ONNX backend: TensorRT-ready ONNX for Jetson boards (opset 17; a TensorRT version's own below it), verified
with onnxruntime.

TensorRT-ready means static shapes, FP32 weights, constants folded, a graph
cleaned and sorted by onnx-graphsurgeon, and ``onnx.checker`` passing with the full
check; an FP16 variant (inputs and outputs kept FP32) is written when the target asks for it. A Jetson board's
part (``Target.tensorrt``, the version of its JetPack) is also sanitized with polygraphy
(``polygraphy surgeon sanitize --fold-constants``), checked statically against that TensorRT version's operator
support matrix (:mod:`halocut.backends.tensorrt_support`: ops, opset, restrictions), and run with onnxruntime
against the part's own outputs; ``<part>.tensorrt.json`` beside it records the check, the ``trtexec`` lines
that build its engines on the board, and the max abs error of the FP32 part and of its FP16 variant.

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

import dataclasses
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime
import torch

from halocut.backends import tensorrt_support
from halocut.backends.base import Artifact, Part, Runner, Target, cached_emit
from halocut.backends.tensorrt_support import TENSORRT
from halocut.ir.errors import HalocutError, one_line
from halocut.ir.numerics import max_error

OPSET = 17
# Kept for their users: the operator tables and export opsets of the TensorRT versions known (tensorrt_support).
TENSORRT_OPS = {version: trt.ops for version, trt in TENSORRT.items()}
TENSORRT_OPSET = {version: trt.export_opset for version, trt in TENSORRT.items()}
JETSON_TENSORRT = "8.5"  # a Jetson board whose catalog entry names no TensorRT version of its own
READINESS = "tensorrt.json"  # beside a Jetson part: its TensorRT check, trtexec lines and measured errors


def emit(part: Part, target: Target, out_dir: Path) -> Artifact:
    """Emit through the build cache (see :func:`halocut.backends.base.cached_emit`); a Jetson part's artifact
    carries its TensorRT readiness report (``Artifact.tensorrt``), read back from the file beside it."""
    opset = TENSORRT_OPSET.get(target.tensorrt, OPSET)
    salt = f"{torch.__version__}/{onnx.__version__}/opset{opset}"
    if target.tensorrt in TENSORRT:  # a changed table or check is a new entry
        trt = TENSORRT[target.tensorrt]
        salt += f"/polygraphy{_polygraphy()}/{trt.max_opset}/{sorted(trt.ops)}/{trt.checked()}"
    artifact = cached_emit(_emit, part, target, out_dir, salt=salt)
    report_path = next((p for p in artifact.extra if p.name.endswith(READINESS)), None)
    if report_path is None:
        return artifact
    report = {**json.loads((out_dir / report_path).read_text()), **_trtexec(artifact)}  # this part's file names
    (out_dir / report_path).write_text(json.dumps(report, indent=1) + "\n")
    return dataclasses.replace(artifact, tensorrt=report)


def _trtexec(artifact: Artifact) -> dict:
    """The lines that build the part's engines on the Jetson, run in the folder the part's files are in."""
    lines = {"trtexec": f"trtexec --onnx={artifact.path.name} --saveEngine={artifact.path.stem}.engine"}
    for half in (p for p in artifact.extra if p.name.endswith(".fp16.onnx")):
        lines["trtexec_fp16"] = f"trtexec --onnx={half.name} --saveEngine={half.stem}.engine --fp16"
    return lines


def _emit(part: Part, target: Target, out_dir: Path) -> Artifact:
    """Write ``<part>.onnx`` (and ``<part>.fp16.onnx`` if asked) into ``out_dir``; paths are relative to it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trt = tensorrt_support.tensorrt(target.tensorrt, part.name) if target.tensorrt else None
    model = _clean(_export(part, trt.export_opset if trt else OPSET), part)  # the opset its parser takes
    if trt is not None:
        model = _sanitized(model, part.name)
        checked = tensorrt_support.check(model, part.name, trt)
    _check(model, part.name)
    path = Path(f"{part.name}.onnx")
    onnx.save(model, out_dir / path)
    extra = []
    if target.fp16:
        from onnxconverter_common import float16

        half = float16.convert_float_to_float16(model, keep_io_types=True)
        onnx.checker.check_model(half, full_check=True)
        extra.append(Path(f"{part.name}.fp16.onnx"))
        onnx.save(half, out_dir / extra[-1])
    if trt is not None:
        extra.append(Path(f"{part.name}.{READINESS}"))
        report = _readiness(part, trt, checked, [out_dir / p for p in (path, *extra[:-1])])
        (out_dir / extra[-1]).write_text(json.dumps(report, indent=1) + "\n")
    return Artifact(part.name, "onnx", target, path, tuple(extra))


def _sanitized(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    try:
        return tensorrt_support.sanitize(model)
    except Exception as error:  # polygraphy's folding runs onnxruntime on the part's constant subgraphs
        raise HalocutError(f"part '{name}': {tensorrt_support.SANITIZE} failed: {one_line(error)}") from None


def _readiness(part: Part, trt, checked: list[str], paths: list[Path]) -> dict:
    """The manifest's ``tensorrt`` object: the check, the trtexec lines, the measured error of each file (the FP32
    part must pass the tolerance every verification uses; the FP16 variant's error is recorded, not judged)."""
    reference = [t.detach() for t in part.example_outputs()]
    errors, tolerance = {}, None
    for label, file in zip(("fp32", "fp16"), paths):
        run = load(Artifact(part.name, "onnx", Target("onnx"), Path(file.name)), file.parent, threads=1)
        outputs = [torch.from_numpy(np.asarray(o)) for o in run([x.numpy() for x in part.example_inputs])]
        errors[label], tolerance = max_error(outputs, reference)
    if not errors["fp32"] <= tolerance:
        raise HalocutError(f"part '{part.name}': the sanitized ONNX is not equivalent to the part: max abs error "
                           f"{errors['fp32']:.3g} > {tolerance:.3g}")
    if "fp16" in errors and not math.isfinite(errors["fp16"]):
        errors["fp16"] = None  # FP16 overflowed (an inf or NaN the part does not have)
    return {"version": trt.version, "opset": trt.export_opset, "source": trt.source, "checked": checked,
            "sanitized": tensorrt_support.SANITIZE, "max_abs_error": errors, "tolerance": tolerance}


def _polygraphy() -> str:
    from importlib import metadata

    return metadata.version("polygraphy")


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


def _check(model: onnx.ModelProto, name: str) -> None:
    onnx.checker.check_model(model, full_check=True)
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims):
            raise HalocutError(f"part '{name}': tensor '{value.name}' has a dynamic shape")
    for initializer in model.graph.initializer:
        if initializer.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            raise HalocutError(f"part '{name}': weight '{initializer.name}' is "
                               f"{onnx.TensorProto.DataType.Name(initializer.data_type)}, not FP32")
