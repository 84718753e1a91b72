"""Predicted vs published whole-model latencies, and a fit of the cost model's efficiency curves.

    .venv/bin/python benchmarks/calibrate_cost.py          # print the table with the current constants
    .venv/bin/python benchmarks/calibrate_cost.py --fit    # also fit the class constants (scipy least squares)

The fit minimises the squared log ratio predicted/published over every row of
targets/published.py, per device class; the constants it prints go into
targets/cost.py (CLASS_DEFAULTS, GPU_PARALLEL_HALF_PER_FLOPS).
"""

import argparse
import dataclasses
import math

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.optimize import least_squares

from halocut.compiler.prepare import deployed_graph
from halocut.targets import cost
from halocut.targets.predict import predict_model_latency
from halocut.targets.published import PUBLISHED
from halocut.targets.topology import catalog_device


def table() -> tuple[Table, list[float]]:
    rows = Table(title="whole-model latency: cost model vs published (batch 1, FP32)")
    for column in ("device", "model", "input", "published ms", "predicted ms", "ratio"):
        rows.add_column(column, justify="right" if column not in ("device", "model") else "left")
    ratios = []
    for p in PUBLISHED:
        predicted = predict_model_latency(catalog_device(p.kind), deployed_graph(p.model, p.input_size))
        ratios.append(predicted / p.latency_s)
        rows.add_row(p.kind, p.model, str(p.input_size), f"{p.latency_s * 1e3:.1f}", f"{predicted * 1e3:.1f}",
                     f"{ratios[-1]:.2f}")
    return rows, ratios


def fit(device_class: str) -> None:
    rows = [p for p in PUBLISHED if catalog_device(p.kind).device_class == device_class]
    base = cost.CLASS_DEFAULTS[device_class]

    def residuals(x):
        params = dict(max=min(x[0], 1.0), reduction_half=math.exp(x[1]), layer_overhead_s=math.exp(x[2]),
                      memory_fraction=min(x[3], 1.0))
        if device_class == "cpu":
            params["parallel_half"] = math.exp(x[4])
        else:
            cost.GPU_PARALLEL_HALF_PER_FLOPS = math.exp(x[4])
        cost.CLASS_DEFAULTS[device_class] = dataclasses.replace(base, **params)
        return [math.log(predict_model_latency(catalog_device(p.kind), deployed_graph(p.model, p.input_size))
                         / p.latency_s)
                for p in rows]

    start = [base.max, math.log(base.reduction_half), math.log(base.layer_overhead_s), base.memory_fraction,
             math.log(base.parallel_half if device_class == "cpu" else cost.GPU_PARALLEL_HALF_PER_FLOPS)]
    result = least_squares(residuals, start, bounds=([0.2, 0, -14, 0.1, -25], [1.0, 7, -6, 1.0, 12]))
    residuals(result.x)
    Console().print(f"{device_class}: {cost.CLASS_DEFAULTS[device_class]}"
                    + (f", GPU_PARALLEL_HALF_PER_FLOPS={cost.GPU_PARALLEL_HALF_PER_FLOPS:.3g}" if device_class == "gpu" else "")
                    + f"  rms log ratio {np.sqrt(np.mean(np.square(result.fun))):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true")
    args = parser.parse_args()
    if args.fit:
        fit("cpu")
        fit("gpu")
    rows, ratios = table()
    Console(width=120).print(rows)
    worst = max(max(r, 1 / r) for r in ratios)
    print(f"worst factor {worst:.2f} over {len(ratios)} published rows (target: within 1.5)")


if __name__ == "__main__":
    main()
