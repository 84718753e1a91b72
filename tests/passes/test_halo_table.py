"""Issue 12, item 2: "splittable?" and the halo computation read one rule table, so they cannot disagree, and a
model with one layer that cannot split is still planned, that layer unsplit."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from halocut.compiler.prepare import prepare_model
from halocut.ir.graph import compute_nodes
from halocut.ir.regions import Region
from halocut.passes.halo import compute_halos, has_halo_rule
from halocut.planning import get_planner
from halocut.runtime.reference import verify_plan
from halocut.targets.cost import CostModel
from halocut.targets.topology import load_topology
from tests.support import ROOT


class OddHead(nn.Module):
    """A segmentation-like head: convolutions, a bilinear upsampling by 2, a reflect padding (no halo rule:
    its rows mirror the border), a nearest upsampling."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.up = nn.Conv2d(8, 4, 3)

    def forward(self, x):
        y = F.relu(self.mid(F.relu(self.down(x))))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        y = F.pad(y, (1, 1, 1, 1), mode="reflect")
        y = F.interpolate(self.up(y), scale_factor=2, mode="nearest")
        return y


@pytest.mark.parametrize("model, shape", [(OddHead(), (1, 3, 32, 32)), ("resnet18", (1, 3, 64, 64)),
                                          ("mobilenet_v3_small", (1, 3, 64, 64)), ("yolov2", (1, 3, 96, 96))])
def test_splittable_means_the_halo_of_a_tile_can_be_computed(model, shape):
    graph = prepare_model(model, shape).graph
    for node in compute_nodes(graph):
        if has_halo_rule(node):
            _, _, height, width = node.meta["layer"].output_shape
            compute_halos([node], Region((height // 4, max(height // 2, 1)), (0, width)))  # must not raise


def test_a_model_with_a_layer_that_cannot_split_is_planned_with_it_unsplit():
    prepared = prepare_model(OddHead().eval(), (1, 3, 32, 32))
    odd = next(n for n in compute_nodes(prepared.graph) if n.meta["layer"].attrs.get("mode") == "reflect")
    assert not has_halo_rule(odd)
    topology = load_topology(ROOT / "examples/topologies/distredge-da.yaml")
    for name in ("halocut", "deepthings", "distredge"):
        plan = get_planner(name)(prepared.graph, "odd-head", (1, 3, 32, 32), topology, CostModel())
        stage = next(s for s in plan.stages if odd.name in s.nodes)
        assert stage.kind == "single", (name, stage)
        verify_plan(prepared.graph, plan, original=prepared.module)


def test_inspect_marks_what_splits_and_names_the_rule_that_stops_the_rest():
    from halocut.compiler.inspection import inspect_model

    report = inspect_model(OddHead().eval(), (1, 3, 32, 32)).to_json()
    marks = {layer["kind"] + ("-" + layer["attrs"].get("mode", "") if "mode" in layer["attrs"] else ""):
             (layer["splittable"], layer["why_not"]) for layer in report["layers"]}
    assert marks["conv2d"] == (True, None) and marks["upsample-nearest"] == (True, None)
    assert marks["upsample-bilinear"] == (True, None)
    assert marks["pad-reflect"][0] is False and "no halo rule for mode 'reflect'" in marks["pad-reflect"][1]
    inception = inspect_model("inception_v3", (1, 3, 299, 299)).to_json()
    assert any("AuxLogits" in note for note in inception["notes"])
