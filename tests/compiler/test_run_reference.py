"""Issue 12, item 6: ``halocut run`` reloads a file model as the manifest records it (path, factory, sha256),
and when it cannot, says the run is not verified against the model instead of comparing artifacts with
themselves and calling that verified."""

import shutil

import numpy as np
import pytest
import torch

from halocut.backends.manifest import load_manifest
from halocut.compiler.commands import reference_for
from halocut.compiler.driver import CompileOptions, compile_model
from halocut.compiler.prepare import prepare_model
from halocut.runtime.flow import flow_from_manifest
from halocut.runtime.run import RunReport, verified_line
from tests.support import ROOT


@pytest.fixture(scope="module")
def file_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("file-model")
    shutil.copy(ROOT / "examples/models/tiny.py", root / "tiny.py")
    compile_model(CompileOptions(f"{root / 'tiny.py'}:build", ROOT / "tests/data/mixed.yaml", root / "build",
                                 planner="offload", backends=("torch",), progress=False))
    return root


def expected(spec, x):
    with torch.no_grad():
        return prepare_model(spec).module(torch.from_numpy(x)).numpy()


def test_a_file_model_is_reloaded_from_the_manifest(file_build):
    build = file_build / "build"
    flow = flow_from_manifest(load_manifest(build))
    source = load_manifest(build)["model"]["source"]
    assert source["kind"] == "file" and source["path"] == str(file_build / "tiny.py") and len(source["sha256"]) == 64
    reference, label = reference_for(flow, build, None, None)
    assert label == "original model"
    x = np.random.default_rng(0).standard_normal(flow.input_shape).astype(np.float32)
    (value,) = reference(x).values()
    np.testing.assert_allclose(value, expected(f"{file_build / 'tiny.py'}:build", x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("change, why", [
    (lambda f: f.write_text(f.read_text() + "\n# edited\n"), "changed since the build (sha256 differs)"),
    (lambda f: f.unlink(), "is gone"),
])
def test_a_model_that_cannot_be_reloaded_is_not_called_verified(file_build, change, why):
    build = file_build / "build"
    model_file = file_build / "tiny.py"
    saved = model_file.read_text()
    try:
        change(model_file)
        flow = flow_from_manifest(load_manifest(build))
        _, label = reference_for(flow, build, None, None)
    finally:
        model_file.write_text(saved)
    assert label.startswith("in-process executor of the same artifacts") and why in label
    report = RunReport("tiny", str(build), "dag", label, 0.0, 1e-4, 1, 0, {}, 1.0, 0.0, 0.0, 0.0, 0.0, 1)
    assert not report.verified and report.to_json()["verified"] is False
    assert verified_line(report).startswith("NOT verified against the model")
