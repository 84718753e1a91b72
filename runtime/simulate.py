"""Event-driven simulation of a Plan on a Topology: the yardstick every planner is scored by.

A plan becomes a DAG of compute tasks (a single stage, one hop of a tile, an
fc cluster; each also pays its device's ``dispatch``, the runtime's cost of
running a part there, and waits for the requester's driver to submit it, one
part at a time, when the topology measured a ``submit`` time) and transfers (the
region of a value a task needs and another device holds, sent along the
topology's route hop by hop). Devices run one
task at a time, in request order. Each direction of a link carries one
message at a time, in request order; a message pays the hop's latency, then
flows at the link's bandwidth, or at its share of a shared medium's, which is
divided equally among the messages crossing it at that moment (CoopAI's G/k);
a bandwidth trace changes rates over time. Messages are stored and forwarded
hop by hop. The requester holds the
input and receives the output.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.graph import compute_nodes, output_nodes, split_hops
from halocut.ir.layers import value_bytes
from halocut.ir.names import part_name
from halocut.ir.plan import Plan, Stage
from halocut.ir.regions import Region, full_region, overlap_bytes
from halocut.passes.halo import compute_halos
from halocut.targets.cost import CostModel, efficiency_of
from halocut.targets.topology import Link, Topology

EPSILON = 1e-12
DRIVER = "(driver)"  # the requester's driver, submitting every part's call one at a time (its ``submit``)


@dataclass(frozen=True)
class Busy:
    """A busy interval of a device (compute) or a link (transfer) in the timeline."""

    resource: str
    start_s: float
    end_s: float
    label: str
    request: int
    kind: str  # "compute" or "transfer"
    size_bytes: float = 0.0


@dataclass
class _Item:
    id: int
    request: int
    kind: str
    label: str
    device: str = ""
    duration_s: float = 0.0
    route: list[Link] = field(default_factory=list)
    bits: float = 0.0
    waiting: int = 0
    dependents: list[int] = field(default_factory=list)
    hop: int = 0
    remaining_bits: float = 0.0
    hop_start_s: float = 0.0
    done_s: float = -1.0


@dataclass(frozen=True)
class Piece:
    """Part of a value held by a device: a region of a feature map, or a share of a flat tensor."""

    device: str
    item: int | None  # the task that produced it (None: the request's input)
    region: Region | None
    size_bytes: float


@dataclass(frozen=True)
class SimulationResult:
    latency_s: float
    throughput_ips: float
    lower_bound_s: float
    busy_s: dict[str, float]
    bytes_per_link: dict[str, float]
    timeline: tuple[Busy, ...]
    requests: int

    def to_json(self) -> dict:
        return {"latency_s": self.latency_s, "throughput_ips": self.throughput_ips,
                "lower_bound_s": self.lower_bound_s, "busy_s": self.busy_s,
                "bytes_per_link": self.bytes_per_link, "requests": self.requests}


def simulate(graph_module: fx.GraphModule, plan: Plan, topology: Topology, cost: CostModel | None = None,
             requests: int = 8) -> SimulationResult:
    """Latency of one request alone, and throughput of a stream of ``requests`` queued at time 0."""
    cost = cost or CostModel()
    plan.validate(graph_module, {d.name for d in topology.devices})
    for name in plan.devices():
        if not topology.device(name).computes:
            raise HalocutError(f"plan puts work on '{name}', which computes nothing (a relay)")
    single = _Simulation(graph_module, plan, topology, cost, 1).run()
    latency = max(i.end_s for i in single) if single else 0.0
    throughput = 1.0 / latency if latency > 0 else float("inf")
    timeline = single
    if requests > 1:
        stream = _Simulation(graph_module, plan, topology, cost, requests).run()
        finish = sorted(max(i.end_s for i in stream if i.request == r) for r in range(requests))
        if finish[-1] > finish[0]:
            throughput = (requests - 1) / (finish[-1] - finish[0])
    busy: dict[str, float] = {d.name: 0.0 for d in topology.devices}
    sent: dict[str, float] = {link.key: 0.0 for link in topology.links}
    for interval in timeline:
        if interval.kind == "compute":
            busy[interval.resource] = busy.get(interval.resource, 0.0) + interval.end_s - interval.start_s
        else:
            sent[interval.resource] += interval.size_bytes
    return SimulationResult(latency, throughput, lower_bound(graph_module, topology, cost), busy, sent,
                            tuple(timeline), requests)


def stream_timeline(graph_module: fx.GraphModule, plan: Plan, topology: Topology, cost: CostModel | None = None,
                    requests: int = 4) -> list[Busy]:
    """The busy intervals of ``requests`` requests queued at time 0 (what a Gantt chart of a stream shows)."""
    return _Simulation(graph_module, plan, topology, cost or CostModel(), requests).run()


def lower_bound(graph_module: fx.GraphModule, topology: Topology, cost: CostModel | None = None) -> float:
    """No plan beats this: all FLOPs at every device's best speed at once, plus one hop out of the requester.

    Or the requester alone at its best speed, if that is lower.
    """
    flops = sum(n.meta["layer"].flops for n in compute_nodes(graph_module) if "layer" in n.meta)
    speeds = {d.name: d.peak_flops * efficiency_of(d).max for d in topology.compute_devices()}
    requester = topology.requester
    alone = flops / speeds[requester.name] if speeds.get(requester.name) else float("inf")
    first_hop = min((link.latency_s + link.overhead_s for link in topology.links
                     if requester.name in (link.a, link.b)), default=0.0)
    together = flops / sum(speeds.values()) + first_hop if speeds else float("inf")
    return min(alone, together)


class _Simulation:
    def __init__(self, graph_module, plan: Plan, topology: Topology, cost: CostModel, requests: int):
        self.gm, self.plan, self.topology, self.cost = graph_module, plan, topology, cost
        self.nodes = {n.name: n for n in compute_nodes(graph_module)}
        self.order = {name: i for i, name in enumerate(self.nodes)}
        # planners simulate many plans of one graph that share stages: a stage's halos, hops and part latencies
        # are kept on the graph (its nodes' names, regions, devices and cost model are the key)
        self.memo = graph_module.meta.setdefault("halocut.simulate", {}) if hasattr(graph_module, "meta") else {}
        self.items: list[_Item] = []
        self.route_start: dict[int, str] = {}
        self.timeline: list[Busy] = []
        for request in range(requests):
            self._build(request)

    # --- building the task graph of one request

    def _new(self, request: int, kind: str, label: str, **fields) -> _Item:
        item = _Item(len(self.items), request, kind, label, **fields)
        self.items.append(item)
        return item

    def _submitted(self, request: int, task: _Item) -> _Item:
        """The part ``task`` waits for the driver to submit it (when the requester has a ``submit`` time)."""
        submit_s = self.topology.requester.submit_s
        if submit_s > 0:
            self._depend(task, self._new(request, "compute", f"submit {task.label}", device=DRIVER,
                                         duration_s=submit_s).id)
        return task

    def _depend(self, item: _Item, on: int | None) -> None:
        if on is not None:
            self.items[on].dependents.append(item.id)
            item.waiting += 1

    def _build(self, request: int) -> None:
        requester = self.topology.requester.name
        values: dict[str, list[Piece]] = {}
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                values[node.name] = [Piece(requester, None, full_region(node), value_bytes(node))]
        for index, stage in enumerate(self.plan.stages):
            if stage.kind == "single":
                self._single(request, index, stage, values)
            elif stage.kind == "spatial":
                self._spatial(request, index, stage, values)
            else:
                self._fc(request, index, stage, values)
        sink = self._new(request, "compute", "deliver", device=requester, duration_s=0.0)
        for node in output_nodes(self.gm):
            self._gather(request, sink, values[node.name], None, f"output {node.name}")

    def _gather(self, request: int, consumer: _Item, pieces: list[Piece], region: Region | None, what: str) -> None:
        """Make ``consumer`` wait for the parts of ``pieces`` it needs, sent to its device."""
        for piece in pieces:
            size = overlap_bytes(piece, region)
            if size <= 0:
                continue
            if piece.device == consumer.device:
                self._depend(consumer, piece.item)
                continue
            transfer = self._new(request, "transfer", f"{what} {piece.device}->{consumer.device}",
                                 route=self.topology.route(piece.device, consumer.device), bits=size * 8.0)
            self.route_start[transfer.id] = piece.device
            self._depend(transfer, piece.item)
            self._depend(consumer, transfer.id)

    def _inputs_of(self, names: list[str]) -> list[str]:
        members = set(names)
        sources = []
        for name in names:
            for source in self.nodes[name].all_input_nodes:
                if source.op != "get_attr" and source.name not in members and source.name not in sources:
                    sources.append(source.name)
        return sources

    def _single(self, request: int, index: int, stage: Stage, values: dict) -> None:
        device = self.topology.device(stage.device)
        nodes = [self.nodes[n] for n in stage.nodes]
        key = ("single", stage.nodes, device, self.cost)
        if key not in self.memo:
            self.memo[key] = self.cost.nodes_latency(device, nodes, memo=self.memo)
        task = self._submitted(request, self._new(request, "compute", part_name(index), device=device.name,
                                                  duration_s=self.memo[key] + device.dispatch_s))
        if ("inputs", stage.nodes) not in self.memo:
            self.memo["inputs", stage.nodes] = self._inputs_of(list(stage.nodes))
        for source in self.memo["inputs", stage.nodes]:
            self._gather(request, task, values[source], None, source)
        for name in stage.nodes:
            node = self.nodes[name]
            if ("whole", name) not in self.memo:
                self.memo["whole", name] = (full_region(node), value_bytes(node))
            region, size = self.memo["whole", name]
            values[name] = [Piece(device.name, task.id, region, size)]

    def _spatial(self, request: int, index: int, stage: Stage, values: dict) -> None:
        volume = sorted((self.nodes[n] for n in stage.nodes), key=lambda n: self.order[n.name])
        last = volume[-1]
        pieces = []
        members = {n.name for n in volume}
        for t, tile in enumerate(stage.tiles):
            untils = tuple(h.until for h in tile.devices)
            key = ("tile", stage.nodes, tile.region, untils)
            if key not in self.memo:
                self.memo[key] = (compute_halos(volume, tile.region), split_hops(volume, list(untils)))
            needs, hops = self.memo[key]
            hop_of = {n.name: h for h, nodes in enumerate(hops) for n in nodes}
            tasks: list[_Item] = []
            for h, (hop, nodes) in enumerate(zip(tile.devices, hops)):
                device = self.topology.device(hop.device)
                cost_key = ("hop", stage.nodes, tile.region, untils, h, device, self.cost)
                if cost_key not in self.memo:
                    self.memo[cost_key] = self.cost.nodes_latency(device, nodes, needs)
                task = self._submitted(request, self._new(
                    request, "compute", part_name(index, t, h), device=device.name,
                    duration_s=self.memo[cost_key] + device.dispatch_s))
                read = list(dict.fromkeys(s.name for n in nodes for s in n.all_input_nodes if s.op != "get_attr"))
                for source in read:  # values from outside the volume come from where they were made
                    if source not in members and not needs[source].is_empty():
                        self._gather(request, task, values[source], needs[source], source)
                for source in read:  # values from earlier hops of this tile come from the hop that made them
                    if source in members and hop_of[source] < h:
                        maker = tasks[hop_of[source]]
                        size = value_bytes(self.nodes[source], needs[source])
                        self._gather(request, task, [Piece(maker.device, maker.id, None, size)], None, source)
                tasks.append(task)
            pieces.append(Piece(tasks[-1].device, tasks[-1].id, tile.region, value_bytes(last, tile.region)))
        values[last.name] = pieces

    def _fc(self, request: int, index: int, stage: Stage, values: dict) -> None:
        nodes = [self.nodes[n] for n in stage.nodes]
        first, last = nodes[0], nodes[-1]
        (source,) = self._inputs_of(list(stage.nodes))
        width = first.meta["layer"].attrs["out_features" if stage.mode != "data" else "in_features"]
        pieces = []
        for c, cluster in enumerate(stage.clusters):
            device = self.topology.device(cluster.device)
            share = (cluster.features[1] - cluster.features[0]) / width
            latency = sum(self.cost.latency(device, n.meta["layer"], None, None) * share for n in nodes
                          if n.meta["layer"].kind == "linear")
            task = self._submitted(request, self._new(request, "compute", part_name(index, cluster=c),
                                                      device=device.name, duration_s=latency + device.dispatch_s))
            input_share = share if stage.mode == "data" else 1.0
            self._gather(request, task, [Piece(p.device, p.item, p.region, p.size_bytes * input_share)
                                         for p in values[source]], None, source)
            out_share = share if stage.mode == "model" else 1.0
            pieces.append(Piece(device.name, task.id, None, value_bytes(last) * out_share))
        for node in nodes:
            values[node.name] = pieces

    # --- running it

    def run(self) -> list[Busy]:
        _RunState(self).loop()
        stuck = [i.label for i in self.items if i.done_s < 0]
        if stuck:
            raise HalocutError(f"simulation deadlocked: {len(stuck)} tasks never ran, first '{stuck[0]}'")
        return self.timeline

    def rates(self, flows: list[_Item], now: float) -> dict[int, float]:
        """Each flowing message's rate: its link's (traced) bandwidth, or its share of a shared medium."""
        on_medium: dict[str, int] = {}
        for flow in flows:
            medium = flow.route[flow.hop].medium
            if medium:
                on_medium[medium] = on_medium.get(medium, 0) + 1
        rates = {}
        for flow in flows:
            link = flow.route[flow.hop]
            rate = self.topology.bandwidth_at(link.key, now, link.bandwidth_bps)
            if link.medium:
                medium = self.topology.medium(link.medium)
                shared = self.topology.bandwidth_at(medium.name, now, medium.bandwidth_bps) / on_medium[link.medium]
                rate = min(rate, shared)
            rates[flow.id] = rate
        return rates

    def channel(self, item: _Item) -> tuple[str, str]:
        """The (from, to) direction of the link a message's current hop crosses."""
        here = self.route_start[item.id]
        for link in item.route[:item.hop]:
            here = link.b if link.a == here else link.a
        link = item.route[item.hop]
        return here, link.b if link.a == here else link.a


class _RunState:
    """The discrete-event loop: device queues, link channels (one message at a time per direction),
    and messages flowing at rates recomputed whenever the set of flows or a traced bandwidth changes."""

    def __init__(self, simulation: _Simulation):
        self.sim, self.items = simulation, simulation.items
        self.now = 0.0
        self.events: list[tuple[float, int, str, int]] = []
        self.sequence = itertools.count()
        devices = [d.name for d in simulation.topology.devices] + [DRIVER]
        self.device_queue: dict[str, list[tuple[int, int]]] = {name: [] for name in devices}
        self.running: dict[str, int | None] = {name: None for name in devices}
        self.channel_queue: dict[tuple[str, str], list[tuple[int, int]]] = {}
        self.channel_busy: dict[tuple[str, str], int | None] = {}
        self.flows: list[_Item] = []
        self.change_points = sorted({p.at_s for p in simulation.topology.trace if p.at_s > 0})

    def loop(self) -> None:
        for item in self.items:
            if item.waiting == 0:
                self.ready(item)
        while self.events or self.flows:
            rates = self.sim.rates(self.flows, self.now)
            next_flow = min((self.now + f.remaining_bits / rates[f.id] for f in self.flows), default=float("inf"))
            next_event = self.events[0][0] if self.events else float("inf")
            next_change = next((t for t in self.change_points if t > self.now + EPSILON), float("inf"))
            then = min(next_flow, next_event, next_change)
            for flow in self.flows:
                due = self.now + flow.remaining_bits / rates[flow.id] <= then
                # a flow due now is done, even if float rounding leaves it a sliver: time must advance
                flow.remaining_bits = 0.0 if due else flow.remaining_bits - rates[flow.id] * (then - self.now)
            self.now = then
            for flow in [f for f in self.flows if f.remaining_bits <= EPSILON * max(1.0, f.bits)]:
                self.flows.remove(flow)
                self.end_hop(flow)
            while self.events and self.events[0][0] <= self.now + EPSILON:
                _, _, kind, item_id = heapq.heappop(self.events)
                item = self.items[item_id]
                if kind == "compute":
                    self.end_compute(item)
                elif item.bits > 0:
                    item.remaining_bits = item.bits
                    self.flows.append(item)
                else:
                    self.end_hop(item)

    def ready(self, item: _Item) -> None:
        if item.kind == "compute":
            heapq.heappush(self.device_queue[item.device], (item.request, item.id))
            self.start_devices()
        elif not item.route:
            self.finish(item)
        else:
            self.queue_hop(item)

    def start_devices(self) -> None:
        for name, queue in self.device_queue.items():
            if self.running[name] is None and queue:
                _, item_id = heapq.heappop(queue)
                self.running[name] = item_id
                self.items[item_id].hop_start_s = self.now
                heapq.heappush(self.events, (self.now + self.items[item_id].duration_s, next(self.sequence),
                                             "compute", item_id))

    def end_compute(self, item: _Item) -> None:
        self.running[item.device] = None
        if item.duration_s > 0:
            self.sim.timeline.append(Busy(item.device, item.hop_start_s, self.now, item.label, item.request,
                                              "compute"))
        self.finish(item)
        self.start_devices()

    def queue_hop(self, item: _Item) -> None:
        channel = self.sim.channel(item)
        heapq.heappush(self.channel_queue.setdefault(channel, []), (item.request, item.id))
        self.start_channel(channel)

    def start_channel(self, channel: tuple[str, str]) -> None:
        queue = self.channel_queue.get(channel, [])
        if self.channel_busy.get(channel) is None and queue:
            _, item_id = heapq.heappop(queue)
            item = self.items[item_id]
            self.channel_busy[channel] = item_id
            link = item.route[item.hop]
            item.hop_start_s = self.now
            heapq.heappush(self.events, (self.now + link.latency_s + link.overhead_s, next(self.sequence), "flow",
                                         item_id))

    def end_hop(self, item: _Item) -> None:
        channel = self.sim.channel(item)
        link = item.route[item.hop]
        self.sim.timeline.append(Busy(link.key, item.hop_start_s, self.now, item.label, item.request,
                                          "transfer", item.bits / 8.0))
        self.channel_busy[channel] = None
        item.hop += 1
        if item.hop < len(item.route):
            self.queue_hop(item)
        else:
            self.finish(item)
        self.start_channel(channel)

    def finish(self, item: _Item) -> None:
        item.done_s = self.now
        for dependent in item.dependents:
            other = self.items[dependent]
            other.waiting -= 1
            if other.waiting == 0:
                self.ready(other)
