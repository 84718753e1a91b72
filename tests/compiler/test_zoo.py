"""The zoo test's representative subset (the whole zoo is benchmarks/zoo.py): models halocut's tests were not
written on, each taken through inspect, two planners on two topologies, a forced tiled plan and compiles with
every artifact verified (halocut.compiler.trials)."""

import pytest
import torch

from halocut.compiler.frontend import known_models, load_model, segmentation_models
from halocut.compiler.trials import first_volume, run_trial
from halocut.compiler.prepare import prepare_model

TOPOLOGIES = ["examples/topologies/default.yaml", "examples/topologies/distredge-da.yaml"]


@pytest.mark.parametrize("model, shape", [
    ("lraspp_mobilenet_v3_large", (1, 3, 96, 96)),  # segmentation head interpolating back to the input size
    ("squeezenet1_1", (1, 3, 96, 96)),
    ("unet", None),  # GroupNorm, SiLU, SE, ConvTranspose2d, bilinear upsampling, skip concats
    ("fpn_detector", None),  # Hardswish, GELU, nearest upsampling, top-down adds, a concatenated head
    ("srnet", None),  # pixel shuffle, bicubic, ConvTranspose2d, bilinear by size: one volume tiles all of it
])
def test_model_goes_through_every_step(model, shape):
    trial = run_trial(model, TOPOLOGIES, shape)
    assert trial.ok, trial.failure
    assert trial.layers > 0 and trial.tiled.startswith(("2x2", "2x1", "1x2")) and trial.compile_s > 0


def test_segmentation_models_load_without_downloads_and_return_the_out_tensor():
    assert set(segmentation_models()) <= set(known_models())
    loaded = load_model("fcn_resnet50", (1, 3, 64, 64))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        direct = loaded.module.model(x)
        assert set(direct) == {"out"}  # no auxiliary head: nothing is dropped
        assert torch.equal(loaded.graph_module(x), direct["out"])


def test_a_failing_step_is_one_line_naming_the_step():
    trial = run_trial("lenet5", ["examples/topologies/no-such.yaml"], compile_plans=False)
    assert not trial.ok and trial.failure.startswith("plan halocut on no-such: ") and "\n" not in trial.failure


def test_the_first_volume_is_closed_and_ends_on_a_feature_map():
    graph = prepare_model("resnet18", (1, 3, 96, 96)).graph
    before, until = first_volume(graph)
    assert before is None and until.startswith("layer")
