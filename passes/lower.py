"""Lower a Plan to runnable parts: a module per single stage, per tile hop, per fc cluster.

This is the "slice/cut" step of the compile driver: mechanism only, it does
what the plan says and decides nothing.

>>> from halocut.compiler.frontend import load_model
>>> from halocut.ir.layers import annotate_layers
>>> from halocut.ir.plan import single_device_plan
>>> loaded = load_model("lenet5")
>>> _ = annotate_layers(loaded.graph_module, loaded.input_shape)
>>> plan = single_device_plan(loaded.graph_module, "lenet5", loaded.input_shape, "pi4-0")
>>> [len(s.whole.outputs) for s in lower_plan(loaded.graph_module, plan)]
[1]
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from halocut.ir.plan import Plan, Stage
from halocut.passes.cut import StagePart, cut_stages
from halocut.passes.slice import FcPart, TilePart, slice_fc, slice_stage


@dataclass(frozen=True)
class LoweredTile:
    """A tile and its hops: ``hops[i]`` runs on ``tile.devices[i]`` of the plan."""

    part: TilePart
    hops: tuple[StagePart, ...]


@dataclass(frozen=True)
class LoweredStage:
    stage: Stage
    whole: StagePart  # the stage as one module, whatever its kind
    tiles: tuple[LoweredTile, ...] = ()
    fc: FcPart | None = None


def lower_plan(graph_module: fx.GraphModule, plan: Plan) -> list[LoweredStage]:
    """Cut the annotated graph into the plan's stages and slice each as it says."""
    plan.validate(graph_module)
    stage_of = {name: i for i, stage in enumerate(plan.stages) for name in stage.nodes}
    wholes = cut_stages(graph_module, lambda node: stage_of[node.name])
    lowered = []
    for stage, whole in zip(plan.stages, wholes):
        if stage.kind == "spatial":
            parts = slice_stage(graph_module, list(stage.nodes), [t.region for t in stage.tiles])
            tiles = tuple(LoweredTile(part, _hops(part, [h.until for h in tile.devices[:-1]]))
                          for part, tile in zip(parts, stage.tiles))
            lowered.append(LoweredStage(stage, whole, tiles=tiles))
        elif stage.kind == "fc":
            features = [c.features for c in stage.clusters]
            lowered.append(LoweredStage(stage, whole, fc=slice_fc(graph_module, list(stage.nodes), stage.mode, features)))
        else:
            lowered.append(LoweredStage(stage, whole))
    return lowered


def _hops(part: TilePart, untils: list[str]) -> tuple[StagePart, ...]:
    if not untils:
        output = [n for n in part.module.graph.nodes if n.op == "output"][0].args[0]
        return (StagePart(part.module, tuple(name for name, _ in part.inputs), (output.name,)),)
    return tuple(cut_stages(part.module, untils))
