"""``halocut inspect``: per-layer table and totals of a model.

>>> report = inspect_model("lenet5")
>>> report.summary.total_params
62006
>>> sorted(report.to_json())[:4]
['input_shape', 'layers', 'model', 'notes']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.table import Table
from torch import nn

from halocut.compiler.frontend import BUILD_KWARGS, Shape, load_model
from halocut.ir.errors import HalocutError
from halocut.ir.layers import ModelSummary, annotate_layers, summarize
from halocut.passes.halo import halo_rule, has_halo_rule


@dataclass(frozen=True)
class InspectReport:
    """A model's analysed layers: what ``halocut inspect`` prints."""

    model: str
    input_shape: Shape
    tracer: str
    summary: ModelSummary
    unsplit: dict[str, str]  # layer -> why a tile of it cannot be computed (the halo rule that stops it)
    unused_params: int = 0  # parameters the traced eval graph never reads
    notes: tuple[str, ...] = ()  # what a reader comparing with published figures must know

    def to_json(self) -> dict:
        """One JSON object: totals and a list of layers (name, kind, shapes, flops, params, bytes)."""
        s = self.summary
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "tracer": self.tracer,
            "total_flops": s.total_flops,
            "total_params": s.total_params,
            "total_param_bytes": s.total_param_bytes,
            "total_output_bytes": s.total_output_bytes,
            "unused_params": self.unused_params,
            "notes": list(self.notes),
            "layers": [{"name": name, "kind": info.kind, "target": info.target,
                        "input_shapes": [list(x) for x in info.input_shapes],
                        "output_shape": list(info.output_shape),
                        "flops": info.flops, "params": info.params, "param_bytes": info.param_bytes,
                        "output_bytes": info.output_bytes, "attrs": _jsonable(info.attrs),
                        "splittable": name not in self.unsplit, "why_not": self.unsplit.get(name)}
                       for name, info in s.layers],
        }

    def table(self) -> Table:
        """A rich table of the layers with a totals row."""
        s = self.summary
        notes = list(self.notes) + ([f"{self.unused_params:,} parameters are never used in eval and not counted"]
                                    if self.unused_params else [])
        caption = "\n".join(notes) or None
        table = Table(title=f"{self.model}  input {tuple(self.input_shape)}  (traced with {self.tracer})",
                      show_footer=True, caption=caption)
        table.add_column("layer", footer="total")
        table.add_column("kind")
        table.add_column("output shape")
        table.add_column("GFLOPs", justify="right", footer=f"{s.total_flops / 1e9:.3f}")
        table.add_column("params", justify="right", footer=f"{s.total_params:,}")
        table.add_column("output bytes", justify="right", footer=_bytes_text(s.total_output_bytes))
        table.add_column("tiles?", footer=f"{len(s.layers) - len(self.unsplit)} of {len(s.layers)} split")
        for name, info in s.layers:
            shape = "x".join(map(str, info.output_shape)) if info.output_shape else \
                " ".join("x".join(map(str, x)) for x in info.output_shapes) or "-"
            kind = info.kind if info.kind != "unknown" else f"unknown: {info.target}"
            table.add_row(name, kind, shape, f"{info.flops / 1e9:.3f}" if info.flops else "",
                          f"{info.params:,}" if info.params else "", _bytes_text(info.output_bytes),
                          "yes" if name not in self.unsplit else f"no: {self.unsplit[name]}")
        return table


def inspect_model(spec: str | nn.Module, input_shape: Shape | None = None,
                  weights: str | Path | None = None) -> InspectReport:
    """Load, trace and analyse a model; the work behind ``halocut inspect``."""
    loaded = load_model(spec, input_shape, weights)
    annotate_layers(loaded.graph_module, loaded.input_shape)
    summary = summarize(loaded.graph_module)
    unsplit = {node.name: _why_unsplit(node) for node in loaded.graph_module.graph.nodes
               if "layer" in node.meta and not has_halo_rule(node)}
    unused = sum(p.numel() for p in loaded.module.parameters()) - summary.total_params
    notes = tuple(f"built with {key}=False: torchvision's published parameter count includes the auxiliary "
                  f"classifier ({'AuxLogits' if loaded.name == 'inception_v3' else 'aux1, aux2'}), which eval never uses"
                  for key, value in BUILD_KWARGS.get(loaded.name, {}).items() if key == "aux_logits" and not value)
    return InspectReport(loaded.name, loaded.input_shape, loaded.tracer, summary, unsplit, max(0, unused), notes)


def _why_unsplit(node) -> str:
    """What stops a tile of this layer, in a few words: the halo rule's refusal, without the layer's name."""
    layer = node.meta["layer"]
    if len(layer.output_shape) != 4:
        return "output is not a feature map"
    try:
        halo_rule(node)
    except HalocutError as error:
        return str(error).split("): ", 1)[-1].split(") ", 1)[-1]
    return "a 1-row output"  # has_halo_rule's other condition


def _bytes_text(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B" if n else ""


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
