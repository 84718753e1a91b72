"""Planners: each plan reproduces the model, and the cut planners search what they claim."""

import json
import subprocess

import pytest

from halocut.compiler.prepare import prepare_model
from halocut.planning import PLANNERS, get_planner
from halocut.planning.search.cuts import crossing, cut_positions
from halocut.ir.segments import plan, row_tiles
from halocut.runtime.reference import verify_plan
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import load_topology

from tests.support import ROOT

TOPOLOGIES = ["hiertrain", "default", "deepar"]


@pytest.fixture(scope="module")
def alexnet():
    return prepare_model("alexnet", (1, 3, 96, 96))


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_every_plan_reproduces_the_model(alexnet, name, topology):
    topo = load_topology(ROOT / f"examples/topologies/{topology}.yaml")
    plan = get_planner(name)(alexnet.graph, "alexnet", alexnet.input_shape, topo, CostModel())
    assert plan.planner == name
    assert not [s for s in plan.stages if (s.kind == "spatial" and len(s.tiles) == 1 and len(s.tiles[0].devices) == 1)
                or (s.kind == "fc" and len(s.clusters) == 1)]  # no split into one part (issue 12, item 7)
    verify_plan(alexnet.graph, plan, original=alexnet.module)


def test_a_split_into_one_part_is_planned_as_a_single_stage():
    """Issue 12, item 7: one tile on one device, or one fc cluster, is a single-device stage; a one-tile stage
    chained over two devices is a real pipeline and stays spatial."""
    lenet = prepare_model("lenet5")
    hand = plan(lenet.graph, "lenet5", lenet.input_shape, [
        ("spatial", "_2", row_tiles(14, 14, [])), ("spatial", "_5", (row_tiles(5, 5, []), ["_4"])),
        ("single", "_6", 2), ("fc", "_8", ("data", [(0, 400)])), ("single", None, 3)], devices=("a", "b", "c", "d"))
    simple = hand.simplified()
    assert [(s.kind, s.device) for s in simple.stages] == [("single", "a"), ("spatial", None), ("single", "c"),
                                                            ("single", "a"), ("single", "d")]
    assert simple.stages[1] == hand.stages[1] and [s.nodes for s in simple.stages] == [s.nodes for s in hand.stages]
    assert verify_plan(lenet.graph, simple, original=lenet.module) <= 1e-4


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_wider_searches_are_never_worse(alexnet, topology):
    topo = load_topology(ROOT / f"examples/topologies/{topology}.yaml")
    latency = {name: simulate(alexnet.graph, get_planner(name)(alexnet.graph, "alexnet", alexnet.input_shape, topo,
                                                              CostModel()), topo, requests=1).latency_s
               for name in PLANNERS}
    assert latency["neurosurgeon"] <= latency["offload"] + 1e-12 or not topo.requester.computes
    assert latency["deepar"] <= latency["offload"] + 1e-12


def test_neurosurgeon_cuts_alexnet_after_its_features_on_slow_links():
    prepared = prepare_model("alexnet")
    topo = load_topology(ROOT / "examples/topologies/hiertrain.yaml")
    plan = get_planner("neurosurgeon")(prepared.graph, "alexnet", prepared.input_shape, topo, CostModel())
    assert [s.device for s in plan.stages] == ["device", "edge"]
    assert plan.stages[0].nodes[-1] == "features_12"  # after the last pool: the smallest tensor before the FCs


def test_cut_positions_include_residual_blocks_and_count_crossings():
    graph = prepare_model("resnet18", (1, 3, 32, 32)).graph
    names = [n.name for n in graph.graph.nodes if n.op.startswith("call")]
    inside_block = names.index("layer1_0_conv2") + 1  # the skip branch and the main branch both cross
    assert crossing(graph, inside_block) == 2 and crossing(graph, names.index("layer1_0_relu_1") + 1) == 1
    assert inside_block in cut_positions(graph, 2) and inside_block not in cut_positions(graph, 1)


def test_plan_command(halocut_cli, cli_env, tmp_path):
    result = subprocess.run([halocut_cli, "plan", "alexnet", "--topology", "examples/topologies/hiertrain.yaml",
                             "--planner", "neurosurgeon", "-o", str(tmp_path / "p.json"), "--json"], cwd=ROOT,
                            capture_output=True, text=True, env=cli_env, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"planner", "latency_s", "throughput_ips", "planning_time_s", "lower_bound_s"} <= set(report)
    assert report["lower_bound_s"] <= report["latency_s"]
    assert json.loads((tmp_path / "p.json").read_text())["planner"] == "neurosurgeon"
    wrong = subprocess.run([halocut_cli, "plan", "alexnet", "--topology", "examples/topologies/hiertrain.yaml",
                            "--planner", "magic"], cwd=ROOT, capture_output=True, text=True, env=cli_env, timeout=300)
    assert wrong.returncode == 2 and f"planners: {', '.join(sorted(PLANNERS))}" in wrong.stderr


def test_layerwise_planners_split_every_splittable_layer_in_proportion():
    from halocut.planning.search.layers import split_rows

    assert split_rows(7, {"a": 1.0, "b": 1.0, "c": 0.0}) == [("a", 0, 4), ("b", 4, 7)]
    assert sum(b - a for _, a, b in split_rows(13, {"a": 0.3, "b": 0.2, "c": 0.5})) == 13
    prepared = prepare_model("vgg11", (1, 3, 32, 32))
    topo = load_topology(ROOT / "examples/topologies/distredge-db.yaml")
    plan = get_planner("modnn")(prepared.graph, "vgg11", prepared.input_shape, topo, CostModel())
    first = plan.stages[0]
    assert first.kind == "spatial" and 1 < len(first.tiles) <= len(topo.compute_devices())
    peaks = {d.name: d.peak_flops for d in topo.compute_devices()}
    rows = {t.devices[0].device: t.region.height for t in first.tiles}
    fastest, slowest = max(peaks, key=peaks.get), min(peaks, key=peaks.get)
    assert rows[fastest] > rows.get(slowest, 0)
    assert all(s.kind == "single" for s in plan.stages if s.nodes[0].startswith("classifier"))
