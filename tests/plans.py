"""Helpers that write plans for tests: node ranges, tilings and segment lists."""

from __future__ import annotations

from compiler.frontend import load_model
from compiler.ir import annotate_layers
from compiler.plan import Cluster, Hop, Plan, Stage, Tile
from passes.cut import compute_nodes
from passes.halo import Region


def analysed(name, shape):
    loaded = load_model(name, shape)
    annotate_layers(loaded.graph_module, loaded.input_shape)
    return loaded.graph_module


def names(gm) -> list[str]:
    return [n.name for n in compute_nodes(gm)]


def shape_of(gm, name) -> tuple[int, ...]:
    return tuple(next(n for n in gm.graph.nodes if n.name == name).meta["tensor_meta"].shape)


def row_tiles(height: int, width: int, cuts: list[int]) -> list[Region]:
    """Rows split at ``cuts`` (uneven allowed), full width."""
    edges = [0, *cuts, height]
    return [Region((a, b), (0, width)) for a, b in zip(edges, edges[1:])]


def grid_tiles(height: int, width: int, row_cuts: list[int], col_cuts: list[int]) -> list[Region]:
    rows, cols = [0, *row_cuts, height], [0, *col_cuts, width]
    return [Region((r0, r1), (c0, c1)) for r0, r1 in zip(rows, rows[1:]) for c0, c1 in zip(cols, cols[1:])]


def plan(gm, model, shape, segments, devices=("d0", "d1", "d2", "d3")) -> Plan:
    """Segments in order, each ``(kind, last_node, arg)``: single (arg: device index), spatial (arg: tiles,
    or (tiles, chain untils)), fc (arg: (mode, feature ranges)); each covers the nodes after the previous one."""
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
