"""mw, nfl, bf (paper 004): eqs. 7-8 on a hand case, the timing model against the simulator, brute force
against every plan simulated, and plans that reproduce the model on the paper's topology and others."""

import dataclasses
import itertools
import logging

import numpy as np
import pytest
from torch import nn

from halocut.compiler.prepare import prepare_model
from halocut.ir.regions import Region
from halocut.planning import get_planner
from halocut.planning.planners.fused_layer import brute_force, minimizing_waiting, plan_bf, plan_minimizing_waiting
from halocut.planning.search.fused_paths import (
    FusedCase,
    PathCost,
    choose_ends,
    completion_s,
    fused_case,
    fused_plan,
    fused_units,
)
from halocut.runtime.reference import verify_plan
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import load_topology

from tests.support import ROOT


def mw_topology(rate_bytes_per_s=None, requester_computes=True):
    """examples/topologies/mw.yaml, its Shannon rate replaced by ``rate_bytes_per_s`` (the paper's Fig. 4 axis)."""
    topology = load_topology(ROOT / "examples/topologies/mw.yaml")
    if rate_bytes_per_s is not None:
        links = tuple(dataclasses.replace(link, bandwidth_bps=rate_bytes_per_s * 8) for link in topology.links)
        topology = dataclasses.replace(topology, links=links)
    if not requester_computes:
        topology = dataclasses.replace(topology, devices=tuple(
            dataclasses.replace(d, peak_flops=0.0) if d.role == "requester" else d for d in topology.devices))
    return topology


@pytest.fixture(scope="module")
def alexnet():
    return prepare_model("alexnet", (1, 3, 96, 96))


def test_eqs_7_and_8_choose_order_and_offloads_on_a_hand_case():
    def path(local, send, remote):
        return PathCost(Region((0, 1), (0, 1)), local, send, remote, 0.0)

    case = FusedCase(2, (path((0, 2, 3), (4, 1, 1), (2, 1, 0)),
                         path((0, 1, 4), (3, 2, 1), (2, 1, 0)),
                         path((0, 3, 3), (3, 1, 0.5), (2, 1, 0))), (0, 1, 2), 1.0, 0.0, True)
    # eq. 7: least transmission completion (3), ties to the least local time, then the lowest path: path 1 at 0.
    # eq. 8: end device at 0, link done at 3: path 0 after both units ends at 3 exactly (ties: more units).
    # then end at 3, link at max(3, 3) + 1 = 4: path 2 sent raw ends closest (|4 - 3 - 0| = 1).
    assert minimizing_waiting(case) == ((1, 0, 2), (0, 2, 0))
    # link: path 1 [0, 3]; at 3 path 2 (raw, ready since 0) goes before path 0's tile (behind every path's
    # message to the server's own layers) [3, 6], path 0 [6, 7]; server: 1 [3, 5], 2 [6, 8]; rest [8, 9].
    assert completion_s(case, np.array([1, 0, 2]), np.array([0, 2, 0]))[0] == pytest.approx(9.0)
    best_s, order, offloads, tried = brute_force(case, 10 ** 6)
    assert tried == 6 * 27 and best_s <= 9.0
    assert best_s == pytest.approx(completion_s(case, np.array(order), np.array(offloads))[0])


def test_brute_force_finds_the_best_simulated_plan_and_the_model_is_the_simulator(alexnet):
    topology = mw_topology(1.1e6)
    ends = choose_ends(alexnet.graph, topology, CostModel())
    assert (ends.end, ends.server, ends.local) == ("end", "es", True)
    units, _ = fused_units(alexnet.graph)
    case = fused_case(alexnet.graph, units, 3, 2, topology, CostModel(), ends)
    simulated = {}
    for order in itertools.permutations(range(2)):
        for offloads in itertools.product(range(4), repeat=2):
            plan = fused_plan(alexnet.graph, "alexnet", alexnet.input_shape, units, case, order, offloads, ends, "t")
            simulated[order, offloads] = simulate(alexnet.graph, plan, topology, requests=1).latency_s
            modelled = completion_s(case, np.array(order), np.array(offloads))[0]
            assert modelled == pytest.approx(simulated[order, offloads], rel=1e-9)
    best_s, order, offloads, tried = brute_force(case, 10 ** 6)
    assert tried == 2 * 16 and best_s == pytest.approx(min(simulated.values()), rel=1e-9)
    assert len(set(np.round(list(simulated.values()), 6))) > 4  # the choices matter


def test_chained_paths_reproduce_the_model(alexnet):
    topology = mw_topology(1.1e6)
    ends = choose_ends(alexnet.graph, topology, CostModel())
    units, _ = fused_units(alexnet.graph)
    case = fused_case(alexnet.graph, units, 4, 3, topology, CostModel(), ends)
    plan = fused_plan(alexnet.graph, "alexnet", alexnet.input_shape, units, case, (2, 0, 1), (1, 4, 0), ends, "t")
    hops = [[(h.device, h.until) for h in t.devices] for t in plan.stages[0].tiles]
    assert hops == [[("end", units[0][-1]), ("es", None)], [("end", None)], [("es", None)]]
    assert [t.region for t in plan.stages[0].tiles] == [case.paths[p].region for p in (2, 0, 1)]
    verify_plan(alexnet.graph, plan, original=alexnet.module)


@pytest.mark.parametrize("topology", ["mw", "hiertrain", "silent-requester"])
@pytest.mark.parametrize("planner", ["mw", "nfl", "bf"])
def test_plans_reproduce_the_model(alexnet, planner, topology):
    topo = mw_topology(1.1e6, requester_computes=False) if topology == "silent-requester" else \
        mw_topology(1.1e6) if topology == "mw" else load_topology(ROOT / f"examples/topologies/{topology}.yaml")
    plan = get_planner(planner)(alexnet.graph, "alexnet", alexnet.input_shape, topo, CostModel())
    assert plan.planner == planner
    verify_plan(alexnet.graph, plan, original=alexnet.module)
    if topology == "silent-requester":
        assert "end" not in plan.devices()


def test_a_network_fused_to_its_output_returns_every_path_to_the_requester():
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                        nn.ReLU(), nn.Conv2d(32, 8, 1))  # fully convolutional, like YOLOv2
    prepared = prepare_model(net, (1, 3, 32, 32))
    units, rest = fused_units(prepared.graph)
    assert rest == [] and len(units) == 4
    topology = mw_topology(1.1e6)
    plan = plan_minimizing_waiting(prepared.graph, "net", prepared.input_shape, topology, CostModel(), max_paths=4)
    assert plan.stages[0].kind == "spatial" and all(s.device == "es" for s in plan.stages[1:])
    verify_plan(prepared.graph, plan, original=prepared.module)
    ends = choose_ends(prepared.graph, topology, CostModel())
    case = fused_case(prepared.graph, units, 4, 3, topology, CostModel(), ends)
    for offloads in [(0, 0, 0), (0, 4, 2), (4, 4, 4), (1, 3, 0)]:
        plan = fused_plan(prepared.graph, "net", prepared.input_shape, units, case, (1, 2, 0), offloads, ends, "t")
        assert completion_s(case, np.array([1, 2, 0]), np.array(offloads))[0] == \
            pytest.approx(simulate(prepared.graph, plan, topology, requests=1).latency_s, rel=1e-9)
        verify_plan(prepared.graph, plan, original=prepared.module)


def test_nfl_is_the_best_single_cut_and_mw_beats_it_on_a_slow_link():
    prepared = prepare_model("alexnet", (1, 3, 160, 160))
    topology = mw_topology(1.1e6)
    latency = {}
    for name in ("nfl", "neurosurgeon", "mw", "offload"):
        plan = get_planner(name)(prepared.graph, "alexnet", prepared.input_shape, topology, CostModel())
        latency[name] = simulate(prepared.graph, plan, topology, requests=1).latency_s
        if name == "nfl":
            assert len(plan.stages) <= 2 and all(s.kind == "single" for s in plan.stages)
    assert latency["nfl"] == pytest.approx(latency["neurosurgeon"]) and latency["nfl"] <= latency["offload"]
    assert latency["mw"] < 0.95 * latency["nfl"]


def test_bf_is_never_worse_than_mw_over_the_same_paths_and_notes_a_capped_search(alexnet, caplog):
    topology = mw_topology(1.1e6)
    plans = {"mw": plan_minimizing_waiting(alexnet.graph, "alexnet", alexnet.input_shape, topology, CostModel(),
                                           max_paths=4),
             "bf": plan_bf(alexnet.graph, "alexnet", alexnet.input_shape, topology, CostModel())}
    latency = {k: simulate(alexnet.graph, p, topology, requests=1).latency_s for k, p in plans.items()}
    assert latency["bf"] <= latency["mw"] + 1e-12
    assert not [r for r in caplog.records if r.name == "halocut.planning.planners.fused_layer"]
    with caplog.at_level(logging.WARNING, logger="halocut.planning.planners.fused_layer"):
        capped = plan_bf(alexnet.graph, "alexnet", alexnet.input_shape, topology, CostModel(), budget=2000)
    assert "not searched" in caplog.text and "7x4" in caplog.text
    verify_plan(alexnet.graph, capped, original=alexnet.module)
