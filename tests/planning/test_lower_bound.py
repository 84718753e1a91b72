"""The LP lower bound never exceeds any plan's simulated latency, and beats the old all-devices-at-once bound."""

import pytest

from halocut.compiler.prepare import prepare_model
from halocut.planning import PLANNERS, get_planner
from halocut.planning.search.lower_bound import least_latency, work_lower_bound
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import load_topology

from tests.support import ROOT


@pytest.mark.parametrize("topology", ["mw", "distredge-db", "coopai-rpi4x4", "hiertrain"])
def test_the_bound_is_below_every_planners_plan_brute_force_included(topology):
    prepared = prepare_model("alexnet", (1, 3, 96, 96))
    topo = load_topology(ROOT / f"examples/topologies/{topology}.yaml")
    bound = work_lower_bound(prepared.graph, topo)
    assert 0 < bound < float("inf")
    names = sorted(set(PLANNERS) - {"distredge"} - ({"bf"} if topology != "mw" else set()))  # bf: brute force
    for name in names:
        plan = get_planner(name)(prepared.graph, "alexnet", prepared.input_shape, topo, CostModel())
        assert bound <= simulate(prepared.graph, plan, topo, requests=1).latency_s * (1 + 1e-9), name


def test_least_latency_takes_the_cheapest_path():
    topo = load_topology(ROOT / "examples/topologies/coopai-rpi4x4.yaml")
    assert least_latency(topo, "camera")["pi-0"] == pytest.approx(0.001)  # 0.5 ms to the gateway, 0.5 ms on
