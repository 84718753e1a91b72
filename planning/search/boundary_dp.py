"""The ``halocut`` planner's DP over segment boundaries, and the prices it is built from.

:class:`BoundarySearch` prices, for one graph, topology and cost model:
single-device segments (running sums of layer latencies), volumes split
min-max over per-device row tables (:mod:`halocut.planning.search.volume_cost`), fc
segments split by output features, transfers along routes, and gathers from
a spread volume's tiles. :meth:`BoundarySearch.search` finds the cheapest
sequence of :class:`Step` s from the input at the requester to the output
back at it; :meth:`BoundarySearch.build` turns steps into a Plan. The
algorithm as a whole is described in :mod:`halocut.planning.planners.halocut`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.graph import compute_nodes, output_nodes, tensor_inputs
from halocut.ir.layers import value_bytes
from halocut.ir.ops import POINTWISE
from halocut.ir.plan import Cluster, Hop, Plan, Stage, Tile, check_fc, check_single_output
from halocut.ir.regions import Region
from halocut.planning.search.cuts import crossings as all_crossings
from halocut.planning.search.layers import layer_groups, split_rows, splittable
from halocut.planning.search.volume_cost import VolumeTables, device_key, height, min_max_rows, row_bytes
from halocut.targets.cost import CostModel, fusable
from halocut.targets.topology import Device, Topology

SPREAD = "*spread*"  # a holder: the tensor lies in tiles over the previous volume's devices


@dataclass(frozen=True)
class Step:
    start: int
    end: int
    holder: str  # where the segment's output lies afterwards: a device, or SPREAD
    device: str | None = None  # single-device segment
    rows: tuple[tuple[str, int], ...] = ()  # volume: rows per device, in tile order
    clusters: tuple[tuple[str, int, int], ...] = ()  # fc: (device, first feature, end feature)


class BoundarySearch:
    def __init__(self, graph: fx.GraphModule, topology: Topology, devices: list[Device], cost: CostModel):
        self.graph, self.topology, self.devices, self.cost = graph, topology, devices, cost
        self.requester = topology.requester.name
        self.compute = {d.name for d in devices}
        self.nodes = compute_nodes(graph)
        self.index = {n.name: i for i, n in enumerate(self.nodes)}
        starts = [self.index[g[0].name] for g in layer_groups(graph)]
        crossings = all_crossings(graph)
        self.positions = [p for p in starts if p == 0 or crossings[p] <= 2] + [len(self.nodes)]
        # volumes start and end where one tensor crosses: inside a residual block a volume would leave the skip
        # behind on the requester (priced, but never the cheapest), and the pairs grow as positions squared
        self.volume_positions = {p for p in self.positions if p in (0, len(self.nodes)) or crossings[p] <= 1}
        self.tables = VolumeTables(self.nodes, devices, cost)
        everything = set(self.index)
        self.prefix: dict[tuple, list[float]] = {}
        for device in devices:  # running sums of whole-layer latencies, pointwise ops fused as in the simulator
            sums = [0.0]
            for node in self.nodes:
                layer = node.meta.get("layer")
                fused = layer is not None and fusable(node, everything)
                sums.append(sums[-1] + (cost.latency(device, layer, None, node.name, fused=fused) if layer else 0.0))
            self.prefix[device_key(device)] = sums
        self.volumes: dict[tuple[int, int, str, bool], tuple[float, tuple]] = {}
        self.links: dict[tuple[str, str, bool], tuple[float, float]] = {}
        self.crossings: dict[int, float] = {}
        self.splittable: dict[tuple[int, int], bool] = {}
        self.flow_cache: dict[tuple[int, str], dict] = {}
        self.flows_of: dict[tuple[int, int, str], tuple] = {}
        self.spans: dict[tuple[int, tuple], list] = {}
        self.compute_cache: dict[tuple, np.ndarray] = {}
        self.by_name = {d.name: d for d in devices}
        self.slot_of = {d.name: k for k, d in enumerate(devices)}
        self.device_keys = [device_key(d) for d in devices]
        self.kinds = list(dict.fromkeys(self.device_keys))
        self.fc_segments: dict[tuple[int, int], bool] = {}
        self.fc_cache: dict[int, set[int]] = {}
        self.ending_cache: dict[tuple[int, str, int], tuple] = {}
        self.volume_member = [splittable(n) or n.meta["layer"].kind == "size" for n in self.nodes]
        self.splits = [splittable(n) for n in self.nodes]
        self.not_members = np.concatenate([[0], np.cumsum([not m for m in self.volume_member])])
        # the last position that reads each node (a size node's readers do not count; past the end: none here)
        self.last_user = np.array([-1 if n.meta["layer"].kind == "size" else
                                   max((self.index.get(u.name, len(self.nodes)) for u in n.users), default=-1)
                                   for n in self.nodes])
        self.walk_cache: dict[tuple[int, int, str], dict[str, np.ndarray]] = {}
        self.latency_rows: dict[int, np.ndarray] = {}
        # the position of the producer each pointwise node fuses into when both are in a volume (-1: none)
        self.fuses_into = [self.index[next(n for n in node.all_input_nodes if n.op != "get_attr").name]
                           if node.meta.get("layer") is not None and node.meta["layer"].kind in POINTWISE
                           and fusable(node, everything) else -1 for node in self.nodes]
        self.layer_kinds = [n.meta["layer"].kind for n in self.nodes]
        self.volume_cache: dict[int, set[int]] = {}
        self.matrix_key, self.matrix = None, None
        self.tile_key, self.tile_prices = None, None
        self.heights = {n.name: height(n) for n in graph.graph.nodes if "tensor_meta" in n.meta}
        self.row_bytes = {n.name: row_bytes(n) for n in graph.graph.nodes if "tensor_meta" in n.meta}
        to_device = [self.link(self.requester, d.name, shared=True) for d in devices]
        halo = [self.halo_link(d.name) for d in devices]
        back = [self.link(d.name, self.requester, shared=True) for d in devices]
        mine = [d.name == self.requester for d in devices]
        self.entry_cost = {False: tuple(np.array([0.0 if m else fb[k] for m, fb in zip(mine, to_device)])
                                        for k in (0, 1)),
                           True: tuple(np.array([fb[k] for fb in halo]) for k in (0, 1))}
        self.exit_cost = tuple(np.array([0.0 if m else fb[k] for m, fb in zip(mine, back)]) for k in (0, 1))

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
        """(fixed seconds, seconds per byte) of the route; a shared medium divided among every device whose route
        from the requester crosses it (halocut's own estimate, not a paper's: they all send at once)."""
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
        return sum(value_bytes(n) for n in dict.fromkeys(made))

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
        picked = [self.slot_of[d.name] for d in among]
        onward = None
        if tail is not None:  # its rows go on to the device that runs the rest
            out_bytes = self.flows(start, end)[3]
            fixed, per_byte = (np.array([0.0 if d.name == tail else self.link(d.name, tail, shared=True)[k]
                                         for d in among]) for k in (0, 1))
            onward = (fixed[:, None] + per_byte[:, None] * out_bytes[None, :]) * (out_bytes > 0)
        tables = {}
        anchors: dict[int, str] = {}
        for _ in range(3):  # the first and last tiles are border tiles: price them so until the set settles
            for anchor in {"middle", *anchors.values()} - set(tables):
                tables[anchor] = self.device_times(start, end, entry, gathered, anchor)[picked]
                if onward is not None:
                    tables[anchor] = tables[anchor] + onward
            times = tables["middle"].copy()
            for k, anchor in anchors.items():
                times[k] = tables[anchor][k]
            finish, rows = min_max_rows(times, height(volume[-1]))
            active = np.flatnonzero(rows)
            settled = {int(active[-1]): "bottom", int(active[0]): "top"} if active.size else {}
            if settled == anchors:
                break
            anchors = settled
        return finish, tuple((d.name, int(rows[k])) for k, d in enumerate(among) if rows[k])

    def aligned(self, start: int, end: int, entry: str, gathered: bool, split: tuple) -> tuple[float, tuple]:
        """A volume split by fixed weights ``split`` ((device, weight), ...): every volume keeps one layout."""
        key = ("aligned", start, end, entry, gathered, split)
        if key not in self.volumes:
            total = height(self.nodes[end - 1])
            if (total, split) not in self.spans:
                self.spans[total, split] = split_rows(total, dict(split))
            spans = self.spans[total, split]
            finish = max(self.tile_time(start, end, self.slot_of[d], b - a, entry, gathered, _anchor(a, b, total))
                         for d, a, b in spans)
            self.volumes[key] = (float(finish), tuple((d, b - a) for d, a, b in spans))
        return self.volumes[key]

    def tile_time(self, start: int, end: int, slot: int, rows: int, entry: str, gathered: bool, anchor: str) -> float:
        """One entry of :meth:`device_times`, without building the matrix."""
        key = (start, end, anchor)
        if self.tile_key != key:  # an aligned volume asks for every device's tile of one anchor in a row
            self.tile_key, self.tile_prices = key, (self.flows(start, end, anchor), self.compute_stack(start, end, anchor))
        (_, in_bytes, halo_bytes, out_bytes), stack = self.tile_prices
        total = float(stack[slot, rows])
        if out_bytes[rows] > 0:
            spread = entry == SPREAD
            fixed, per_byte = self.entry_cost[spread]
            total += fixed[slot] + per_byte[slot] * (halo_bytes if spread else in_bytes)[rows]
            if gathered:
                total += self.exit_cost[0][slot] + self.exit_cost[1][slot] * out_bytes[rows]
        return total

    def flows(self, start: int, end: int, anchor: str = "middle") -> tuple[None, np.ndarray, np.ndarray, np.ndarray]:
        """Bytes the volume reads from outside (all, and halo only) and bytes of its output, by tile height
        (the first element, once the rows each node needs, is kept for the callers' unpacking)."""
        key = (start, end, anchor)
        if key not in self.flows_of:
            flows = self._flows_ending_at(end, anchor)
            if start not in flows:
                raise HalocutError(f"no spatial volume from {self.nodes[start].name} to {self.nodes[end - 1].name}")
            in_bytes, own, out_bytes = flows[start]
            self.flows_of[key] = (None, in_bytes, (in_bytes - own).clip(min=0), out_bytes)
        return self.flows_of[key]

    def _flows_ending_at(self, end: int, anchor: str) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """:meth:`flows` of every volume ending at ``end``, from one walk back over the members before it.

        A member's rows come from its users only, which follow it, so they are those of the longest walk
        (:meth:`_walk`); a volume starting at ``start`` reads each outside source (before ``start``, or no
        member at all) for the most rows any member reads of it. Moving the start back one node makes that
        node a member (its bytes leave the sums) and adds what it reads; running sums give every start."""
        key = (end, anchor)
        if key not in self.flow_cache:
            first, needs = self._walk(end, anchor)
            last = self.nodes[end - 1]
            n_out = needs[last.name]
            rows_in, heights, row_sizes = self.tables.rows_in, self.heights, self.row_bytes
            outside: dict[str, np.ndarray] = {}
            reading, own = np.zeros(len(n_out)), np.zeros(len(n_out))
            out_bytes = n_out * row_sizes[last.name]
            flows = {}
            for m in range(end - 1, first - 1, -1):
                name = self.nodes[m].name
                if name in outside:
                    reading = reading - outside.pop(name) * row_sizes[name]
                    own = own - n_out * (heights[name] / heights[last.name]) * row_sizes[name]
                if name in needs:
                    for source in tensor_inputs(self.nodes[m]):
                        table = rows_in.get((name, source.name, anchor))
                        wanted = table[needs[name]] if table is not None else np.ones_like(needs[name])
                        before = outside.get(source.name)
                        if before is None:
                            # entered spread, a device already holds about its own share of rows
                            own = own + n_out * (heights[source.name] / heights[last.name]) * row_sizes[source.name]
                            before = np.zeros_like(wanted)
                        outside[source.name] = np.maximum(before, wanted)
                        reading = reading + (outside[source.name] - before) * row_sizes[source.name]
                flows[m] = (reading, own, out_bytes)
            self.flow_cache[key] = flows
        return self.flow_cache[key]

    def _walk(self, end: int, anchor: str) -> tuple[int, dict[str, np.ndarray]]:
        """The first position of the run of volume members ending at ``end``, and the rows each node of that run
        (and each source it reads) needs for ``n`` output rows of node ``end - 1``."""
        first = next((m for m in range(end - 1, -1, -1) if not self.volume_member[m]), -1) + 1
        key = (first, end, anchor)
        if key not in self.walk_cache:
            self.walk_cache[key] = self.tables.needs(self.nodes[first:end], anchor) if first < end else {}
        return first, self.walk_cache[key]

    def device_time(self, start: int, end: int, device: Device, entry: str, gathered: bool,
                    anchor: str = "middle") -> np.ndarray:
        """Seconds for ``n`` rows of the volume on ``device``, receiving its input and sending its output back."""
        return self.device_times(start, end, entry, gathered, anchor)[self.slot_of[device.name]]

    def device_times(self, start: int, end: int, entry: str, gathered: bool, anchor: str = "middle") -> np.ndarray:
        """:meth:`device_time` of every device at once (rows in ``self.devices`` order), kept for the last volume.

        Entered from the requester a device receives every row it reads over its route (the requester's own
        rows need none); entered spread only the halo moves, from the nearest other device over the real
        route (through the requester on a star, twice over a shared cell: :meth:`halo_link`).
        """
        key = (start, end, entry, gathered, anchor)
        if self.matrix_key == key:
            return self.matrix
        needs, in_bytes, halo_bytes, out_bytes = self.flows(start, end, anchor)
        total = self.compute_stack(start, end, anchor)
        working = out_bytes > 0
        spread = entry == SPREAD
        fixed, per_byte = self.entry_cost[spread]
        moved = halo_bytes if spread else in_bytes
        total = total + (fixed[:, None] + per_byte[:, None] * moved[None, :]) * working
        if gathered:
            fixed, per_byte = self.exit_cost
            total = total + (fixed[:, None] + per_byte[:, None] * out_bytes[None, :]) * working
        self.matrix_key, self.matrix = key, total
        return total

    def compute_stack(self, start: int, end: int, anchor: str) -> np.ndarray:
        """Compute seconds for ``n`` output rows of the volume, one row per device (pointwise ops fused).

        A member's rows come from a walk back from the volume's last node that meets only members' users
        (only the last node is read outside a volume), so they do not depend on where the volume starts:
        :meth:`_ending_at` walks once per end and keeps running sums; a volume starting at ``start`` adds back
        the pointwise ops that are fused only when their producer, before ``start``, is inside.
        """
        key = (start, end, anchor)
        if key not in self.compute_cache:
            first, sums, producer, rows = self._ending_at(end, anchor, start)
            total = sums[start - first] - sums[end - first]
            unfused = (producer[start - first:] >= first) & (producer[start - first:] < start)
            if unfused.any():
                total = total + rows[start - first:][unfused].sum(axis=0)
            self.compute_cache[key] = total
        return self.compute_cache[key]

    def _ending_at(self, end: int, anchor: str, start: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """For the volumes ending at ``end``: the first position they can start at (``start`` if earlier); from
        each start on, the running sums of the members' compute seconds (device, output rows), a pointwise op
        counted fused when its producer is at or after that first position; per node, the index of the producer
        it fuses into (-1: none) and its own seconds."""
        first = min(start, next((m for m in range(end - 1, -1, -1) if not self.volume_member[m]), -1) + 1)
        key = (end, anchor, first)
        if key not in self.ending_cache:
            volume = self.nodes[first:end]
            run_first, needs = self._walk(end, anchor)
            if run_first != first:
                needs = self.tables.needs(volume, anchor) if volume else {}
            rows = np.zeros((len(volume), len(self.devices), height(volume[-1]) + 1 if volume else 1))
            producer = np.full(len(volume), -1)
            for m, node in enumerate(volume):
                if node.meta.get("layer") is None or node.name not in needs:
                    continue
                rows[m] = self._latency_rows(first + m)[:, needs[node.name]]
                producer[m] = self.fuses_into[first + m]
            counted = np.where((producer >= first)[:, None, None], 0.0, rows)
            sums = np.concatenate([np.cumsum(counted[::-1], axis=0)[::-1], np.zeros((1, *rows.shape[1:]))])
            self.ending_cache[key] = (first, sums, producer, rows)
        return self.ending_cache[key]

    def _latency_rows(self, m: int) -> np.ndarray:
        """Seconds for ``r`` rows (index) of node ``m`` on each device (``self.devices`` order), unfused; kept."""
        if m not in self.latency_rows:
            self.latency_rows[m] = np.stack([self.tables.node_latency(self.nodes[m], k) for k in self.device_keys])
        return self.latency_rows[m]

    def halo_link(self, device: str) -> tuple[float, float]:
        """(fixed, per byte) of the halo a device of a spread volume gets: from the nearest other device over
        the route between them (a star relays through the requester: two hops, each priced)."""
        others = [self.link(d.name, device, shared=True) for d in self.devices if d.name != device]
        return min(others, default=(0.0, 0.0), key=lambda fb: (fb[1], fb[0]))

    def gather(self, position: int, spread: Step) -> np.ndarray:
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
        if (start, end) not in self.fc_segments:
            self.fc_segments[start, end] = self._is_fc(start, end)
        return self.fc_segments[start, end]

    def _is_fc(self, start: int, end: int) -> bool:
        nodes = self.nodes[start:end]
        if nodes[0].meta["layer"].kind != "linear":
            return False
        try:
            check_fc(nodes, "model", [(0, nodes[0].meta["layer"].attrs["out_features"])])
        except HalocutError:
            return False
        return True

    def fc_split(self, start: int, end: int, holder: str) -> tuple[float, tuple]:
        """Min-max split of an fc segment's output features (in steps of 1/256), input from ``holder``.

        Messages that share a hop queue, as in the simulator: the clusters' inputs leave ``holder`` one after
        another over a common first hop (each paying its latency), and their outputs come back one after another
        over a common last hop into the requester. The split is priced with those waits for the devices it uses,
        until the set of devices settles.
        """
        key = ("fc", start, end, holder)
        if key not in self.volumes:
            nodes = self.nodes[start:end]
            features = nodes[0].meta["layer"].attrs["out_features"]
            unit = max(1, features // 256)
            counts = np.minimum(np.arange(features // unit + 2) * unit, features)
            counts = counts[: int(np.searchsorted(counts, features)) + 1]
            out_bytes = value_bytes(nodes[-1])
            in_bytes = self.crossing_bytes(start)
            rows = []
            for device in self.devices:
                whole = sum(self.cost.latency(device, n.meta["layer"]) for n in nodes
                            if n.meta["layer"].kind == "linear")
                fixed, per_byte = self.link(holder, device.name, shared=True)
                back_fixed, back_per_byte = self.link(device.name, self.requester, shared=True)
                time = whole * counts / features + (fixed + per_byte * in_bytes) * (device.name != holder) + \
                    back_fixed + back_per_byte * counts * out_bytes / features
                time[0] = 0.0
                rows.append(time)
            rows = np.array(rows)
            used = np.ones(len(self.devices), dtype=bool)
            for _ in range(3):
                finish, steps = min_max_rows(rows + self._fc_waits(holder, used, in_bytes, out_bytes)[:, None] *
                                             (np.arange(len(counts)) > 0)[None, :], len(counts) - 1)
                settled = steps > 0
                if (settled == used).all():
                    break
                used = settled
            clusters, first = [], 0
            for device, step in zip(self.devices, steps):
                if step:
                    last = int(counts[min(len(counts) - 1, np.searchsorted(counts, first) + step)])
                    clusters.append((device.name, first, last))
                    first = last
            self.volumes[key] = (finish, tuple(clusters))
        return self.volumes[key]

    def _fc_waits(self, holder: str, used: np.ndarray, in_bytes: float, out_bytes: float) -> np.ndarray:
        """Seconds each device's cluster waits behind the other used clusters' messages on shared hops."""
        def hop(route, size):
            return route.latency_s + route.overhead_s + size * 8.0 / route.bandwidth_bps

        active = [d for d, u in zip(self.devices, used) if u]
        share = out_bytes / max(1, len(active))
        firsts = {d.name: self.topology.route(holder, d.name)[0] for d in active if d.name != holder}
        lasts = {d.name: self.topology.route(d.name, self.requester)[-1] for d in active if d.name != self.requester}
        waits = np.zeros(len(self.devices))
        for k, device in enumerate(self.devices):
            ahead = [d.name for d in active[:next((i for i, d in enumerate(active) if d.name == device.name),
                                                  len(active))]]
            first, last = firsts.get(device.name), lasts.get(device.name)
            waits[k] += sum(hop(first, in_bytes) for other in ahead if first is not None and firsts.get(other) == first)
            waits[k] += sum(hop(last, share) for other in lasts if other != device.name and lasts[other] == last
                            and last is not None)
        return waits

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
        """Nodes ``start:end`` are a spatial volume: all members (splittable, or sizes), the last splittable, and
        only the last read after it (:func:`halocut.ir.plan.check_single_output`, from prefix counts here)."""
        if end <= start or self.not_members[end] - self.not_members[start] or not self.splits[end - 1]:
            return False
        return end - start == 1 or int(self.last_user[start:end - 1].max()) < end

    # --- the DP

    def plan(self, model: str, input_shape: tuple[int, ...], variant: str, split: tuple | None = None) -> Plan | None:
        steps = self.search(variant, split)
        return None if steps is None else self.build(model, input_shape, steps)

    def build(self, model: str, input_shape: tuple[int, ...], steps: list[Step]) -> Plan:
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

    def search(self, variant: str, split: tuple | None = None) -> list[Step] | None:
        """Cheapest steps from the input at the requester to the output back at it (None: no way)."""
        holders = [d.name for d in self.devices] + ([self.requester] if self.requester not in self.compute else [])
        slot = {h: k for k, h in enumerate(holders)}
        slot[SPREAD] = len(holders)
        fixed, per_byte = (np.array([[self.link(h, d.name)[k] for d in self.devices] + [0.0] for h in holders])
                           for k in (0, 1))
        prefix = np.array([self.prefix[device_key(d)] for d in self.devices] + [[0.0] * (len(self.nodes) + 1)])
        columns = len(self.devices)
        positions = np.array(self.positions)
        row = {p: r for r, p in enumerate(self.positions)}
        best = np.full((len(positions), len(holders) + 1), np.inf)  # (position, holder) -> cheapest arrival
        # how each (position, holder) was reached: a single-device step from (single_from, single_origin) when
        # by_single, else back's (previous position, previous holder, step); arrays, as single steps are most
        back: dict[tuple[int, int], tuple[int, int, Step]] = {}
        by_single = np.zeros((len(positions), columns), bool)
        single_from = np.zeros((len(positions), columns), np.int64)
        single_origin = np.zeros((len(positions), columns), np.int64)
        best[0, slot[self.requester]] = 0.0
        spread = slot[SPREAD]
        for r, i in enumerate(self.positions):
            reached = np.flatnonzero(np.isfinite(best[r, :-1]))
            from_spread = (i, spread) in back
            if not reached.size and not from_spread:
                continue
            if r + 1 == len(positions):
                continue
            # one device takes the segment: from any device holding the tensor (vectorised over holders)
            arrive = [best[r, reached, None] + fixed[reached, :-1] + per_byte[reached, :-1] * self.crossing_bytes(i)]
            origin = list(reached)
            if from_spread:
                arrive.append(best[r, spread] + self.gather(i, back[i, spread][2])[None, :])
                origin.append(spread)
            arrive = np.concatenate(arrive)
            origin = np.array(origin)
            later = positions[r + 1:]
            # every later position at once: (origin, position, device) -> the cheapest origin per (position, device)
            price = arrive[:, None, :] + (prefix[:-1, later] - prefix[:-1, i, None]).T[None, :, :]
            which = price.argmin(axis=0)
            cheapest = np.take_along_axis(price, which[None], axis=0)[0]
            better = cheapest < best[r + 1:, :columns]
            best[r + 1:, :columns][better] = cheapest[better]
            by_single[r + 1:][better] = True
            single_from[r + 1:][better] = i
            single_origin[r + 1:][better] = origin[which][better]
            fc = self.fc_targets(r) if variant in ("all", "aligned") else ()
            volumes = self.volume_targets(r) if variant != "stages" else ()
            for j in sorted({*fc, *volumes}):  # graph order, an fc move before a volume move, as they compete
                if j in fc:
                    for h in reached:  # from one holder; a spread tensor is gathered by a single stage first
                        price, clusters = self.fc_split(i, j, holders[h])
                        k = slot[self.requester]
                        if len(clusters) > 1 and best[r, h] + price < best[row[j], k]:
                            best[row[j], k] = best[r, h] + price
                            back[j, k] = (i, int(h), Step(i, j, self.requester, clusters=clusters))
                            if k < columns:
                                by_single[row[j], k] = False
                if j not in volumes:
                    continue
                for h in (slot[self.requester], spread):
                    if not np.isfinite(best[r, h]) or (h == spread and not from_spread):
                        continue
                    holder = holders[h] if h < len(holders) else SPREAD
                    for step, price in self.volume_moves(i, j, holder, variant, split):
                        k = slot[step.holder]
                        if best[r, h] + price < best[row[j], k]:
                            best[row[j], k] = best[r, h] + price
                            back[j, k] = (i, h, step)
                            if k < columns:
                                by_single[row[j], k] = False
        end = len(self.nodes)
        finals = [best[-1, k] + fixed_to + per * self.output_bytes() for k, (fixed_to, per) in
                  enumerate(self.link(h, self.requester) for h in holders)]
        if not np.isfinite(min(finals)):
            return None
        state = (end, int(np.argmin(finals)))
        self.estimate = float(min(finals))
        steps = []
        while True:
            j, k = state
            if k < columns and by_single[row[j], k]:
                i = int(single_from[row[j], k])
                steps.append(Step(i, j, holders[k], device=holders[k]))
                state = (i, int(single_origin[row[j], k]))
            elif state in back:
                i, h, step = back[state]
                steps.append(step)
                state = (i, h)
            else:
                return steps[::-1]

    def fc_targets(self, r: int) -> set[int]:
        """The later positions ``j`` such that nodes ``positions[r]:j`` are an fc segment (cached)."""
        if r not in self.fc_cache:
            i, kinds = self.positions[r], self.layer_kinds
            if i == len(self.nodes) or kinds[i] != "linear":
                self.fc_cache[r] = set()
            else:  # no fc segment holds a second linear layer or a layer that is neither linear nor pointwise
                stop = next((m for m in range(i + 1, len(kinds)) if kinds[m] == "linear" or kinds[m] not in POINTWISE),
                            len(kinds))
                self.fc_cache[r] = {j for j in self.positions[r + 1:] if j <= stop and self.is_fc(i, j)}
        return self.fc_cache[r]

    def volume_targets(self, r: int) -> set[int]:
        """The later positions ``j`` such that nodes ``positions[r]:j`` are a spatial volume (cached)."""
        if r not in self.volume_cache:
            i = self.positions[r]
            self.volume_cache[r] = ({j for j in self.positions[r + 1:] if j in self.volume_positions
                                     and self.is_volume(i, j)} if i in self.volume_positions else set())
        return self.volume_cache[r]

    def volume_moves(self, i: int, j: int, holder: str, variant: str, split: tuple | None):
        if i not in self.volume_positions or j not in self.volume_positions or not self.is_volume(i, j):
            return
        for gathered in (True,) if variant == "gathered" else (True, False):
            price, rows = self.aligned(i, j, holder, gathered, split) if split else self.volume(i, j, holder, gathered)
            if rows:
                yield Step(i, j, self.requester if gathered else SPREAD, rows=rows), price

    def output_bytes(self) -> float:
        return sum(value_bytes(n) for n in output_nodes(self.graph))


def _anchor(first: int, end: int, total: int) -> str:
    return "top" if first == 0 else "bottom" if end == total else "middle"
