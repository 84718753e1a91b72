"""The TVM backend: x86 libraries equal torch, aarch64 and CUDA libraries are built for their machines,
the compile cache hits and misses when it should, and failures name the part."""

import copy
import functools
import logging
import shutil
import struct
import time

import numpy as np
import pytest
import torch
from torch import fx, nn

from halocut.backends import tvm as backend
from halocut.backends.base import Part, Target
from halocut.compiler.prepare import prepare_model
from halocut.ir.errors import HalocutError
from halocut.ir.regions import Region
from halocut.passes.slice import slice_stage

X86 = Target("tvm", {"kind": "llvm"})
AARCH64 = Target("tvm", {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
EM_X86_64, EM_AARCH64, EM_CUDA = 62, 183, 190


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test starts with an empty compile cache of its own."""
    monkeypatch.setenv("HALOCUT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tvm"


@functools.cache
def prepared(name, shape):
    return prepare_model(name, shape)


def whole(name, shape):
    graph = prepared(name, shape).graph
    return Part("whole", graph, (torch.randn(shape),), ("x",), ("out",))


def mobilenet_tile():
    graph = prepared("mobilenet_v2", (1, 3, 32, 32)).graph
    names = [n.name for n in graph.graph.nodes if n.op.startswith("call")]
    volume = names[:names.index("features_2_conv_0_2") + 1]
    tile = slice_stage(graph, volume, [Region((0, 4), (0, 8))])[0]
    x = torch.randn(1, 3, 32, 32)
    crops = tuple(x[:, :, slice(*region.rows), slice(*region.cols)] for source, region in tile.inputs)
    assert [source for source, _ in tile.inputs] == ["x"]
    return Part("tile", tile.module, crops, ("x",), ("out",))


def tiny(name="s0", **conv):
    module = fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3, **conv), nn.ReLU(), nn.MaxPool2d(2)))
    return Part(name, module, (torch.randn(1, 3, 8, 8),), ("x",), ("y",))


def assert_equivalent(outputs, part):
    expected = [t.detach().numpy() for t in part.example_outputs()]
    assert len(outputs) == len(expected)
    for got, ref in zip(outputs, expected):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def run(part, out_dir):
    artifact = backend.emit(part, X86, out_dir)
    return artifact, backend.load(artifact, out_dir)([x.numpy() for x in part.example_inputs])


@pytest.mark.parametrize("make", [
    lambda: whole("resnet18", (1, 3, 32, 32)),
    mobilenet_tile,
    lambda: whole("yolov2", (1, 3, 64, 64)),
], ids=["resnet18-whole", "mobilenet_v2-tile", "yolov2-whole"])
def test_x86_library_equals_torch(make, tmp_path):
    part = make()
    artifact, outputs = run(part, tmp_path)
    assert artifact.path == type(artifact.path)(f"{part.name}.x86.so")  # relative to out_dir
    assert (artifact.backend, artifact.part, artifact.extra) == ("tvm", part.name, ())
    assert_equivalent(outputs, part)


def test_yolov2_part_has_reorg_and_concat():
    targets = {str(n.target) for n in whole("yolov2", (1, 3, 64, 64)).module.graph.nodes}
    assert any("pixel_unshuffle" in t for t in targets) and any("cat" in t for t in targets)


def test_export_failure_falls_back_to_fx(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("export refused")

    monkeypatch.setattr(torch.export, "export", refuse)
    part = tiny(padding=1)
    assert_equivalent(run(part, tmp_path)[1], part)


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="aarch64-linux-gnu-gcc not installed (apt-get install gcc-aarch64-linux-gnu)")
def test_aarch64_library_is_an_arm64_shared_object(tmp_path):
    artifact = backend.emit(tiny(), AARCH64, tmp_path)
    data = (tmp_path / artifact.path).read_bytes()
    assert artifact.path.name == "s0.aarch64.so"
    assert data[:4] == b"\x7fELF" and struct.unpack_from("<H", data, 18)[0] == EM_AARCH64
    assert not backend.runnable(AARCH64)
    if backend.emulated(AARCH64):  # tests/backends/test_qemu.py checks what it computes under qemu
        assert backend.load(artifact, tmp_path)([x.numpy() for x in tiny().example_inputs])[0].shape == (1, 4, 3, 3)
    else:
        with pytest.raises(HalocutError, match="part 's0'"):
            backend.load(artifact, tmp_path)


def embedded_cubins(data):
    """(e_machine, SM version) of every ELF image inside a library after its own header."""
    found, start = [], 1
    while (start := data.find(b"\x7fELF", start)) > 0:
        machine, flags = struct.unpack_from("<H", data, start + 18)[0], struct.unpack_from("<I", data, start + 48)[0]
        found.append((machine, (flags >> 8) & 0xFF))
        start += 4
    return [sm for machine, sm in found if machine == EM_CUDA]


@pytest.mark.parametrize("spec,host_machine", [
    ({"kind": "cuda", "arch": "sm_87"}, EM_X86_64),
    ({"kind": "cuda", "arch": "sm_75"}, EM_X86_64),
    ({"kind": "cuda", "arch": "sm_87", "host": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}}, EM_AARCH64),
], ids=["sm_87", "sm_75", "sm_87-aarch64-host"])
def test_cuda_library_holds_a_cubin_for_its_arch(spec, host_machine, tmp_path):
    if host_machine == EM_AARCH64 and shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.skip("aarch64-linux-gnu-gcc not installed")
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed: the library carries CUDA source instead of a cubin")
    artifact = backend.emit(tiny(), Target("tvm", spec), tmp_path)
    data = (tmp_path / artifact.path).read_bytes()
    assert artifact.path.name == f"s0.cuda-{spec['arch']}.so"
    assert struct.unpack_from("<H", data, 18)[0] == host_machine
    assert embedded_cubins(data) == [int(spec["arch"][3:])]
    if host_machine == EM_X86_64:
        assert cuda_payload_format(tmp_path / artifact.path) == b"cubin"  # what TVM's CUDA loader receives


def test_cuda_arch_nvcc_cannot_target_keeps_the_source(tmp_path, caplog):
    if "sm_53" in backend._nvcc_archs():
        pytest.skip("this nvcc still compiles for sm_53")
    artifact = backend.emit(tiny(), Target("tvm", {"kind": "cuda", "arch": "sm_53"}), tmp_path)
    data = (tmp_path / artifact.path).read_bytes()
    assert embedded_cubins(data) == [] and b"__global__" in data
    assert "carries CUDA source" in caplog.text
    assert cuda_payload_format(tmp_path / artifact.path) == b"cuda"


def cuda_payload_format(path):
    """The format TVM's own library loader hands to the CUDA module loader (a stand-in loader here)."""
    import tvm
    import tvm_ffi

    name = "ffi.Module.load_from_bytes.cuda"
    if tvm_ffi.get_global_func(name, allow_missing=True) is not None:
        pytest.skip("a CUDA runtime is loaded; not replacing its module loader")
    seen = []
    stand_in = backend.emit(tiny("cpu"), X86, path.parent)

    def loader(payload):
        seen.append(bytes(payload))
        return tvm.runtime.load_module(str(path.parent / stand_in.path))

    tvm_ffi.register_global_func(name, loader)
    try:
        tvm.runtime.load_module(str(path))
    finally:
        tvm_ffi.registry.remove_global_func(name)
    (payload,) = seen
    size = int.from_bytes(payload[:8], "little")
    return payload[8:8 + size]


def test_cache_hit_copies_and_changed_weights_miss(tmp_path, cache, caplog):
    caplog.set_level(logging.INFO, logger="halocut.backends.base")
    part = tiny()
    first = backend.emit(part, X86, tmp_path / "a")
    assert "compiled" in caplog.text and "cache hit" not in caplog.text
    caplog.clear()
    start = time.perf_counter()
    second = backend.emit(part, X86, tmp_path / "b")
    assert time.perf_counter() - start < 1.0
    assert "cache hit" in caplog.text
    assert (tmp_path / "a" / first.path).read_bytes() == (tmp_path / "b" / second.path).read_bytes()
    changed = copy.deepcopy(part.module)
    with torch.no_grad():
        changed.get_submodule("0").weight.add_(1.0)
    caplog.clear()
    backend.emit(Part("s0", changed, part.example_inputs, ("x",), ("y",)), X86, tmp_path / "c")
    assert "compiled" in caplog.text
    assert len(list(cache.glob("*/files"))) == 2


def test_unsupported_op_names_the_part(tmp_path):
    class Bessel(nn.Module):
        def forward(self, x):
            return torch.special.i0(torch.relu(x))

    part = Part("s3_t1", fx.symbolic_trace(Bessel()), (torch.randn(1, 3, 4, 4),), ("x",), ("y",))
    with pytest.raises(HalocutError, match=r"part 's3_t1'.*i0") as raised:
        backend.emit(part, X86, tmp_path)
    assert "\n" not in str(raised.value)


def test_non_tvm_target_is_refused(tmp_path):
    with pytest.raises(HalocutError, match="llvm or cuda"):
        backend.emit(tiny(), Target("tvm", {"kind": "vulkan"}), tmp_path)
