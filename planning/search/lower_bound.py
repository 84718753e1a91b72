"""A lower bound on any plan's single-request latency: a linear program over how much work each device does.

For a set ``S`` of devices the LP (scipy's HiGHS) is

    min T   s.t.   sum_d w_d = F,   w_d >= 0,   w_d / s_d <= T - a_d - b_d   (d in S)

where ``F`` is the model's FLOPs, ``s_d`` device d's best speed (peak FLOP/s
times its best efficiency, the fastest the cost model ever runs a layer on
it), ``a_d`` the least latency of any path from the requester to d and
``b_d`` the least latency of any path back (per-hop latency and overhead,
which every message pays hop by hop in the simulator); the requester has
``a = b = 0``. The bound is the least optimum over the prefixes ``S`` of the
devices sorted by ``a_d + b_d``.

Why it is valid. Take any plan and its simulated latency ``L``; let ``U`` be
the devices it gives work (compute time > 0). A device ``u`` in ``U`` cannot
start before data from the request reaches it (everything it computes
depends on the input, which lies on the requester), so not before ``a_u``;
whatever it computes is needed by the output, which must reach the
requester, so its last work ends by ``L - b_u``. It computes at most at speed
``s_u``, so its FLOPs ``w_u <= s_u (L - a_u - b_u)``; and the FLOPs over ``U``
are at least ``F`` (halos only add). So ``(T = L, w)`` is feasible for
``S = U`` (the FLOPs scaled down to exactly ``F``), hence ``LP(U) <= L``. The
prefix ``P`` of all devices with ``a + b <= max_U (a + b)`` contains ``U`` and
forces no larger ``T`` (its extra devices may take ``w = 0`` since
``T >= max_U (a + b)``), so ``LP(P) <= LP(U) <= L``. Transfers' bytes only add
time, so leaving them out keeps the bound valid; it is loose where the links'
bandwidth, not their latency, is what keeps a fast device from helping.

>>> from pathlib import Path
>>> from halocut.compiler.prepare import prepare_model
>>> from halocut.targets.topology import load_topology
>>> prepared = prepare_model("alexnet", (1, 3, 96, 96))
>>> topology = load_topology(Path(__file__).parents[2] / "examples/topologies/distredge-db.yaml")
>>> 0 < work_lower_bound(prepared.graph, topology) < float("inf")
True
"""

from __future__ import annotations

import heapq

import numpy as np
from scipy.optimize import linprog
from torch import fx

from halocut.ir.graph import compute_nodes
from halocut.targets.cost import efficiency_of
from halocut.targets.topology import Topology


def least_latency(topology: Topology, source: str) -> dict[str, float]:
    """Least per-message latency (latency + overhead, summed over hops) from ``source`` to every device."""
    neighbours: dict[str, list[tuple[str, float]]] = {d.name: [] for d in topology.devices}
    for link in topology.links:
        neighbours[link.a].append((link.b, link.latency_s + link.overhead_s))
        neighbours[link.b].append((link.a, link.latency_s + link.overhead_s))
    best = {source: 0.0}
    queue = [(0.0, source)]
    while queue:
        here_s, name = heapq.heappop(queue)
        if here_s > best.get(name, float("inf")):
            continue
        for other, hop_s in neighbours[name]:
            if here_s + hop_s < best.get(other, float("inf")):
                best[other] = here_s + hop_s
                heapq.heappush(queue, (here_s + hop_s, other))
    return best


def work_lower_bound(graph: fx.GraphModule, topology: Topology) -> float:
    """The LP bound of the module docstring, in seconds."""
    flops = sum(n.meta["layer"].flops for n in compute_nodes(graph) if "layer" in n.meta)
    requester = topology.requester.name
    out = least_latency(topology, requester)
    devices = [d for d in topology.compute_devices() if d.name in out]
    speeds = np.array([d.peak_flops * efficiency_of(d).max for d in devices])
    delay = np.array([out[d.name] + least_latency(topology, d.name)[requester] for d in devices])
    order = np.argsort(delay, kind="stable")
    best = float("inf")
    for k in range(1, len(order) + 1):
        chosen = order[:k]
        count = len(chosen)
        # variables: w_1 .. w_k (in units of F), T
        cost = np.zeros(count + 1)
        cost[-1] = 1.0
        upper = np.zeros((count, count + 1))
        upper[np.arange(count), np.arange(count)] = flops / speeds[chosen]
        upper[:, -1] = -1.0
        equal = np.zeros((1, count + 1))
        equal[0, :count] = 1.0
        result = linprog(cost, A_ub=upper, b_ub=-delay[chosen], A_eq=equal, b_eq=[1.0],
                         bounds=[(0, None)] * (count + 1), method="highs")
        if result.status == 0:
            best = min(best, float(result.fun))
    return best
