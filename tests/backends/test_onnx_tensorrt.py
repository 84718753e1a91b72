"""The TensorRT operator check (issue 12, item 5): versioned, from TensorRT's own operator table, Jetson parts only."""

import numpy as np
import onnx
import pytest
import torch
from torch import fx, nn

from halocut.backends.base import Part, Target
from halocut.backends.onnx import JETSON_TENSORRT, TENSORRT_OPS, emit, load
from halocut.compiler.driver import targets_for
from halocut.ir.errors import HalocutError
from halocut.targets.topology import catalog_device


def part(*layers):
    module = fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 8, 3), *layers).eval())
    return Part("s0", module, (torch.randn(1, 3, 10, 10),), ("x",), ("y",))


def runs_like_torch(p, target, tmp_path):
    artifact = emit(p, target, tmp_path)
    (got,) = load(artifact, tmp_path)([p.example_inputs[0].numpy()])
    (expected,) = [t.detach().numpy() for t in p.example_outputs()]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize("layers, op", [((nn.GroupNorm(2, 8),), "InstanceNormalization"), ((nn.GELU(),), "Erf"),
                                        ((nn.Hardswish(),), "HardSwish")])
def test_ops_tensorrt_parses_are_accepted_for_a_jetson(layers, op, tmp_path):
    assert op in TENSORRT_OPS[JETSON_TENSORRT]
    runs_like_torch(part(*layers), Target("onnx", tensorrt=JETSON_TENSORRT), tmp_path)


class Determinant(nn.Module):
    def forward(self, x):
        return torch.det(x)


def test_an_op_tensorrt_8_5_lacks_is_refused_for_a_jetson_only(tmp_path):
    determinant = part(Determinant())
    with pytest.raises(HalocutError, match=r"ops TensorRT 8\.5 does not support: Det"):
        emit(determinant, Target("onnx", tensorrt="8.5"), tmp_path / "jetson")
    runs_like_torch(determinant, Target("onnx"), tmp_path / "pi")  # a Pi's or a server's ONNX: onnxruntime runs it


def test_layer_norm_reaches_tensorrt_8_5_as_ops_it_parses(tmp_path):
    """LayerNormalization (opset 17) is not in TensorRT 8.5's table: a Jetson's part is exported at opset 16,
    where layer_norm is written as ReduceMean, Sub, Pow, Sqrt, Div; other targets keep the fused op."""
    layer_norm = part(nn.LayerNorm([8, 8, 8]))
    ops = {}
    for label, target in (("jetson", Target("onnx", tensorrt="8.5")), ("pi", Target("onnx"))):
        runs_like_torch(layer_norm, target, tmp_path / label)
        ops[label] = {n.op_type for n in onnx.load(tmp_path / label / "s0.onnx").graph.node}
    assert "LayerNormalization" not in ops["jetson"] and {"ReduceMean", "Sqrt"} <= ops["jetson"]
    assert "LayerNormalization" in ops["pi"]


def test_an_unknown_tensorrt_version_is_named(tmp_path):
    with pytest.raises(HalocutError, match=r"no operator table for TensorRT 7\.0; known: 8\.5"):
        emit(part(nn.ReLU()), Target("onnx", tensorrt="7.0"), tmp_path)


def test_only_jetson_boards_get_the_tensorrt_check():
    (jetson,) = [t for t in targets_for(catalog_device("jetson-nano")) if t.backend == "onnx"]
    assert jetson.tensorrt == JETSON_TENSORRT and jetson.describe() == "onnx"
    (pi,) = targets_for(catalog_device("rpi4"), only=("onnx",))
    assert pi.backend == "onnx" and pi.tensorrt is None
