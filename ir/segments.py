"""Writing plans by hand: stages as segments of the graph's compute nodes, tiles as row or grid cuts.

What tests and benchmarks use to state a plan in a few lines (planners build
:class:`~halocut.ir.plan.Plan` objects directly).

>>> row_tiles(10, 8, [3])
[Region(rows=(0, 3), cols=(0, 8)), Region(rows=(3, 10), cols=(0, 8))]
"""

from __future__ import annotations

from torch import fx

from halocut.ir.graph import compute_nodes
from halocut.ir.plan import Cluster, Hop, Plan, Stage, Tile
from halocut.ir.regions import Region


def names(gm: fx.GraphModule) -> list[str]:
    """The compute nodes' names, in graph order."""
    return [n.name for n in compute_nodes(gm)]


def shape_of(gm: fx.GraphModule, name: str) -> tuple[int, ...]:
    """The output shape of the node ``name`` (run annotate_layers first)."""
    return tuple(next(n for n in gm.graph.nodes if n.name == name).meta["tensor_meta"].shape)


def row_tiles(height: int, width: int, cuts: list[int]) -> list[Region]:
    """Rows split at ``cuts`` (uneven allowed), full width."""
    edges = [0, *cuts, height]
    return [Region((a, b), (0, width)) for a, b in zip(edges, edges[1:])]


def grid_tiles(height: int, width: int, row_cuts: list[int], col_cuts: list[int]) -> list[Region]:
    """A grid cut at ``row_cuts`` and ``col_cuts``, row by row."""
    rows, cols = [0, *row_cuts, height], [0, *col_cuts, width]
    return [Region((r0, r1), (c0, c1)) for r0, r1 in zip(rows, rows[1:]) for c0, c1 in zip(cols, cols[1:])]


def plan(gm: fx.GraphModule, model: str, shape, segments, devices=("d0", "d1", "d2", "d3")) -> Plan:
    """Segments in order, each ``(kind, last_node, arg)``: single (arg: device index), spatial (arg: tiles,
    or (tiles, chain untils)), fc (arg: (mode, feature ranges)); each covers the nodes after the previous one
    (``last_node`` None: to the end). Tile ``i`` and cluster ``i`` go to device ``i`` (modulo the count)."""
    order = names(gm)
    stages, start = [], 0
    for kind, last, arg in segments:
        stop = order.index(last) + 1 if last is not None else len(order)
        nodes = tuple(order[start:stop])
        start = stop
        if kind == "single":
            stages.append(Stage("single", nodes, device=devices[arg % len(devices)]))
        elif kind == "spatial":
            tiles, untils = arg if isinstance(arg, tuple) else (arg, [])
            stages.append(Stage("spatial", nodes, tiles=tuple(
                Tile(r, tuple(Hop(devices[(i + j) % len(devices)], u) for j, u in enumerate([*untils, None])))
                for i, r in enumerate(tiles))))
        else:
            mode, spans = arg
            stages.append(Stage("fc", nodes, mode=mode, clusters=tuple(
                Cluster(s, devices[i % len(devices)]) for i, s in enumerate(spans))))
    return Plan(model, tuple(shape), tuple(stages))
