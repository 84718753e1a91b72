"""The TensorRT operator check (issue 12, item 5): versioned, from TensorRT's own operator table, Jetson parts only."""

import numpy as np
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


def test_layer_norm_is_refused_for_tensorrt_8_5_only(tmp_path):
    layer_norm = part(nn.LayerNorm([8, 8, 8]))
    with pytest.raises(HalocutError, match=r"ops TensorRT 8\.5 does not support: LayerNormalization"):
        emit(layer_norm, Target("onnx", tensorrt="8.5"), tmp_path / "jetson")
    runs_like_torch(layer_norm, Target("onnx"), tmp_path / "pi")  # a Pi's or a server's ONNX: onnxruntime runs it


def test_an_unknown_tensorrt_version_is_named(tmp_path):
    with pytest.raises(HalocutError, match=r"no operator table for TensorRT 7\.0; known: 8\.5"):
        emit(part(nn.ReLU()), Target("onnx", tensorrt="7.0"), tmp_path)


def test_only_jetson_boards_get_the_tensorrt_check():
    (jetson,) = [t for t in targets_for(catalog_device("jetson-nano")) if t.backend == "onnx"]
    assert jetson.tensorrt == JETSON_TENSORRT and jetson.describe() == "onnx"
    (pi,) = targets_for(catalog_device("rpi4"), only=("onnx",))
    assert pi.backend == "onnx" and pi.tensorrt is None
