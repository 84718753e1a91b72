"""``halocut``: the default planner: fused volumes split min-max by exact bisection, boundaries by DP.

The algorithm, in four steps:

1. **Positions.** The graph can be cut where one tensor crosses, at the start
   of a layer group (a layer and its pointwise followers,
   :func:`passes.planning.layerwise.layer_groups`). A segment between two
   positions is a *volume* when all its nodes are spatially splittable and
   only its last node is used outside it.
2. **Volumes priced for every tile height.** :class:`VolumeTables` gives, for
   every volume and kind of device, the seconds to compute ``n`` output rows
   (the halo rows each layer must produce included), for every ``n``. A
   device's time for ``n`` rows adds receiving the rows it reads and, if the
   volume is gathered, sending its rows back. The split that makes the
   slowest device finish first is found exactly by bisection on the target
   time over these monotone, nonlinear tables (:func:`min_max_split`); a
   device that cannot finish even one row within the target gets none, which
   drops slow devices and slow links (DistrEdge's Pi 3).
3. **DP over segment boundaries.** States are (position, where the tensor at
   that position lies: the requester, one device, or *spread* over the
   previous volume's tiles). A segment is either one device's (a pipeline
   stage, as in Neurosurgeon / DeePar) or a volume entered from the requester
   (scatter) or from a spread volume (only the halo rows move, since every
   volume keeps the device order, so a device's tile overlaps its previous
   one), left spread or gathered. The DP keeps the cheapest way to reach each
   state; the request ends when the output is back at the requester.
4. **Scored by the simulator.** The DP's estimate is approximate (centred
   tiles, transfers that in reality overlap, per-message latency per
   neighbour), so the DP is run in several variants (all moves; volumes
   always gathered; single-device stages only), and with a safety net of the
   cheap closed-form planners of the papers (offload, neurosurgeon, deepar,
   and any registered in :data:`SAFETY_NET` that exist); every candidate is
   simulated with the same simulator that scores every planner, and the
   fastest plan wins. Tiles of one volume start as soon as their inputs
   arrive, while other tiles of the previous volume are still finishing: the
   simulator and the runtime execute tiles, not layers.

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

import time
from dataclasses import dataclass

import numpy as np

from torch import fx

from compiler.errors import HalocutError
from compiler.plan import Hop, Plan, Stage, Tile
from passes.cut import compute_nodes
from passes.halo import Region
from passes.planning import PLANNERS, register
from passes.planning.cuts import crossing
from passes.planning.pipeline import pipeline_plans
from passes.planning.layerwise import _splittable, layer_groups
from passes.planning.volume_cost import (VolumeTables, device_key, height, min_max_split, row_bytes,
                                          tensor_bytes)
from passes.slice import check_single_output
from targets.cost import CostModel, _fusable
from targets.topology import Device, Topology

SAFETY_NET = ("offload", "deepar", "mls", "aofl", "deeperthings", "deepthings")
SPREAD = "*spread*"


@register("halocut")
def plan_halocut(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                 cost: CostModel) -> Plan:
    from runtime.simulate import simulate

    devices = topology.compute_devices()
    if not devices:
        raise HalocutError(f"halocut: topology '{topology.name}' has no device that computes")
    search = _Search(graph, topology, devices, cost)
    candidates = [search.plan(model, input_shape, variant) for variant in ("all", "gathered", "stages")]
    candidates += pipeline_plans(search, model, input_shape)
    for name in SAFETY_NET:
        if name in PLANNERS:
            candidates.append(PLANNERS[name](graph, model, input_shape, topology, cost))
    scored = []
    for i, candidate in enumerate(c for c in candidates if c is not None):
        scored.append((simulate(graph, candidate, topology, cost, requests=1).latency_s, i, candidate))
    latency, _, best = min(scored)
    best = refine(graph, best, topology, cost, latency)
    return Plan(best.model, best.input_shape, best.stages, planner="halocut")


def refine(graph: fx.GraphModule, plan: Plan, topology: Topology, cost: CostModel, latency_s: float,
           budget_s: float = 0.25) -> Plan:
    """Local search on the simulated timeline: move rows from the tile that ends last to the one that ends first.

    Rows move in halving steps while the simulated latency drops; the time
    spent is bounded by ``budget_s``.
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
            step = max(1, rows[late] // 4)
            while step >= 1 and time.perf_counter() < deadline:
                moved = list(rows)
                moved[late] -= step
                moved[early] += step
                candidate = _with_rows(plan, index, moved)
                trial = simulate(graph, candidate, topology, cost, requests=1).latency_s
                if trial < latency_s - 1e-12:
                    plan, latency_s, improved = candidate, trial, True
                    break
                step //= 2
            if improved:
                break
    return plan


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


class _Search:
    def __init__(self, graph: fx.GraphModule, topology: Topology, devices: list[Device], cost: CostModel):
        self.graph, self.topology, self.devices, self.cost = graph, topology, devices, cost
        self.requester = topology.requester.name
        self.compute = {d.name for d in devices}
        self.nodes = compute_nodes(graph)
        self.index = {n.name: i for i, n in enumerate(self.nodes)}
        starts = [self.index[g[0].name] for g in layer_groups(graph)]
        self.positions = [p for p in starts if p == 0 or crossing(graph, p) <= 1] + [len(self.nodes)]
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
        self.links: dict[tuple[str, str], tuple[float, float]] = {}
        self.crossings: dict[int, float] = {}
        self.splittable: dict[tuple[int, int], bool] = {}

    # --- prices

    def link(self, source: str, target: str) -> tuple[float, float]:
        """(seconds per message, seconds per byte) from ``source`` to ``target``; shared media split evenly."""
        if (source, target) not in self.links:
            self.links[source, target] = self._link(source, target)
        return self.links[source, target]

    def _link(self, source: str, target: str) -> tuple[float, float]:
        if source == target:
            return 0.0, 0.0
        fixed, per_byte = 0.0, 0.0
        for link in self.topology.route(source, target):
            bandwidth = link.bandwidth_bps
            if link.medium:
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

    def _volume(self, volume: list[fx.Node], entry: str, gathered: bool) -> tuple[float, tuple]:
        needs = self.tables.needs(volume)
        members = {n.name for n in volume}
        outside = [s for s in needs if s not in members]
        n_out = needs[volume[-1].name]
        in_bytes = sum(needs[s] * row_bytes(self.graph_node(s)) for s in outside)
        if entry == SPREAD:  # a device already holds about its own share of rows: halos only
            own = sum(n_out * (height(self.graph_node(s)) / height(volume[-1])) * row_bytes(self.graph_node(s))
                      for s in outside)
            in_bytes = (in_bytes - own).clip(min=0)
        out_bytes = n_out * row_bytes(volume[-1])
        times, compute = {}, {}
        for device in self.devices:
            key = device_key(device)
            if key not in compute:
                compute[key] = self.tables.compute_s(volume, needs, key)
            total = compute[key]
            fixed, per_byte = self.link(self.requester, device.name)
            if device.name != self.requester or entry == SPREAD:
                fixed, per_byte = (fixed, per_byte) if device.name != self.requester else self.nearest()
                total = total + (fixed + in_bytes * per_byte) * (n_out > 0)
            if gathered and device.name != self.requester:
                total = total + (fixed + out_bytes * per_byte) * (n_out > 0)
            times[device.name] = total
        finish, rows = min_max_split(times, height(volume[-1]))
        return finish, tuple((d.name, rows[d.name]) for d in self.devices if rows.get(d.name))

    def nearest(self) -> tuple[float, float]:
        others = [self.link(self.requester, d.name) for d in self.devices if d.name != self.requester]
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

    def plan(self, model: str, input_shape: tuple[int, ...], variant: str) -> Plan | None:
        steps = self.search(variant)
        if steps is None:
            return None
        stages = []
        for step in steps:
            names = tuple(n.name for n in self.nodes[step.start:step.end])
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

    def search(self, variant: str) -> list[_Step] | None:
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
                    if h < len(holders):  # one device takes the segment
                        price = here + fixed[h, :-1] + per_byte[h, :-1] * self.crossing_bytes(i) + \
                            prefix[:-1, j] - prefix[:-1, i]
                        for k in columns[price < best[j][columns]]:
                            best[j][k] = price[k]
                            back[j, k] = (i, h, _Step(i, j, holders[k], device=holders[k]))
                    holder = holders[h] if h < len(holders) else SPREAD
                    if variant == "stages" or holder not in (self.requester, SPREAD):
                        continue
                    for step, price in self.volume_moves(i, j, holder, variant):
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
        steps = []
        while state in back:
            i, h, step = back[state]
            steps.append(step)
            state = (i, h)
        return steps[::-1]

    def volume_moves(self, i: int, j: int, holder: str, variant: str):
        if not self.is_volume(i, j):
            return
        for gathered in (True,) if variant == "gathered" else (True, False):
            price, rows = self.volume(i, j, holder, gathered)
            if rows:
                yield _Step(i, j, self.requester if gathered else SPREAD, rows=rows), price

    def output_bytes(self) -> float:
        (returned,) = [n.args[0] for n in self.graph.graph.nodes if n.op == "output"]
        outputs: list[fx.Node] = []
        fx.node.map_arg(returned, outputs.append)
        return sum(tensor_bytes(n) for n in outputs)

