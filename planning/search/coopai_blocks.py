"""CoopAI's block completion time e_{i,j}^k (paper 001, eqs. 3-5), for the ``sls`` and ``mls`` planners.

A block is a run of consecutive units (:mod:`halocut.planning.search.coopai_units`);
with k devices, device t computes tile t of a grid over the block's last
output (conv), or cluster t of its features (fc), and

    e = max_t  compute_t + (ti_t + tau_o_t + to_t) * 8 / bandwidth_t        (eqs. 3, 5)

- compute_t: the repo's CostModel on tile t's halo'd regions (eq. 4 sums the
  layers; the paper's FLOPs/F is replaced so every planner is costed alike).
- ti_t: bytes of the block's inputs tile t needs and does not hold (prefetched
  halo included); tau_o_t: bytes of tile t's part of an earlier conv block's
  output that other tiles of this block need (the paper's postponed upload);
  to_t: the block's output tile, uploaded when it feeds an fc/glue unit or is
  the model's output. The paper leaves these to its technical report [11];
  they are derived here from its definitions (Sec. IV-B2).
- bandwidth_t: the route from the requester (CoopAI's gateway side) to the
  device, a shared medium split among the k chosen devices (G/k).
- fc modes (Sec. II-B): model (full input in, No/k out), data (Ni/k in, No
  partial sums out), hybrid (two fc units: full input in, partial sums out).
  An fc block's input always comes from the gateway (it holds the previous
  round's results) and its output goes back to it.
- glue units are their own blocks, costed as compute on the first device
  (the paper's gateway work; nothing is sent).
"""

from __future__ import annotations

from functools import cached_property

from torch import fx

from halocut.ir.graph import compute_nodes, tensor_inputs
from halocut.ir.layers import value_bytes
from halocut.ir.regions import EMPTY, Region
from halocut.passes.halo import halo_rule
from halocut.planning.search.coopai_units import INF, Unit, feature_ranges, grid_regions
from halocut.targets.cost import CostModel
from halocut.targets.topology import Device


def _area_bytes(node: fx.Node, region: Region) -> float:
    return 0.0 if region.is_empty() else value_bytes(node, region)


class Blocks:
    """Block times e_{i,j}^k over units for the first k of ``devices`` (ordered) at ``rates[k]``."""

    def __init__(self, graph: fx.GraphModule, units: list[Unit], devices: list[Device], rates: dict[int, list[float]],
                 cost: CostModel):
        self.graph, self.units, self.devices, self.rates, self.cost = graph, units, devices, rates, cost
        self.nodes = compute_nodes(graph)
        self.position = {n.name: i for i, n in enumerate(self.nodes)}
        self.unit_of = {n.name: u for u, unit in enumerate(units) for n in unit.nodes}
        self.first = [self.position[unit.nodes[0].name] for unit in units]
        self.last = [self.position[unit.nodes[-1].name] for unit in units]
        self._latency: dict = {}
        self._reads: dict[tuple[str, str, Region], Region] = {}

    @cached_property
    def last_use(self) -> list[float]:
        """Per node: the position of its last user (infinite when the model returns it)."""
        uses = []
        for node in self.nodes:
            users = [self.position.get(u.name, INF) for u in node.users]
            uses.append(max(users, default=INF))
        return uses

    def valid(self, i: int, j: int) -> bool:
        """Only the block's last node may be read after it (each tile / cluster returns one value)."""
        return (i, j) in self._valid

    @cached_property
    def _valid(self) -> set[tuple[int, int]]:
        blocks = set()
        for j in range(len(self.units)):
            end, latest = self.last[j], -INF
            for i in range(j, -1, -1):
                latest = max([latest, *(self.last_use[p] for p in range(self.first[i], min(self.last[i] + 1, end)))])
                if latest <= end:
                    blocks.add((i, j))
        return blocks

    def table(self, k: int, max_macs: int | None = None) -> dict[tuple[int, int], tuple[float, str]]:
        """(i, j) -> (e_{i,j}^k, fc mode or "") for every feasible block of units i..j."""
        times: dict[tuple[int, int], tuple[float, str]] = {}
        for j, unit in enumerate(self.units):
            if unit.kind == "glue":
                times[(j, j)] = (self.cost.nodes_latency(self.devices[0], list(unit.nodes)), "")
            elif unit.kind == "fc":
                self._fc_blocks(k, j, times, max_macs)
            else:
                self._conv_blocks(k, j, times, max_macs)
        return times

    # --- fully connected blocks

    def _fc_blocks(self, k: int, j: int, times: dict, max_macs: int | None) -> None:
        modes = [("model", j), ("data", j)]
        if j > 0 and self.units[j - 1].kind == "fc" and (max_macs is None or max_macs >= 2):
            modes.append(("hybrid", j - 1))
        for mode, i in modes:
            if self.valid(i, j):
                seconds = self._fc_time(k, i, j, mode)
                if seconds < times.get((i, j), (INF, ""))[0]:
                    times[(i, j)] = (seconds, mode)

    def _fc_time(self, k: int, i: int, j: int, mode: str) -> float:
        first, last = self.units[i].nodes[0], self.units[j].nodes[-1]
        layer = first.meta["layer"]
        spans = feature_ranges(layer.attrs["in_features" if mode == "data" else "out_features"], k)
        if spans is None:
            return INF
        (source,) = tensor_inputs(first)
        linears = [n for u in range(i, j + 1) for n in self.units[u].nodes if n.meta["layer"].kind == "linear"]
        worst = 0.0
        for t, (a, b) in enumerate(spans):
            share = (b - a) / spans[-1][1]
            compute = sum(self.cost.latency(self.devices[t], n.meta["layer"]) for n in linears) * share  # as simulated
            sent = value_bytes(source) * (share if mode == "data" else 1.0) + \
                value_bytes(last) * (share if mode == "model" else 1.0)
            worst = max(worst, compute + sent * 8.0 / self.rates[k][t])
        return worst

    # --- conv blocks: one backward halo walk per (last unit, tile) serves every first unit

    def _conv_blocks(self, k: int, j: int, times: dict, max_macs: int | None) -> None:
        start = j
        while start > 0 and self.units[start - 1].kind == "conv":
            start -= 1
        last = self.units[j].nodes[-1]
        tiles = grid_regions(*last.meta["tensor_meta"].shape[-2:], k)
        if tiles is None:
            return
        walks = [self._walk(start, j, region) for region in tiles]
        computes = [self._unit_latencies(t, start, j, needs) for t, (needs, _) in enumerate(walks)]
        upload = [self._upload(last, region) for region in tiles]
        macs = 0
        for i in range(j, start - 1, -1):
            macs += self.units[i].macs
            if max_macs is not None and macs > max_macs:
                break
            if not self.valid(i, j):
                continue
            inputs = self._transfers(k, i, j, walks)
            if inputs is None:
                continue
            worst = max(sum(computes[t][i - start:]) + (inputs[t] + upload[t]) * 8.0 / self.rates[k][t]
                        for t in range(k))
            times[(i, j)] = (worst, "")

    def _walk(self, start: int, j: int, region: Region) -> tuple[dict[str, Region], dict[tuple[str, str], Region]]:
        """Regions each node of units start..j computes for one output tile, and what each edge reads."""
        needs: dict[str, Region] = {self.units[j].nodes[-1].name: region}
        reads: dict[tuple[str, str], Region] = {}
        for node in reversed(self.nodes[self.first[start]:self.last[j] + 1]):
            need = needs.get(node.name)
            if need is None or node.meta["layer"].kind == "size":
                continue
            for source in tensor_inputs(node):
                wanted = self._wanted(node, source, need)
                reads[(node.name, source.name)] = wanted
                needs[source.name] = needs[source.name].union(wanted) if source.name in needs else wanted
        return needs, reads

    def _wanted(self, node: fx.Node, source: fx.Node, need: Region) -> Region:
        """The region of ``source`` that ``node`` reads to compute ``need`` (cached: walks from different last
        units and tiles meet the same regions, the whole map most often)."""
        key = (node.name, source.name, need)
        if key not in self._reads:
            shape = tuple(source.meta["tensor_meta"].shape)
            self._reads[key] = EMPTY if need.is_empty() else \
                halo_rule(node)(node.meta["layer"], need, shape).clip(*shape[-2:])
        return self._reads[key]

    def _unit_latencies(self, t: int, start: int, j: int, needs: dict[str, Region]) -> list[float]:
        device, latencies = self.devices[t], []
        for unit in self.units[start:j + 1]:
            if any(n.name not in needs for n in unit.nodes):
                latencies.append(INF)  # feeds nothing up to unit j: no valid block holds it
                continue
            key = (device.name, unit.nodes[0].name, tuple((needs[n.name].height, needs[n.name].width)
                                                          for n in unit.nodes))
            if key not in self._latency:
                self._latency[key] = self.cost.nodes_latency(device, list(unit.nodes), needs)
            latencies.append(self._latency[key])
        return latencies

    def _upload(self, last: fx.Node, region: Region) -> float:
        """to: the output tile goes to the gateway unless only conv blocks read it (they fetch what they need)."""
        later = [self.unit_of.get(u.name) for u in last.users]
        if all(u is not None and self.units[u].kind == "conv" for u in later):
            return 0.0
        return value_bytes(last, region)

    def _transfers(self, k: int, i: int, j: int, walks) -> list[float] | None:
        """ti + tau_o per tile: missing input data in, own older output that the other tiles need out."""
        begin, end = self.first[i], self.last[j]
        edges = [(n.name, s) for n in self.nodes[begin:end + 1] for s in tensor_inputs(n)
                 if self.position.get(s.name, -1) < begin]
        moved = [0.0] * k
        readers: dict[fx.Node, list[str]] = {}
        for name, s in edges:
            readers.setdefault(s, []).append(name)
        for source, names in readers.items():
            needs = []
            for _, reads in walks:
                need = EMPTY
                for name in names:
                    need = need.union(reads[(name, source.name)])
                needs.append(need)
            held = self._layout(source, k)
            if held is None and source.name in self.unit_of and self.units[self.unit_of[source.name]].kind == "conv":
                return None
            for t in range(k):
                mine = held[t] if held else EMPTY
                moved[t] += _area_bytes(source, needs[t]) - _area_bytes(source, needs[t].intersect(mine))
                if held:
                    moved[t] += sum(_area_bytes(source, mine.intersect(needs[o])) for o in range(k) if o != t)
        return moved

    def _layout(self, source: fx.Node, k: int) -> list[Region] | None:
        """Who holds which tile of a value: a conv block's grid; None when it comes from the gateway."""
        unit = self.unit_of.get(source.name)
        if unit is None or self.units[unit].kind != "conv":
            return None
        return grid_regions(*source.meta["tensor_meta"].shape[-2:], k)
