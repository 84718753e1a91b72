"""The reference executor: run a lowered plan in process, tile by tile and stage by stage, and verify it.

Numerical equivalence (design.md): max abs error <= 1e-4 * max(1, max abs of the reference), float32.

>>> from halocut.compiler.frontend import load_model
>>> from halocut.ir.layers import annotate_layers
>>> from halocut.ir.plan import single_device_plan
>>> loaded = load_model("lenet5")
>>> _ = annotate_layers(loaded.graph_module, loaded.input_shape)
>>> plan = single_device_plan(loaded.graph_module, "lenet5", loaded.input_shape, "pi4-0")
>>> verify_plan(loaded.graph_module, plan) <= 1e-4
True
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.names import part_name
from halocut.ir.numerics import RELATIVE_TOLERANCE, max_error  # noqa: F401 (re-exported)
from halocut.ir.plan import Plan
from halocut.passes.cut import StagePart
from halocut.passes.lower import LoweredStage, lower_plan



Call = Callable[[str, fx.GraphModule, list], object]


def call_module(name: str, module: fx.GraphModule, args: list):
    """The default way to run a part: its fx module, in process."""
    return module(*args)


def run_lowered(graph_module: fx.GraphModule, lowered: list[LoweredStage], *inputs: torch.Tensor,
                call: Call = call_module):
    """Execute the parts of a lowered plan on ``inputs``; returns what the model returns.

    Every part runs through ``call(part name, module, args)``: the default runs the fx module;
    a backend's verifier runs the compiled artifact instead, and the compiler records inputs.
    """
    values: dict[str, object] = {}
    placeholders = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    values.update({node.name: value for node, value in zip(placeholders, inputs)})
    shapes = {n.name: tuple(n.meta["tensor_meta"].shape) for n in graph_module.graph.nodes if "tensor_meta" in n.meta
              and hasattr(n.meta["tensor_meta"], "shape")}
    with torch.no_grad():
        for index, stage in enumerate(lowered):
            if stage.tiles:
                values[stage.tiles[0].part.output] = _run_tiles(index, stage, values, shapes, call)
            elif stage.fc is not None:
                values[stage.fc.output] = _run_fc(index, stage, values, call)
            else:
                values.update(_run_part(call, part_name(index), stage.whole, values))
    (returned,) = [n.args[0] for n in graph_module.graph.nodes if n.op == "output"]
    return fx.node.map_arg(returned, lambda n: values[n.name])


def _run_part(call: Call, name: str, part: StagePart, values: dict) -> dict:
    result = call(name, part.module, [values[n] for n in part.inputs])
    return dict(zip(part.outputs, result if len(part.outputs) > 1 else (result,)))


def _run_tiles(index: int, stage: LoweredStage, values: dict, shapes: dict, call: Call) -> torch.Tensor:
    first = stage.tiles[0].part
    out = None
    for t, tile in enumerate(stage.tiles):
        local = {name: _crop(values[name], region) for name, region in tile.part.inputs}
        for h, hop in enumerate(tile.hops):
            local.update(_run_part(call, part_name(index, t, h), hop, local))
        result = local[tile.hops[-1].outputs[-1]]
        if out is None:
            out = result.new_empty(shapes[first.output])
        region = tile.part.output_region
        out[:, :, region.rows[0]:region.rows[1], region.cols[0]:region.cols[1]] = result
    return out


def _crop(value: torch.Tensor, region) -> torch.Tensor:
    """A tile's own copy of its input region: in-place ops in a tile must not reach its neighbours' halos."""
    return value[:, :, region.rows[0]:region.rows[1], region.cols[0]:region.cols[1]].clone()


def _run_fc(index: int, stage: LoweredStage, values: dict, call: Call) -> torch.Tensor:
    fc = stage.fc
    x = values[fc.input]
    partials = [call(part_name(index, cluster=c), cluster, [x if span is None else x[..., span[0]:span[1]]])
                for c, (cluster, span) in enumerate(zip(fc.clusters, fc.input_features))]
    return call(part_name(index, merge=True), fc.merge, partials)


def verify_plan(graph_module: fx.GraphModule, plan: Plan, example: torch.Tensor | None = None,
                original: torch.nn.Module | None = None) -> float:
    """Run a plan with the reference executor and compare with ``original`` (default: the unsplit graph).

    Returns the max abs error; raises when it exceeds the tolerance.
    """
    x = example if example is not None else torch.randn(plan.input_shape, generator=torch.Generator().manual_seed(0))
    lowered = lower_plan(graph_module, plan)
    with torch.no_grad():
        reference = (original if original is not None else graph_module)(x)
    error, allowed = max_error(run_lowered(graph_module, lowered, x), reference)
    if not error <= allowed:
        raise HalocutError(f"plan for '{plan.model}' is not equivalent: max abs error {error:.3g} > {allowed:.3g}")
    return error
