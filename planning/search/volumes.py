"""Fused layer-volumes: where a graph can be fused, and how a volume's output is split among devices.

A *segment* is a maximal run of consecutive layer groups (``layerwise.layer_groups``)
that are all spatially splittable, or all not. A *volume* is groups ``[a, b)`` of
a splittable segment made one ``spatial`` stage (DistrEdge's layer-volume, the
fused layers of DeepThings, DeeperThings and AOFL); it is valid when only its
last node is used outside it (what ``passes/slice.py`` can tile). A *tiling*
lists ``(region, device)`` pairs covering the volume's last output.

>>> from halocut.compiler.prepare import prepare_model
>>> graph = prepare_model("lenet5").graph
>>> [(len(s.groups), s.splittable) for s in segments(graph)]
[(4, True), (4, False)]
>>> grid_shape(6), even_spans(10, 3)
((3, 2), [(0, 4), (4, 7), (7, 10)])
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.graph import compute_nodes
from halocut.ir.plan import Hop, Stage, Tile, check_single_output
from halocut.ir.regions import Region
from halocut.planning.search.cuts import crossings
from halocut.planning.search.layers import layer_groups, split_rows, splittable
from halocut.targets.topology import Device, Topology

Tiling = tuple[tuple[Region, str], ...]


@dataclass(frozen=True)
class Segment:
    """Consecutive layer groups, all spatially splittable or all not."""

    groups: tuple[tuple[fx.Node, ...], ...]
    splittable: bool

    def nodes(self, start: int = 0, stop: int | None = None) -> list[fx.Node]:
        """The nodes of groups ``[start, stop)`` in graph order."""
        return [n for group in self.groups[start:stop] for n in group]


def segments(graph: fx.GraphModule) -> list[Segment]:
    """The graph's layer groups cut where splittability changes."""
    result: list[Segment] = []
    for group in layer_groups(graph):
        tiles = all(splittable(n) for n in group)
        if result and result[-1].splittable == tiles:
            result[-1] = Segment((*result[-1].groups, tuple(group)), tiles)
        else:
            result.append(Segment((tuple(group),), tiles))
    return result


def is_closed(nodes: list[fx.Node]) -> bool:
    """Whether only the last of ``nodes`` (graph order) is used outside them: a volume ``slice`` can tile."""
    try:
        check_single_output(nodes)
    except HalocutError:
        return False
    return True


def boundaries(graph: fx.GraphModule, segment: Segment) -> list[int]:
    """Group indices where a volume may start or end: the segment's ends, and where one tensor crosses."""
    position = {n.name: i for i, n in enumerate(compute_nodes(graph))}
    counts = crossings(graph)
    inner = [k for k in range(1, len(segment.groups)) if counts[position[segment.groups[k][0].name]] == 1]
    return [0, *inner, len(segment.groups)]


def providers(topology: Topology) -> list[Device]:
    """The devices that compute tiles, fastest first: every computing device but the requester, or it alone.

    DistrEdge's service requester only sends the input and collects the result
    (paper 003, Sec. VI (2)). Fastest first: where an equal grid cannot be exactly
    equal, the extra row or column goes to the fastest devices.
    """
    computing = topology.compute_devices()
    if not computing:
        raise HalocutError(f"topology '{topology.name}' has no device that computes")
    others = [d for d in computing if d.name != topology.requester.name]
    return sorted(others or computing, key=lambda d: -d.peak_flops)


def grid_shape(count: int) -> tuple[int, int]:
    """Rows x columns of an equal grid of ``count`` cells, as square as possible, rows >= columns."""
    columns = max(c for c in range(1, int(count ** 0.5) + 1) if count % c == 0)
    return count // columns, columns


def even_spans(length: int, parts: int) -> list[tuple[int, int]]:
    """``[0, length)`` in ``parts`` near-equal consecutive spans, the longer ones first (``parts <= length``)."""
    edges = [-(-i * length // parts) for i in range(parts + 1)]
    return list(zip(edges, edges[1:]))


def equal_grid(height: int, width: int, devices: list[str]) -> Tiling:
    """An equal grid, one cell per device in row-major order; fewer cells if the map is smaller than the grid.

    >>> [(r.rows, r.cols, d) for r, d in equal_grid(5, 4, ["a", "b", "c", "d"])]
    [((0, 3), (0, 2), 'a'), ((0, 3), (2, 4), 'b'), ((3, 5), (0, 2), 'c'), ((3, 5), (2, 4), 'd')]
    """
    rows, columns = grid_shape(len(devices))
    cells = [Region(r, c) for r in even_spans(height, min(rows, height))
             for c in even_spans(width, min(columns, width))]
    return tuple(zip(cells, devices))


def row_tiling(height: int, width: int, weights: dict[str, float]) -> Tiling:
    """Rows in proportion to ``weights`` (``layerwise.split_rows``), full width."""
    return tuple((Region((a, b), (0, width)), device) for device, a, b in split_rows(height, weights))


def output_size(nodes: list[fx.Node]) -> tuple[int, int]:
    """Height and width of a volume's last output."""
    return tuple(nodes[-1].meta["layer"].output_shape[-2:])


def spatial_stage(nodes: list[fx.Node], tiling: Tiling) -> Stage:
    """The stage computing ``nodes`` tiled as ``tiling``; one tile covering everything is a single stage."""
    names = tuple(n.name for n in nodes)
    height, width = output_size(nodes)
    if len(tiling) == 1 and tiling[0][0] == Region((0, height), (0, width)):
        return Stage("single", names, device=tiling[0][1])
    return Stage("spatial", names, tiles=tuple(Tile(region, (Hop(device),)) for region, device in tiling))


def largest_tile_device(tiling: Tiling, topology: Topology) -> str:
    """The device given the largest area (DistrEdge runs the FC layers there); ties go to the fastest."""
    def key(cell: tuple[Region, str]) -> tuple[int, float]:
        return cell[0].height * cell[0].width, topology.device(cell[1]).peak_flops
    return max(tiling, key=key)[1]


def merge_singles(stages: list[Stage]) -> list[Stage]:
    """Consecutive single stages on the same device as one stage (a volume split over one device is no volume)."""
    merged: list[Stage] = []
    for stage in stages:
        previous = merged[-1] if merged else None
        if previous and stage.kind == previous.kind == "single" and stage.device == previous.device:
            merged[-1] = Stage("single", previous.nodes + stage.nodes, device=stage.device)
        else:
            merged.append(stage)
    return merged
