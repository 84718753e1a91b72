"""Fused-volume planners: ``deepthings``, ``deeperthings`` and ``aofl`` (DistrEdge's baselines, paper 003 Sec. V-B).

Tiles go to the service providers (:func:`volumes.providers`); layers that
need their whole input (pooling to a vector, flatten, linear) run on one device.

- DeepThings (Zhao et al. 2018): one Fused Tile Partitioning volume over the
  first layers, an equal grid with one cell per provider; the gateway (the
  requester, or the fastest provider if it does not compute) gathers the tiles
  and runs every later layer. DeepThings picks the fused depth (16 layers of
  YOLOv2) from its devices' memory; here every depth the first splittable
  segment allows is simulated and the fastest kept.
- DeeperThings (Stahl et al. 2021): several fused volumes, each an equal grid
  over the providers; boundaries minimise the bytes exchanged between devices
  (the objective of their ILP; memory is not modelled), found exactly by
  :func:`volume_search.chain_partition`.
- AOFL (Zhou et al. 2019): several fused volumes, each split in rows by a linear
  ratio of the provider's capability (its profiled FLOP/s on the model's
  splittable layers) and its bandwidth from the requester; boundaries minimise
  a linear latency estimate (max over tiles of fetch seconds plus FLOPs over
  capability, summed over volumes), by the DP rather than AOFL's brute force
  (the same optimum of the same estimate); the degree of parallelism (the k
  fastest providers, k = 1..n) is chosen on that estimate too.

Non-splittable layers after fused volumes run on the device holding the largest
tile of the last volume (DistrEdge runs its FC layers there, Sec. V-A).
"""

from __future__ import annotations

from typing import Callable

from torch import fx

from halocut.ir.plan import Plan, Stage
from halocut.ir.regions import Region
from halocut.planning.search.volume_search import VolumeFlows, chain_partition, region_bytes
from halocut.planning.search.volumes import (
    Tiling,
    boundaries,
    equal_grid,
    is_closed,
    largest_tile_device,
    merge_singles,
    output_size,
    providers,
    row_tiling,
    segments,
    spatial_stage,
)
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import Device, Topology

Flow = tuple[str, str, float]


def _single(nodes: list[fx.Node], device: str) -> Stage:
    return Stage("single", tuple(n.name for n in nodes), device=device)


def plan_deepthings(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                    cost: CostModel) -> Plan:
    workers = [d.name for d in providers(topology)]
    requester = topology.requester
    gateway = requester.name if requester.computes else max(providers(topology), key=lambda d: d.peak_flops).name
    parts = segments(graph)
    first = next((i for i, s in enumerate(parts) if s.splittable), None)
    every = [n for s in parts for n in s.nodes()]
    if first is None:
        return Plan(model, tuple(input_shape), (_single(every, gateway),), planner="deepthings")
    before = [n for s in parts[:first] for n in s.nodes()]
    segment = parts[first]
    candidates = []
    for end in [e for e in boundaries(graph, segment)[1:] if is_closed(segment.nodes(0, e))]:
        volume = segment.nodes(0, end)
        after = every[len(before) + len(volume):]
        stages = ([_single(before, gateway)] if before else []) + \
            [spatial_stage(volume, equal_grid(*output_size(volume), workers))] + \
            ([_single(after, gateway)] if after else [])
        candidates.append(Plan(model, tuple(input_shape), tuple(stages), planner="deepthings"))
    return min(candidates, key=lambda p: simulate(graph, p, topology, cost, requests=1).latency_s)


# A weigher scores a list of transfers, plus the compute of a volume's tiles when one is given.
Weigher = Callable[[VolumeFlows, list[Flow], tuple[int, int] | None], float]


def fused_volumes_plan(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                       tiling_of: Callable[[list[fx.Node]], Tiling], weigh: Weigher,
                       tail_seconds: Callable[[list[fx.Node], str], float], planner: str) -> tuple[float, Plan]:
    """Every splittable segment cut into the volumes that minimise ``weigh`` (exact DP), tiled by ``tiling_of``.

    Other segments run on the device holding the largest tile before them
    (``tail_seconds`` prices them). Returns the summed estimate and the plan.
    """
    requester = topology.requester
    fallback = requester.name if requester.computes else max(providers(topology), key=lambda d: d.peak_flops).name
    holder, total, stages = requester.name, 0.0, []
    parts = segments(graph)
    for index, segment in enumerate(parts):
        if not segment.splittable:
            holder = holder if topology.device(holder).computes else fallback
            stages.append(_single(segment.nodes(), holder))
            total += tail_seconds(segment.nodes(), holder)
            continue
        flows = VolumeFlows(graph, segment, tiling_of, holder)
        last = index == len(parts) - 1

        def sink(volume: tuple[int, int], flows: VolumeFlows = flows, last: bool = last) -> str:
            """Where the volume's output goes: the requester at the end, else its largest tile's device."""
            return requester.name if last else largest_tile_device(flows.tiles(volume)[0], topology)

        value, chain = _cut(flows, weigh, sink)
        total += value
        stages += [spatial_stage(segment.nodes(*volume), flows.tiles(volume)[0]) for volume in chain]
        holder = sink(chain[-1])
    return total, Plan(model, tuple(input_shape), tuple(merge_singles(stages)), planner=planner)


def _cut(flows: VolumeFlows, weigh: Weigher, sink: Callable[[tuple[int, int]], str]) -> tuple[float, list]:
    """The DP over one segment's boundaries; one volume per group if no fused boundaries fit."""
    def cost(previous, volume):
        return weigh(flows, flows.fetches(previous, volume), volume)

    def finish(volume):
        return weigh(flows, flows.delivery(volume, sink(volume)), None)

    count = len(flows.segment.groups)
    value, chain = chain_partition(count, flows.allowed, cost, finish)
    if not chain:  # a segment ending inside a block: every group is a valid volume on its own
        value, chain = chain_partition(count, lambda a, b: b == a + 1, cost, finish)
    return value, chain


def exchanged_bytes(flows: VolumeFlows, transfers: list[Flow], volume: tuple[int, int] | None) -> float:
    """DeeperThings' objective: bytes sent between devices."""
    return sum(size for _, _, size in transfers)


def plan_deeperthings(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                      cost: CostModel) -> Plan:
    workers = [d.name for d in providers(topology)]
    return fused_volumes_plan(graph, model, input_shape, topology,
                              lambda nodes: equal_grid(*output_size(nodes), workers), exchanged_bytes,
                              lambda nodes, device: 0.0, "deeperthings")[1]


def capability_flops(device: Device, graph: fx.GraphModule, cost: CostModel) -> float:
    """A device's profiled speed: FLOPs of the model's splittable layers over its time for them (linear model)."""
    nodes = [n for s in segments(graph) if s.splittable for n in s.nodes()] or \
        [n for s in segments(graph) for n in s.nodes()]
    flops = sum(n.meta["layer"].flops for n in nodes)
    seconds = cost.nodes_latency(device, nodes)
    return flops / seconds if seconds > 0 and flops > 0 else device.peak_flops


class LinearModel:
    """AOFL's linear latency model: FLOPs over capability, bytes over the route's bandwidth."""

    def __init__(self, graph: fx.GraphModule, topology: Topology, cost: CostModel):
        self.topology = topology
        self.capability = {d.name: capability_flops(d, graph, cost) for d in topology.compute_devices()}
        self._routes: dict[tuple[str, str], tuple[float, float]] = {}

    def transfer_s(self, source: str, target: str, size_bytes: float) -> float:
        """Seconds to send ``size_bytes`` alone: the route's latencies, then its slowest link's rate.

        Priced as AOFL's linear model does (no store-and-forward, no queueing, no shared medium); planners
        whose papers model links otherwise price them otherwise, and the simulator scores every plan alike.
        """
        if source == target:
            return 0.0
        if (source, target) not in self._routes:
            route = self.topology.route(source, target)
            self._routes[source, target] = (sum(link.latency_s + link.overhead_s for link in route),
                                            min(link.bandwidth_bps for link in route))
        latency_s, bandwidth_bps = self._routes[source, target]
        return latency_s + size_bytes * 8.0 / bandwidth_bps

    def row_weight(self, device: str, nodes: list[fx.Node]) -> float:
        """Output rows per second of a volume: a row's FLOPs over capability plus its input and output bytes."""
        height, _ = output_size(nodes)
        members = {n.name for n in nodes}
        sources = {s.name: s for n in nodes for s in n.all_input_nodes if s.name not in members and "tensor_meta" in
                   s.meta and len(s.meta["tensor_meta"].shape) == 4}
        size = sum(region_bytes(s, _full(s)) for s in sources.values()) + region_bytes(nodes[-1], _full(nodes[-1]))
        flops = sum(n.meta["layer"].flops for n in nodes)
        seconds = flops / self.capability[device] + self.transfer_s(self.topology.requester.name, device, size)
        return height / seconds if seconds > 0 else 1.0

    def weigh(self, flows: VolumeFlows, transfers: list[Flow], volume: tuple[int, int] | None) -> float:
        """Slowest device: its fetches one after another, then its tile's FLOPs."""
        busy: dict[str, float] = {}
        for source, target, size in transfers:
            busy[target] = busy.get(target, 0.0) + self.transfer_s(source, target, size)
        if volume is not None:
            for (_, device), flops in zip(flows.tiles(volume)[0], flows.tile_flops(volume)):
                busy[device] = busy.get(device, 0.0) + flops / self.capability[device]
        return max(busy.values(), default=0.0)

    def seconds(self, nodes: list[fx.Node], device: str) -> float:
        """Seconds for ``nodes`` whole on ``device``: their FLOPs over its capability."""
        return sum(n.meta["layer"].flops for n in nodes) / self.capability[device]


def _full(node: fx.Node) -> Region:
    return Region.full(tuple(node.meta["tensor_meta"].shape))


def plan_aofl(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
              cost: CostModel) -> Plan:
    """The degree of parallelism k = 1..n over the providers ranked by rows per second on all splittable layers."""
    linear = LinearModel(graph, topology, cost)
    whole = [n for s in segments(graph) if s.splittable for n in s.nodes()]
    pool = [d.name for d in providers(topology)]
    ranked = sorted(pool, key=lambda d: -linear.row_weight(d, whole)) if whole else pool
    best: tuple[float, Plan] | None = None
    for count in range(1, len(ranked) + 1 if whole else 2):
        chosen = ranked[:count]

        def tiling_of(nodes: list[fx.Node], chosen=chosen) -> Tiling:
            return row_tiling(*output_size(nodes), {d: linear.row_weight(d, nodes) for d in chosen})

        estimate, plan = fused_volumes_plan(graph, model, input_shape, topology, tiling_of, linear.weigh,
                                            linear.seconds, "aofl")
        if best is None or estimate < best[0]:
            best = estimate, plan
    return best[1]
