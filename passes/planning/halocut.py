"""``halocut``: the default planner: fused volumes split min-max by exact bisection, boundaries by DP.

The algorithm, in five steps:

1. **Positions.** The graph can be cut at the start of a layer group (a layer
   and its pointwise followers, :func:`passes.planning.layerwise.layer_groups`)
   where at most two tensors cross. A segment between two positions is a
   *volume* when all its nodes are spatially splittable and only its last node
   is used outside it; a linear layer with its followers is an *fc* segment.
2. **Volumes priced for every tile height.** :class:`VolumeTables` gives, for
   every volume and kind of device, the seconds to compute ``n`` output rows
   (the halo rows each layer must produce included, for tiles at the top, in
   the middle and at the bottom, since border tiles read padding), for every
   ``n``. A device's time adds receiving the rows it reads (over its route;
   a shared medium divided among the devices on it) and, if the volume is
   gathered, sending its rows back. The split that makes the slowest device
   finish first is found exactly by bisection on the target time over these
   monotone, nonlinear tables (:func:`min_max_split`); a device that cannot
   finish one row within the target gets none, which drops slow devices and
   slow links (DistrEdge's Pi 3). fc segments are split by output features
   the same way (model parallelism, as MLS does for VGG's huge FC layers).
3. **DP over segment boundaries.** States are (position, where the tensor at
   that position lies: the requester, one device, or *spread* over the
   previous volume's tiles). A segment is one device's (a pipeline stage, as
   in Neurosurgeon / DeePar; from a spread state it first gathers the tiles),
   a volume entered from the requester (scatter) or from a spread volume (only
   halo rows move), left spread or gathered, or an fc split. The DP keeps the
   cheapest way to reach each state; a request ends with the output back at
   the requester. It runs with min-max splits per volume, with volumes always
   gathered, with single-device stages only, and with one fixed layout for
   every volume (the k fastest devices, rows by speed, so a device's tile of
   the next volume overlaps its previous one; identical devices also as 2-D
   grids, MLS's prefetching).
4. **Families the DP prices badly, priced on their own.** A leading volume
   balanced knowing that the device running the rest keeps its own rows
   (DistrEdge's plans); pipelined offload, a volume sent to one server in row
   tiles so sending overlaps computing (MW's setting); a second volume shared
   by the tail device with a neighbour.
5. **Scored by the simulator.** Every candidate is simulated with the same
   simulator that scores every planner; the two fastest are improved by a
   local search on the simulated timeline (:func:`refine`), and the fastest
   wins. Tiles of one volume start as soon as their inputs arrive, while other
   tiles of the previous volume are still finishing: the simulator and the
   runtime execute tiles, not layers. A safety net (:data:`SAFETY_NET`) adds
   the plans of the papers' planners whose families the search does not
   cover, each where its own paper's setting holds, so halocut is never worse
   than them there; ``benchmarks/planners.py`` shows which cases it decides.

>>> from compiler.prepare import prepare_model
>>> from targets.topology import load_topology
>>> from pathlib import Path
>>> prepared = prepare_model("alexnet", (1, 3, 96, 96))
>>> topology = load_topology(Path(__file__).parents[2] / "examples/topologies/distredge-db.yaml")
>>> plan = plan_halocut(prepared.graph, "alexnet", prepared.input_shape, topology, CostModel())
>>> plan.planner
'halocut'
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np

from torch import fx

from compiler.errors import HalocutError
from compiler.plan import Cluster, Hop, Plan, Stage, Tile
from passes.cut import compute_nodes
from passes.halo import Region
from passes.planning import PLANNERS, register
from passes.planning.cuts import crossing
from passes.planning.pipeline import pipeline_plans
from passes.planning.layerwise import _splittable, layer_groups, split_rows
from passes.planning.volume_cost import (VolumeTables, device_key, height, min_max_split, row_bytes,
                                          tensor_bytes)
from passes.slice import check_fc, check_single_output
from targets.cost import CostModel, _fusable
from targets.topology import Device, Topology

def _identical_providers(topology: Topology) -> bool:
    providers = [d for d in topology.compute_devices() if d.role != "requester"]
    return len({device_key(d) for d in providers}) == 1


def _two_devices(topology: Topology) -> bool:
    return len(topology.compute_devices()) == 2


def _few_providers(topology: Topology) -> bool:
    return 2 <= len([d for d in topology.compute_devices() if d.role != "requester"]) <= 4


# The safety net: the papers' planners whose plan families the DP does not search, each where its own paper's
# setting holds (MLS: identical devices; MW and its brute force: one end device and one server; DistrEdge's
# DDPG, seconds of training: its four-provider groups). halocut's own search decides almost every case of
# benchmarks/planners.py by itself; the net makes "no worse than any of them" hold by construction.
SAFETY_NET = (("offload", lambda t: True), ("deepar", lambda t: True), ("deepthings", lambda t: True),
              ("mls", _identical_providers), ("mw", _two_devices), ("bf", _two_devices),
              ("distredge", _few_providers))
SPREAD = "*spread*"


@register("halocut")
def plan_halocut(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                 cost: CostModel, safety_net: bool = True) -> Plan:
    from runtime.simulate import simulate

    devices = topology.compute_devices()
    if not devices:
        raise HalocutError(f"halocut: topology '{topology.name}' has no device that computes")
    search = _Search(graph, topology, devices, cost)
    candidates = [search.plan(model, input_shape, variant) for variant in ("all", "gathered", "stages")]
    candidates += pipeline_plans(search, model, input_shape)
    candidates += aligned_plans(search, model, input_shape)
    candidates += prefix_plans(search, model, input_shape)
    for name, applies in SAFETY_NET if safety_net else ():
        if name in PLANNERS and applies(topology):
            candidates.append(PLANNERS[name](graph, model, input_shape, topology, cost))
    scored = []
    for i, candidate in enumerate(c for c in candidates if c is not None):
        scored.append((simulate(graph, candidate, topology, cost, requests=1).latency_s, i, candidate))
    scored.sort(key=lambda item: item[:2])
    for _, _, plan in scored[:2]:
        split = split_tail(search, plan)
        if split is not None:
            scored.append((simulate(graph, split, topology, cost, requests=1).latency_s, -1, split))
    scored.sort(key=lambda item: item[:2])
    refined = [refine(graph, plan, topology, cost, latency, budget_s=0.15) for latency, _, plan in scored[:2]]
    best = min(refined, key=lambda plan: simulate(graph, plan, topology, cost, requests=1).latency_s)
    return Plan(best.model, best.input_shape, best.stages, planner="halocut")


def prefix_plans(search: _Search, model: str, input_shape: tuple[int, ...], keep: int = 12) -> list[Plan]:
    """One leading volume split min-max from the requester, the rest on one device that gathers its tiles.

    The DP prices a spread volume's exit only roughly; this family, priced by
    the exact gather from each tile, is where splitting only the wide early
    layers pays (DistrEdge's plans on its four-device groups).
    """
    whole = len(search.nodes)
    back = {d.name: search.link(d.name, search.requester) for d in search.devices}
    tails = sorted(search.devices, key=lambda d: search.single(0, whole, d) + search.link(search.requester, d.name)[0]
                   + search.link(search.requester, d.name)[1] * search.crossing_bytes(0))[:3]
    subsets = [search.devices] + ([tails[:2], tails] if len(search.devices) > 3 else [])
    priced = []
    for j in (p for p in search.positions if p > 0 and search.is_volume(0, p)):
        finish, rows = search.volume(0, j, search.requester, False)  # balanced, then gathered by the best device
        if len(rows) > 1:
            arrive = search.gather(j, _Step(0, j, SPREAD, rows=rows))
            priced += [(finish + arrive[k] + search.single(j, whole, d) + back[d.name][0] + back[d.name][1] *
                        search.output_bytes(), j, d.name, rows) for k, d in enumerate(search.devices)]
        for tail, among in ((t, a) for t in tails for a in subsets if t in a):
            # balanced knowing that the device running the rest keeps its own rows
            finish, rows = search._volume(search.nodes[:j], search.requester, False, tail.name, among)
            if len(rows) > 1:
                fixed, per_byte = back[tail.name]
                priced.append((finish + search.single(j, whole, tail) + fixed + per_byte * search.output_bytes(),
                               j, tail.name, rows))
    plans = []
    for _, j, device, rows in sorted(priced)[:keep]:
        steps = [_Step(0, j, SPREAD, rows=rows)] + ([_Step(j, whole, device, device=device)] if j < whole else [])
        plans.append(search.build(model, input_shape, steps))
    return plans


def _anchor(first: int, end: int, total: int) -> str:
    return "top" if first == 0 else "bottom" if end == total else "middle"


def aligned_plans(search: _Search, model: str, input_shape: tuple[int, ...], keep: int = 4) -> list[Plan]:
    """DP plans whose volumes all keep one layout: the k fastest devices, rows in proportion to their speed.

    One layout means a device's tile of the next volume overlaps its tile of
    this one, so only halos move between volumes (MLS's prefetching, with
    heterogeneous shares). Identical devices also get a 2-D grid version.
    """
    whole = len(search.nodes)
    ranked = sorted(search.devices, key=lambda d: search.single(0, whole, d) + search.link(search.requester, d.name)[0])
    priced = []
    providers = [d for d in ranked if d.name != search.requester]
    for pool in (ranked, providers) if len(providers) < len(ranked) else (ranked,):
        for k in sorted({2, 4, 8, len(pool)} & set(range(1, len(pool) + 1))):
            split = tuple((d.name, 1.0 / max(search.single(0, whole, d), 1e-12)) for d in pool[:k])
            plan = search.plan(model, input_shape, "aligned", split)
            if plan is not None:
                priced.append((search.estimate, len(priced), plan))
    chosen = [plan for _, _, plan in sorted(priced)[:keep]]
    return chosen + [g for g in (_as_grid(search, p) for p in chosen) if g is not None]


def _as_grid(search: _Search, plan: Plan) -> Plan | None:
    """The plan with each spatial stage over identical devices tiled as a near-square grid, same device order."""
    from passes.planning.coopai_units import grid_regions

    stages, changed = [], False
    for stage in plan.stages:
        devices = [t.devices[0].device for t in stage.tiles]
        keys = {device_key(search.by_name[d]) for d in devices}
        if stage.kind != "spatial" or len(devices) < 4 or len(keys) != 1:
            stages.append(stage)
            continue
        shape = tuple(search.graph_node(stage.nodes[-1]).meta["tensor_meta"].shape)
        regions = grid_regions(shape[2], shape[3], len(devices))
        if regions is None:
            stages.append(stage)
            continue
        stages.append(Stage("spatial", stage.nodes, tiles=tuple(Tile(r, (Hop(d),)) for r, d in zip(regions, devices))))
        changed = True
    return Plan(plan.model, plan.input_shape, tuple(stages), planner=plan.planner) if changed else None


def split_tail(search: _Search, plan: Plan) -> Plan | None:
    """After a spatial stage, let the next single stage share its leading volume with the previous stage's
    second device (DistrEdge's second volume): the best of a few splits and volume ends, by simulation."""
    from runtime.simulate import simulate

    best, best_s = None, simulate(search.graph, plan, search.topology, search.cost, requests=1).latency_s
    for index in range(1, len(plan.stages)):
        before, stage = plan.stages[index - 1], plan.stages[index]
        if before.kind != "spatial" or stage.kind != "single" or len(before.tiles) < 2:
            continue
        start = search.index[stage.nodes[0]]
        others = [t for t in before.tiles if t.devices[0].device != stage.device]
        if not others:
            continue
        partner = max(others, key=lambda t: t.region.height).devices[0].device
        ends = [k for k in search.positions if start < k < start + len(stage.nodes) and search.is_volume(start, k)]
        for end, share, first in itertools.product(ends[-2:], (0.125, 0.25, 0.5), (True, False)):
            total = height(search.nodes[end - 1])
            mine = total - max(1, int(round(total * share)))
            if mine >= 1:
                rows = ((stage.device, mine), (partner, total - mine))
                steps = [_Step(start, end, SPREAD, rows=rows if first else rows[::-1]),
                         _Step(end, start + len(stage.nodes), stage.device, device=stage.device)]
                tail = search.build(plan.model, plan.input_shape, steps)
                candidate = Plan(plan.model, plan.input_shape, plan.stages[:index] + tail.stages +
                                 plan.stages[index + 1:], planner=plan.planner)
                latency = simulate(search.graph, candidate, search.topology, search.cost, requests=1).latency_s
                if latency < best_s:
                    best, best_s = candidate, latency
        break
    return best


def refine(graph: fx.GraphModule, plan: Plan, topology: Topology, cost: CostModel, latency_s: float,
           budget_s: float = 0.25) -> Plan:
    """Local search on the simulated timeline: move rows from the tile that ends last to the one that ends first
    (in halving steps), or one row between neighbouring tiles, while the simulated latency drops.

    The time spent is bounded by ``budget_s``.
    """
    from runtime.names import part_name
    from runtime.simulate import simulate

    deadline = time.perf_counter() + budget_s
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        timeline = simulate(graph, plan, topology, cost, requests=1).timeline
        ends = {i.label: i.end_s for i in timeline if i.kind == "compute"}
        for index, stage in enumerate(plan.stages):
            if stage.kind != "spatial" or len(stage.tiles) < 2 or any(len(t.devices) > 1 for t in stage.tiles) or \
                    any(t.region.cols != stage.tiles[0].region.cols for t in stage.tiles):
                continue
            finish = [ends.get(part_name(index, t), 0.0) for t in range(len(stage.tiles))]
            late, early = int(np.argmax(finish)), int(np.argmin(finish))
            rows = [t.region.height for t in stage.tiles]
            moves = [(late, early, step) for step in _halvings(max(1, rows[late] // 4))]
            moves += [(a, b, 1) for t in range(len(rows) - 1) for a, b in ((t, t + 1), (t + 1, t))]
            for source, target, step in moves:  # the big move first, then one row between neighbours
                if time.perf_counter() >= deadline:
                    break
                moved = list(rows)
                moved[source] -= step
                moved[target] += step
                if moved[source] < 0:
                    continue
                candidate = _with_rows(plan, index, moved)
                trial = simulate(graph, candidate, topology, cost, requests=1).latency_s
                if trial < latency_s - 1e-12:
                    plan, latency_s, improved = candidate, trial, True
                    break
            if improved:
                break
    return plan


def _halvings(step: int) -> list[int]:
    steps = []
    while step >= 1:
        steps.append(step)
        step //= 2
    return steps


def _with_rows(plan: Plan, index: int, rows: list[int]) -> Plan:
    """The plan with stage ``index``'s row tiles resized to ``rows`` (tiles given no rows dropped)."""
    stage = plan.stages[index]
    tiles, top = [], 0
    for tile, count in zip(stage.tiles, rows):
        if count > 0:
            tiles.append(Tile(Region((top, top + count), tile.region.cols), tile.devices))
            top += count
    stages = list(plan.stages)
    stages[index] = Stage("spatial", stage.nodes, tiles=tuple(tiles))
    return Plan(plan.model, plan.input_shape, tuple(stages), planner=plan.planner)


@dataclass(frozen=True)
class _Step:
    start: int
    end: int
    holder: str  # where the segment's output lies afterwards: a device, or SPREAD
    device: str | None = None  # single-device segment
    rows: tuple[tuple[str, int], ...] = ()  # volume: rows per device, in tile order
    clusters: tuple[tuple[str, int, int], ...] = ()  # fc: (device, first feature, end feature)


class _Search:
    def __init__(self, graph: fx.GraphModule, topology: Topology, devices: list[Device], cost: CostModel):
        self.graph, self.topology, self.devices, self.cost = graph, topology, devices, cost
        self.requester = topology.requester.name
        self.compute = {d.name for d in devices}
        self.nodes = compute_nodes(graph)
        self.index = {n.name: i for i, n in enumerate(self.nodes)}
        starts = [self.index[g[0].name] for g in layer_groups(graph)]
        self.positions = [p for p in starts if p == 0 or crossing(graph, p) <= 2] + [len(self.nodes)]
        self.tables = VolumeTables(self.nodes, devices, cost)
        everything = set(self.index)
        self.prefix: dict[tuple, list[float]] = {}
        for device in devices:  # running sums of whole-layer latencies, pointwise ops fused as in the simulator
            sums = [0.0]
            for node in self.nodes:
                layer = node.meta.get("layer")
                fused = layer is not None and _fusable(node, everything)
                sums.append(sums[-1] + (cost.latency(device, layer, None, node.name, fused=fused) if layer else 0.0))
            self.prefix[device_key(device)] = sums
        self.volumes: dict[tuple[int, int, str, bool], tuple[float, tuple]] = {}
        self.links: dict[tuple[str, str, bool], tuple[float, float]] = {}
        self.crossings: dict[int, float] = {}
        self.splittable: dict[tuple[int, int], bool] = {}
        self.flow_cache: dict[tuple[int, int], tuple] = {}
        self.compute_cache: dict[tuple, np.ndarray] = {}
        self.by_name = {d.name: d for d in devices}

    # --- prices

    def link(self, source: str, target: str, shared: bool = False) -> tuple[float, float]:
        """(seconds per message, seconds per byte) from ``source`` to ``target``.

        ``shared``: the message goes out with one to every device on the same
        medium (a scatter or gather of tiles or clusters), which divide it evenly.
        """
        if (source, target, shared) not in self.links:
            self.links[source, target, shared] = self._link(source, target, shared)
        return self.links[source, target, shared]

    def _link(self, source: str, target: str, shared: bool) -> tuple[float, float]:
        if source == target:
            return 0.0, 0.0
        fixed, per_byte = 0.0, 0.0
        for link in self.topology.route(source, target):
            bandwidth = link.bandwidth_bps
            if link.medium and shared:
                sharing = sum(1 for d in self.devices if any(x.medium == link.medium
                                                             for x in self.topology.route(self.requester, d.name)))
                bandwidth = self.topology.medium(link.medium).bandwidth_bps / max(1, sharing)
            fixed += link.latency_s + link.overhead_s
            per_byte += 8.0 / bandwidth
        return fixed, per_byte

    def crossing_bytes(self, position: int) -> float:
        if position not in self.crossings:
            self.crossings[position] = self._crossing_bytes(position)
        return self.crossings[position]

    def _crossing_bytes(self, position: int) -> float:
        before = {n.name for n in self.nodes[:position]}
        made = [s for n in self.nodes[position:] for s in n.all_input_nodes if s.name in before]
        if position == 0:
            made = [n for n in self.graph.graph.nodes if n.op == "placeholder"]
        return sum(tensor_bytes(n) for n in dict.fromkeys(made))

    def single(self, start: int, end: int, device: Device) -> float:
        sums = self.prefix[device_key(device)]
        return sums[end] - sums[start]

    def volume(self, start: int, end: int, entry: str, gathered: bool) -> tuple[float, tuple]:
        """Min-max time and split of a volume entered from ``entry`` (the requester or SPREAD)."""
        key = (start, end, entry, gathered)
        if key not in self.volumes:
            self.volumes[key] = self._volume(self.nodes[start:end], entry, gathered)
        return self.volumes[key]

    def _volume(self, volume: list[fx.Node], entry: str, gathered: bool, tail: str | None = None,
                among: list[Device] | None = None) -> tuple[float, tuple]:
        start, end = self.index[volume[0].name], self.index[volume[-1].name] + 1
        among = among or self.devices
        out_bytes = self.flows(start, end)[3]
        anchors: dict[str, str] = {}
        for _ in range(3):  # the first and last tiles are border tiles: price them so until the set settles
            times = {}
            for d in among:
                times[d.name] = self.device_time(start, end, d, entry, gathered, anchors.get(d.name, "middle"))
                if tail is not None and d.name != tail:  # its rows go on to the device that runs the rest
                    fixed, per_byte = self.link(d.name, tail, shared=True)
                    times[d.name] = times[d.name] + (fixed + per_byte * out_bytes) * (out_bytes > 0)
            finish, rows = min_max_split(times, height(volume[-1]))
            active = [d.name for d in among if rows.get(d.name)]
            settled = {active[-1]: "bottom", active[0]: "top"} if active else {}
            if settled == anchors:
                break
            anchors = settled
        return finish, tuple((d.name, rows[d.name]) for d in among if rows.get(d.name))

    def aligned(self, start: int, end: int, entry: str, gathered: bool, split: tuple) -> tuple[float, tuple]:
        """A volume split by fixed weights ``split`` ((device, weight), ...): every volume keeps one layout."""
        key = ("aligned", start, end, entry, gathered, split)
        if key not in self.volumes:
            total = height(self.nodes[end - 1])
            spans = split_rows(total, dict(split))
            finish = max(self.device_time(start, end, self.by_name[d], entry, gathered, _anchor(a, b, total))[b - a]
                         for d, a, b in spans)
            self.volumes[key] = (float(finish), tuple((d, b - a) for d, a, b in spans))
        return self.volumes[key]

    def flows(self, start: int, end: int, anchor: str = "middle") -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
        """Rows each node needs, bytes read from outside (all, and halo only), bytes of output, by tile height."""
        if (start, end, anchor) not in self.flow_cache:
            volume = self.nodes[start:end]
            needs = self.tables.needs(volume, anchor)
            members = {n.name for n in volume}
            outside = [s for s in needs if s not in members]
            n_out = needs[volume[-1].name]
            in_bytes = sum(needs[s] * row_bytes(self.graph_node(s)) for s in outside)
            own = sum(n_out * (height(self.graph_node(s)) / height(volume[-1])) * row_bytes(self.graph_node(s))
                      for s in outside)  # entered spread, a device already holds about its own share of rows
            self.flow_cache[start, end, anchor] = (needs, in_bytes, (in_bytes - own).clip(min=0),
                                                   n_out * row_bytes(volume[-1]))
        return self.flow_cache[start, end, anchor]

    def device_time(self, start: int, end: int, device: Device, entry: str, gathered: bool,
                    anchor: str = "middle") -> np.ndarray:
        """Seconds for ``n`` rows of the volume on ``device``, receiving its input and sending its output back."""
        needs, in_bytes, halo_bytes, out_bytes = self.flows(start, end, anchor)
        key = (start, end, device_key(device), anchor)
        if key not in self.compute_cache:
            self.compute_cache[key] = self.tables.compute_s(self.nodes[start:end], needs, device_key(device))
        total = self.compute_cache[key]
        working = out_bytes > 0
        fixed, per_byte = self.link(self.requester, device.name, shared=True)
        if device.name == self.requester and entry == SPREAD:
            fixed, per_byte = self.nearest()
        if device.name != self.requester or entry == SPREAD:
            total = total + (fixed + (halo_bytes if entry == SPREAD else in_bytes) * per_byte) * working
        if gathered and device.name != self.requester:
            total = total + (fixed + out_bytes * per_byte) * working
        return total

    def gather(self, position: int, spread: _Step) -> np.ndarray:
        """Seconds for each device to collect a spread volume's output from the devices that hold its rows."""
        key = ("gather", position, spread.rows)
        if key in self.volumes:
            return self.volumes[key]
        total = sum(rows for _, rows in spread.rows)
        row = self.crossing_bytes(position) / max(total, 1)
        arrive = np.zeros(len(self.devices))
        for k, device in enumerate(self.devices):
            for holder, rows in spread.rows:
                fixed, per_byte = self.link(holder, device.name, shared=True)
                arrive[k] = max(arrive[k], fixed + per_byte * rows * row)
        self.volumes[key] = arrive
        return arrive

    def is_fc(self, start: int, end: int) -> bool:
        """A linear layer and its pointwise followers, which model parallelism splits by output features."""
        nodes = self.nodes[start:end]
        if nodes[0].meta["layer"].kind != "linear":
            return False
        try:
            check_fc(nodes, "model", [(0, nodes[0].meta["layer"].attrs["out_features"])])
        except HalocutError:
            return False
        return True

    def fc_split(self, start: int, end: int, holder: str) -> tuple[float, tuple]:
        """Min-max split of an fc segment's output features (in steps of 1/256), input from ``holder``."""
        key = ("fc", start, end, holder)
        if key not in self.volumes:
            nodes = self.nodes[start:end]
            features = nodes[0].meta["layer"].attrs["out_features"]
            unit = max(1, features // 256)
            counts = np.minimum(np.arange(features // unit + 2) * unit, features)
            counts = counts[: int(np.searchsorted(counts, features)) + 1]
            out_per_feature = tensor_bytes(nodes[-1]) / features
            times = {}
            for device in self.devices:
                whole = sum(self.cost.latency(device, n.meta["layer"]) for n in nodes
                            if n.meta["layer"].kind == "linear")
                fixed, per_byte = self.link(holder, device.name, shared=True)
                back_fixed, back_per_byte = self.link(device.name, self.requester, shared=True)
                time = whole * counts / features + (fixed + per_byte * self.crossing_bytes(start)) + \
                    back_fixed + back_per_byte * counts * out_per_feature
                time[0] = 0.0
                times[device.name] = time
            finish, steps = min_max_split(times, len(counts) - 1)
            clusters, first = [], 0
            for device in self.devices:
                if steps.get(device.name):
                    last = int(counts[min(len(counts) - 1, np.searchsorted(counts, first) + steps[device.name])])
                    clusters.append((device.name, first, last))
                    first = last
            self.volumes[key] = (finish, tuple(clusters))
        return self.volumes[key]

    def nearest(self) -> tuple[float, float]:
        others = [self.link(self.requester, d.name, shared=True) for d in self.devices if d.name != self.requester]
        return min(others, default=(0.0, 0.0), key=lambda fb: fb[1])

    def graph_node(self, name: str) -> fx.Node:
        if name in self.index:
            return self.nodes[self.index[name]]
        return next(n for n in self.graph.graph.nodes if n.name == name)

    def is_volume(self, start: int, end: int) -> bool:
        if (start, end) not in self.splittable:
            self.splittable[start, end] = self._is_volume(start, end)
        return self.splittable[start, end]

    def _is_volume(self, start: int, end: int) -> bool:
        volume = self.nodes[start:end]
        if not all(_splittable(n) or n.meta["layer"].kind == "size" for n in volume) or not _splittable(volume[-1]):
            return False
        try:
            check_single_output(volume)
        except HalocutError:
            return False
        return True

    # --- the DP

    def plan(self, model: str, input_shape: tuple[int, ...], variant: str, split: tuple | None = None) -> Plan | None:
        steps = self.search(variant, split)
        return None if steps is None else self.build(model, input_shape, steps)

    def build(self, model: str, input_shape: tuple[int, ...], steps: list[_Step]) -> Plan:
        stages = []
        for step in steps:
            names = tuple(n.name for n in self.nodes[step.start:step.end])
            if step.clusters:
                stages.append(Stage("fc", names, mode="model",
                                    clusters=tuple(Cluster((a, b), d) for d, a, b in step.clusters)))
                continue
            if step.device is not None:
                if stages and stages[-1].kind == "single" and stages[-1].device == step.device:
                    stages[-1] = Stage("single", stages[-1].nodes + names, device=step.device)
                else:
                    stages.append(Stage("single", names, device=step.device))
                continue
            width = tuple(self.nodes[step.end - 1].meta["tensor_meta"].shape)[3]
            tiles, top = [], 0
            for device, rows in step.rows:
                tiles.append(Tile(Region((top, top + rows), (0, width)), (Hop(device),)))
                top += rows
            stages.append(Stage("spatial", names, tiles=tuple(tiles)))
        return Plan(model, tuple(input_shape), tuple(stages), planner="halocut")

    def search(self, variant: str, split: tuple | None = None) -> list[_Step] | None:
        """Cheapest steps from the input at the requester to the output back at it (None: no way)."""
        holders = [d.name for d in self.devices] + ([self.requester] if self.requester not in self.compute else [])
        slot = {h: k for k, h in enumerate(holders)}
        slot[SPREAD] = len(holders)
        fixed, per_byte = (np.array([[self.link(h, d.name)[k] for d in self.devices] + [0.0] for h in holders])
                           for k in (0, 1))
        prefix = np.array([self.prefix[device_key(d)] for d in self.devices] + [[0.0] * (len(self.nodes) + 1)])
        columns = np.arange(len(self.devices))
        best = {p: np.full(len(holders) + 1, np.inf) for p in self.positions}
        back: dict[tuple[int, int], tuple[int, int, _Step]] = {}
        best[0][slot[self.requester]] = 0.0
        for i in self.positions:
            for h in np.flatnonzero(np.isfinite(best[i])):
                here = best[i][h]
                for j in (p for p in self.positions if p > i):
                    if h < len(holders) or (i, h) in back:  # one device takes the segment
                        arrive = fixed[h, :-1] + per_byte[h, :-1] * self.crossing_bytes(i) if h < len(holders) \
                            else self.gather(i, back[i, h][2])
                        price = here + arrive + prefix[:-1, j] - prefix[:-1, i]
                        for k in columns[price < best[j][columns]]:
                            best[j][k] = price[k]
                            back[j, k] = (i, h, _Step(i, j, holders[k], device=holders[k]))
                        if variant in ("all", "aligned") and self.is_fc(i, j):
                            price, clusters = self.fc_split(i, j, holders[h])
                            k = slot[self.requester]
                            if len(clusters) > 1 and here + price < best[j][k]:
                                best[j][k] = here + price
                                back[j, k] = (i, h, _Step(i, j, self.requester, clusters=clusters))
                    holder = holders[h] if h < len(holders) else SPREAD
                    if variant == "stages" or holder not in (self.requester, SPREAD):
                        continue
                    for step, price in self.volume_moves(i, j, holder, variant, split):
                        k = slot[step.holder]
                        if here + price < best[j][k]:
                            best[j][k] = here + price
                            back[j, k] = (i, h, step)
        end = len(self.nodes)
        finals = [best[end][k] + fixed_to + per * self.output_bytes() for k, (fixed_to, per) in
                  enumerate(self.link(h, self.requester) for h in holders)]
        if not np.isfinite(min(finals)):
            return None
        state = (end, int(np.argmin(finals)))
        self.estimate = float(min(finals))
        steps = []
        while state in back:
            i, h, step = back[state]
            steps.append(step)
            state = (i, h)
        return steps[::-1]

    def volume_moves(self, i: int, j: int, holder: str, variant: str, split: tuple | None):
        if not self.is_volume(i, j):
            return
        for gathered in (True,) if variant == "gathered" else (True, False):
            price, rows = self.aligned(i, j, holder, gathered, split) if split else self.volume(i, j, holder, gathered)
            if rows:
                yield _Step(i, j, self.requester if gathered else SPREAD, rows=rows), price

    def output_bytes(self) -> float:
        (returned,) = [n.args[0] for n in self.graph.graph.nodes if n.op == "output"]
        outputs: list[fx.Node] = []
        fx.node.map_arg(returned, outputs.append)
        return sum(tensor_bytes(n) for n in outputs)

