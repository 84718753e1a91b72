"""CoopAI's units, grids, clusters and gateway shares (paper 001), for the ``sls`` and ``mls`` planners.

The model is cut into *units* (a layer with the pointwise ops fused into it):
``conv`` units split into tiles (conv, pooling, reorg, concat ...), ``fc``
units are a linear layer (then pointwise ops), and ``glue`` units (flatten,
adaptive pooling, anything else whole-input) run on one device. With k
devices, device t computes tile t of :func:`grid_regions` over a conv block's
last output, or cluster t of :func:`feature_ranges` of an fc block, and talks
to the gateway at its share of :func:`bandwidths` (G/k behind CoopAI's gateway).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.graph import tensor_inputs
from halocut.ir.plan import check_fc
from halocut.ir.regions import Region
from halocut.passes.halo import halo_rule
from halocut.planning.search.layers import layer_groups, split_rows, splittable
from halocut.targets.topology import Device, Topology

INF = float("inf")


@dataclass(frozen=True)
class Unit:
    nodes: tuple[fx.Node, ...]
    kind: str  # "conv", "fc" or "glue"
    macs: bool  # holds a conv or linear layer (the paper's CL / FL)


def coopai_units(graph: fx.GraphModule) -> list[Unit]:
    """The model's layer groups, classified (a conv unit tiles, an fc unit clusters, glue does neither)."""
    units = []
    for group in layer_groups(graph):
        kinds = [n.meta["layer"].kind for n in group]
        macs = any(k in ("conv2d", "linear") for k in kinds)
        if all(_tileable(n) for n in group):
            units.append(Unit(tuple(group), "conv", macs))
        elif kinds[0] == "linear" and _clusters(group):
            units.append(Unit(tuple(group), "fc", True))
        else:
            units.append(Unit(tuple(group), "glue", False))
    return units


def _tileable(node: fx.Node) -> bool:
    """Whether a node can be cut into tiles (its halo rule takes its attributes)."""
    if not splittable(node):
        return False
    layer = node.meta["layer"]
    try:
        halo_rule(node)(layer, Region.full(layer.output_shape), tuple(tensor_inputs(node)[0].meta["tensor_meta"].shape))
    except HalocutError:
        return False
    return True


def _clusters(group: list[fx.Node]) -> bool:
    """Whether a group can be an fc stage (one linear first, pointwise ops after, one outside input)."""
    try:
        check_fc(group, "model", [(0, group[0].meta["layer"].attrs["out_features"])])
    except HalocutError:
        return False
    return True


def grid_regions(height: int, width: int, count: int) -> list[Region] | None:
    """``count`` near-equal tiles: b bands of rows, each cut into columns; None if the map is too small.

    b minimises the largest tile's height + width (the halo a tile prefetches
    grows with its perimeter), scored on the unrounded shares so that maps of
    one aspect ratio get the same layout at every resolution (tiles of
    consecutive blocks then line up); ties go to more bands, so small counts
    give the paper's horizontal slices.

    >>> [r.rows + r.cols for r in grid_regions(8, 8, 2)]
    [(0, 4, 0, 8), (4, 8, 0, 8)]
    >>> [r.rows + r.cols for r in grid_regions(8, 8, 4)]
    [(0, 4, 0, 4), (0, 4, 4, 8), (4, 8, 0, 4), (4, 8, 4, 8)]
    """
    def columns(bands: int) -> list[int]:
        return [count // bands + (b < count % bands) for b in range(bands)]

    def score(bands: int) -> tuple[float, int]:
        return round(max(height * c / count + width / c for c in columns(bands)), 9), -bands

    for bands in sorted(range(1, count + 1), key=score):
        cols = columns(bands)
        spans = split_rows(height, {b: float(c) for b, c in enumerate(cols)})
        if max(cols) <= width and len(spans) == bands:
            return [Region((r0, r1), (c0, c1)) for (b, r0, r1) in spans
                    for (_, c0, c1) in split_rows(width, {c: 1.0 for c in range(cols[b])})]
    return None


def feature_ranges(width: int, count: int) -> list[tuple[int, int]] | None:
    """``count`` equal clusters of ``width`` features (None if there are fewer features)."""
    return None if count > width else [(a, b) for _, a, b in split_rows(width, {t: 1.0 for t in range(count)})]


def bandwidths(topology: Topology, hub: str, devices: list[Device]) -> list[float]:
    """Each device's rate to the hub: its route's slowest link, a shared medium split among the devices on it.

    CoopAI's pricing (paper 001: k devices share the gateway at G/k, all k sending at once), not the boundary
    DP's (per device's route, halocut.planning.search.boundary_dp) nor the simulator's (who is on the medium
    at each instant).
    """
    routes = [topology.route(hub, d.name) for d in devices]
    users = Counter(link.medium for route in routes for link in route if link.medium)
    rates = []
    for route in routes:
        rate = INF
        for link in route:
            own = link.bandwidth_bps
            if link.medium:
                own = min(own, topology.medium(link.medium).bandwidth_bps / users[link.medium])
            rate = min(rate, own)
        rates.append(rate)
    return rates
