"""Whole-model latency predictions: what the cost model says a device needs for a model, unsplit.

>>> from targets.topology import catalog_device
>>> 0.005 < predict_model_latency(catalog_device("rpi4"), "lenet5") < 0.1
True
"""

from __future__ import annotations

from functools import cache

from compiler.prepare import prepare_model
from passes.cut import compute_nodes
from targets.cost import CostModel
from targets.topology import Device


@cache
def deployed_graph(model: str, input_size: int | None = None):
    """A model as deployment runs it: traced, BN folded, annotated."""
    shape = None if input_size is None else (1, 3, input_size, input_size)
    return prepare_model(model, shape).graph


def predict_model_latency(device: Device, model: str, input_size: int | None = None,
                          cost: CostModel | None = None) -> float:
    """Seconds for one image of ``model`` on ``device`` alone."""
    graph = deployed_graph(model, input_size)
    return (cost or CostModel()).nodes_latency(device, compute_nodes(graph))
