"""halocut's own planner: exact min-max splits, row tables that agree with the halo pass, never worse than the rest."""

import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from halocut.compiler.prepare import prepare_model
from halocut.ir.graph import compute_nodes
from halocut.ir.regions import Region
from halocut.passes.halo import compute_halos
from halocut.planning import PLANNERS, get_planner
from halocut.planning.planners.halocut import plan_halocut
from halocut.planning.search.boundary_dp import BoundarySearch
from halocut.planning.search.volume_cost import VolumeTables, min_max_split
from halocut.runtime.reference import verify_plan
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import load_topology

from tests.support import ROOT


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.lists(st.lists(st.floats(0.0, 5.0), min_size=9, max_size=9), min_size=1, max_size=3))
def test_min_max_split_is_optimal(total, increments):
    times = {f"d{k}": np.concatenate([[0.0], np.cumsum(steps[:total]) + 0.01]) for k, steps in enumerate(increments)}
    finish, rows = min_max_split(times, total)
    assert sum(rows.values()) == total
    assert finish == pytest.approx(max((times[d][n] for d, n in rows.items() if n), default=0.0))
    brute = min(max((times[d][n] for d, n in zip(times, split) if n), default=0.0)
                for split in itertools.product(range(total + 1), repeat=len(times)) if sum(split) == total)
    assert finish == pytest.approx(brute)

def test_row_tables_agree_with_the_halo_pass_for_a_centred_tile():
    prepared = prepare_model("resnet18", (1, 3, 64, 64))
    nodes = compute_nodes(prepared.graph)
    names = [n.name for n in nodes]
    volume = nodes[names.index("conv1"):names.index("layer1_1_relu_1") + 1]  # a stem and two residual blocks
    topology = load_topology(ROOT / "examples/topologies/distredge-da.yaml")
    tables = VolumeTables(nodes, topology.compute_devices(), CostModel())
    needs = tables.needs(volume)
    height = 16
    for rows in (1, 3, 8):
        top = (height - rows) // 2
        exact = compute_halos(volume, Region((top, top + rows), (0, 16)))
        for node in volume:
            assert needs[node.name][rows] == exact[node.name].height, (node.name, rows)

def test_rows_go_where_they_finish_soonest_and_slow_devices_may_get_none():
    prepared = prepare_model("vgg11", (1, 3, 128, 128))
    topology = load_topology(ROOT / "examples/topologies/distredge-dc.yaml")  # Xavier, TX2, Nano, Pi 3
    search = BoundarySearch(prepared.graph, topology, topology.compute_devices(), CostModel())
    features = max(j for j in search.positions if j > 0 and search.is_volume(0, j))  # up to the last pool
    finish, rows = search.volume(0, features, topology.requester.name, True)
    share = dict(rows)
    assert sum(share.values()) == 4 and max(share, key=share.get) == "xavier-0" and "pi3-0" not in share
    assert 0 < finish < float("inf")


@pytest.mark.parametrize("topology", ["distredge-dc", "coopai-rpi4x4", "mw", "hiertrain"])
def test_halocut_own_search_reproduces_the_model_and_beats_every_other_planner(topology):
    """The own search alone, without the safety net (which would make this hold by construction)."""
    prepared = prepare_model("alexnet", (1, 3, 96, 96))
    topo = load_topology(ROOT / f"examples/topologies/{topology}.yaml")
    plan = plan_halocut(prepared.graph, "alexnet", prepared.input_shape, topo, CostModel(), safety_net=False)
    verify_plan(prepared.graph, plan, original=prepared.module)
    ours = simulate(prepared.graph, plan, topo, requests=1).latency_s
    for name in sorted(set(PLANNERS) - {"halocut", "distredge", "bf"}):
        other = get_planner(name)(prepared.graph, "alexnet", prepared.input_shape, topo, CostModel())
        assert ours <= simulate(prepared.graph, other, topo, requests=1).latency_s * (1 + 1e-9), name

def test_halocut_splits_vgg_over_pis_where_one_pi_is_too_slow():
    prepared = prepare_model("vgg11", (1, 3, 96, 96))
    topo = load_topology(ROOT / "examples/topologies/coopai-rpi4x4.yaml")
    plan = get_planner("halocut")(prepared.graph, "vgg11", prepared.input_shape, topo, CostModel())
    assert any(s.kind == "spatial" and len(s.tiles) >= 3 for s in plan.stages)
    verify_plan(prepared.graph, plan, original=prepared.module)


def _spin(stop):
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def test_the_same_inputs_give_the_same_plan_on_a_loaded_machine():
    """The local search is bounded by simulated trials, not seconds: load on every core changes nothing."""
    import multiprocessing

    prepared = prepare_model("resnet18", (1, 3, 96, 96))
    topology = load_topology(ROOT / "examples/topologies/distredge-db.yaml")

    def planned():
        return plan_halocut(prepared.graph, "resnet18", prepared.input_shape, topology, CostModel(), safety_net=False)

    idle = planned()
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    spinners = [context.Process(target=_spin, args=(stop,), daemon=True) for _ in range(2 * (os.cpu_count() or 1))]
    for spinner in spinners:
        spinner.start()
    try:
        loaded = planned()
    finally:
        stop.set()
        for spinner in spinners:
            spinner.join(timeout=10)
    assert loaded == idle
    assert any(stage.kind == "spatial" for stage in idle.stages)  # a plan the local search had rows to move in
