"""``offload``: the whole model on the single device that finishes a request soonest (the papers' Offload).

Every computing device is scored by the simulator, input and output transfers
from and to the requester included.
"""

from __future__ import annotations

from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.plan import Plan, single_device_plan
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import Topology


def plan_offload(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                 cost: CostModel) -> Plan:
    candidates = [single_device_plan(graph, model, input_shape, d.name) for d in topology.compute_devices()]
    if not candidates:
        raise HalocutError(f"topology '{topology.name}' has no device that computes")
    scored = [(simulate(graph, p, topology, cost, requests=1).latency_s, i, p) for i, p in enumerate(candidates)]
    best = min(scored)[2]
    return Plan(best.model, best.input_shape, best.stages, planner="offload")
