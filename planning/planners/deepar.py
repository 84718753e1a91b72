"""``deepar``: two cuts, device -> edge -> cloud, exhaustive (DeePar, paper 000, section IV.A).

The cases of the paper's w_{i,j}: the whole model on the device (w_{i,0}); the
device and an edge server j (w_{i,j}); the device and the cloud, the traffic
relayed through edge server j (w_{i,j+m}: the edge computes nothing); and the
device, edge server j and the cloud (w_{i,j+2m}). Every pair of cut positions
k1 <= k2 over positions where one tensor crosses (the paper's layer chains),
for every edge server and cloud, is scored by the simulator; the best is kept.
"""

from __future__ import annotations

from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.plan import Plan
from halocut.planning.search.cuts import cut_positions, segments_plan
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import Topology


def plan_deepar(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                cost: CostModel) -> Plan:
    device = topology.requester.name
    edges = [d.name for d in topology.compute_devices() if d.role == "edge"]
    clouds = [d.name for d in topology.compute_devices() if d.role == "cloud"]
    if not topology.requester.computes:
        raise HalocutError(f"deepar: the requester '{device}' must compute (DeePar starts every task on the device)")
    positions = cut_positions(graph, max_crossing=1)
    last = positions[-1]
    candidates = [segments_plan(graph, model, input_shape, [], [device], "deepar")]
    for edge in edges:
        candidates += [segments_plan(graph, model, input_shape, [k1], [device, edge], "deepar")
                       for k1 in positions if k1 < last]
        for cloud in clouds:
            candidates += [segments_plan(graph, model, input_shape, [k1, k2], [device, edge, cloud], "deepar")
                           for k1 in positions for k2 in positions if k1 <= k2 < last]
    return min(candidates, key=lambda p: simulate(graph, p, topology, cost, requests=1).latency_s)
