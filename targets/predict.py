"""Whole-model latency predictions: what the cost model says a device needs for a model, unsplit.

>>> from targets.topology import load_catalog, _from_figures
>>> rpi4 = _from_figures("pi", "device", "rpi4", load_catalog()["rpi4"], "catalog")
>>> 0.005 < predict_model_latency(rpi4, "lenet5") < 0.1
True
"""

from __future__ import annotations

from functools import cache

from compiler.frontend import load_model
from compiler.ir import annotate_layers
from passes.cut import compute_nodes
from passes.fold import fold_batchnorm
from targets.cost import CostModel
from targets.topology import Device, _from_figures, load_catalog


@cache
def deployed_graph(model: str, input_size: int | None = None):
    """A model as deployment runs it: traced, BN folded, annotated."""
    loaded = load_model(model)
    shape = loaded.input_shape if input_size is None else (*loaded.input_shape[:2], input_size, input_size)
    folded = fold_batchnorm(loaded.graph_module)
    annotate_layers(folded, shape)
    return folded


def predict_model_latency(device: Device, model: str, input_size: int | None = None,
                          cost: CostModel | None = None) -> float:
    """Seconds for one image of ``model`` on ``device`` alone."""
    graph = deployed_graph(model, input_size)
    return (cost or CostModel()).nodes_latency(device, compute_nodes(graph))


def catalog_device(kind: str) -> Device:
    """A device of a catalog kind, named after it."""
    return _from_figures(kind, "device", kind, load_catalog()[kind], f"targets/devices.yaml: {kind}")
