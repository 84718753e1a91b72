"""Paper 004's Fig. 4 setting: MW, NFL, BF and Offload on one end device and one edge server.

    .venv/bin/python benchmarks/mw_paper.py [--models alexnet,squeezenet1_1,yolov2] [--rates 1.1,2,3]

The link of examples/topologies/mw.yaml gets each transmission rate (MB/s, the
paper's x axis, in place of the Shannon rate); every planner's plan is scored
by the simulator (one request). ``mw<=4`` is MW limited to 4 paths, the space
``bf`` searches exhaustively (the paper's MW (2x2) against BF (2x2)).
"""

import argparse
import dataclasses
import logging
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from halocut.compiler.prepare import prepare_model
from halocut.planning import get_planner
from halocut.planning.planners.fused_layer import plan_minimizing_waiting
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import load_topology

ROOT = Path(__file__).resolve().parent.parent
PLANNERS = {"offload": get_planner("offload"), "nfl": get_planner("nfl"), "mw": get_planner("mw"),
            "mw<=4": lambda *args: plan_minimizing_waiting(*args, max_paths=4), "bf": get_planner("bf")}


def at_rate(rate_mb_per_s: float):
    topology = load_topology(ROOT / "examples/topologies/mw.yaml")
    links = tuple(dataclasses.replace(link, bandwidth_bps=rate_mb_per_s * 8e6) for link in topology.links)
    return dataclasses.replace(topology, links=links)


def describe(plan) -> str:
    """FL length x paths and each path's hops, e.g. '2 units x 3: es | end | end>es'."""
    first = plan.stages[0]
    if first.kind != "spatial":
        return " + ".join(f"{len(s.nodes)} on {s.device}" for s in plan.stages)
    hops = [">".join(h.device for h in t.devices) for t in first.tiles]
    return f"{len(first.nodes)} nodes x {len(first.tiles)}: {' | '.join(hops)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="alexnet,squeezenet1_1,yolov2")
    parser.add_argument("--rates", default="1.1,2,3")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    table = Table(title="paper 004 setting (mw.yaml): simulated latency, planning time")
    for column in ("model", "MB/s", "planner", "latency ms", "planning s", "plan"):
        table.add_column(column)
    for model in args.models.split(","):
        prepared = prepare_model(model, None if model == "yolov2" else (1, 3, 224, 224))
        for rate in (float(r) for r in args.rates.split(",")):
            topology = at_rate(rate)
            for name, planner in PLANNERS.items():
                start = time.perf_counter()
                plan = planner(prepared.graph, model, prepared.input_shape, topology, CostModel())
                elapsed = time.perf_counter() - start
                latency = simulate(prepared.graph, plan, topology, requests=1).latency_s
                table.add_row(model, f"{rate:g}", name, f"{latency * 1e3:.1f}", f"{elapsed:.2f}", describe(plan))
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
