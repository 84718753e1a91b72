"""``halocut verify``: run a plan with the reference executor beside the original model, and measure what the
split costs: the max abs error, the FLOPs the halos recompute and the bytes the parts read.

A plan comes from a file (``--plan``) or is DeepThings' Fused Tile Partitioning (``--tiles RxC --fuse-until
LAYER``): an equal R x C grid over the output of LAYER, the volume from the first layer to LAYER split into
those tiles (each on its own device ``d0`` ...), the rest of the model one single-device stage.

>>> report = verify_model("lenet5", tiles=(2, 2), fuse_until="_5")
>>> report.ok, report.parts, report.halo_flop_overhead > 0
(True, 5, True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from halocut.compiler.prepare import PreparedModel, prepare_model
from halocut.ir.errors import HalocutError
from halocut.ir.graph import compute_nodes
from halocut.ir.layers import LayerProp
from halocut.ir.plan import Plan
from halocut.ir.segments import grid_tiles, names, plan as segments_plan, shape_of
from halocut.passes.lower import lower_plan
from halocut.runtime.reference import max_error, run_lowered


@dataclass(frozen=True)
class VerifyReport:
    model: str
    input_shape: tuple[int, ...]
    plan: str  # where the plan came from
    ok: bool
    max_abs_error: float
    tolerance: float
    halo_flop_overhead: float  # FLOPs of all parts over the model's, less 1
    model_flops: int
    parts_flops: int
    bytes_moved: int  # bytes every part reads as input (crops, whole tensors, the model input)
    parts: int
    stages: int

    def to_json(self) -> dict:
        return {**asdict(self), "input_shape": list(self.input_shape)}


def verify_model(model: str, plan_path: str | Path | None = None, tiles: tuple[int, int] | None = None,
                 fuse_until: str | None = None, input_shape: tuple[int, ...] | None = None,
                 weights: str | Path | None = None, seed: int = 0) -> VerifyReport:
    """See the module; a plan that does not fit the model is a one-line error."""
    if (plan_path is None) == (tiles is None):
        raise HalocutError("halocut verify: give either --plan or --tiles with --fuse-until")
    if tiles is not None and fuse_until is None:
        raise HalocutError("halocut verify: --tiles needs --fuse-until LAYER (the last layer of the tiled volume)")
    prepared = prepare_model(model, input_shape, weights)
    graph = prepared.graph
    if plan_path is not None:
        plan, source = Plan.load(plan_path), str(plan_path)
        if tuple(plan.input_shape) != tuple(prepared.input_shape):
            raise HalocutError(f"{plan_path}: plan is for input shape {tuple(plan.input_shape)}, the model is "
                               f"verified at {tuple(prepared.input_shape)} (--input-shape)")
    else:
        plan, source = _fused_tiles(graph, prepared.name, prepared.input_shape, tiles, fuse_until), \
            f"{tiles[0]}x{tiles[1]} tiles until {fuse_until}"
    return verify_plan(prepared, plan, source, seed)


def verify_plan(prepared: PreparedModel, plan: Plan, source: str = "plan", seed: int = 0) -> VerifyReport:
    """Run ``plan`` with the reference executor beside the prepared model on a seeded random input."""
    graph = prepared.graph
    plan.validate(graph)
    x = torch.randn(prepared.input_shape, generator=torch.Generator().manual_seed(seed))
    recorded: list[tuple[torch.nn.Module, list]] = []

    def record(name, module, args):
        recorded.append((module, list(args)))
        return module(*args)

    with torch.no_grad():
        result = run_lowered(graph, lower_plan(graph, plan), x, call=record)
        reference = prepared.module(x)
    error, allowed = max_error(result, reference)
    model_flops = sum(n.meta["layer"].flops for n in compute_nodes(graph) if "layer" in n.meta)
    parts_flops = sum(_flops(module, args) for module, args in recorded)
    moved = sum(int(a.numel() * a.element_size()) for _, args in recorded for a in args if torch.is_tensor(a))
    return VerifyReport(prepared.name, tuple(prepared.input_shape), source, bool(error <= allowed), float(error),
                        float(allowed), parts_flops / model_flops - 1 if model_flops else 0.0, int(model_flops),
                        int(parts_flops), moved, len(recorded), len(plan.stages))


def _fused_tiles(graph, model: str, shape, tiles: tuple[int, int], until: str) -> Plan:
    order = names(graph)
    if until not in order:
        raise HalocutError(f"--fuse-until: no layer named '{until}' (halocut inspect lists them)")
    out = shape_of(graph, until)
    if len(out) != 4:
        raise HalocutError(f"--fuse-until: layer '{until}' has output shape {out}, not a feature map (N, C, H, W)")
    rows, cols = tiles
    height, width = out[2], out[3]
    if rows > height or cols > width:
        raise HalocutError(f"--tiles {rows}x{cols}: layer '{until}' is only {height}x{width}")
    grid = grid_tiles(height, width, [height * i // rows for i in range(1, rows)],
                      [width * j // cols for j in range(1, cols)])
    devices = tuple(f"d{i}" for i in range(rows * cols))
    segments = [("spatial", until, grid)] + ([("single", None, 0)] if order[-1] != until else [])
    return segments_plan(graph, model, shape, segments, devices=devices)


def _flops(module: torch.nn.Module, args: list) -> int:
    if not isinstance(module, torch.fx.GraphModule):
        return 0
    LayerProp(module).propagate(*args)
    return sum(n.meta["layer"].flops for n in module.graph.nodes if "layer" in n.meta)


def parse_tiles(text: str) -> tuple[int, int]:
    """``"2x2"`` -> (2, 2): rows by columns, both positive."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise HalocutError(f"--tiles: '{text}' is not ROWSxCOLS such as 2x2") from None
    if rows < 1 or cols < 1:
        raise HalocutError(f"--tiles: '{text}': rows and columns must be positive")
    return rows, cols
