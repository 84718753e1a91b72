"""DeePar's delay of a task for each resource choice (paper 000, eqs. 1-6 and the matrix W of Sec. IV-A).

For a model analysed at an input shape, on a device, an edge server and a
cloud kind, :class:`ModelCosts` holds, over the cut positions where one tensor
crosses (:func:`~halocut.planning.search.cuts.cut_positions`), the compute
seconds of every segment on each machine (``F_i(b, k) - F_i(a, k)``, from the
cost model, a pointwise op fused into its producer only when both sit in the
segment) and the bytes crossing every position (``G_i``; ``G_i(0)`` may be
replaced by the task's encoded input size). :meth:`ModelCosts.best` gives the
best cuts and the delay of N samples for one choice kind under given
bandwidths b_i^1, b_i^2; it is what w_{i,j} is for the edge server j the
choice names. The four kinds of a choice (``device``, ``edge``, ``cloud``,
``edge-cloud``) are the paper's j = 0, j, j + m and j + 2m; eqs. (17)-(19)
fix which cuts each admits:

- ``device``: c1 = c2 = l;
- ``edge``: c1 < l, c2 = l (the edge computes, nothing reaches the cloud);
- ``cloud``: c1 = c2 < l (the edge relays, computes nothing);
- ``edge-cloud``: c1 < c2 < l.

>>> from halocut.compiler.prepare import prepare_model
>>> from halocut.targets.topology import catalog_device
>>> costs = model_costs(prepare_model("lenet5").graph, catalog_device("pixel-xl"), catalog_device("gtx-1080ti"),
...                     catalog_device("tesla-k80"))
>>> costs.best("device", 100e6, 30e6, samples=10).cuts == (costs.layers, costs.layers)
True
>>> best = costs.best("edge-cloud", 100e6, 30e6, samples=10)
>>> best.cuts[0] < best.cuts[1] < costs.layers and best.delay_s > 0
True
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from torch import fx

from halocut.ir.graph import compute_nodes
from halocut.planning.search.cuts import cut_positions
from halocut.targets.cost import CostModel, fusable
from halocut.targets.topology import Device

KINDS = ("device", "edge", "cloud", "edge-cloud")
USES_DOWNLINK = {"device": False, "edge": True, "cloud": True, "edge-cloud": True}  # x_ie
USES_UPLINK = {"device": False, "edge": False, "cloud": True, "edge-cloud": True}  # y_ie
USES_EDGE = {"device": False, "edge": True, "cloud": False, "edge-cloud": True}  # z_ie


@dataclass(frozen=True)
class Best:
    cuts: tuple[int, int]  # (c1, c2): compute nodes before each cut
    delay_s: float  # eqs. 1-6 summed, for N samples


class ModelCosts:
    """Segment compute seconds per machine and crossing bytes over a model's cut positions (see the module)."""

    def __init__(self, positions: list[int], device: np.ndarray, edge: np.ndarray, cloud: np.ndarray,
                 crossing_bytes: np.ndarray):
        self.positions = positions
        self.layers = positions[-1]
        self.device, self.edge, self.cloud = device, edge, cloud  # [a, b]: seconds of positions a..b
        self.crossing_bytes = crossing_bytes
        last = len(positions) - 1
        self._device_prefix = device[0]  # F(c1, device)
        self._edge_cloud = self._device_prefix[:, None] + edge + cloud[:, last][None, :]
        below = np.arange(len(positions))
        self._edge_cloud[~((below[:, None] < below[None, :]) & (below[None, :] < last))] = np.inf

    def best(self, kind: str, downlink_bps: float, uplink_bps: float, samples: int,
             input_bytes: float | None = None) -> Best:
        """The best cuts of ``kind`` with bandwidths b_i^1, b_i^2 and the delay of ``samples`` samples."""
        cuts, delay = _best(self, kind, float(downlink_bps), float(uplink_bps),
                            None if input_bytes is None else float(input_bytes))
        return Best(cuts, delay * samples)

    def delay(self, kind: str, cuts: tuple[int, int], downlink_bps: float, uplink_bps: float, samples: int,
              input_bytes: float | None = None) -> float:
        """Eqs. 1-6 for given cuts (positions among :attr:`positions`), summed, for ``samples`` samples."""
        return sum(self.phases(kind, cuts, downlink_bps, uplink_bps, input_bytes).values()) * samples

    def phases(self, kind: str, cuts: tuple[int, int], downlink_bps: float, uplink_bps: float,
               input_bytes: float | None = None) -> dict[str, float]:
        """One sample's seconds by phase, in the order they happen: ``device``, ``downlink`` (the tensor at c1 to
        the edge), ``edge``, ``uplink`` (the tensor at c2 to the cloud), ``cloud``, ``return`` (the result back
        to the device over the links used); eqs. 1-6 are their sum."""
        a, b = self.positions.index(cuts[0]), self.positions.index(cuts[1])
        g, last = self._bytes(input_bytes), len(self.positions) - 1
        phases = {"device": float(self.device[0, a]), "downlink": 0.0, "edge": 0.0, "uplink": 0.0, "cloud": 0.0,
                  "return": 0.0}
        if USES_DOWNLINK[kind]:
            phases.update(downlink=g[a] * 8.0 / downlink_bps, edge=float(self.edge[a, b]))
            phases["return"] += g[last] * 8.0 / downlink_bps
        if USES_UPLINK[kind]:
            phases.update(uplink=g[b] * 8.0 / uplink_bps, cloud=float(self.cloud[b, last]))
            phases["return"] += g[last] * 8.0 / uplink_bps
        return {k: float(v) for k, v in phases.items()}

    def _bytes(self, input_bytes: float | None) -> np.ndarray:
        if input_bytes is None:
            return self.crossing_bytes
        g = self.crossing_bytes.copy()
        g[0] = input_bytes
        return g


@lru_cache(maxsize=1 << 16)
def _best(costs: ModelCosts, kind: str, b1: float, b2: float, input_bytes: float | None) -> tuple[tuple[int, int], float]:
    g, last, p = costs._bytes(input_bytes), len(costs.positions) - 1, costs.positions
    back = g[last] * 8.0
    if kind == "device":
        return (p[last], p[last]), float(costs.device[0, last])
    if kind == "edge":
        t = costs._device_prefix[:last] + g[:last] * 8.0 / b1 + costs.edge[:last, last] + back / b1
        a = int(np.argmin(t))
        return (p[a], p[last]), float(t[a])
    if kind == "cloud":
        t = costs._device_prefix[:last] + g[:last] * 8.0 * (1 / b1 + 1 / b2) + costs.cloud[:last, last] + \
            back * (1 / b1 + 1 / b2)
        a = int(np.argmin(t))
        return (p[a], p[a]), float(t[a])
    t = costs._edge_cloud + (g * 8.0 / b1)[:, None] + (g * 8.0 / b2)[None, :] + back * (1 / b1 + 1 / b2)
    a, b = np.unravel_index(int(np.argmin(t)), t.shape)
    return (p[int(a)], p[int(b)]), float(t[a, b])


def model_costs(graph: fx.GraphModule, device: Device, edge: Device, cloud: Device,
                cost: CostModel | None = None) -> ModelCosts:
    """:class:`ModelCosts` of a prepared graph on the three machines."""
    positions, tables, crossing_bytes = segment_costs(graph, [device, edge, cloud], cost)
    return ModelCosts(positions, tables[device.name], tables[edge.name], tables[cloud.name], crossing_bytes)


def segment_costs(graph: fx.GraphModule, machines: list[Device], cost: CostModel | None = None,
                  ) -> tuple[list[int], dict[str, np.ndarray], np.ndarray]:
    """The single-tensor cut positions, each machine's segment table over them (one per machine name), and the
    bytes crossing each position."""
    cost = cost or CostModel()
    nodes = compute_nodes(graph)
    positions = cut_positions(graph, max_crossing=1)
    index = {n.name: i for i, n in enumerate(nodes)}
    sources = [_fused_source(n, index) for n in nodes]
    tables = {}
    for machine in machines:
        if machine.name not in tables:
            tables[machine.name] = _segments(cost, machine, nodes, sources, positions)
    return positions, tables, _crossing_bytes(graph, nodes, positions)


def _fused_source(node: fx.Node, index: dict[str, int]) -> int:
    """Index of the node a pointwise op would fuse into (-1: none): fused iff that node is in the same part."""
    sources = [n for n in node.all_input_nodes if n.op != "get_attr"]
    if len(sources) == 1 and sources[0].name in index and fusable(node, {sources[0].name}):
        return index[sources[0].name]
    return -1


def _segments(cost: CostModel, machine: Device, nodes: list[fx.Node], sources: list[int],
              positions: list[int]) -> np.ndarray:
    layers = [n.meta.get("layer") for n in nodes]
    alone = np.array([cost.latency(machine, la, None, n.name) if la else 0.0 for n, la in zip(nodes, layers)])
    fused = np.array([cost.latency(machine, la, None, n.name, fused=True) if la else 0.0
                      for n, la in zip(nodes, layers)])
    table = np.zeros((len(positions), len(positions)))
    for i, a in enumerate(positions):
        per_node = np.where(np.array(sources) >= a, fused, alone)
        prefix = np.concatenate([[0.0], np.cumsum(per_node)])
        table[i] = np.where(np.array(positions) >= a, prefix[positions] - prefix[a], 0.0)
    return table


def _crossing_bytes(graph: fx.GraphModule, nodes: list[fx.Node], positions: list[int]) -> np.ndarray:
    """Bytes crossing each position: the input at 0, the outputs at the end, between them the values a compute
    node makes before the position and one uses from it on."""
    index = {n.name: i for i, n in enumerate(nodes)}
    last = {}
    for i, node in enumerate(nodes):
        for source in node.all_input_nodes:
            if source.name in index:
                last[source] = i
    made = np.array([index[s.name] for s in last], dtype=np.int64)
    used = np.array(list(last.values()), dtype=np.int64)
    sizes = np.array([_value_bytes(s) for s in last], dtype=float)
    crossing = []
    for position in positions:
        if position == len(nodes):
            returned = [n for n in graph.graph.nodes if n.op == "output"][0].all_input_nodes
            crossing.append(float(sum(_value_bytes(n) for n in returned)))
        elif position == 0:
            crossing.append(float(sum(_value_bytes(n) for n in graph.graph.nodes if n.op == "placeholder")))
        else:
            crossing.append(float(sizes[(made < position) & (used >= position)].sum()))
    return np.array(crossing, float)


def _value_bytes(node: fx.Node) -> float:
    layer = node.meta.get("layer")
    if layer is not None:
        return float(layer.output_bytes)
    meta = node.meta["tensor_meta"]
    return float(meta.shape.numel() * 4)
