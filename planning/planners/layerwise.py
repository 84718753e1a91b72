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

from halocut.ir.errors import HalocutError
from halocut.ir.plan import Hop, Plan, Stage, Tile
from halocut.ir.regions import Region
from halocut.planning.search.layers import layer_groups, split_rows, splittable
from halocut.targets.cost import CostModel
from halocut.targets.topology import Device, Topology


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


def plan_modnn(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
               cost: CostModel) -> Plan:
    return layerwise_plan(graph, model, input_shape, topology, lambda device, group, height: device.peak_flops,
                          "modnn")


def plan_coedge(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                cost: CostModel) -> Plan:
    requester = topology.requester.name

    def weight(device: Device, group: list[fx.Node], height: int) -> float:
        """Rows per second the device sustains: a row's FLOPs over its peak plus its output bytes over its link.

        CoEdge's weighting (its paper: the slowest link of the route from the requester, no latency), which is
        only how rows are shared out; the plan is scored by the simulator."""
        flops = sum(n.meta["layer"].flops for n in group)
        compute_s = flops / height / device.peak_flops
        route = topology.route(requester, device.name)
        bandwidth = min((link.bandwidth_bps for link in route), default=float("inf"))
        transfer_s = group[-1].meta["layer"].output_bytes / height * 8 / bandwidth
        return 1.0 / (compute_s + transfer_s) if compute_s + transfer_s > 0 else 1.0

    return layerwise_plan(graph, model, input_shape, topology, weight, "coedge")
