"""Helpers that write plans for tests: the analysed (unfolded) graph, and the plan writers of halocut.ir.segments."""

from __future__ import annotations

from halocut.compiler.frontend import load_model
from halocut.ir.layers import annotate_layers
from halocut.ir.segments import grid_tiles, names, plan, row_tiles, shape_of

__all__ = ["analysed", "grid_tiles", "names", "plan", "row_tiles", "shape_of"]


def analysed(name, shape):
    """A model traced and annotated, batch norms not folded."""
    loaded = load_model(name, shape)
    annotate_layers(loaded.graph_module, loaded.input_shape)
    return loaded.graph_module
