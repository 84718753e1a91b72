"""Whole-model latency predictions: what the cost model says a device needs for a model, unsplit.

>>> from halocut.targets.topology import catalog_device
>>> from torch import fx, nn
>>> from halocut.ir.layers import annotate_layers
>>> graph = fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU()))
>>> _ = annotate_layers(graph, (1, 3, 32, 32))
>>> 0 < predict_model_latency(catalog_device("rpi4"), graph) < 0.1
True
"""

from __future__ import annotations

from torch import fx

from halocut.ir.graph import compute_nodes
from halocut.targets.cost import CostModel
from halocut.targets.topology import Device


def predict_model_latency(device: Device, graph: fx.GraphModule, cost: CostModel | None = None) -> float:
    """Seconds for one image of an annotated graph on ``device`` alone."""
    return (cost or CostModel()).nodes_latency(device, compute_nodes(graph))
