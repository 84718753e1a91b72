"""``halocut inspect``: per-layer table and totals of a model.

>>> report = inspect_model("lenet5")
>>> report.summary.total_params
62006
>>> sorted(report.to_json())[:4]
['input_shape', 'layers', 'model', 'total_flops']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.table import Table
from torch import nn

from halocut.compiler.frontend import Shape, load_model
from halocut.ir.layers import ModelSummary, annotate_layers, summarize


@dataclass(frozen=True)
class InspectReport:
    """A model's analysed layers: what ``halocut inspect`` prints."""

    model: str
    input_shape: Shape
    tracer: str
    summary: ModelSummary

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
            "layers": [{"name": name, "kind": info.kind, "target": info.target,
                        "input_shapes": [list(x) for x in info.input_shapes],
                        "output_shape": list(info.output_shape),
                        "flops": info.flops, "params": info.params, "param_bytes": info.param_bytes,
                        "output_bytes": info.output_bytes, "attrs": _jsonable(info.attrs)}
                       for name, info in s.layers],
        }

    def table(self) -> Table:
        """A rich table of the layers with a totals row."""
        s = self.summary
        table = Table(title=f"{self.model}  input {tuple(self.input_shape)}  (traced with {self.tracer})",
                      show_footer=True)
        table.add_column("layer", footer="total")
        table.add_column("kind")
        table.add_column("output shape")
        table.add_column("GFLOPs", justify="right", footer=f"{s.total_flops / 1e9:.3f}")
        table.add_column("params", justify="right", footer=f"{s.total_params:,}")
        table.add_column("output bytes", justify="right", footer=_bytes_text(s.total_output_bytes))
        for name, info in s.layers:
            shape = "x".join(map(str, info.output_shape)) if info.output_shape else \
                " ".join("x".join(map(str, x)) for x in info.output_shapes) or "-"
            kind = info.kind if info.kind != "unknown" else f"unknown: {info.target}"
            table.add_row(name, kind, shape, f"{info.flops / 1e9:.3f}" if info.flops else "",
                          f"{info.params:,}" if info.params else "", _bytes_text(info.output_bytes))
        return table


def inspect_model(spec: str | nn.Module, input_shape: Shape | None = None,
                  weights: str | Path | None = None) -> InspectReport:
    """Load, trace and analyse a model; the work behind ``halocut inspect``."""
    loaded = load_model(spec, input_shape, weights)
    annotate_layers(loaded.graph_module, loaded.input_shape)
    return InspectReport(loaded.name, loaded.input_shape, loaded.tracer, summarize(loaded.graph_module))


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
