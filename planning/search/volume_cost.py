"""Fast cost tables for spatial volumes: what a tile of ``n`` output rows costs on each device, for all ``n``.

The ``halocut`` planner prices thousands of (volume, device, tile height)
triples. Per node it tabulates, once, the input rows a centred tile of ``r``
output rows reads (from the node's own halo rule, so padding, stride,
dilation and pooling are those of :mod:`halocut.passes.halo`) and the node's latency
for ``r`` rows on each kind of device (the cost model, vectorised over ``r``).
A volume's table is then a backward walk of index lookups: the rows each node
must produce for ``n`` rows of the volume's output (the union over consumers,
as in :func:`halocut.passes.halo.compute_halos`), and the sum of their latencies.

Tables come for centred tiles and for tiles at the top or bottom border, which
read fewer rows (part of their windows is padding): with two or three tiles
that difference decides whether splitting pays. The simulator prices the final
plan exactly.

:func:`min_max_split` splits ``H`` rows among devices so that the slowest
finishes first, exactly, for any nonlinear but monotone per-device time.

>>> import numpy as np
>>> times = {"fast": np.array([0.0, 1.0, 2.0, 3.0, 4.0]), "slow": np.array([0.0, 3.0, 6.0, 9.0, 12.0])}
>>> min_max_split(times, 4)
(3.0, {'fast': 3, 'slow': 1})
"""

from __future__ import annotations

import numpy as np
from torch import fx

from halocut.ir.graph import tensor_inputs
from halocut.ir.layers import value_bytes
from halocut.ir.ops import POINTWISE
from halocut.ir.regions import Region
from halocut.passes.halo import halo_rule, has_halo_rule
from halocut.targets.cost import CostModel, analytic_latency_share, fusable
from halocut.targets.topology import Device

ANCHORS = ("top", "middle", "bottom")


def device_key(device: Device) -> tuple:
    """Devices with equal figures cost the same: tables are shared among them."""
    return (device.device_class, device.peak_flops, device.memory_bandwidth_bytes_per_s,
            tuple(sorted(device.efficiency.items())), device.profile_path)


def height(node: fx.Node) -> int:
    shape = tuple(getattr(node.meta.get("tensor_meta"), "shape", ()))
    return shape[2] if len(shape) == 4 else 1


def row_bytes(node: fx.Node) -> float:
    return value_bytes(node) / height(node)


class VolumeTables:
    """Row and latency tables of a graph's spatially splittable nodes, for a set of devices."""

    def __init__(self, nodes: list[fx.Node], devices: list[Device], cost: CostModel):
        self.cost = cost
        self.kinds = {device_key(d): d for d in devices}
        self.rows_in: dict[tuple[str, str, str], np.ndarray] = {}
        self.latency: dict[tuple[str, tuple], np.ndarray] = {}
        for node in (n for n in nodes if has_halo_rule(n)):
            for source in tensor_inputs(node):
                if len(tuple(source.meta["tensor_meta"].shape)) == 4:
                    for anchor in ANCHORS:
                        self.rows_in[node.name, source.name, anchor] = _rows_read(node, source, anchor)

    def node_latency(self, node: fx.Node, key: tuple) -> np.ndarray:
        """Seconds for ``r`` rows of ``node`` (index ``r``, 0 .. its height) on devices of ``key``, unfused."""
        cached = self.latency.get((node.name, key))
        if cached is None:
            cached = _latency_by_rows(self.cost, self.kinds[key], node)
            self.latency[node.name, key] = cached
        return cached

    def needs(self, volume: list[fx.Node], anchor: str = "middle") -> dict[str, np.ndarray]:
        """For each node of the volume and each outside input: rows needed for ``n`` output rows (index ``n``)."""
        last = volume[-1]
        needs = {last.name: np.arange(height(last) + 1)}
        for node in reversed(volume):
            if node.name not in needs:  # feeds nothing of the volume's output (only in a walk past a volume's start)
                continue
            for source in tensor_inputs(node):
                table = self.rows_in.get((node.name, source.name, anchor))
                wanted = table[needs[node.name]] if table is not None else np.ones_like(needs[node.name])
                needs[source.name] = np.maximum(needs[source.name], wanted) if source.name in needs else wanted
        return needs

    def compute_s(self, volume: list[fx.Node], needs: dict[str, np.ndarray], key: tuple) -> np.ndarray:
        """Seconds for ``n`` output rows of the volume on a device of ``key`` (pointwise ops fused)."""
        members = {n.name for n in volume}
        total = np.zeros(height(volume[-1]) + 1)
        for node in volume:
            layer = node.meta.get("layer")
            if layer is None or (layer.kind in POINTWISE and fusable(node, members)):
                continue
            total += self.node_latency(node, key)[needs[node.name]]
        return total


def _rows_read(node: fx.Node, source: fx.Node, anchor: str) -> np.ndarray:
    """Rows of ``source`` a tile of ``r`` output rows of ``node`` reads, for r = 0 .. height.

    The tile is centred (``middle``), or starts at the first row (``top``) or ends at the last (``bottom``):
    border tiles read less, since part of their window is padding.
    """
    rule, layer = halo_rule(node), node.meta["layer"]
    out_h, out_w = height(node), tuple(node.meta["tensor_meta"].shape)[3]
    shape = tuple(source.meta["tensor_meta"].shape)
    rows = np.zeros(out_h + 1, dtype=np.int64)
    for r in range(1, out_h + 1):
        top = {"top": 0, "middle": (out_h - r) // 2, "bottom": out_h - r}[anchor]
        rows[r] = rule(layer, Region((top, top + r), (0, out_w)), shape).clip(shape[2], shape[3]).height
    return np.maximum.accumulate(rows)


def _latency_by_rows(cost: CostModel, device: Device, node: fx.Node) -> np.ndarray:
    layer, rows = node.meta["layer"], height(node)
    if device.profile_path is not None:
        width = tuple(node.meta["tensor_meta"].shape)[3]
        times = [0.0] + [cost.latency(device, layer, Region((0, r), (0, width)), node.name) for r in range(1, rows + 1)]
        return np.maximum.accumulate(np.asarray(times))
    if layer.kind in ("size", "getitem", "flatten", "reshape", "identity", "dropout"):
        return np.zeros(rows + 1)
    share = np.arange(1, rows + 1) / rows
    times = np.broadcast_to(analytic_latency_share(device, layer, share), share.shape)
    return np.maximum.accumulate(np.concatenate([[0.0], times]))


def min_max_split(times: dict[str, np.ndarray], total: int) -> tuple[float, dict[str, int]]:
    """Rows per device so that the latest device finishes soonest: ``times[d][n]`` is device d's time for n rows.

    Each table must start at ``times[d][0] == 0`` (a device given nothing costs
    nothing) and be non-decreasing. Exact: bisection over every attainable time.
    """
    names = list(times)
    finish, rows = min_max_rows(np.array([times[d] for d in names]), total)
    return finish, {d: int(n) for d, n in zip(names, rows)} if np.isfinite(finish) else {}


def min_max_rows(tables: np.ndarray, total: int) -> tuple[float, np.ndarray]:
    """:func:`min_max_split` over a matrix (one row of times per device): the finish and the rows per device.

    The finish is the lowest attainable time at which the devices together can take ``total`` rows; the rows
    each device finishes within every attainable time (``levels``) are counted at once."""
    tables = np.maximum.accumulate(tables, axis=1)
    levels = np.unique(tables[:, 1:])
    # each entry's level, counted per device and level, summed up the levels: entries within each level
    where = np.searchsorted(levels, tables) + (len(levels) + 1) * np.arange(len(tables))[:, None]
    counts = np.bincount(where.ravel(), minlength=len(tables) * (len(levels) + 1)).reshape(len(tables), -1)
    within = np.minimum(np.cumsum(counts, axis=1)[:, :len(levels)] - 1, total)
    taken = within.sum(axis=0)
    if taken[-1] < total:
        return float("inf"), np.zeros(len(tables), dtype=np.int64)
    low = int(np.searchsorted(taken, total, side="left"))
    rows = within[:, low].astype(np.int64)
    below = within[:, low - 1] if low > 0 else np.zeros_like(rows)
    excess = rows.sum() - total
    for k in range(len(rows)):  # devices that reach the level only with extra rows give back what is not needed
        back = min(excess, rows[k] - below[k])
        rows[k] -= back
        excess -= back
    finish = max((tables[k][n] for k, n in enumerate(rows) if n > 0), default=0.0)
    return float(finish), rows
