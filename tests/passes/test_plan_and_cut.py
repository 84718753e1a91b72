"""The Plan contract (JSON round trip, validation) and the cutter's refusals."""

import json

import pytest
import torch
from torch import nn

from halocut.ir.errors import HalocutError
from halocut.ir.plan import Plan, single_device_plan
from halocut.ir.regions import Region
from halocut.passes.cut import cut_stages
from halocut.passes.slice import slice_fc, slice_stage
from halocut.runtime.reference import verify_plan

from tests.support.plans import analysed, grid_tiles, names, plan, row_tiles, shape_of


@pytest.fixture(scope="module")
def vgg():
    return analysed("vgg11", (1, 3, 32, 32))


def test_plan_round_trips_through_json_file(vgg, tmp_path):
    p = plan(vgg, "vgg11", (1, 3, 32, 32), [
        ("spatial", "features_2", (row_tiles(16, 16, [3, 9]), ["features_1"])),
        ("single", "flatten", 1), ("fc", "classifier_5", ("hybrid", [(0, 100), (100, 4096)])),
        ("fc", None, ("data", [(0, 7), (7, 4096)]))])
    p.save(tmp_path / "plan.json")
    loaded = Plan.load(tmp_path / "plan.json")
    assert loaded == p
    assert json.loads((tmp_path / "plan.json").read_text())["format"] == "halocut-plan/1"
    verify_plan(vgg, loaded)


def test_cut_stages_pass_residual_branches_across_the_cut():
    gm = analysed("resnet18", (1, 3, 32, 32))
    stages = cut_stages(gm, ["layer1_0_bn2", "layer3_1_relu_1"])
    assert stages[1].inputs == ("layer1_0_bn2", "maxpool")  # the skip branch crosses
    assert "maxpool" in stages[0].outputs
    x = torch.randn(1, 3, 32, 32)
    values = {"x": x}
    for stage in stages:
        values.update(stage(values))
        assert all(n.op != "placeholder" or n.name in stage.inputs for n in stage.module.graph.nodes)
    torch.testing.assert_close(values[stages[-1].outputs[0]], gm(x))


BAD_CUTS = [
    (["nope"], "cannot cut after 'nope': no such node"),
    (["x"], "cannot cut after 'x': it is a placeholder node, not a layer"),
    (["features_3", "features_1"], "must be distinct and in graph order"),
    (["classifier_6"], "it is the last layer"),
]


@pytest.mark.parametrize("points,message", BAD_CUTS)
def test_impossible_cuts_are_refused(vgg, points, message):
    with pytest.raises(HalocutError, match=message):
        cut_stages(vgg, points)


def test_callback_that_reads_from_a_later_stage_is_refused(vgg):
    order = names(vgg)
    with pytest.raises(HalocutError, match="reads 'features_0' from the later stage 1"):
        cut_stages(vgg, lambda node: 1 if node.name == "features_0" else 0)
    with pytest.raises(HalocutError, match="expected an int >= 0"):
        cut_stages(vgg, lambda node: -1)
    assert len(cut_stages(vgg, lambda node: int(order.index(node.name) >= 3))) == 2


def test_impossible_tilings_are_refused(vgg):
    height, width = shape_of(vgg, "features_2")[-2:]
    with pytest.raises(HalocutError, match="covers nothing"):
        slice_stage(vgg, ["features_0", "features_1", "features_2"], [Region((3, 3), (0, width))])
    too_many = [Region((i, i + 1), (0, width)) for i in range(height + 1)]
    with pytest.raises(HalocutError, match="lies outside"):
        slice_stage(vgg, ["features_0", "features_1", "features_2"], too_many)
    with pytest.raises(HalocutError, match=r"'features_5' \(adaptive|depends on its whole input"):
        slice_stage(vgg, names(vgg)[:names(vgg).index("avgpool") + 1], [Region((0, 1), (0, 1))])
    with pytest.raises(HalocutError, match="no node named 'ghost'"):
        slice_stage(vgg, ["ghost"], [Region((0, 1), (0, 1))])


def test_node_used_outside_a_spatial_volume_is_refused():
    gm = analysed("resnet18", (1, 3, 32, 32))
    with pytest.raises(HalocutError, match="'maxpool' inside the spatial volume is also used by"):
        slice_stage(gm, ["conv1", "bn1", "relu", "maxpool", "layer1_0_conv1"], [Region((0, 8), (0, 8))])


PLAN_ERRORS = [
    (lambda d: d.pop("stages"), "top level: 'stages' is a required property"),
    (lambda d: d["stages"][0].update(kind="diagonal"), r"stages\[0\].kind: 'diagonal' is not one of"),
    (lambda d: d["stages"][0]["tiles"][0].update(rows=[1]), r"stages\[0\].tiles\[0\].rows: \[1\] is too short"),
    (lambda d: d["stages"][1].pop("device"), r"stages\[1\]: 'device' is a required property"),
    (lambda d: d["stages"][2]["clusters"][0].update(features=[0, -3]), r"stages\[2\].clusters\[0\].features\[1\]: -3 is less than"),
]


@pytest.mark.parametrize("edit,message", PLAN_ERRORS)
def test_malformed_plan_json_names_the_field(vgg, edit, message):
    data = plan(vgg, "vgg11", (1, 3, 32, 32), [("spatial", "features_2", row_tiles(16, 16, [8])),
                                               ("single", "flatten", 1),
                                               ("fc", None, ("model", [(0, 10), (10, 4096)]))]).to_json()
    edit(data)
    with pytest.raises(HalocutError, match=f"plan.json: {message}"):
        Plan.from_json(data, "plan.json")


def test_semantic_plan_errors(vgg):
    order = names(vgg)

    def check(segments, message, devices=None):
        with pytest.raises(HalocutError, match=message):
            plan(vgg, "vgg11", (1, 3, 32, 32), segments).validate(vgg, devices)

    check([("spatial", "features_2", row_tiles(16, 16, [4]) + [Region((3, 5), (0, 16))]), ("single", None, 0)],
          r"output position \(3, 0\) is covered 2 times")
    check([("spatial", "features_2", grid_tiles(16, 16, [8], [8])[:3]), ("single", None, 0)],
          r"output position \(8, 8\) is covered 0 times")
    check([("single", None, 0)], "unknown device 'd0'", devices={"pi4-0"})
    check([("spatial", "features_2", (row_tiles(16, 16, [8]), ["classifier_0"])), ("single", None, 0)],
          "until 'classifier_0' is not a layer of this stage")
    whole = single_device_plan(vgg, "vgg11", (1, 3, 32, 32), "d0")
    partial = Plan("vgg11", (1, 3, 32, 32), (whole.stages[0].__class__("single", tuple(order[:-1]), "d0"),))
    with pytest.raises(HalocutError, match="layers in no stage: classifier_6"):
        partial.validate(vgg)


def test_fc_clusters_refuse_bad_ranges_and_shapes(vgg):
    fcs = ["classifier_0", "classifier_1", "classifier_2", "classifier_3"]
    with pytest.raises(HalocutError, match=r"cover 0..4000, not 0..4096"):
        slice_fc(vgg, fcs[:1], "model", [(0, 4000)])
    with pytest.raises(HalocutError, match="must be non-empty, in order"):
        slice_fc(vgg, fcs[:1], "data", [(0, 10), (5, 25088)])
    with pytest.raises(HalocutError, match="mode 'model' takes 1 linear"):
        slice_fc(vgg, fcs, "model", [(0, 4096)])
    with pytest.raises(HalocutError, match="fc mode 'diagonal'"):
        slice_fc(vgg, fcs[:1], "diagonal", [(0, 4096)])


def test_fc_modes_match_the_unsplit_layers():
    gm = analysed(nn.Sequential(nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 5), nn.Sigmoid()), (3, 12))
    x = torch.randn(3, 12)
    reference = gm(x)
    for mode, spans in [("hybrid", [(0, 1), (1, 5), (5, 9)])]:
        part = slice_fc(gm, ["_0", "_1", "_2", "_3"], mode, spans)
        torch.testing.assert_close(part.merge(*(c(x) for c in part.clusters)), reference)
    first = gm.get_submodule("0")(x)
    for mode, spans in [("model", [(0, 4), (4, 9)]), ("data", [(0, 2), (2, 3), (3, 12)])]:
        part = slice_fc(gm, ["_0"], mode, spans)
        inputs = [x if s is None else x[..., s[0]:s[1]] for s in part.input_features]
        torch.testing.assert_close(part.merge(*(c(i) for c, i in zip(part.clusters, inputs))), first)


def test_plans_the_simulator_would_misread_are_refused(vgg):
    from halocut.ir.plan import Cluster, Hop, Stage, Tile

    order = names(vgg)
    head = order[:order.index("features_2") + 1]
    rest = tuple(order[len(head):])

    def stage_plan(first, *others):
        return Plan("vgg11", (1, 3, 32, 32), (first, *others))

    tiles = (Tile(Region((0, 16), (0, 16)), (Hop("d0", "features_2"), Hop("d1"))),)
    with pytest.raises(HalocutError, match="until layers must be distinct, in graph order, and before"):
        stage_plan(Stage("spatial", tuple(head), tiles=tiles), Stage("single", rest, "d0")).validate(vgg)
    tiles = (Tile(Region((0, 16), (0, 16)), (Hop("d0", "features_1"), Hop("d1", "features_0"), Hop("d0"))),)
    with pytest.raises(HalocutError, match="until layers must be distinct, in graph order"):
        stage_plan(Stage("spatial", tuple(head), tiles=tiles), Stage("single", rest, "d0")).validate(vgg)
    fc_start = order.index("classifier_0")
    short = Stage("fc", ("classifier_0",), mode="model", clusters=(Cluster((0, 2), "d0"),))
    with pytest.raises(HalocutError, match=r"stages\[1\]: .*cover 0..2, not 0..4096"):
        stage_plan(Stage("single", tuple(order[:fc_start]), "d0"), short,
                   Stage("single", tuple(order[fc_start + 1:]), "d0")).validate(vgg)
    escaping = Stage("spatial", tuple(order[:2]), tiles=(Tile(Region((0, 32), (0, 32)), (Hop("d0"),)),))
    graph = analysed("resnet18", (1, 3, 32, 32))
    r18 = names(graph)
    with pytest.raises(HalocutError, match="'maxpool' inside the spatial volume is also used by"):
        Plan("r", (1, 3, 32, 32), (Stage("spatial", tuple(r18[:5]), tiles=(Tile(Region((0, 8), (0, 8)), (Hop("d0"),)),)),
                                   Stage("single", tuple(r18[5:]), "d0"))).validate(graph)
    assert escaping.kind == "spatial"


def test_ops_without_a_correct_halo_rule_are_refused():
    import torch.nn.functional as F
    from torch import nn

    from halocut.passes.halo import compute_halos

    class Reflect(nn.Module):
        def forward(self, x):
            return F.pad(x, (1, 1, 1, 1), mode="reflect")

    cases = [(nn.AvgPool2d(2, divisor_override=1), "divisor_override"), (Reflect(), "mode 'reflect'"),
             (nn.Upsample(size=(16, 16), mode="area"), "mode 'area'"),
             (nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular"), "padding_mode 'circular'")]
    for module, message in cases:
        gm = analysed(nn.Sequential(nn.Conv2d(1, 1, 1), module), (1, 1, 8, 8))
        nodes = [n for n in gm.graph.nodes if n.op.startswith("call")]
        height, width = nodes[-1].meta["tensor_meta"].shape[-2:]
        with pytest.raises(HalocutError, match=message):
            compute_halos(nodes, Region((0, 1), (0, width)))
