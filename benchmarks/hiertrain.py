"""HierTrain (paper 002) Sec. VI: T_total per policy over the edge-cloud bandwidth sweep (Figs. 7-10), the
speedups beside the paper's, the planner's running time beside its Table 2, the rounding gap, and the
effect of the edge server's cores (Fig. 11).

    .venv/bin/python benchmarks/hiertrain.py [--batch 64] [--out build/hiertrain] [--slowdown 30]

Setting (Sec. VI-B, D): examples/topologies/hiertrain-1core.yaml (RPi 3 device, one core of the Intel NUC,
GTX 1080 Ti cloud), device-edge 5 Mbps, edge-cloud 1.5-5 Mbps, latencies 0 (the paper's eq. 4 has none).
LeNet-5 on CIFAR-10-sized samples (3x32x32), AlexNet with 200 classes on Tiny-ImageNet-sized ones (3x64x64);
a sample is sent as an 8-bit image. The paper does not state its batch size; ``--batch`` (default 64).
Per-layer costs are the catalog's estimates (no profile of these machines exists here); ``--slowdown K``
adds a sensitivity scenario in which the device and the edge run K times slower than the catalog says (the
paper's prototype ran Chainer, whose CPU kernels are far from the catalog's optimised ones).
Every table is also written to OUT/hiertrain.json, the plots to OUT/*.png.
"""

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from halocut.compiler.commands import training_model
from halocut.ir.files import read_yaml
from halocut.planning.training import get_policy
from halocut.planning.training.hiertrain import plan_hiertrain, rounding_gap
from halocut.targets.topology import load_catalog, parse_topology
from halocut.targets.training import training_costs

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "examples/topologies/hiertrain-1core.yaml"
MODELS = {"LeNet-5": ("lenet5", None), "AlexNet": ("examples/models/hiertrain.py:alexnet_tiny", None)}
SWEEP_MBPS = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)
POLICIES = ("hiertrain", "all-edge", "all-cloud", "jointdnn", "jointdnn+", "jalad")
PAPER_SPEEDUPS = {"LeNet-5": (1.7, 6.9), "AlexNet": (2.3, 4.5)}  # max over the sweep vs (All-Edge, All-Cloud)
# Table 2 (CPLEX, Intel Core i7-6700): algorithm running time
TABLE_2 = {"LeNet": ("lenet5", None, 0.52), "AlexNet": ("examples/models/hiertrain.py:alexnet_tiny", None, 1.48),
           "VGG-16": ("vgg16", (1, 3, 64, 64), 3.0), "VGG-19": ("vgg19", (1, 3, 64, 64), 4.0),
           "googLeNet": ("googlenet", (1, 3, 64, 64), 5.3), "ResNet-34": ("resnet34", (1, 3, 64, 64), 12.0)}


def topology(edge_cloud_mbps: float, slowdown: float = 1.0, edge_cores: int = 1):
    """The paper's setting at one edge-cloud rate: latencies 0, the device and edge ``slowdown`` times slower."""
    data = read_yaml(TOPOLOGY)
    catalog = load_catalog()
    devices = []
    for entry in data["devices"]:
        entry = dict(entry)
        if entry["role"] in ("requester", "edge"):
            figures = dict(entry.get("figures") or {k: catalog[entry["kind"]][k] for k in (
                "class", "peak_flops", "memory_bytes", "memory_bandwidth_bytes_per_s", "backend")})
            scale = (edge_cores if entry["role"] == "edge" else 1) / slowdown
            figures["peak_flops"] = float(figures["peak_flops"]) * scale
            figures["memory_bandwidth_bytes_per_s"] = float(figures["memory_bandwidth_bytes_per_s"]) * min(scale, 1.0)
            entry.pop("kind", None)
            entry["figures"] = figures
        devices.append(entry)
    links = [{"between": ["device", "edge"], "bandwidth": "5Mbps"},
             {"between": ["edge", "cloud"], "bandwidth": f"{edge_cloud_mbps}Mbps"}]
    return parse_topology({**data, "devices": devices, "links": links}, str(TOPOLOGY), TOPOLOGY.parent)


def costs_for(trained, batch: int, mbps: float, slowdown: float = 1.0, bits: int = 32, edge_cores: int = 1):
    return training_costs(topology(mbps, slowdown, edge_cores), trained.graph, trained.groups, trained.name, batch,
                          trained.sample_bytes, bits)


def describe(choice) -> str:
    if choice.schedule:
        s = choice.schedule
        return f"o={s.mapping[0]} s={s.mapping[1]} l={s.mapping[2]} m=({s.m_s},{s.m_l}) b={s.b}"
    return "->".join(dict.fromkeys(choice.chain)) + f" cut {[i for i in range(1, len(choice.chain)) if choice.chain[i] != choice.chain[i - 1]]}"


def sweep(console: Console, label: str, trained, batch: int, slowdown: float) -> dict:
    scenario = "catalog" if slowdown == 1 else f"device and edge {slowdown:g}x slower"
    table = Table(title=f"{label}, batch {batch}, {scenario}: T_total per iteration (s) vs edge-cloud Mbps")
    for column in ("Mbps", *POLICIES, "vs all-edge", "vs all-cloud", "HierTrain's schedule"):
        table.add_column(column)
    rows = []
    for mbps in SWEEP_MBPS:
        plain, compressed = costs_for(trained, batch, mbps, slowdown), costs_for(trained, batch, mbps, slowdown, 8)
        choices = {p: get_policy(p)(compressed if p == "jalad" else plain) for p in POLICIES}
        t = {p: c.t_total_s for p, c in choices.items()}
        rows.append({"mbps": mbps, **t, "schedule": describe(choices["hiertrain"]),
                     "jointdnn+": t["jointdnn+"], "jointdnn+_chain": describe(choices["jointdnn+"])})
        table.add_row(f"{mbps:g}", *(f"{t[p]:.3f}" for p in POLICIES), f"{t['all-edge'] / t['hiertrain']:.2f}x",
                      f"{t['all-cloud'] / t['hiertrain']:.2f}x", describe(choices["hiertrain"]))
    console.print(table)
    best_edge = max(r["all-edge"] / r["hiertrain"] for r in rows)
    best_cloud = max(r["all-cloud"] / r["hiertrain"] for r in rows)
    paper = PAPER_SPEEDUPS[label]
    console.print(f"{label} ({scenario}): HierTrain's speedup up to {best_edge:.2f}x vs All-Edge and "
                  f"{best_cloud:.2f}x vs All-Cloud (paper: {paper[0]}x and {paper[1]}x)")
    return {"scenario": scenario, "slowdown": slowdown, "rows": rows, "max_speedup_vs_all_edge": best_edge,
            "max_speedup_vs_all_cloud": best_cloud, "paper": paper}


def plot(result: dict, label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(6.4, 4.2))
    rows = result["rows"]
    for policy, style in zip(POLICIES, ("o-", "s--", "^--", "v:", "D:", "x-.")):
        axis.plot([r["mbps"] for r in rows], [r[policy] for r in rows], style, label=policy)
    axis.set_xlabel("edge-cloud bandwidth (Mbps); device-edge 5 Mbps")
    axis.set_ylabel("per-iteration training time (s)")
    axis.set_title(f"{label}: {result['scenario']} (paper 002, Figs. 7-10)")
    axis.set_yscale("log")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def planner_times(console: Console, batch: int, repeats: int = 3) -> dict:
    table = Table(title=f"Planner running time (batch {batch}, 3 Mbps; the best of {repeats}, wall clock and this "
                        "process's CPU), beside the paper's Table 2 (CPLEX)")
    for column in ("model", "groups N", "LPs 3(N^2+3N+2)", "Algorithm 1 (every LP) s", "its CPU s", "pruned: LPs",
                   "pruned s", "its CPU s", "paper s"):
        table.add_column(column)
    found = {}
    for label, (model, shape, paper) in TABLE_2.items():
        trained = training_model(model, shape)
        costs = costs_for(trained, batch, 3.0)
        timings = {}
        for prune in (False, True):
            seconds, cpu = [], []
            for _ in range(repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                choice = plan_hiertrain(costs, prune)
                seconds.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            timings[prune] = (min(seconds), choice.solved, choice.schedule, min(cpu))
        assert timings[True][2] == timings[False][2]
        n = len(trained.groups)
        found[label] = {"groups": n, "lps": timings[False][1], "every_lp_s": timings[False][0],
                        "every_lp_cpu_s": timings[False][3], "pruned_lps": timings[True][1],
                        "pruned_s": timings[True][0], "pruned_cpu_s": timings[True][3], "paper_s": paper}
        table.add_row(label, str(n), str(timings[False][1]), f"{timings[False][0]:.3f}", f"{timings[False][3]:.3f}",
                      str(timings[True][1]), f"{timings[True][0]:.3f}", f"{timings[True][3]:.3f}", f"{paper}")
    console.print(table)
    return found


def gaps(console: Console, slowdowns: list[float]) -> list[dict]:
    trained = training_model("lenet5")
    table = Table(title="Rounding gap, LeNet-5: Sec. V's rounded LP vs the exact integer search")
    for column in ("scenario", "batch", "Mbps", "rounded s", "exact s", "gap", "worst (mapping, m_s, m_l)"):
        table.add_column(column)
    found = []
    for slowdown in slowdowns:
        for batch in (16, 32, 64):
            for mbps in (1.5, 3.0, 5.0):
                gap = rounding_gap(costs_for(trained, batch, mbps, slowdown))
                found.append({"slowdown": slowdown, "batch": batch, "mbps": mbps,
                              **{k: v for k, v in gap.items() if k not in ("rounded", "exact")}})
                table.add_row("catalog" if slowdown == 1 else f"{slowdown:g}x slower", str(batch), f"{mbps:g}",
                              f"{gap['rounded_t_total_s']:.4f}", f"{gap['exact_t_total_s']:.4f}",
                              f"{gap['gap'] * 100:.3f}%", f"{gap['worst_pair_gap'] * 100:.2f}%")
    console.print(table)
    return found


def edge_cores(console: Console, batch: int, slowdown: float) -> list[dict]:
    """Fig. 11: the edge server's cores (the NUC's i3-7100U has two; the paper's "4 CPUs" are its threads)."""
    trained = training_model(*MODELS["AlexNet"])
    table = Table(title=f"AlexNet, edge cores (Fig. 11), device-edge 5 Mbps, batch {batch}: HierTrain T_total (s)")
    for column in ("scenario", "Mbps", "1 core", "2 cores"):
        table.add_column(column)
    found = []
    for scale in sorted({1.0, slowdown}):
        for mbps in (1.5, 3.5):
            values = [plan_hiertrain(costs_for(trained, batch, mbps, scale, edge_cores=c)).t_total_s for c in (1, 2)]
            found.append({"slowdown": scale, "mbps": mbps, "cores": [1, 2], "t_total_s": values})
            table.add_row("catalog" if scale == 1 else f"{scale:g}x slower", f"{mbps:g}",
                          *(f"{v:.3f}" for v in values))
    console.print(table)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--slowdown", type=float, default=30.0, help="the sensitivity scenario's factor (1: none)")
    parser.add_argument("--out", default=str(ROOT / "build" / "hiertrain"))
    args = parser.parse_args()
    console = Console(width=200)
    out = Path(args.out)
    report = {"batch": args.batch, "sweeps": {}}
    slowdowns = sorted({1.0, args.slowdown})
    for label, (model, shape) in MODELS.items():
        trained = training_model(model, shape)
        for slowdown in slowdowns:
            result = sweep(console, label, trained, args.batch, slowdown)
            name = f"{label.lower().replace('-', '')}-{'catalog' if slowdown == 1 else f'slow{slowdown:g}'}"
            plot(result, label, out / f"{name}.png")
            report["sweeps"][name] = result
            console.print(f"plot: {out / f'{name}.png'}")
    report["planner_times"] = planner_times(console, args.batch)
    report["rounding_gaps"] = gaps(console, slowdowns)
    report["edge_cores"] = edge_cores(console, args.batch, args.slowdown)
    (out / "hiertrain.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    console.print(f"tables: {out / 'hiertrain.json'}")


if __name__ == "__main__":
    main()
