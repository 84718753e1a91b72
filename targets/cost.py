"""Latency of layers (or tiles of them) on devices, and of messages on links.

Two sources behind one interface, :meth:`CostModel.latency`:

- analytic, from the catalog: a layer's FLOPs over the device's peak times an
  efficiency that depends on the layer's shape: it saturates with the
  reduction length (``C_in / groups * k_h * k_w``: a depthwise conv reduces
  over 9 values and runs far below a 3x3 conv over 256 channels) and with the
  output elements computed in parallel (a one-row tile, or batch 1 on a big
  GPU, leaves the device idle); memory traffic over the memory bandwidth
  bounds it from below, and every kernel pays a fixed launch overhead. Ops
  with no multiply-adds cost their bytes; pointwise ops right after the layer
  that produces their input are fused into it (free), as TensorRT, TVM and
  ncnn do.
- a measured profile (``halocut profile``): per-layer latencies by output
  height, interpolated linearly, for the layers it has; other layers fall
  back to the analytic model with the profile's measured speed.

>>> from halocut.targets.topology import catalog_device
>>> nano = catalog_device("jetson-nano")
>>> model = CostModel()
>>> from halocut.ir.layers import LayerInfo
>>> conv = LayerInfo("conv2d", "c", {"kernel": (3, 3), "groups": 1, "in_channels": 64, "out_channels": 64},
...     ((1, 64, 56, 56),), ((1, 64, 56, 56),), flops=2 * 64 * 56 * 56 * 64 * 9, output_bytes=4 * 64 * 56 * 56)
>>> 0.5e-3 < model.latency(nano, conv) < 5e-3
True
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from torch import fx

from halocut.ir.files import read_json
from halocut.ir.layers import LayerInfo
from halocut.ir.regions import Region
from halocut.targets.topology import Device

POINTWISE = frozenset({"relu", "relu6", "leaky_relu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "silu",
                       "gelu", "batchnorm2d", "dropout", "identity"})
FREE = frozenset({"size", "getitem", "flatten", "reshape", "identity", "dropout"})
KERNELS_WITH_MACS = frozenset({"conv2d", "conv_transpose2d", "linear", "matmul"})


@dataclass(frozen=True)
class Efficiency:
    """Shape of a device's efficiency curve (see the module docstring)."""

    max: float  # fraction of peak a large dense conv reaches
    reduction_half: float  # reduction length at which efficiency is half of max
    parallel_half: float  # output elements at which efficiency is half of max
    layer_overhead_s: float  # fixed cost of each kernel launch
    memory_fraction: float  # sustained share of the catalog's theoretical memory bandwidth


# Class defaults, calibrated against device-figures.md by benchmarks/calibrate_cost.py; a catalog
# entry's own `efficiency` overrides them. GPUs need work in proportion to their size to fill them.
CLASS_DEFAULTS = {
    "cpu": Efficiency(max=1.0, reduction_half=6.0, parallel_half=1.9e4, layer_overhead_s=0.8e-3, memory_fraction=0.87),
    "gpu": Efficiency(max=1.0, reduction_half=42.0, parallel_half=0.0, layer_overhead_s=9e-6, memory_fraction=0.24),
}
GPU_PARALLEL_HALF_PER_FLOPS = 9.3e-9  # output elements to half-fill a GPU, per peak FLOP/s (V100: 1.5e5)


def efficiency_of(device: Device) -> Efficiency:
    base = CLASS_DEFAULTS[device.device_class or "cpu"]
    if device.device_class == "gpu" and base.parallel_half == 0.0:
        base = Efficiency(**{**base.__dict__, "parallel_half": device.peak_flops * GPU_PARALLEL_HALF_PER_FLOPS})
    return Efficiency(**{**base.__dict__, **device.efficiency})


class CostModel:
    """``latency(device, layer, region)`` in seconds, from a device's profile or the analytic model."""

    def latency(self, device: Device, layer: LayerInfo, region: Region | None = None, name: str | None = None,
                fused: bool = False) -> float:
        """Seconds to compute ``region`` of ``layer``'s output (all of it when None) on ``device``.

        ``fused``: a pointwise op folded into the kernel before it, which costs nothing.
        """
        if layer.kind in FREE:
            return 0.0
        if device.profile_path is not None and name is not None:
            measured = _profile(device.profile_path).latency(name, layer, region)
            if measured is not None:
                return measured  # as run when profiled, fused or not
        if fused and layer.kind in POINTWISE:
            return 0.0
        return analytic_latency(device, layer, region)

    def nodes_latency(self, device: Device, nodes: list[fx.Node], regions: dict[str, Region] | None = None,
                      memo: dict | None = None) -> float:
        """Seconds for a part: its nodes in order, pointwise ops fused into the kernel that feeds them.

        ``memo``: a dict kept by the caller (the simulator's, on the graph) where each layer's seconds are kept,
        keyed by node, region, fusion, device and this cost model."""
        members = {n.name for n in nodes}
        total = 0.0
        for node in nodes:
            layer = node.meta.get("layer")
            if layer is None:
                continue
            region = regions.get(node.name) if regions else None
            if region is not None and region.is_empty():
                continue
            fused = fusable(node, members)
            if memo is None:
                total += self.latency(device, layer, region, node.name, fused=fused)
                continue
            key = ("layer", node.name, region, fused, device, self)
            if key not in memo:
                memo[key] = self.latency(device, layer, region, node.name, fused=fused)
            total += memo[key]
        return total


def fusable(node: fx.Node, members: set[str]) -> bool:
    sources = [n for n in node.all_input_nodes if n.op != "get_attr"]
    return (len(sources) == 1 and sources[0].name in members and len(sources[0].users) == 1
            and sources[0].meta.get("layer") is not None and sources[0].meta["layer"].kind in
            KERNELS_WITH_MACS | {"add", "batchnorm2d"} | POINTWISE)


def region_fraction(layer: LayerInfo, region: Region | None) -> float:
    """Share of the layer's output a region covers (1 for the whole output)."""
    if region is None or len(layer.output_shape) != 4:
        return 1.0
    height, width = layer.output_shape[-2:]
    return region.height * region.width / float(height * width)


def analytic_latency(device: Device, layer: LayerInfo, region: Region | None = None) -> float:
    return float(analytic_latency_share(device, layer, region_fraction(layer, region)))


def analytic_latency_share(device: Device, layer: LayerInfo, share):
    """The analytic model for a ``share`` of the layer's output; ``share`` may be a numpy array (planners)."""
    efficiency = efficiency_of(device)
    input_bytes = sum(_numel(s) for s in layer.input_shapes) * 4 * share
    traffic = input_bytes + layer.output_bytes * share + layer.param_bytes
    memory_s = traffic / (device.memory_bandwidth_bytes_per_s * efficiency.memory_fraction)
    if layer.flops == 0:
        return efficiency.layer_overhead_s * 0.25 + memory_s
    reduction = _reduction_length(layer)
    parallel = _numel(layer.output_shape) * share
    eff = efficiency.max * reduction / (reduction + efficiency.reduction_half) * \
        parallel / (parallel + efficiency.parallel_half)
    compute_s = layer.flops * share / (device.peak_flops * eff)
    return efficiency.layer_overhead_s + np.maximum(compute_s, memory_s)


def _reduction_length(layer: LayerInfo) -> float:
    a = layer.attrs
    if layer.kind in ("conv2d", "conv_transpose2d"):
        return a["in_channels"] / a["groups"] * a["kernel"][0] * a["kernel"][1]
    if layer.kind == "linear":
        return float(a["in_features"])
    return float(layer.input_shapes[0][-1]) if layer.input_shapes else 1.0


def _numel(shape) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


class Profile:
    """A measured profile: per-layer latency against output height, linearly interpolated."""

    def __init__(self, data: dict):
        self.data = data
        self.layers = data["layers"]

    def latency(self, name: str, layer: LayerInfo, region: Region | None) -> float | None:
        entry = self.layers.get(name)
        if entry is None or entry["kind"] != layer.kind or tuple(entry["output_shape"]) != tuple(layer.output_shape):
            return None
        if region is None or not entry.get("heights"):
            return entry["latency_s"]
        heights = sorted((int(h), t) for h, t in entry["heights"].items())
        width_share = region.width / float(layer.output_shape[-1])
        return _interpolate(heights, region.height) * width_share


def _interpolate(points: list[tuple[int, float]], x: int) -> float:
    xs = [p[0] for p in points]
    i = bisect.bisect_left(xs, x)
    if i < len(xs) and xs[i] == x:
        return points[i][1]
    if i == 0:
        return points[0][1] * x / xs[0]
    if i == len(xs):
        return points[-1][1] * x / xs[-1]
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@cache
def _profile(path: Path) -> Profile:
    return Profile(read_json(path))
