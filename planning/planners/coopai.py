"""``sls`` and ``mls``: CoopAI's layer-by-layer and Multi-Layer Partition and Slicing (paper 001, Sec. IV).

CODE: D identical edge devices behind a gateway of bandwidth G run a model in
rounds; each round computes one block of consecutive layers on k devices
(conv layers as a grid of tiles that prefetch their halo, so no data moves
inside a round; fc layers as clusters in model, data or hybrid mode) and
exchanges data only through the gateway, at G/k per device. MLS is the dynamic
program

    T_L^* = min_k T_L^k                                                    (1)
    T_i^k = 0 (i = 0);  T_{i-1}^k + e_{i,i}^k (k = 1);  min_r T_r^k + e_{r+1,i}^k   (2)

over blocks of consecutive units, with e from :mod:`halocut.planning.search.coopai_blocks`.
For k = 1 the paper runs the whole model on one device with one input and one
output transfer ("the traditional approach"), which is what eq. 2's k = 1 case
amounts to. SLS (the paper's baseline after MoDNN / DeepThings) is the same
program with at most one conv or fc layer per block (pooling and activations
go with it), so no hybrid fc blocks, and the same choice of k and fc mode.

Outside the paper's model: the D devices are the topology's computing devices
other than the requester (the CoopAI camera), ordered by their time for the
whole model, so k = 1 takes the fastest and tiles go to the first k (equal
tiles: the slowest chosen device bounds a round, as eq. 3's max says). Units
with no split (flatten, adaptive pooling: the paper's gateway work) are one
single stage, on the requester or the first device, whichever simulates faster.

>>> from halocut.compiler.prepare import prepare_model
>>> from halocut.targets.topology import load_topology
>>> topology = load_topology("examples/topologies/coopai-rpi4x2.yaml")
>>> graph = prepare_model("lenet5").graph
>>> plan = plan_mls(graph, "lenet5", (1, 1, 28, 28), topology, CostModel())
>>> plan.planner, sorted(plan.devices())[-1]
('mls', 'pi-1')
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.graph import compute_nodes, output_nodes
from halocut.ir.layers import value_bytes
from halocut.ir.plan import Cluster, Hop, Plan, Stage, Tile
from halocut.planning.search.coopai_blocks import Blocks
from halocut.planning.search.coopai_units import INF, Unit, bandwidths, coopai_units, feature_ranges, grid_regions
from halocut.targets.cost import CostModel
from halocut.targets.topology import Device, Topology


@dataclass(frozen=True)
class Solution:
    """MLS's answer for every k: T_L^k and its blocks of units ``(first, last, fc mode)``; eq. 1 picks k."""

    devices: tuple[str, ...]  # the D devices, fastest first; k uses the first k
    times_s: dict[int, float]
    blocks_by_k: dict[int, tuple[tuple[int, int, str], ...]]

    @property
    def k(self) -> int:
        return min(self.times_s, key=lambda k: (self.times_s[k], k))

    @property
    def predicted_s(self) -> float:
        return self.times_s[self.k]

    def rounds(self, units: list[Unit], k: int | None = None) -> int:
        """Blocks computed by the k devices (glue, the paper's gateway work, is not a round)."""
        return sum(units[last].kind != "glue" for _, last, _ in self.blocks_by_k[k or self.k])


def recurrence(times: dict[tuple[int, int], tuple[float, str]], count: int) -> tuple[float, list]:
    """Eq. 2 for k >= 2: the best blocks for units 0..count-1 given the block times e (ties: fewer blocks)."""
    best: list[tuple[float, int]] = [(0.0, 0)] + [(INF, 0)] * count
    choice: list[tuple[int, str]] = [(0, "")] * (count + 1)
    ending: dict[int, list[tuple[int, float, str]]] = {}
    for (i, j), (seconds, mode) in times.items():
        ending.setdefault(j, []).append((i, seconds, mode))
    for i in range(1, count + 1):
        for first, seconds, mode in ending.get(i - 1, []):
            candidate = (best[first][0] + seconds, best[first][1] + 1)
            if (round(candidate[0], 12), candidate[1]) < (round(best[i][0], 12), best[i][1]):
                best[i], choice[i] = candidate, (first, mode)
    blocks, i = [], count
    while i > 0 and best[count][0] < INF:
        first, mode = choice[i]
        blocks.append((first, i - 1, mode))
        i = first
    return best[count][0], blocks[::-1]


def code_devices(graph: fx.GraphModule, topology: Topology, cost: CostModel) -> list[Device]:
    """CODE's D devices: every computing device but the requester (unless it is the only one), fastest first."""
    devices = [d for d in topology.compute_devices() if d.name != topology.requester.name] or \
        topology.compute_devices()
    if not devices:
        raise HalocutError(f"coopai: topology '{topology.name}' has no device that computes")
    nodes = compute_nodes(graph)
    return sorted(devices, key=lambda d: cost.nodes_latency(d, nodes))


def solve(graph: fx.GraphModule, topology: Topology, cost: CostModel,
          max_macs: int | None = None) -> tuple[list[Unit], Solution]:
    """Eqs. 1-2 over k = 1..D (``max_macs=1``: SLS)."""
    devices = code_devices(graph, topology, cost)
    hub = topology.requester.name
    rates = {k: bandwidths(topology, hub, devices[:k]) for k in range(1, len(devices) + 1)}
    units = coopai_units(graph)
    blocks = Blocks(graph, units, devices, rates, cost)
    times = {1: _one_device(graph, devices[0], rates[1][0], cost)}
    chosen = {1: ((0, len(units) - 1, ""),)}
    for k in range(2, len(devices) + 1):
        total, found = recurrence(blocks.table(k, max_macs), len(units))
        if total < INF:
            times[k], chosen[k] = total, tuple(found)
    return units, Solution(tuple(d.name for d in devices), times, chosen)


def _one_device(graph: fx.GraphModule, device: Device, rate_bps: float, cost: CostModel) -> float:
    """T_L^1: the input in, every layer, the output out."""
    inputs = [n for n in graph.graph.nodes if n.op == "placeholder"]
    moved = sum(value_bytes(n) for n in inputs + output_nodes(graph))
    return cost.nodes_latency(device, compute_nodes(graph)) + moved * 8.0 / rate_bps


def realize(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology, cost: CostModel,
            units: list[Unit], solution: Solution, planner: str, k: int | None = None) -> Plan:
    """The plan of a solution for its k (or the given one): spatial grids, fc clusters, single stages for glue.

    Glue runs on the requester or the first device, whichever the simulator finds faster.
    """
    from halocut.runtime.simulate import simulate

    k = k or solution.k
    devices = solution.devices[:k]
    if k == 1:
        names = tuple(n.name for n in compute_nodes(graph))
        return Plan(model, tuple(input_shape), (Stage("single", names, device=devices[0]),), planner=planner)
    places = [devices[0]]
    if topology.requester.computes and any(u.kind == "glue" for u in units):
        places.insert(0, topology.requester.name)
    plans = [Plan(model, tuple(input_shape), _stages(units, solution.blocks_by_k[k], devices, place), planner)
             for place in places]
    if len(plans) == 1:
        return plans[0]
    return min(plans, key=lambda p: simulate(graph, p, topology, cost, requests=1).latency_s)


def _stages(units: list[Unit], blocks, devices: tuple[str, ...], glue: str) -> tuple[Stage, ...]:
    stages: list[Stage] = []
    k = len(devices)
    for first, last, mode in blocks:
        nodes = [n for unit in units[first:last + 1] for n in unit.nodes]
        names = tuple(n.name for n in nodes)
        kind = units[last].kind
        if kind == "conv":
            regions = grid_regions(*nodes[-1].meta["tensor_meta"].shape[-2:], k)
            stages.append(Stage("spatial", names, tiles=tuple(Tile(r, (Hop(d),)) for r, d in zip(regions, devices))))
        elif kind == "fc":
            width = nodes[0].meta["layer"].attrs["in_features" if mode == "data" else "out_features"]
            spans = feature_ranges(width, k)
            stages.append(Stage("fc", names, mode=mode, clusters=tuple(Cluster(s, d) for s, d in zip(spans, devices))))
        elif stages and stages[-1].kind == "single":
            stages[-1] = Stage("single", stages[-1].nodes + names, device=glue)
        else:
            stages.append(Stage("single", names, device=glue))
    return tuple(stages)


def code_plan(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
              cost: CostModel, planner: str, max_macs: int | None) -> Plan:
    units, solution = solve(graph, topology, cost, max_macs)
    return realize(graph, model, input_shape, topology, cost, units, solution, planner)


def plan_mls(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
             cost: CostModel) -> Plan:
    return code_plan(graph, model, input_shape, topology, cost, "mls", None)


def plan_sls(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
             cost: CostModel) -> Plan:
    return code_plan(graph, model, input_shape, topology, cost, "sls", 1)


