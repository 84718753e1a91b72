"""The front half of the compile pipeline: load, trace, fold batch norms, analyse.

Plans name the nodes of this graph (after folding), so every command that reads
or writes a plan prepares the model the same way.

>>> prepared = prepare_model("lenet5")
>>> prepared.name, prepared.input_shape, len(prepared.graph.graph.nodes) > 5
('lenet5', (1, 3, 32, 32), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import fx, nn

from compiler.frontend import Shape, load_model
from compiler.ir import annotate_layers
from passes.fold import fold_batchnorm


@dataclass(frozen=True)
class PreparedModel:
    name: str
    module: nn.Module  # the original model, in eval mode: the reference for equivalence
    graph: fx.GraphModule  # traced, batch norms folded, every call node annotated
    input_shape: Shape


def prepare_model(spec: str | nn.Module, input_shape: Shape | None = None,
                  weights: str | Path | None = None) -> PreparedModel:
    loaded = load_model(spec, input_shape, weights)
    graph = fold_batchnorm(loaded.graph_module)
    annotate_layers(graph, loaded.input_shape)
    return PreparedModel(loaded.name, loaded.module, graph, loaded.input_shape)
