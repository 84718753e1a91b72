"""Choosing volume boundaries: an exact DP over a chain, and the per-volume estimates it adds up.

:func:`chain_partition` splits ``count`` groups into consecutive volumes
minimising ``sum(cost(previous, volume)) + finish(last)``. The cost of a volume
may depend on the one before it (where its input lies), so the DP's state is
the last volume: O(count^3) cost evaluations, and the optimum is the one an
exhaustive search over all 2^(count-1) boundary sets would find.

:class:`VolumeFlows` turns a segment, a tiling rule and where the segment's
input lies into the bytes each volume's tiles fetch from other devices; the
planners weigh them (bytes for DeeperThings, linear seconds for AOFL).

>>> chain_partition(3, lambda a, b: True, lambda prev, vol: 1.0 + (vol[1] - vol[0] == 2), lambda last: 0.0)
(1.0, [(0, 3)])
"""

from __future__ import annotations

from typing import Callable

from torch import fx

from halocut.ir.regions import Region
from halocut.passes.halo import compute_halos
from halocut.planning.search.volumes import Segment, Tiling, boundaries, is_closed

Volume = tuple[int, int]


def chain_partition(count: int, allowed: Callable[[int, int], bool],
                    cost: Callable[[Volume | None, Volume], float],
                    finish: Callable[[Volume], float]) -> tuple[float, list[Volume]]:
    """The least total cost and the allowed volumes covering ``range(count)`` in order that reach it.

    ``(inf, [])`` when no allowed volumes cover the range.
    """
    best: dict[Volume, tuple[float, Volume | None]] = {}
    ending: dict[int, list[Volume]] = {stop: [] for stop in range(count + 1)}
    for stop in range(1, count + 1):
        for start in range(stop):
            if not allowed(start, stop):
                continue
            options = [(cost(None, (start, stop)), None)] if start == 0 else \
                [(best[prev][0] + cost(prev, (start, stop)), prev) for prev in ending[start]]
            if options:
                best[(start, stop)] = min(options, key=lambda o: o[0])
                ending[stop].append((start, stop))
    ends = [(best[volume][0] + finish(volume), volume) for volume in ending[count]]
    if not ends:
        return float("inf"), []
    total, volume = min(ends, key=lambda e: e[0])
    chain = []
    while volume is not None:
        chain.append(volume)
        volume = best[volume][1]
    return total, chain[::-1]


def region_bytes(node: fx.Node, region: Region) -> float:
    """Bytes of ``region`` of a node's output (the model input included)."""
    shape = tuple(node.meta["tensor_meta"].shape)
    layer = node.meta.get("layer")
    total = layer.output_bytes if layer is not None else 4.0 * _numel(shape)
    return total * region.height * region.width / float(shape[-2] * shape[-1])


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


class VolumeFlows:
    """Tilings, halos and fetched bytes of every candidate volume of one segment (cached)."""

    def __init__(self, graph: fx.GraphModule, segment: Segment, tiling_of: Callable[[list[fx.Node]], Tiling],
                 source: str):
        self.segment, self.tiling_of, self.source = segment, tiling_of, source
        self.edges = boundaries(graph, segment)
        self._cache: dict[Volume, tuple[Tiling, list[dict[str, Region]]]] = {}
        self._flops: dict[Volume, list[float]] = {}
        self._reads: dict[Volume, list] = {}

    def allowed(self, start: int, stop: int) -> bool:
        return start in self.edges and stop in self.edges and is_closed(self.segment.nodes(start, stop))

    def tiles(self, volume: Volume) -> tuple[Tiling, list[dict[str, Region]]]:
        """The volume's tiling and, per tile, the region every node (and outside input) must provide."""
        if volume not in self._cache:
            nodes = self.segment.nodes(*volume)
            tiling = self.tiling_of(nodes)
            self._cache[volume] = tiling, [compute_halos(nodes, region) for region, _ in tiling]
        return self._cache[volume]

    def tile_flops(self, volume: Volume) -> list[float]:
        """FLOPs each tile computes, its halo included."""
        if volume not in self._flops:
            nodes = self.segment.nodes(*volume)
            self._flops[volume] = [sum(n.meta["layer"].flops * s for n, s in zip(nodes, area_share(nodes, need)))
                                   for need in self.tiles(volume)[1]]
        return self._flops[volume]

    def fetches(self, previous: Volume | None, volume: Volume) -> list[tuple[str, str, float]]:
        """``(from, to, bytes)`` each tile of ``volume`` needs from other devices.

        Outside inputs made by ``previous`` come from its tiles; any other (the
        segment's input) from ``source``.
        """
        made_before = self.segment.nodes(*previous)[-1].name if previous else None
        held = self.tiles(previous)[0] if previous else ()
        flows = []
        for device, source, (r0, r1), (c0, c1), per_pixel in self._wanted(volume):
            if source != made_before:
                if self.source != device:
                    flows.append((self.source, device, (r1 - r0) * (c1 - c0) * per_pixel))
                continue
            for region, holder in held:
                rows = min(r1, region.rows[1]) - max(r0, region.rows[0])
                cols = min(c1, region.cols[1]) - max(c0, region.cols[0])
                if holder != device and rows > 0 and cols > 0:
                    flows.append((holder, device, rows * cols * per_pixel))
        return flows

    def _wanted(self, volume: Volume) -> list[tuple[str, str, tuple[int, int], tuple[int, int], float]]:
        """Per tile and outside input: (device, input name, rows, cols, bytes per position) of what it reads."""
        if volume not in self._reads:
            nodes = self.segment.nodes(*volume)
            members = {n.name for n in nodes}
            sources = {s.name: s for n in nodes for s in n.all_input_nodes if s.name not in members}
            tiling, needs = self.tiles(volume)
            self._reads[volume] = [
                (device, name, need[name].rows, need[name].cols, region_bytes(source, Region((0, 1), (0, 1))))
                for (_, device), need in zip(tiling, needs) for name, source in sources.items()
                if name in need and not need[name].is_empty()]
        return self._reads[volume]

    def delivery(self, volume: Volume, sink: str) -> list[tuple[str, str, float]]:
        """``(from, to, bytes)`` to send the volume's output to ``sink``."""
        last = self.segment.nodes(*volume)[-1]
        return [(device, sink, region_bytes(last, region)) for region, device in self.tiles(volume)[0]
                if device != sink]


def area_share(nodes: list[fx.Node], need: dict[str, Region]) -> list[float]:
    """Share of each node's output a tile computes (its halo included)."""
    shares = []
    for node in nodes:
        height, width = tuple(node.meta["tensor_meta"].shape)[-2:]
        region = need[node.name]
        shares.append(region.height * region.width / float(height * width))
    return shares

