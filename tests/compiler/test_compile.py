"""`halocut compile`: parts per machine for mixed topologies, verified, with a manifest that matches its files."""

import json
import subprocess

import pytest

import halocut.backends.onnx as onnx_backend
from halocut.backends import qemu
from halocut.backends.manifest import load_manifest
from halocut.compiler.driver import CompileOptions, compile_model
from halocut.compiler.prepare import prepare_model
from halocut.ir.errors import HalocutError
from halocut.planning import PLANNERS

from tests.support import ROOT
from tests.support.plans import grid_tiles, plan, row_tiles, shape_of

MIXED = ROOT / "tests" / "data" / "mixed.yaml"  # a Pi, a Jetson, an edge server, a cloud GPU
DEVICES = ("pi", "jetson", "edge", "cloud")


def write_plan(tmp_path, model, shape, segments):
    graph = prepare_model(model, shape).graph
    path = tmp_path / f"{model}.plan.json"
    plan(graph, model, shape, segments(graph), devices=DEVICES).save(path)
    return path


def compile_(tmp_path, model, shape, plan_path=None, backends=None, output="build", **options):
    return compile_model(CompileOptions(model, MIXED, tmp_path / output, plan_path, input_shape=shape,
                                        backends=backends, progress=False, **options))


def check_build(compilation):
    build = compilation.manifest_path.parent
    manifest = load_manifest(build)  # validates the schema and every sha256
    referenced = {"manifest.json"}
    for entry in manifest["devices"].values():
        for part in entry["parts"]:
            for artifact in part["artifacts"]:
                referenced.add(artifact["path"])
                referenced.update(extra["path"] for extra in artifact.get("extra", []))
    on_disk = {p.relative_to(build).as_posix() for p in build.rglob("*") if p.is_file()}
    assert on_disk == referenced
    outputs = {(p["name"], o["name"]) for e in manifest["devices"].values() for p in e["parts"] for o in p["outputs"]}
    for entry in manifest["devices"].values():
        for part in entry["parts"]:
            for tensor in part["inputs"]:
                for source in tensor["from"]:
                    assert source["part"] is None or (source["part"], source["output"]) in outputs, (part, source)
    assert not list(build.parent.glob(f".{build.name}.partial-*"))
    return manifest


def resnet18_segments(graph):
    h, w = shape_of(graph, "layer1_1_relu_1")[-2:]
    return [("spatial", "layer1_1_relu_1", (row_tiles(h, w, [h // 3, h // 2]), ["layer1_0_relu_1"])), ("single", "layer3_1_relu_1", 0),
            ("single", "flatten", 3), ("fc", None, ("model", [(0, 400), (400, 1000)]))]


def test_resnet18_every_backend_on_a_mixed_topology(tmp_path):
    shape = (1, 3, 32, 32)
    compilation = compile_(tmp_path, "resnet18", shape, write_plan(tmp_path, "resnet18", shape, resnet18_segments))
    manifest = check_build(compilation)
    emulated = {"tvm aarch64"} if qemu.unavailable() is None else set()
    assert set(compilation.verification) == {"onnx", "torch", "tvm x86"} | emulated
    for result in compilation.verification.values():
        assert result["max_abs_error"] <= result["tolerance"] and result["parts"]
    hows = {(d, a["target"]): a["verified"]["how"] for d, e in manifest["devices"].items() for p in e["parts"]
            for a in p["artifacts"]}
    assert hows[("pi", "tvm aarch64")] == ("qemu-aarch64" if emulated else "structural only")
    assert hows[("cloud", "tvm cuda sm_75")] == hows[("jetson", "tvm cuda sm_53 (host aarch64)")] == "structural only"
    assert hows[("edge", "tvm x86")] == hows[("jetson", "onnx")] == "native"
    artifacts = {(d, a["backend"], a["target"]) for d, e in manifest["devices"].items() for p in e["parts"]
                 for a in p["artifacts"]}
    assert ("pi", "tvm", "tvm aarch64") in artifacts
    assert any(d == "jetson" and b == "onnx" for d, b, _ in artifacts)
    assert ("cloud", "tvm", "tvm cuda sm_75") in artifacts
    assert ("jetson", "tvm", "tvm cuda sm_53 (host aarch64)") in artifacts
    build = compilation.manifest_path.parent
    for entry in manifest["devices"]["pi"]["parts"]:
        so = build / next(a["path"] for a in entry["artifacts"] if a["backend"] == "tvm")
        header = so.read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


@pytest.mark.parametrize("model,shape,segments", [
    ("mobilenet_v2", (1, 3, 64, 64), lambda g: [
        ("spatial", "add", grid_tiles(*shape_of(g, "add")[-2:], [7], [9])), ("single", "flatten", 2),
        ("fc", None, ("data", [(0, 640), (640, 1280)]))]),
    ("yolov2", (1, 3, 64, 64), lambda g: [
        ("spatial", "cat", row_tiles(*shape_of(g, "cat")[-2:], [1])), ("single", None, 3)]),
])
def test_onnx_and_torch_parts_of_real_models(tmp_path, model, shape, segments):
    compilation = compile_(tmp_path, model, shape, write_plan(tmp_path, model, shape, segments),
                           backends=("onnx", "torch"))
    check_build(compilation)
    assert set(compilation.verification) == {"onnx", "torch"}


def test_default_planner_and_fp16_variant(tmp_path):
    compilation = compile_(tmp_path, "lenet5", None, backends=("onnx",), fp16=True)
    manifest = check_build(compilation)
    used = [d for d, e in manifest["devices"].items() if e["parts"]]
    artifacts = [p["artifacts"][0] for d in used for p in manifest["devices"][d]["parts"]]
    assert artifacts and all(a["extra"][0]["path"].endswith(".fp16.onnx") for a in artifacts)
    assert manifest["plan"]["planner"] == "halocut"


def test_non_empty_output_is_refused_without_force(tmp_path):
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "old.txt").write_text("keep me")
    with pytest.raises(HalocutError, match="is not empty; use --force"):
        compile_(tmp_path, "lenet5", None, backends=("onnx",))
    compilation = compile_(tmp_path, "lenet5", None, backends=("onnx",), force=True)
    assert not (compilation.manifest_path.parent / "old.txt").exists()


def test_an_interrupted_compile_leaves_the_old_build_and_no_partial_one(tmp_path, monkeypatch):
    compile_(tmp_path, "lenet5", None, backends=("onnx",))
    before = (tmp_path / "build" / "manifest.json").read_text()
    calls = []

    def failing_emit(part, target, out_dir):
        calls.append(part.name)
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_backend, "emit", failing_emit)
    with pytest.raises(KeyboardInterrupt):
        compile_(tmp_path, "lenet5", None, backends=("onnx",), force=True)
    assert calls and (tmp_path / "build" / "manifest.json").read_text() == before
    assert not list(tmp_path.glob(".build.partial-*"))
    load_manifest(tmp_path / "build")


def test_tampered_artifact_is_detected(tmp_path):
    compilation = compile_(tmp_path, "lenet5", None, backends=("onnx",))
    build = compilation.manifest_path.parent
    (artifact,) = [p for p in build.rglob("*.onnx")]
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(HalocutError, match="does not match its sha256"):
        load_manifest(build)


def test_a_manifest_part_name_that_is_not_one_is_a_one_line_error(tmp_path):
    """Issue 18, item 10: it was a ValueError traceback from parse_part_name."""
    compilation = compile_(tmp_path, "lenet5", None, backends=("onnx",))
    path = compilation.manifest_path
    manifest = json.loads(path.read_text())
    device = next(d for d, entry in manifest["devices"].items() if entry["parts"])
    manifest["devices"][device]["parts"][0]["name"] = "bogus!"
    path.write_text(json.dumps(manifest))
    with pytest.raises(HalocutError, match=rf"devices\.{device}\.parts\[0\]\.name: 'bogus!' is not a part name$"):
        load_manifest(path.parent)


def test_compile_command_prints_a_summary(halocut_cli, cli_env, tmp_path):
    result = subprocess.run([halocut_cli, "compile", "lenet5", "--topology", str(MIXED), "-o", str(tmp_path / "b"),
                             "--backends", "onnx,torch"], capture_output=True, text=True, env=cli_env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "predicted latency" in result.stdout and "manifest:" in result.stdout
    again = subprocess.run([halocut_cli, "compile", "lenet5", "--topology", str(MIXED), "-o", str(tmp_path / "b")],
                           capture_output=True, text=True, env=cli_env, timeout=600)
    assert again.returncode == 2 and "is not empty; use --force" in again.stderr
    wrong = subprocess.run([halocut_cli, "compile", "lenet5", "--topology", str(MIXED), "-o", str(tmp_path / "c"),
                            "--planner", "magic"], capture_output=True, text=True, env=cli_env, timeout=600)
    assert wrong.returncode == 2 and f"unknown planner 'magic'; planners: {', '.join(sorted(PLANNERS))}" in wrong.stderr


def test_repeat_compile_reuses_cached_artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("HALOCUT_CACHE", str(tmp_path / "cache"))
    calls = []
    real = onnx_backend._emit
    monkeypatch.setattr(onnx_backend, "_emit", lambda *a: calls.append(a[0].name) or real(*a))
    first = compile_(tmp_path, "lenet5", None, backends=("onnx",), output="one")
    second = compile_(tmp_path, "lenet5", None, backends=("onnx",), output="two")
    assert len(calls) == 1  # the second build copied the cached file
    files = [next(c.manifest_path.parent.rglob("*.onnx")).read_bytes() for c in (first, second)]
    assert files[0] == files[1]


def test_a_jetson_part_s_manifest_entry_has_its_tensorrt_check(tmp_path):
    """Issue 14, item 4: the Nano's part (JetPack 4.6.1, TensorRT 8.2) is sanitized, checked and measured; the
    trtexec lines and both errors are in the manifest, and nobody else's artifact has them."""
    shape = (1, 3, 32, 32)
    plan_path = write_plan(tmp_path, "lenet5", shape, lambda graph: [("single", "_5", 1), ("single", None, 2)])
    manifest = check_build(compile_(tmp_path, "lenet5", shape, plan_path, backends=("onnx", "torch"), fp16=True))
    (entry,) = manifest["devices"]["jetson"]["parts"]
    (artifact,) = entry["artifacts"]
    trt = artifact["tensorrt"]
    assert (trt["version"], trt["jetpack"], trt["opset"]) == ("8.2", "4.6.1", 13)
    assert trt["source"].endswith("release/8.2-GA/docs/operators.md")
    assert {"ops", "opset", "conv weights", "pad modes", "resize modes"} <= set(trt["checked"])
    assert trt["sanitized"] == "polygraphy surgeon sanitize --fold-constants"
    assert trt["trtexec"] == "trtexec --onnx=s0.onnx --saveEngine=s0.engine"
    assert trt["trtexec_fp16"] == "trtexec --onnx=s0.fp16.onnx --saveEngine=s0.fp16.engine --fp16"
    assert 0 <= trt["max_abs_error"]["fp32"] <= trt["tolerance"] < trt["max_abs_error"]["fp16"]
    assert [e["path"] for e in artifact["extra"]] == ["jetson/s0.fp16.onnx", "jetson/s0.tensorrt.json"]
    others = [a for d, e in manifest["devices"].items() if d != "jetson" for p in e["parts"] for a in p["artifacts"]]
    assert others and not any("tensorrt" in a for a in others)


PLANTED = """
import torch
from torch import nn


class Reciprocal(nn.Module):  # ONNX Reciprocal: in TensorRT 8.5's operator table, not in 8.2's
    def forward(self, x):
        return torch.reciprocal(x.abs() + 1)


def model():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), Reciprocal(), nn.Conv2d(8, 4, 3)).eval()
"""


def test_an_op_planted_on_a_jetson_is_reported_with_its_name_and_the_tensorrt_version(tmp_path):
    (tmp_path / "planted.py").write_text(PLANTED)
    model, shape = f"{tmp_path / 'planted.py'}:model", (1, 3, 16, 16)
    plan_path = write_plan(tmp_path, model, shape, lambda graph: [("single", None, 1)])
    with pytest.raises(HalocutError) as error:
        compile_(tmp_path, model, shape, plan_path, backends=("onnx", "torch"))
    assert str(error.value) == ("part 's0': TensorRT 8.2 would not parse it: ops TensorRT 8.2 does not support: "
                                "Reciprocal")
    orin = tmp_path / "orin.yaml"  # the same part on a Jetson AGX Orin (JetPack 5.1.2, TensorRT 8.5) is taken
    orin.write_text(MIXED.read_text().replace("kind: jetson-nano", "kind: jetson-agx-orin"))
    compilation = compile_model(CompileOptions(model, orin, tmp_path / "build", plan_path, input_shape=shape,
                                               backends=("onnx", "torch"), progress=False))
    (artifact,) = check_build(compilation)["devices"]["jetson"]["parts"][0]["artifacts"]
    assert (artifact["tensorrt"]["version"], artifact["tensorrt"]["jetpack"]) == ("8.5", "5.1.2")
