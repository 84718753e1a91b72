"""``deepar``: two cuts, device -> edge -> cloud, exhaustive (DeePar, paper 000, section IV.A).

The cases of the paper's w_{i,j}: the whole model on the device (w_{i,0}); the
device and an edge server j (w_{i,j}); the device and the cloud, the traffic
relayed through edge server j (w_{i,j+m}: the edge computes nothing); and the
device, edge server j and the cloud (w_{i,j+2m}). Every pair of cut positions
k1 <= k2 over positions where one tensor crosses (the paper's layer chains),
for every edge server and cloud, is priced by DeePar's own segment tables
(:func:`halocut.planning.scheduling.costs.segment_costs`: each segment's compute
seconds on each machine, pointwise ops fused as in a part, and the tensor at
each cut sent over the route); the :data:`SIMULATED` cheapest are scored by the
simulator and the best is kept. Pricing every pair and simulating all of them
gave the same plans and took seconds on mobile nets (issue 12, item 8).
"""

from __future__ import annotations

from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.plan import Plan
from halocut.planning.scheduling.costs import segment_costs
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
    choices = [((), (device,))]
    for edge in edges:
        choices += [((k1,), (device, edge)) for k1 in positions if k1 < last]
        for cloud in clouds:
            choices += [((k1, k2), (device, edge, cloud)) for k1 in positions for k2 in positions if k1 <= k2 < last]
    price = _chain_price(graph, topology, cost, [device, *edges, *clouds])
    ranked = sorted(choices, key=price)[:SIMULATED]  # stable: ties keep the paper's enumeration order
    plans = [segments_plan(graph, model, input_shape, list(bounds), list(machines), "deepar")
             for bounds, machines in ranked]
    return min(plans, key=lambda p: simulate(graph, p, topology, cost, requests=1).latency_s)


SIMULATED = 16  # the cheapest choices by the segment tables that the simulator scores


def _chain_price(graph: fx.GraphModule, topology: Topology, cost: CostModel, machines: list[str]):
    """Seconds of one request through consecutive single-device segments, from the segment tables."""
    requester = topology.device(machines[0])
    positions, tables, sent = segment_costs(graph, [topology.device(name) for name in machines], cost)
    at = {p: i for i, p in enumerate(positions)}  # sent: the model input at position 0, its output at the last
    moves: dict[tuple[str, str, int], float] = {}

    def move(source: str, target: str, position: int) -> float:
        key = (source, target, position)
        if key not in moves:
            moves[key] = sum(link.transfer_s(sent[at[position]]) for link in topology.route(source, target))
        return moves[key]

    def price(choice) -> float:
        bounds, devices = choice
        edges, where, total = [0, *bounds, positions[-1]], requester.name, 0.0
        for a, b, name in zip(edges, edges[1:], devices):
            if b > a:
                total += (move(where, name, a) if name != where else 0.0) + tables[name][at[a], at[b]]
                where = name
        return total + move(where, requester.name, positions[-1])
    return price
