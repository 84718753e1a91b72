"""aarch64 TVM libraries executed on this x86-64 machine under qemu-aarch64 (backends/qemu.py): their outputs
equal torch's, a build records per artifact how it was verified, and a library that cannot run is named."""

import json
import shutil

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import fx, nn

from halocut.backends import qemu
from halocut.backends import tvm as backend
from halocut.backends.base import Part, Target, execution
from halocut.compiler.driver import CompileOptions, compile_model, summary_table
from halocut.ir.errors import HalocutError
from tests.support import ROOT

AARCH64 = Target("tvm", {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
X86 = Target("tvm", {"kind": "llvm"})

pytestmark = pytest.mark.skipif(
    qemu.emulator() is None or shutil.which("aarch64-linux-gnu-gcc") is None,
    reason="qemu-user or the aarch64 cross toolchain is not installed (make install apt-gets qemu-user and "
           "g++-aarch64-linux-gnu; here apt-get could not)")


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.pool = nn.Conv2d(3, 6, 3, padding=1), nn.MaxPool2d(2)

    def forward(self, x, y):
        z = torch.relu(self.conv(x)) + y
        return self.pool(z), z.mean(dim=(2, 3))


def test_an_aarch64_part_with_two_inputs_and_outputs_runs_like_torch(tmp_path):
    torch.manual_seed(0)
    module = fx.symbolic_trace(TwoHeads().eval())
    inputs = (torch.randn(1, 3, 12, 10), torch.randn(1, 6, 12, 10))
    part = Part("s3_t1_h0", module, inputs, ("x", "y"), ("pooled", "mean"))
    artifact = backend.emit(part, AARCH64, tmp_path)
    assert execution(AARCH64) == "qemu-aarch64" and not backend.runnable(AARCH64)
    outputs, times = qemu.run(tmp_path / artifact.path, [x.numpy() for x in inputs], repeats=2)
    expected = [t.detach().numpy() for t in part.example_outputs()]
    assert [o.shape for o in outputs] == [e.shape for e in expected] and len(times) == 2
    for got, ref in zip(outputs, expected):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    assert np.abs(outputs[0]).max() > 0  # not a zero tensor that happens to be close
    (loaded,) = backend.load(artifact, tmp_path)([x.numpy() for x in inputs])[:1]
    np.testing.assert_array_equal(loaded, outputs[0])


def test_a_library_that_is_not_aarch64_is_a_one_line_error_naming_the_part(tmp_path):
    part = Part("s0", fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3))), (torch.randn(1, 3, 8, 8),), ("x",),
                ("y",))
    artifact = backend.emit(part, X86, tmp_path)
    with pytest.raises(HalocutError, match=r"aarch64 part 's0' failed under qemu-aarch64: .*") as error:
        qemu.run(tmp_path / artifact.path, [part.example_inputs[0].numpy()], part="s0")
    assert "\n" not in str(error.value)


def test_lenet5_build_runs_its_pi_part_under_qemu_and_the_manifest_says_so(tmp_path):
    """The default topology's camera is a Pi: its TVM aarch64 parts are executed and compared end to end;
    the summary prints how each device's artifacts were verified."""
    compilation = compile_model(CompileOptions("lenet5", ROOT / "examples/topologies/default.yaml",
                                               tmp_path / "build", progress=False))
    check = compilation.verification["tvm aarch64"]
    assert check["how"] == "qemu-aarch64" and check["parts"] and check["max_abs_error"] <= check["tolerance"]
    manifest = json.loads(compilation.manifest_path.read_text())
    pi_artifacts = [a for e in manifest["devices"].values() for p in e["parts"] for a in p["artifacts"]
                    if a["target"] == "tvm aarch64"]
    assert pi_artifacts and all(a["verified"] == {"how": "qemu-aarch64", "check": "tvm aarch64"} for a in pi_artifacts)
    assert manifest["verification"]["tvm aarch64"]["parts"] == check["parts"]
    console = Console(record=True, width=200)
    console.print(summary_table(compilation))
    text = " ".join(console.export_text().split())  # the caption wraps
    assert "tvm aarch64: qemu-aarch64" in text and "tvm aarch64 (qemu-aarch64): max error" in text


def test_a_wrong_output_under_qemu_fails_the_build(tmp_path, monkeypatch):
    """The check can fail: an emulated part whose output is off by one fails verification, naming the group."""
    real = qemu.run

    def off_by_one(library, inputs, repeats=1, part=""):
        outputs, times = real(library, inputs, repeats, part)
        return [o + 1 for o in outputs], times
    monkeypatch.setattr(qemu, "run", off_by_one)
    with pytest.raises(HalocutError, match=r"tvm aarch64 artifacts are not equivalent to the model"):
        compile_model(CompileOptions("lenet5", ROOT / "examples/topologies/default.yaml", tmp_path / "build",
                                     progress=False))
    assert not (tmp_path / "build").exists()
