"""Hand-worked pricing cases of the halocut planner's DP (issue 15 items 1 and 2)."""

import torch.nn as nn

from halocut.compiler.prepare import prepare_model
from halocut.planning.planners.halocut import plan_halocut
from halocut.planning.search.boundary_dp import BoundarySearch, Step
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import parse_topology


def _behind_one_link(count: int) -> object:
    """A requester whose one 100 Mbps, 2 ms link reaches a switch with ``count`` Xaviers on 1 Gbps."""
    devices = [{"name": "requester", "role": "requester", "kind": "rpi3b"}, {"name": "switch", "role": "gateway"}]
    devices += [{"name": f"x-{k}", "role": "device", "kind": "jetson-agx-xavier"} for k in range(count)]
    links = [{"between": ["requester", "switch"], "bandwidth": "100Mbps", "latency": "2ms"}]
    links += [{"between": ["switch", f"x-{k}"], "bandwidth": "1Gbps", "latency": "0.1ms"} for k in range(count)]
    return parse_topology({"name": "one-link", "devices": devices, "links": links}, "one-link")


def test_an_fc_split_behind_one_link_pays_for_its_queued_messages():
    """2048 -> 1000 (4 MFLOP) over 10 devices: 10 inputs of 8 KB queue on the requester's link at 2 ms each, so
    the estimate must be at least 10 x 2 ms and agree with the simulated stage."""
    prepared = prepare_model(nn.Sequential(nn.Flatten(), nn.Linear(2048, 1000)), (1, 2048, 1, 1))
    topology = _behind_one_link(10)
    search = BoundarySearch(prepared.graph, topology, topology.compute_devices(), CostModel())
    i = next(p for p in search.positions if search.is_fc(p, len(search.nodes)))
    estimate, clusters = search.fc_split(i, len(search.nodes), "requester")
    steps = ([Step(0, i, "requester", device="requester")] if i else []) + \
        [Step(i, len(search.nodes), "requester", clusters=clusters)]
    plan = search.build("fc", prepared.input_shape, steps)
    simulated = simulate(prepared.graph, plan, topology, requests=1).latency_s
    if len(clusters) > 1:
        assert estimate >= 0.8 * simulated
    best = plan_halocut(prepared.graph, "fc", prepared.input_shape, topology, CostModel(), safety_net=False)
    alone = min(simulate(prepared.graph, search.build("fc", prepared.input_shape,
                                                      [Step(0, len(search.nodes), d.name, device=d.name)]),
                         topology, requests=1).latency_s for d in topology.compute_devices())
    assert simulate(prepared.graph, best, topology, requests=1).latency_s <= alone * (1 + 1e-9)


def test_a_spread_volumes_halo_is_priced_over_the_route_through_the_requester():
    """On a star every device-to-device message is relayed: the halo link has two hops' latency."""
    prepared = prepare_model("lenet5")
    devices = [{"name": "requester", "role": "requester", "kind": "rpi4"}]
    devices += [{"name": f"n-{k}", "role": "device", "kind": "jetson-nano"} for k in range(3)]
    links = [{"between": ["requester", f"n-{k}"], "bandwidth": "50Mbps", "latency": "3ms"} for k in range(3)]
    topology = parse_topology({"name": "star", "devices": devices, "links": links}, "star")
    search = BoundarySearch(prepared.graph, topology, topology.compute_devices(), CostModel())
    assert abs(search.link("n-1", "n-0", shared=True)[0] - 0.006) < 1e-9  # two hops, each with its latency
    fixed, per_byte = search.halo_link("n-0")  # the nearest neighbour tile may be the requester's own: one hop
    assert abs(fixed - 0.003) < 1e-9 and abs(per_byte - 8 / 50e6) < 1e-15


def test_pipelined_offload_candidates_are_distinct_plans():
    from halocut.planning.search.pipeline import pipeline_plans
    from halocut.targets.topology import load_topology

    from tests.support import ROOT

    prepared = prepare_model("alexnet", (1, 3, 96, 96))
    topology = load_topology(ROOT / "examples/topologies/mw.yaml")
    search = BoundarySearch(prepared.graph, topology, topology.compute_devices(), CostModel())
    plans = pipeline_plans(search, "alexnet", prepared.input_shape)
    assert len(plans) == 6 and len({p.stages for p in plans}) == len(plans)


def test_refine_merges_two_volumes_on_the_same_devices_when_that_is_faster():
    """Two row-tiled volumes on the same two Xaviers of a slow star: merged, the halo exchange between them (two
    10 ms hops through the requester) disappears for a little recomputed halo."""
    from halocut.ir.plan import Hop, Plan, Stage, Tile
    from halocut.ir.regions import Region
    from halocut.planning.planners.halocut import refine, structural_moves

    prepared = prepare_model("lenet5")
    devices = [{"name": "requester", "role": "requester", "kind": "rpi3b"}]
    devices += [{"name": f"x-{k}", "role": "device", "kind": "jetson-agx-xavier"} for k in range(2)]
    links = [{"between": ["requester", f"x-{k}"], "bandwidth": "20Mbps", "latency": "10ms"} for k in range(2)]
    topology = parse_topology({"name": "slow-star", "devices": devices, "links": links}, "slow-star")
    search = BoundarySearch(prepared.graph, topology, topology.compute_devices(), CostModel())
    cuts = [p for p in search.positions if 0 < p < len(search.nodes) and search.is_volume(0, p)]
    first = cuts[0]
    second = max(p for p in cuts if p > first and search.is_volume(first, p))
    names = [n.name for n in search.nodes]

    def tiles(end):
        h, w = tuple(search.nodes[end - 1].meta["tensor_meta"].shape)[2:]
        return tuple(Tile(Region(r, (0, w)), (Hop(d),)) for r, d in (((0, h // 2), "x-0"), ((h // 2, h), "x-1")))

    plan = Plan("lenet5", prepared.input_shape, (
        Stage("spatial", tuple(names[:first]), tiles=tiles(first)),
        Stage("spatial", tuple(names[first:second]), tiles=tiles(second)),
        Stage("single", tuple(names[second:]), device="x-0")))
    before = simulate(prepared.graph, plan, topology, requests=1).latency_s
    assert len(structural_moves(plan)) == 1
    merged = structural_moves(plan)[0]
    after = simulate(prepared.graph, merged, topology, requests=1).latency_s
    refined = refine(prepared.graph, plan, topology, CostModel(), before)
    assert simulate(prepared.graph, refined, topology, requests=1).latency_s <= min(before, after) + 1e-12
    assert after < before  # hand-worked: the merged volume skips one halo round trip through the switch
    assert len(refined.stages) == 2
