"""``neurosurgeon``: one cut between the requester and one server, exhaustive over cut points and servers.

Cut points are every position of the DAG where at most two tensors cross (so
cuts inside residual blocks count, not only chain positions); position 0 sends
everything to the server, the last keeps everything on the requester. Each
candidate is scored by the simulator's single-request latency.
"""

from __future__ import annotations

from torch import fx

from halocut.ir.plan import Plan
from halocut.planning.search.cuts import cut_positions, segments_plan
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import Topology


def plan_neurosurgeon(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                      cost: CostModel) -> Plan:
    requester = topology.requester
    servers = [d.name for d in topology.compute_devices() if d.name != requester.name]
    positions = cut_positions(graph, max_crossing=2)
    if not requester.computes:
        positions = [0]
    candidates = [segments_plan(graph, model, input_shape, [k], [requester.name, server], "neurosurgeon")
                  for server in servers for k in positions] or \
        [segments_plan(graph, model, input_shape, [], [requester.name], "neurosurgeon")]
    return min(candidates, key=lambda p: simulate(graph, p, topology, cost, requests=1).latency_s)
