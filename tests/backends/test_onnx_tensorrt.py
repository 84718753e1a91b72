"""The TensorRT check (issue 12, item 5; issue 14, item 4): per JetPack's TensorRT version, from onnx-tensorrt's
operator tables and restrictions, on the polygraphy-sanitized part, which onnxruntime runs against the part."""

import json

import numpy as np
import onnx
import pytest
import torch
from torch import fx, nn
from torch.nn import functional

from halocut.backends import tensorrt_support
from halocut.backends.base import Part, Target
from halocut.backends.onnx import JETSON_TENSORRT, TENSORRT_OPS, emit, load
from halocut.backends.tensorrt_support import TENSORRT, problems
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
    with pytest.raises(HalocutError, match=r"no operator table for TensorRT 7\.0; known: 8\.2, 8\.5"):
        emit(part(nn.ReLU()), Target("onnx", tensorrt="7.0"), tmp_path)


def test_only_jetson_boards_get_the_tensorrt_check_of_their_own_jetpack():
    versions = {}
    for kind in ("jetson-nano", "jetson-tx2", "jetson-xavier-nx", "jetson-agx-xavier", "jetson-orin-nano",
                 "jetson-agx-orin"):
        (jetson,) = [t for t in targets_for(catalog_device(kind)) if t.backend == "onnx"]
        assert jetson.describe() == "onnx"
        versions[kind] = (catalog_device(kind).jetpack, jetson.tensorrt)
    assert versions["jetson-nano"] == versions["jetson-tx2"] == ("4.6.1", "8.2")
    assert {versions[k] for k in versions if "xavier" in k or "orin" in k} == {("5.1.2", "8.5")}
    (pi,) = targets_for(catalog_device("rpi4"), only=("onnx",))
    assert pi.backend == "onnx" and pi.tensorrt is None


class Reciprocal(nn.Module):
    def forward(self, x):
        return torch.reciprocal(x.abs() + 1)


def test_an_op_8_2_lacks_is_reported_with_its_name_and_version_and_8_5_takes_it(tmp_path):
    assert "Reciprocal" in TENSORRT_OPS["8.5"] and "Reciprocal" not in TENSORRT_OPS["8.2"]
    reciprocal = part(Reciprocal())
    with pytest.raises(HalocutError) as error:
        emit(reciprocal, Target("onnx", tensorrt="8.2"), tmp_path / "nano")
    assert str(error.value) == ("part 's0': TensorRT 8.2 would not parse it: ops TensorRT 8.2 does not support: "
                                "Reciprocal")
    runs_like_torch(reciprocal, Target("onnx", tensorrt="8.5"), tmp_path / "orin")


class DynamicConv(nn.Module):
    def forward(self, x, w):
        return functional.conv2d(x, w)


def test_conv_weights_fed_as_an_input_are_refused_by_8_2_only(tmp_path):
    """8.2's table: "Weights `W` must be an initializer"; 8.5's importer builds a convolution from tensor weights."""
    dynamic = Part("s1", fx.symbolic_trace(DynamicConv()), (torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)),
                   ("x", "w"), ("y",))
    with pytest.raises(HalocutError, match=r"^part 's1': TensorRT 8\.2 would not parse it: Conv '.*': `W` must be "
                                           r"an initializer \(conv weights\)$"):
        emit(dynamic, Target("onnx", tensorrt="8.2"), tmp_path / "nano")
    artifact = emit(dynamic, Target("onnx", tensorrt="8.5"), tmp_path / "orin")
    assert "conv weights" not in artifact.tensorrt["checked"]


def test_resize_and_pad_modes_outside_the_table_are_named(tmp_path):
    for version in ("8.2", "8.5"):
        with pytest.raises(HalocutError, match=rf"TensorRT {version} would not parse it: Resize '.*': Resize mode "
                                               r"'cubic' \(TensorRT [0-9.]+: nearest, linear\)"):
            emit(part(nn.Upsample(scale_factor=2, mode="bicubic")), Target("onnx", tensorrt=version), tmp_path)
    runs_like_torch(part(nn.Upsample(scale_factor=2, mode="bilinear"), nn.ReflectionPad2d(1)),
                    Target("onnx", tensorrt="8.2"), tmp_path / "ok")
    model = onnx.load(tmp_path / "ok" / "s0.onnx")
    (pad,) = [n for n in model.graph.node if n.op_type == "Pad"]
    assert problems(model, TENSORRT["8.2"]) == []
    next(a for a in pad.attribute if a.name == "mode").s = b"wrap"  # opset 19's, which neither parser takes
    assert problems(model, TENSORRT["8.2"]) == [f"Pad '{pad.name}': Pad mode 'wrap' (TensorRT 8.2: constant, "
                                                "reflect, edge)"]


def test_resize_scales_from_a_tensor_are_refused_by_8_2_only():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    scales = onnx.helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, [4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    resize = onnx.helper.make_node("Resize", ["x", "", "s"], ["y"], name="up", mode="linear")
    model = onnx.helper.make_model(onnx.helper.make_graph([resize], "g", [x, scales], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 13)])
    assert problems(model, TENSORRT["8.2"]) == ["Resize 'up': `scales` must be an initializer, not 's'"]
    assert problems(model, TENSORRT["8.5"]) == []


def test_a_dilated_pooling_is_refused_by_both_versions(tmp_path):
    for version in ("8.2", "8.5"):
        with pytest.raises(HalocutError, match=rf"TensorRT {version} would not parse it: MaxPool '.*': dilations "
                                               r"\[2, 2\]: pooling takes dilations of 1 only$"):
            emit(part(nn.MaxPool2d(2, dilation=2)), Target("onnx", tensorrt=version), tmp_path)


def test_an_opset_above_the_version_s_is_refused():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [x])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 16)])
    assert problems(model, TENSORRT["8.2"]) == ["opset 16 is above TensorRT 8.2's 13"]
    assert problems(model, TENSORRT["8.5"]) == []


def test_the_sanitized_part_runs_like_the_part_in_fp32_and_fp16(tmp_path):
    p = part(nn.BatchNorm2d(8).eval(), nn.ReLU(), nn.MaxPool2d(2), nn.Upsample(scale_factor=2), nn.Conv2d(8, 4, 3))
    artifact = emit(p, Target("onnx", fp16=True, tensorrt="8.2"), tmp_path)
    model = onnx.load(tmp_path / artifact.path)
    assert model.opset_import[0].version == 13 and "Constant" not in {n.op_type for n in model.graph.node}
    report = artifact.tensorrt
    assert report == json.loads((tmp_path / "s0.tensorrt.json").read_text())
    assert report["version"] == "8.2" and report["sanitized"] == "polygraphy surgeon sanitize --fold-constants"
    assert report["trtexec"] == "trtexec --onnx=s0.onnx --saveEngine=s0.engine"
    assert report["trtexec_fp16"] == "trtexec --onnx=s0.fp16.onnx --saveEngine=s0.fp16.engine --fp16"
    expected = p.example_outputs()[0].detach().numpy()
    for label, file in (("fp32", "s0.onnx"), ("fp16", "s0.fp16.onnx")):
        got = load(artifact.__class__("s0", "onnx", Target("onnx"), tmp_path / file), tmp_path)(
            [p.example_inputs[0].numpy()])[0]
        assert report["max_abs_error"][label] == pytest.approx(float(np.abs(got - expected).max()), abs=1e-7)
    assert report["max_abs_error"]["fp32"] <= report["tolerance"] < report["max_abs_error"]["fp16"]
    again = emit(p, Target("onnx", fp16=True, tensorrt="8.2"), tmp_path / "again")  # a cache hit keeps it
    assert again.tensorrt == report


def test_a_sanitized_part_that_drifts_from_the_part_is_refused(tmp_path, monkeypatch):
    def drifted(model):
        model = onnx.ModelProto.FromString(model.SerializeToString())
        weight = next(i for i in model.graph.initializer if len(i.dims) == 4)
        values = onnx.numpy_helper.to_array(weight) + 0.01
        weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
        return model
    monkeypatch.setattr(tensorrt_support, "sanitize", drifted)
    with pytest.raises(HalocutError, match=r"^part 's0': the sanitized ONNX is not equivalent to the part: max abs "
                                           r"error [0-9.e-]+ > [0-9.e-]+$"):
        emit(part(nn.ReLU()), Target("onnx", tensorrt="8.5"), tmp_path)
