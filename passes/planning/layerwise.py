"""Layer-by-layer spatial splits: ``modnn`` and ``coedge`` (DistrEdge's baselines, paper 003 section V).

Every spatially splittable layer (with the pointwise ops that directly follow
it) is its own stage, its output rows split across the devices in proportion
to a linear capability; layers that need their whole input (pooling to a
vector, flatten, linear) run on the single most capable device.

- MoDNN: capability = the device's peak FLOP/s (a linear computing model).
- CoEdge: capability also weighs the device's bandwidth from the requester:
  a row costs its FLOPs over the peak plus its bytes over the bandwidth, and
  rows are given in inverse proportion to that cost.
"""

from __future__ import annotations

from torch import fx

from compiler.errors import HalocutError
from compiler.plan import Hop, Plan, Stage, Tile
from passes.cut import compute_nodes
from passes.halo import Region, has_halo_rule
from passes.planning import register
from targets.cost import POINTWISE, CostModel
from targets.topology import Device, Topology


def layer_groups(graph: fx.GraphModule) -> list[list[fx.Node]]:
    """Consecutive groups: a layer and the pointwise ops that follow it with no other user in between."""
    groups: list[list[fx.Node]] = []
    for node in compute_nodes(graph):
        kind = node.meta["layer"].kind
        previous = groups[-1][-1] if groups else None
        sources = [s for s in node.all_input_nodes if s.op != "get_attr"]
        if (kind in POINTWISE and previous is not None and sources == [previous] and len(previous.users) == 1
                and splittable(previous) == splittable(node)):
            groups[-1].append(node)
        else:
            groups.append([node])
    return groups


def splittable(node: fx.Node) -> bool:
    """A node tiles by rows: it has a halo rule and more than one output row."""
    return has_halo_rule(node) and node.meta["layer"].output_shape[-2] > 1


def split_rows(height: int, weights: dict[str, float]) -> list[tuple[str, int, int]]:
    """Rows ``[0, height)`` in proportion to ``weights`` (largest remainders); devices given none are left out.

    >>> split_rows(10, {"a": 1.0, "b": 3.0})
    [('a', 0, 3), ('b', 3, 10)]
    """
    total = sum(weights.values())
    shares = {d: height * w / total for d, w in weights.items()}
    rows = {d: int(s) for d, s in shares.items()}
    for d in sorted(shares, key=lambda d: shares[d] - rows[d], reverse=True)[:height - sum(rows.values())]:
        rows[d] += 1
    spans, start = [], 0
    for device in weights:
        if rows[device]:
            spans.append((device, start, start + rows[device]))
            start += rows[device]
    return spans


def layerwise_plan(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                   weight, planner: str) -> Plan:
    devices = topology.compute_devices()
    if not devices:
        raise HalocutError(f"{planner}: topology '{topology.name}' has no device that computes")
    best = max(devices, key=lambda d: d.peak_flops).name
    stages = []
    for group in layer_groups(graph):
        names = tuple(n.name for n in group)
        last = group[-1]
        if not all(splittable(n) for n in group):
            stages.append(Stage("single", names, device=best))
            continue
        height, width = last.meta["layer"].output_shape[-2:]
        weights = {d.name: weight(d, group, height) for d in devices}
        tiles = tuple(Tile(Region((a, b), (0, width)), (Hop(device),)) for device, a, b in split_rows(height, weights))
        stages.append(Stage("spatial", names, tiles=tiles))
    return Plan(model, tuple(input_shape), tuple(stages), planner=planner)


@register("modnn")
def plan_modnn(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
               cost: CostModel) -> Plan:
    return layerwise_plan(graph, model, input_shape, topology, lambda device, group, height: device.peak_flops,
                          "modnn")


@register("coedge")
def plan_coedge(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                cost: CostModel) -> Plan:
    requester = topology.requester.name

    def weight(device: Device, group: list[fx.Node], height: int) -> float:
        """Rows per second the device sustains: a row's FLOPs over its peak plus its output bytes over its link."""
        flops = sum(n.meta["layer"].flops for n in group)
        compute_s = flops / height / device.peak_flops
        route = topology.route(requester, device.name)
        bandwidth = min((link.bandwidth_bps for link in route), default=float("inf"))
        transfer_s = group[-1].meta["layer"].output_bytes / height * 8 / bandwidth
        return 1.0 / (compute_s + transfer_s) if compute_s + transfer_s > 0 else 1.0

    return layerwise_plan(graph, model, input_shape, topology, weight, "coedge")
