"""``halocut profile``: measure per-layer and per-tile latencies on this machine.

Each layer of the deployed graph (traced, BN folded) runs on its real input:
with torch (the layer as a standalone fx module) or onnxruntime (that module
exported to ONNX). Spatial layers are also timed on tiles of a sweep of output
heights (DistrEdge profiles latency against height with granularity 1; the
sweep here is 1, 2, 4, ... and the full height), each tile sliced by the same
code that slices real plans, halo included. Warm-up runs, then the median of
repeats (under a CPU quota, as on a testbed machine, the mean over many CFS
periods: :class:`_Timer`). The result is a profile JSON that a topology names as a device:
``{name: local, role: device, profile: profile.json}``.
"""

from __future__ import annotations

import io
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
from rich.progress import Progress
from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.files import write_json
from halocut.ir.graph import compute_nodes
from halocut.ir.ops import FREE
from halocut.ir.regions import Region
from halocut.passes.slice import slice_stage
from halocut.runtime.cpu import cpu_quota

FORMAT = "halocut-profile/1"
RUNTIMES = ("torch", "onnxruntime")
SPATIAL = frozenset({"conv2d", "maxpool2d", "avgpool2d"})


def profile_graph(graph: fx.GraphModule, name: str, input_shape: tuple[int, ...], runtime: str = "torch",
                  repeats: int = 5, warmup: int = 2, max_sweep: int = 8, progress: bool = True) -> dict:
    """Measure the layers of a prepared graph (traced, BN folded, annotated) here; returns the profile as a
    JSON-ready dict. ``halocut profile`` prepares the model (:func:`halocut.compiler.commands.profile_model`)."""
    if runtime not in RUNTIMES:
        raise HalocutError(f"runtime '{runtime}': expected one of {', '.join(RUNTIMES)}")
    values = record_values(graph, torch.randn(input_shape))
    nodes = [n for n in compute_nodes(graph) if n.meta["layer"].kind not in FREE]
    layers = {}
    timer = _Timer(runtime, repeats, warmup)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"profiling {name} ({runtime})", total=len(nodes))
        for node in nodes:
            layers[node.name] = _profile_layer(graph, node, values, timer, max_sweep)
            bar.advance(task)
    best = max((e["flops"] / e["latency_s"] for e in layers.values() if e["flops"] and e["latency_s"] > 0),
               default=1e9)
    return {"format": FORMAT, "device": "local", "runtime": runtime, "model": name,
            "input_shape": list(input_shape), "host": host_info(), "statistic": timer.statistic,
            "device_figures": {"class": "cpu", "peak_flops": best, "memory_bytes": memory_bytes(),
                               "memory_bandwidth_bytes_per_s": copy_bandwidth(), "backend": "tvm-x86"},
            "layers": layers}


def write_profile(profile: dict, path: str | Path, force: bool = True) -> Path:
    """Write a profile (or bench result) whole or not at all; an existing file is replaced only with ``force``."""
    return write_json(path, profile, force)


def record_values(graph: fx.GraphModule, x: torch.Tensor) -> dict[str, object]:
    values: dict[str, object] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            values[node.name] = result
            return result

    with torch.no_grad():
        Recorder(graph).run(x)
    return values


def _profile_layer(graph: fx.GraphModule, node: fx.Node, values: dict, timer: "_Timer", max_sweep: int) -> dict:
    layer = node.meta["layer"]
    entry = {"kind": layer.kind, "output_shape": list(layer.output_shape), "flops": layer.flops}
    shape = layer.output_shape
    if layer.kind in SPATIAL and len(shape) == 4:
        height, width = shape[-2:]
        heights = sorted({min(2 ** i, height) for i in range(max_sweep)} | {height})
        entry["heights"] = {}
        for h in heights:
            (tile,) = slice_stage(graph, [node.name], [Region((0, h), (0, width))])
            crops = [values[name][:, :, r.rows[0]:r.rows[1], r.cols[0]:r.cols[1]] for name, r in tile.inputs]
            entry["heights"][str(h)] = timer.time(tile.module, crops)
        entry["latency_s"] = entry["heights"][str(height)]
    else:
        module, inputs = _single_layer(graph, node, values)
        entry["latency_s"] = timer.time(module, inputs)
    return entry


def _single_layer(graph: fx.GraphModule, node: fx.Node, values: dict) -> tuple[fx.GraphModule, list]:
    new = fx.Graph()
    owner: dict[str, object] = {}
    env = {}
    inputs = []
    for source in node.all_input_nodes:
        if source.op == "get_attr":
            owner[source.target] = getattr(graph, source.target) if "." not in source.target else \
                graph.get_parameter(source.target)
            env[source.name] = new.get_attr(source.target)
        else:
            env[source.name] = new.placeholder(source.name)
            inputs.append(values[source.name])
    if node.op == "call_module":
        owner[node.target] = graph.get_submodule(node.target)
    new.output(new.node_copy(node, lambda n: env[n.name]))
    return fx.GraphModule(owner, new), inputs


QUOTA_PERIODS = 20  # a CPU-capped measurement spans at least this many CFS periods


class _Timer:
    """The median of ``repeats`` runs after ``warmup``; under a CPU cap (:func:`cpu_quota`) the mean over runs that
    span at least QUOTA_PERIODS periods instead, since a short run's median would miss the throttled part."""

    def __init__(self, runtime: str, repeats: int, warmup: int):
        self.runtime, self.repeats, self.warmup = runtime, repeats, warmup
        self.quota = cpu_quota()

    @property
    def statistic(self) -> str:
        if self.quota is None:
            return f"median of {self.repeats} runs"
        return f"mean over at least {QUOTA_PERIODS} CFS periods ({self.quota[0]:.3g} cores, {self.quota[1] * 1e3:g} ms)"

    def time(self, module: fx.GraphModule, inputs: list) -> float:
        run = self._torch(module, inputs) if self.runtime == "torch" else self._onnxruntime(module, inputs)
        for _ in range(self.warmup):
            run()
        if self.quota is not None:
            span = QUOTA_PERIODS * self.quota[1]
            runs, start = 0, time.perf_counter()
            while runs < self.repeats or time.perf_counter() - start < span:
                run()
                runs += 1
            return (time.perf_counter() - start) / runs
        samples = []
        for _ in range(self.repeats):
            start = time.perf_counter()
            run()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    @staticmethod
    def _torch(module, inputs):
        def run():
            with torch.no_grad():
                module(*inputs)
        return run

    @staticmethod
    def _onnxruntime(module, inputs):
        import onnxruntime

        buffer = io.BytesIO()
        names = [f"input{i}" for i in range(len(inputs))]
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated; dynamo=True needs onnxscript
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module, tuple(inputs), buffer, input_names=names, opset_version=17, dynamo=False)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        feed = {name: value.numpy() for name, value in zip(names, inputs)}
        return lambda: session.run(None, feed)


def host_info() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version()}


def memory_bytes() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8e9


def copy_bandwidth() -> float:
    """Bytes per second a large tensor copy moves (read + write), the best of a few tries."""
    source = torch.ones(16 * 1024 * 1024)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * source.element_size() / best
