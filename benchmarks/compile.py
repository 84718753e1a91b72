"""Compile time of `halocut compile`: resnet50 for 4 devices with the ONNX backend, cold and with the cache.

    .venv/bin/python benchmarks/compile.py [--model resnet50] [--backends onnx]

Targets (issue 6): the first compile within 60 s on this machine, a repeat run (same parts, cache warm) under 10 s.
Prints both times, their ratio, and the per-step times side by side.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from halocut.compiler.driver import CompileOptions, compile_model
from halocut.compiler.prepare import prepare_model
from halocut.ir.segments import plan, row_tiles, shape_of

ROOT = Path(__file__).resolve().parent.parent


def four_device_plan(model: str, path: Path) -> None:
    """Tiles of the first volume on three devices, the rest on a fourth (names of tests/data/mixed.yaml)."""
    graph = prepare_model(model).graph
    last = "layer1_2_relu_2" if model == "resnet50" else "layer1_1_relu_1"
    height, width = shape_of(graph, last)[-2:]
    segments = [("spatial", last, row_tiles(height, width, [height // 3, 2 * height // 3])), ("single", None, 3)]
    plan(graph, model, prepare_model(model).input_shape, segments, devices=("pi", "jetson", "edge", "cloud")).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--backends", default="onnx")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        os.environ["HALOCUT_CACHE"] = str(scratch / "cache")
        four_device_plan(args.model, scratch / "plan.json")
        runs = []
        for label in ("cold", "cached"):
            options = CompileOptions(args.model, ROOT / "tests/data/mixed.yaml", scratch / "build", scratch / "plan.json",
                                     backends=tuple(args.backends.split(",")), force=True, progress=False)
            start = time.perf_counter()
            compilation = compile_model(options)
            runs.append((label, time.perf_counter() - start, compilation.timings))
    table = Table(title=f"halocut compile {args.model}, 4 devices, backends {args.backends}")
    table.add_column("run")
    table.add_column("total s", justify="right")
    for step in runs[0][2]:
        table.add_column(step, justify="right")
    for label, total, timings in runs:
        table.add_row(label, f"{total:.2f}", *(f"{timings[s]:.2f}" for s in timings))
    console = Console(width=160)
    console.print(table)
    cold, cached = runs[0][1], runs[1][1]
    console.print(f"cold {cold:.1f} s (target < 60 s), cached {cached:.1f} s (target < 10 s), "
                  f"cached/cold = {cached / cold:.2f}")


if __name__ == "__main__":
    main()
