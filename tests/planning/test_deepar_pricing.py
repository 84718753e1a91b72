"""Issue 12, item 8: DeePar prices every pair of cuts with its segment tables and simulates only the cheapest; the
price is the simulator's latency, and the plan is the one the exhaustive simulation finds."""

import random

import pytest

from halocut.compiler.prepare import prepare_model
from halocut.planning.planners.deepar import _chain_price, plan_deepar
from halocut.planning.search.cuts import cut_positions, segments_plan
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import load_topology
from tests.support import ROOT


def roles(topology):
    names = {role: [d.name for d in topology.compute_devices() if d.role == role] for role in ("edge", "cloud")}
    return topology.requester.name, names["edge"], names["cloud"]


@pytest.mark.parametrize("model", ["mobilenet_v3_small", "resnet18"])
@pytest.mark.parametrize("topology_name", ["default", "deepar", "hiertrain"])
def test_the_price_is_the_simulated_latency_and_the_plan_the_exhaustive_one(model, topology_name):
    prepared, cost = prepare_model(model, (1, 3, 64, 64)), CostModel()
    topology = load_topology(ROOT / f"examples/topologies/{topology_name}.yaml")
    device, edges, clouds = roles(topology)
    positions = cut_positions(prepared.graph, max_crossing=1)
    price = _chain_price(prepared.graph, topology, cost, [device, *edges, *clouds])

    def latency(bounds, machines):
        plan = segments_plan(prepared.graph, model, prepared.input_shape, list(bounds), list(machines), "deepar")
        return simulate(prepared.graph, plan, topology, cost, requests=1).latency_s

    rng = random.Random(12)
    for _ in range(15):
        k1, k2 = sorted(rng.sample(positions[:-1], 2))
        for choice in (((k1, k2), (device, edges[0], clouds[0])), ((k1,), (device, edges[0])),
                       ((k1, k1), (device, edges[0], clouds[0])), ((), (device,))):
            assert price(choice) == pytest.approx(latency(*choice), rel=1e-9)
    if model == "resnet18":  # every choice simulated, as the planner did before
        last = positions[-1]
        exhaustive = min([latency((), (device,))] + [latency((k1,), (device, e)) for e in edges for k1 in positions
                                                     if k1 < last] +
                         [latency((k1, k2), (device, e, c)) for e in edges for c in clouds for k1 in positions
                          for k2 in positions if k1 <= k2 < last])
        plan = plan_deepar(prepared.graph, model, prepared.input_shape, topology, cost)
        assert simulate(prepared.graph, plan, topology, cost, requests=1).latency_s == pytest.approx(exhaustive)
