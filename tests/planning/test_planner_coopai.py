"""sls and mls (CoopAI, paper 001): plans reproduce the model; the DP, grids, G/k and block times are as claimed."""

import numpy as np
import pytest
from torch import nn

from halocut.compiler.frontend import load_model
from halocut.compiler.prepare import prepare_model
from halocut.ir.layers import annotate_layers, value_bytes
from halocut.passes.halo import compute_halos
from halocut.planning import get_planner
from halocut.planning.planners.coopai import code_devices, recurrence, solve
from halocut.planning.search.coopai_blocks import Blocks
from halocut.planning.search.coopai_units import bandwidths, coopai_units, grid_regions
from halocut.runtime.reference import verify_plan
from halocut.targets.cost import CostModel
from halocut.targets.topology import load_topology

from tests.support import ROOT


def topology(name):
    return load_topology(ROOT / f"examples/topologies/{name}.yaml")


@pytest.fixture(scope="module")
def alexnet():
    return prepare_model("alexnet", (1, 3, 96, 96))


@pytest.mark.parametrize("where", ["coopai-rpi4x4", "default"])
@pytest.mark.parametrize("name", ["sls", "mls"])
def test_plans_reproduce_the_model(alexnet, name, where):
    plan = get_planner(name)(alexnet.graph, "alexnet", alexnet.input_shape, topology(where), CostModel())
    assert plan.planner == name
    verify_plan(alexnet.graph, plan, original=alexnet.module)


def test_mls_on_yolov2_keeps_the_passthrough_branch_whole():
    prepared = prepare_model("yolov2", (1, 3, 96, 96))
    plan = get_planner("mls")(prepared.graph, "yolov2", prepared.input_shape, topology("coopai-rpi4x4"), CostModel())
    assert {s.kind for s in plan.stages} == {"spatial"} and len(plan.devices()) > 1
    verify_plan(prepared.graph, plan, original=prepared.module)


def test_recurrence_takes_the_cheapest_blocks_and_fewer_on_ties():
    times = {(0, 0): (1.0, ""), (1, 1): (1.0, ""), (2, 2): (1.0, ""), (0, 1): (1.5, ""), (1, 2): (1.2, "")}
    assert recurrence(times, 3) == (2.2, [(0, 0, ""), (1, 2, "")])  # 1 + 1.2 beats 1.5 + 1 and 1 + 1 + 1
    times[(0, 1)] = (1.2, "hybrid")
    assert recurrence(times, 3) == (2.2, [(0, 1, "hybrid"), (2, 2, "")])  # a tie: either; this one was found first
    times[(0, 2)] = (2.2, "")
    assert recurrence(times, 3) == (2.2, [(0, 2, "")])  # a tie with fewer blocks wins
    assert recurrence({(0, 0): (1.0, "")}, 2)[0] == float("inf")


def test_grids_cover_the_map_once_and_line_up_across_resolutions():
    for count in range(1, 11):
        for height, width in [(224, 224), (19, 19), (7, 7), (13, 20)]:
            tiles = grid_regions(height, width, count)
            covered = np.zeros((height, width), dtype=int)
            for tile in tiles:
                covered[tile.rows[0]:tile.rows[1], tile.cols[0]:tile.cols[1]] += 1
            assert len(tiles) == count and (covered == 1).all()
        bands = [len({t.rows for t in grid_regions(size, size, count)}) for size in (224, 112, 56, 28, 14)]
        assert len(set(bands)) == 1, (count, bands)  # the same layout at every resolution
    assert len({t.rows for t in grid_regions(224, 224, 3)}) == 3  # few devices: the paper's horizontal slices
    assert grid_regions(2, 2, 5) is None


def test_devices_share_the_gateway_bandwidth():
    topo = topology("coopai-rpi4x4")
    devices = [topo.device(f"pi-{i}") for i in range(4)]
    for k in range(1, 5):
        assert bandwidths(topo, "camera", devices[:k]) == [100e6 / k] * k  # G/k
    distredge = topology("distredge-nd")  # own links, no shared medium: each device keeps its own rate
    assert sorted(bandwidths(distredge, distredge.requester.name, distredge.compute_devices()[1:])) == \
        [50e6, 100e6, 200e6, 300e6]


def _chain():
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU(),
                           nn.Conv2d(8, 8, 3, padding=1))
    loaded = load_model(module, (1, 3, 8, 8))
    annotate_layers(loaded.graph_module, (1, 3, 8, 8))
    return loaded.graph_module


def test_block_times_follow_eqs_3_to_5_on_a_hand_computed_chain():
    graph, topo, cost = _chain(), topology("coopai-rpi4x2"), CostModel()
    devices = code_devices(graph, topo, cost)
    units = coopai_units(graph)
    assert [(u.kind, len(u.nodes)) for u in units] == [("conv", 2), ("conv", 2), ("conv", 1)]
    times = Blocks(graph, units, devices, {2: [50e6, 50e6]}, cost).table(2)
    halves = grid_regions(8, 8, 2)
    assert [t.rows for t in halves] == [(0, 4), (4, 8)]

    def compute(unit_range, t):
        volume = [n for u in unit_range for n in units[u].nodes]
        return sum(cost.nodes_latency(devices[t], list(units[u].nodes), compute_halos(volume, halves[t]))
                   for u in unit_range)

    row = 8 * 8 * 4  # one row of an 8-channel 8x8 map, float32
    # the input comes from the gateway: rows 0..5 (halo included) of 3 channels, nothing to upload
    assert times[(0, 0)][0] == pytest.approx(max(compute([0], t) + 5 * 3 * 8 * 4 * 8 / 50e6 for t in range(2)))
    # a 1x1 conv on the same grid: nothing moves (its output goes to the next conv block later)
    assert times[(1, 1)][0] == pytest.approx(max(compute([1], t) for t in range(2)))
    # the last 3x3 conv: one halo row in, one row of its own older tile out, its output tile to the gateway
    assert times[(2, 2)][0] == pytest.approx(max(compute([2], t) + (row + row + 4 * row) * 8 / 50e6 for t in range(2)))
    # a 1x1 conv grows no halo: with it in the round, the same row comes in (of its input) and goes out
    assert times[(1, 2)][0] == pytest.approx(max(compute([1, 2], t) + (row + row + 4 * row) * 8 / 50e6
                                                 for t in range(2)))
    # prefetching: the whole chain in one round fetches a two-row halo of the model's input, nothing else
    assert times[(0, 2)][0] == pytest.approx(max(compute([0, 1, 2], t) + (6 * 3 * 8 * 4 + 4 * row) * 8 / 50e6
                                                 for t in range(2)))


def test_fc_blocks_pick_the_cheaper_mode_and_mls_never_loses_to_sls_by_the_model():
    prepared = prepare_model("lenet5")
    graph, topo, cost = prepared.graph, topology("coopai-rpi4x4"), CostModel()
    units, mls = solve(graph, topo, cost)
    _, sls = solve(graph, topo, cost, max_macs=1)
    assert set(mls.times_s) == set(sls.times_s) == {1, 2, 3, 4}
    assert all(mls.times_s[k] <= sls.times_s[k] + 1e-12 for k in mls.times_s)
    for k in range(2, 5):
        assert all(sum(u.macs for u in units[i:j + 1]) <= 1 for i, j, _ in sls.blocks_by_k[k])
        assert "hybrid" not in [m for *_, m in sls.blocks_by_k[k]]
    assert "hybrid" in [m for *_, m in mls.blocks_by_k[mls.k]]
    fc = [u for u, unit in enumerate(units) if unit.kind == "fc"][0]
    devices = code_devices(graph, topo, cost)
    table = Blocks(graph, units, devices, {2: [50e6, 50e6]}, cost).table(2)
    linear, source = units[fc].nodes[0], units[fc].nodes[0].all_input_nodes[0]
    compute = cost.latency(devices[0], linear.meta["layer"]) / 2
    model = compute + (value_bytes(source) + value_bytes(units[fc].nodes[-1]) / 2) * 8 / 50e6
    data = compute + (value_bytes(source) / 2 + value_bytes(units[fc].nodes[-1])) * 8 / 50e6
    assert table[(fc, fc)][0] == pytest.approx(min(model, data))
    assert table[(fc, fc)][1] == ("model" if model < data else "data")


def test_one_device_runs_the_whole_model_as_one_block():
    prepared = prepare_model("lenet5")
    topo, cost = topology("coopai-rpi4x1"), CostModel()
    plan = get_planner("mls")(prepared.graph, "lenet5", prepared.input_shape, topo, cost)
    assert [(s.kind, s.device) for s in plan.stages] == [("single", "pi-0")]
    units, solution = solve(prepared.graph, topo, cost)
    moved = value_bytes(next(n for n in prepared.graph.graph.nodes if n.op == "placeholder")) + 10 * 4
    compute = cost.nodes_latency(topo.device("pi-0"), [n for u in units for n in u.nodes])
    assert solution.times_s == {1: pytest.approx(compute + moved * 8 / 100e6)} and solution.rounds(units) == 1
