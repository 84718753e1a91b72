"""Fused-volume planners (deepthings, deeperthings, aofl): equivalence, and what each one claims to search."""

import itertools
import random

import pytest
from torch import nn

from halocut.compiler.prepare import prepare_model
from halocut.planning import get_planner
from halocut.planning.planners.fused import LinearModel, fused_volumes_plan
from halocut.planning.search.layers import split_rows
from halocut.planning.search.volume_search import VolumeFlows, chain_partition
from halocut.planning.search.volumes import (
    equal_grid,
    even_spans,
    grid_shape,
    largest_tile_device,
    output_size,
    providers,
    row_tiling,
    segments,
)
from halocut.runtime.reference import verify_plan
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import load_topology

from tests.support import ROOT
from tests.support.plans import grid_tiles
from tests.support.plans import plan as manual_plan

PLANNERS = ["deepthings", "deeperthings", "aofl"]

# Two Raspberry Pi 4 on unequal links and a Pi 3: compute-bound enough that AOFL splits work.
PIS = """
name: pis
devices:
  - {name: requester, role: requester, kind: rpi3b}
  - {name: pi4-fast, role: device, kind: rpi4}
  - {name: pi4-slow, role: device, kind: rpi4}
  - {name: pi3, role: device, kind: rpi3b}
links:
  - {between: [requester, pi4-fast], bandwidth: 1Gbps, latency: 1ms}
  - {between: [requester, pi4-slow], bandwidth: 100Mbps, latency: 1ms}
  - {between: [requester, pi3], bandwidth: 1Gbps, latency: 1ms}
"""


def topology(name):
    return load_topology(ROOT / f"examples/topologies/{name}.yaml")


@pytest.fixture(scope="module")
def models():
    return {"vgg11": prepare_model("vgg11", (1, 3, 64, 64)), "resnet18": prepare_model("resnet18", (1, 3, 32, 32))}


@pytest.fixture(scope="module")
def vgg11(models):
    return models["vgg11"]


@pytest.fixture(scope="module")
def pis(tmp_path_factory):
    path = tmp_path_factory.mktemp("topo") / "pis.yaml"
    path.write_text(PIS)
    return load_topology(path)


@pytest.mark.parametrize("name, model, topo", [(name, model, topo) for name in PLANNERS for model, topo in
                                                [("vgg11", "distredge-db"), ("resnet18", "distredge-dc")]]
                         + [("deepthings", "vgg11", "distredge-la")])
def test_fused_plans_reproduce_the_model(models, name, model, topo):
    prepared = models[model]
    plan = get_planner(name)(prepared.graph, model, prepared.input_shape, topology(topo), CostModel())
    assert plan.planner == name and (name == "aofl" or any(s.kind == "spatial" for s in plan.stages))
    verify_plan(prepared.graph, plan, original=prepared.module)


def test_grids_are_as_square_as_the_device_count_allows():
    assert [grid_shape(n) for n in (1, 2, 4, 5, 6, 16)] == [(1, 1), (2, 1), (2, 2), (5, 1), (3, 2), (4, 4)]
    assert even_spans(7, 4) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    cells = equal_grid(3, 3, [f"d{i}" for i in range(16)])  # a 4x4 grid does not fit 3x3: one cell per position
    assert len(cells) == 9 and [d for _, d in cells] == [f"d{i}" for i in range(9)]


def test_chain_partition_is_the_exhaustive_optimum():
    generator = random.Random(3)
    for _ in range(20):
        count = generator.randint(1, 7)
        table = {(p, v): generator.random() for p in [None, *itertools.combinations(range(count + 1), 2)]
                 for v in itertools.combinations(range(count + 1), 2)}
        ends = {v: generator.random() for v in itertools.combinations(range(count + 1), 2)}
        banned = {v for v in ends if v[1] - v[0] > 1 and generator.random() < 0.3}
        best = min((sum(table[p, v] for p, v in zip([None, *chain], chain)) + ends[chain[-1]], chain)
                   for chain in _compositions(count) if not banned & set(chain))
        value, chain = chain_partition(count, lambda a, b: (a, b) not in banned, lambda p, v: table[p, v],
                                       lambda v: ends[v])
        assert chain == best[1] and value == pytest.approx(best[0])


def _compositions(count):
    for mask in range(1 << (count - 1)):
        edges = [0, *[k for k in range(1, count) if mask >> (k - 1) & 1], count]
        yield list(zip(edges, edges[1:]))


def test_deepthings_fuses_the_first_layers_on_an_equal_grid_and_keeps_the_fastest_depth(vgg11):
    topo = topology("distredge-db")
    plan = get_planner("deepthings")(vgg11.graph, "vgg11", vgg11.input_shape, topo, CostModel())
    volume, rest = plan.stages
    assert volume.kind == "spatial" and volume.nodes[0] == "features_0"
    assert sorted(t.devices[0].device for t in volume.tiles) == ["nano-0", "nano-1", "xavier-0", "xavier-1"]
    assert len({t.region.rows for t in volume.tiles}) == 2 and len({t.region.cols for t in volume.tiles}) == 2
    assert rest.kind == "single" and rest.device == "requester"  # the gateway gathers and runs the rest
    latency = simulate(vgg11.graph, plan, topo, requests=1).latency_s
    devices = ("xavier-0", "xavier-1", "nano-0", "nano-1", "requester")
    for last, size in [("features_1", 64), ("features_20", 2)]:  # fuse the first conv only / every conv layer
        cut = even_spans(size, 2)[0][1]
        other = manual_plan(vgg11.graph, "vgg11", vgg11.input_shape,
                            [("spatial", last, grid_tiles(size, size, [cut], [cut])), ("single", None, 4)], devices)
        assert latency <= simulate(vgg11.graph, other, topo, requests=1).latency_s + 1e-12


@pytest.mark.parametrize("channels, volumes", [((3, 64, 3), 1), ((64, 1, 64), 2)])
def test_deeperthings_fuses_across_wide_tensors_and_cuts_at_narrow_ones(channels, volumes):
    outer, inner, last = channels
    module = nn.Sequential(nn.Conv2d(outer, inner, 3, padding=1), nn.ReLU(), nn.Conv2d(inner, last, 3, padding=1))
    prepared = prepare_model(module, (1, outer, 16, 16))
    topo = topology("distredge-da")
    plan = get_planner("deeperthings")(prepared.graph, "m", prepared.input_shape, topo, CostModel())
    assert [s.kind for s in plan.stages] == ["spatial"] * volumes
    workers = [d.name for d in providers(topo)]
    for stage in plan.stages:  # every volume an equal 2x2 grid over the four providers, in the same order
        assert [(t.region, t.devices[0].device) for t in stage.tiles] == list(equal_grid(16, 16, workers))
    verify_plan(prepared.graph, plan, original=prepared.module)


def test_aofl_splits_rows_by_its_linear_ratio_over_the_fastest_providers(vgg11, pis):
    prepared = vgg11
    plan = get_planner("aofl")(prepared.graph, "vgg11", prepared.input_shape, pis, CostModel())
    linear = LinearModel(prepared.graph, pis, CostModel())
    nodes = {n.name: n for n in prepared.graph.graph.nodes}
    spatial = [s for s in plan.stages if s.kind == "spatial"]
    assert spatial and all(s.device == "pi4-fast" for s in plan.stages if s.kind == "single")
    for stage in spatial:
        used = [t.devices[0].device for t in stage.tiles]
        assert used == ["pi4-fast", "pi4-slow"]  # the Pi 3 is left out: the degree of parallelism is 2
        volume = [nodes[n] for n in stage.nodes]
        height, width = output_size(volume)
        weights = {d: linear.row_weight(d, volume) for d in used}
        assert weights["pi4-fast"] > weights["pi4-slow"]  # same chip, faster link
        expected = [(d, a, b) for d, a, b in split_rows(height, weights)]
        assert [(t.devices[0].device, *t.region.rows) for t in stage.tiles] == expected
        assert all(t.region.cols == (0, width) for t in stage.tiles)
    verify_plan(prepared.graph, plan, original=prepared.module)


def test_aofl_volumes_are_the_exhaustive_optimum_of_its_estimate(pis):
    prepared = prepare_model("alexnet", (1, 3, 96, 96))
    linear = LinearModel(prepared.graph, pis, CostModel())
    chosen = ["pi4-fast", "pi4-slow"]

    def tiling_of(nodes):
        return row_tiling(*output_size(nodes), {d: linear.row_weight(d, nodes) for d in chosen})

    value, plan = fused_volumes_plan(prepared.graph, "alexnet", prepared.input_shape, pis, tiling_of, linear.weigh,
                                     linear.seconds, "aofl")
    features, tail = segments(prepared.graph)
    flows = VolumeFlows(prepared.graph, features, tiling_of, "requester")

    def estimate(chain):
        sink = largest_tile_device(flows.tiles(chain[-1])[0], pis)
        return sum(linear.weigh(flows, flows.fetches(p, v), v) for p, v in zip([None, *chain], chain)) + \
            linear.weigh(flows, flows.delivery(chain[-1], sink), None) + linear.seconds(tail.nodes(), sink)

    totals = sorted((estimate(chain), chain) for chain in _compositions(len(features.groups)))
    assert value == pytest.approx(totals[0][0])
    assert [s.nodes[-1] for s in plan.stages[:-1]] == [features.nodes(*v)[-1].name for v in totals[0][1]]
