"""CoopAI (paper 001) Table II and Figs. 8-9 with the ``mls`` and ``sls`` planners, on the RPi4 topologies.

    .venv/bin/python benchmarks/coopai.py [--models alexnet,vgg16,vgg19,yolov2] [--topology coopai-rpi4x10]

Per model: for k = 1..D devices, MLS's number of blocks (Table II), T^k of MLS and SLS by the paper's
model (eqs. 2-5) and the simulated latency of each k's plan; then, over the 40-400 Mbps gateway sweep
(Fig. 9, k chosen by eq. 1), the simulated latency of sls, mls and offload.
"""

import argparse
import dataclasses
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from halocut.compiler.prepare import prepare_model
from halocut.planning import get_planner
from halocut.planning.planners.coopai import realize, solve
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import Topology, load_topology

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"alexnet": 224, "vgg16": 224, "vgg19": 224, "yolov2": 608}
SWEEP_MBPS = (40, 100, 200, 300, 400)


def with_gateway(topology: Topology, mbps: float) -> Topology:
    """The topology with every shared medium (CoopAI's gateway) at ``mbps``."""
    media = tuple(dataclasses.replace(m, bandwidth_bps=mbps * 1e6) for m in topology.media)
    return dataclasses.replace(topology, media=media)


def per_k(console: Console, model: str, graph, shape, topology: Topology) -> None:
    cost = CostModel()
    table = Table(title=f"{model} on {topology.name}: per number of devices k (ms)")
    for column in ("k", "MLS blocks", "MLS T^k", "SLS T^k", "MLS sim", "SLS sim", "modes"):
        table.add_column(column)
    (units, mls), (_, sls) = solve(graph, topology, cost), solve(graph, topology, cost, max_macs=1)
    for k in sorted(mls.times_s):
        simulated = [simulate(graph, realize(graph, model, shape, topology, cost, units, s, name, k), topology, cost,
                              requests=1).latency_s for s, name in ((mls, "mls"), (sls, "sls"))]
        modes = ",".join(m for *_, m in mls.blocks_by_k[k] if m)
        table.add_row(str(k), str(mls.rounds(units, k)), f"{mls.times_s[k] * 1e3:.0f}",
                      f"{sls.times_s.get(k, float('inf')) * 1e3:.0f}", *(f"{s * 1e3:.0f}" for s in simulated), modes)
    console.print(table)
    console.print(f"eq. 1 picks k = {mls.k} for MLS ({mls.rounds(units)} blocks), k = {sls.k} for SLS; "
                  f"MLS saves {100 * (1 - mls.predicted_s / sls.predicted_s):.1f}% by the paper's model")


def sweep(console: Console, model: str, graph, shape, topology: Topology) -> None:
    cost = CostModel()
    table = Table(title=f"{model} on {topology.name}: gateway bandwidth sweep (simulated ms; k and blocks by eq. 1)")
    for column in ("Mbps", "sls", "mls", "offload", "mls vs sls", "by eqs. 2-5", "k sls/mls", "mls blocks", "plan s"):
        table.add_column(column)
    for mbps in SWEEP_MBPS:
        swept = with_gateway(topology, mbps)
        latency, seconds = {}, 0.0
        for name in ("sls", "mls", "offload"):
            start = time.perf_counter()
            plan = get_planner(name)(graph, model, shape, swept, cost)
            seconds = max(seconds, time.perf_counter() - start)
            latency[name] = simulate(graph, plan, swept, cost, requests=1).latency_s
        (units, mls), (_, sls) = solve(graph, swept, cost), solve(graph, swept, cost, max_macs=1)
        table.add_row(str(mbps), *(f"{latency[n] * 1e3:.0f}" for n in ("sls", "mls", "offload")),
                      f"{100 * (1 - latency['mls'] / latency['sls']):+.1f}%",
                      f"{100 * (1 - mls.predicted_s / sls.predicted_s):+.1f}%", f"{sls.k}/{mls.k}",
                      str(mls.rounds(units)), f"{seconds:.2f}")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SIZES))
    parser.add_argument("--topology", default="coopai-rpi4x10")
    args = parser.parse_args()
    console = Console()
    topology = load_topology(ROOT / f"examples/topologies/{args.topology}.yaml")
    for model in args.models.split(","):
        prepared = prepare_model(model, (1, 3, SIZES[model], SIZES[model]))
        per_k(console, model, prepared.graph, prepared.input_shape, topology)
        sweep(console, model, prepared.graph, prepared.input_shape, topology)


if __name__ == "__main__":
    main()
