"""The front half of the compile pipeline: load, trace, fold batch norms and shapes, go channels-first, analyse.

Plans name the nodes of this graph (after folding), so every command that reads
or writes a plan prepares the model the same way: :func:`prepare_model` runs
:data:`STEPS`, the steps the compile driver starts with.

>>> prepared = prepare_model("lenet5")
>>> prepared.name, prepared.input_shape, len(prepared.graph.graph.nodes) > 5
('lenet5', (1, 3, 32, 32), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable

from torch import fx, nn

from halocut.compiler.frontend import LoadedModel, Shape, load_model
from halocut.ir.layers import annotate_layers
from halocut.passes.channels_first import channels_first
from halocut.passes.fold import fold_batchnorm
from halocut.passes.fold_shapes import fold_shapes


@dataclass(frozen=True)
class PreparedModel:
    name: str
    module: nn.Module  # the original model, in eval mode: the reference for equivalence
    graph: fx.GraphModule  # traced, batch norms folded, every call node annotated
    input_shape: Shape


@dataclass
class Preparation:
    """What the preparation steps read and fill (the compile driver's state carries the same fields)."""

    model: str | nn.Module
    input_shape: Shape | None = None
    weights: str | Path | None = None
    loaded: LoadedModel | None = None
    graph: fx.GraphModule | None = None


def step_load(state) -> None:
    """Load and trace the model."""
    state.loaded = load_model(state.model, state.input_shape, state.weights)


def step_fold(state) -> None:
    """Fold batch norms into the convolutions before them and shape arithmetic to constants; write
    channels-last per-pixel blocks channels-first."""
    state.graph = channels_first(fold_shapes(fold_batchnorm(state.loaded.graph_module), state.loaded.input_shape))


def step_analyse(state) -> None:
    """Annotate every call node with its LayerInfo."""
    annotate_layers(state.graph, state.loaded.input_shape)


STEPS: list[tuple[str, Callable]] = [("frontend", step_load), ("fold", step_fold), ("analyse", step_analyse)]


def prepare_model(spec: str | nn.Module, input_shape: Shape | None = None,
                  weights: str | Path | None = None) -> PreparedModel:
    state = Preparation(spec, input_shape, weights)
    for _, step in STEPS:
        step(state)
    return PreparedModel(state.loaded.name, state.loaded.module, state.graph, state.loaded.input_shape)


@cache
def deployed_graph(model: str, input_size: int | None = None) -> fx.GraphModule:
    """A model by name as deployment runs it (traced, BN folded, annotated), prepared once per process."""
    shape = None if input_size is None else (1, 3, input_size, input_size)
    return prepare_model(model, shape).graph
