"""DeePar (paper 000) Sec. V-B: total delay of DeePar's online scheduler and its three baselines on seeded
workloads (Fig. 4), DeePar's reduction beside the paper's figures, and the scheduler's time per task.

    .venv/bin/python benchmarks/deepar.py                      # 3 scenarios x 20-80 devices x 5 seeds
    .venv/bin/python benchmarks/deepar.py --quick              # 1 seed, 20 and 80 devices
    .venv/bin/python benchmarks/deepar.py --seeds 2 --devices 20,50,80 --plot build/deepar.png

Scenarios (Sec. V-B): (a) 10 edge servers, tasks arriving over 300 s; (b) 10 edge servers over 50 s; (c) 40
edge servers. The paper does not say over which window (c)'s tasks arrive; here 300 s, (a)'s, since (c) is
introduced as "the number of edge servers increased". Workloads come from
:func:`~halocut.targets.workload.generate_workload` with the paper's ranges (one task per device, AlexNet,
VGG-16, DeepFace and LeNet-5 drawn uniformly, N_i in [1, 1000]); delays are the catalog's estimates of the
paper's machines (Pixel XL, GTX 1080 Ti, K80), each model prepared once for every seed and scenario.

Prints per scenario the total delay (s, mean over seeds) of each policy per number of devices, DeePar's
reduction vs each baseline beside the paper's, DeePar's total over the floor (every task's best choice at its
full caps with nothing else running: how much contention costs), the tasks per workload DeePar delays and the
choices it makes; then the scheduler's time per task decision at the largest
number of devices; draws total delay vs devices per policy (Fig. 4) to ``--plot``.
"""

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

from halocut.compiler.prepare import PreparedModel, prepare_model
from halocut.planning.scheduling.costs import KINDS, ModelCosts, model_costs
from halocut.planning.scheduling.online import POLICIES, schedule_workload
from halocut.targets.cost import CostModel
from halocut.targets.topology import catalog_device
from halocut.targets.workload import Edge, Task, Workload, generate_workload

ROOT = Path(__file__).resolve().parent.parent
BASELINES = [p for p in POLICIES if p != "deepar"]
DEVICES = (20, 40, 60, 80)


@dataclass(frozen=True)
class Scenario:
    label: str
    edges: int
    window_s: float
    paper: dict[str, str]  # baseline -> DeePar's reduction the paper states ("" where it states none)


SCENARIOS = (
    Scenario("(a) 10 edges, 300 s", 10, 300.0, {"device-only": "over 60 %", "edge-only": "about 20 %",
                                                 "cloud-only": "over 60 %"}),
    Scenario("(b) 10 edges, 50 s", 10, 50.0, {"device-only": "", "edge-only": "up to 30 %",
                                               "cloud-only": "about 70 %"}),
    Scenario("(c) 40 edges, 300 s", 40, 300.0, {"device-only": "about 80 %", "edge-only": "about 40 %",
                                                 "cloud-only": ""}),
)


class SharedCosts:
    """``ModelCosts`` per (model, input shape, device kind, edge kind, cloud kind), every model prepared once,
    shared by every workload (what :class:`~halocut.compiler.scheduling.WorkloadCosts` does for one)."""

    def __init__(self, cost: CostModel | None = None):
        self.cost = cost or CostModel()
        self.prepared: dict[tuple, PreparedModel] = {}
        self.tables: dict[tuple, ModelCosts] = {}

    def bind(self, workload: Workload):
        def costs_of(task: Task, edge: Edge) -> ModelCosts:
            kinds = (workload.device(task.device).kind, edge.kind, workload.cloud_kind)
            key = (task.model, task.input_shape, *kinds)
            if key not in self.tables:
                model = (task.model, task.input_shape)
                if model not in self.prepared:
                    self.prepared[model] = prepare_model(*model)
                self.tables[key] = model_costs(self.prepared[model].graph, *map(catalog_device, kinds), self.cost)
            return self.tables[key]
        return costs_of


def floor_s(workload: Workload, costs_of) -> float:
    """Sum over tasks of the best choice at full caps with nothing else running: no schedule does better."""
    return sum(min(costs_of(t, workload.edge(e)).best(kind, t.downlink_bps, t.uplink_bps, t.samples,
                                                       t.input_bytes).delay_s
                   for kind in KINDS for e in workload.device(t.device).edges) for t in workload.tasks)


def run(scenarios, devices: list[int], seeds: int, costs: SharedCosts) -> list[dict]:
    runs = [(s, n, seed) for s in scenarios for n in devices for seed in range(seeds)]
    rows = []
    for scenario, n, seed in track(runs, description="scheduling", console=Console(stderr=True)):
        workload = generate_workload(seed, n, scenario.edges, scenario.window_s)
        costs_of = costs.bind(workload)
        floor = floor_s(workload, costs_of)
        for policy in POLICIES:
            schedule = schedule_workload(workload, costs_of, policy)
            rows.append({"scenario": scenario.label, "devices": n, "seed": seed, "policy": policy,
                         "total_delay_s": schedule.total_delay_s, "floor_s": floor,
                         "scheduling_s": schedule.scheduling_time_s,
                         "decisions_s": [t.decision_s for t in schedule.tasks],
                         "waited": sum(t.start_s > t.arrival_s for t in schedule.tasks),
                         "choices": [t.choice for t in schedule.tasks]})
    return rows


def mean_delay(rows, scenario, policy, devices=None) -> float:
    return statistics.mean(r["total_delay_s"] for r in rows if r["scenario"] == scenario.label and
                           r["policy"] == policy and (devices is None or r["devices"] == devices))


def reduction(deepar: float, baseline: float) -> str:
    return f"{(1 - deepar / baseline) * 100:.0f} %"


def print_scenario(console: Console, rows: list[dict], scenario: Scenario, devices: list[int], seeds: int) -> None:
    table = Table(title=f"{scenario.label}: total delay (s, mean of {seeds} seeds) and DeePar's reduction")
    for column in ("devices", *POLICIES, *(f"vs {b}" for b in BASELINES), "deepar / floor", "tasks waiting",
                   "deepar choices"):
        table.add_column(column, justify="right")
    for n in devices:
        delays = {p: mean_delay(rows, scenario, p, n) for p in POLICIES}
        mine = [r for r in rows if r["scenario"] == scenario.label and r["devices"] == n and r["policy"] == "deepar"]
        choices = [c for r in mine for c in r["choices"]]
        mix = ", ".join(f"{k} {choices.count(k) / len(choices) * 100:.0f}%" for k in sorted(set(choices)))
        table.add_row(str(n), *(f"{delays[p]:.1f}" for p in POLICIES),
                      *(reduction(delays["deepar"], delays[b]) for b in BASELINES),
                      f"{sum(r['total_delay_s'] for r in mine) / sum(r['floor_s'] for r in mine):.4f}",
                      f"{sum(r['waited'] for r in mine) / len(mine):.1f}", mix)
    overall = {p: mean_delay(rows, scenario, p) for p in POLICIES}
    table.add_row("all", *(f"{overall[p]:.1f}" for p in POLICIES),
                  *(reduction(overall["deepar"], overall[b]) for b in BASELINES), "", "", "", end_section=True)
    table.add_row("paper", "", "", "", "", *(scenario.paper[b] or "-" for b in BASELINES), "", "", "")
    console.print(table)


def print_timing(console: Console, rows: list[dict], scenarios, devices: int) -> None:
    table = Table(title=f"Scheduler time per task decision, {devices} devices (N_i up to 1000; wall clock on a "
                        "shared machine)")
    for column in ("scenario", "policy", "tasks", "median ms", "worst ms", "total s per workload"):
        table.add_column(column, justify="right")
    for scenario in scenarios:
        for policy in POLICIES:
            mine = [r for r in rows if r["scenario"] == scenario.label and r["devices"] == devices and
                    r["policy"] == policy]
            decisions = [d for r in mine for d in r["decisions_s"]]
            table.add_row(scenario.label, policy, str(len(decisions)), f"{statistics.median(decisions) * 1e3:.3f}",
                          f"{max(decisions) * 1e3:.2f}", f"{statistics.mean(r['scheduling_s'] for r in mine):.3f}")
    console.print(table)


def plot(rows: list[dict], scenarios, devices: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(scenarios), figsize=(4.6 * len(scenarios), 4.0), squeeze=False)
    for axis, scenario in zip(axes[0], scenarios):
        for policy, style in zip(POLICIES, ("o-", "s--", "^--", "v:")):
            axis.plot(devices, [mean_delay(rows, scenario, policy, n) for n in devices], style, label=policy)
        axis.set_title(scenario.label)
        axis.set_xlabel("number of devices")
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("total delay (s), mean over seeds")
    axes[0][0].legend(fontsize=8)
    figure.suptitle("DeePar vs baselines on seeded workloads (paper 000, Fig. 4)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 20 and 80 devices")
    parser.add_argument("--seeds", type=int, help="seeds per point (default 5)")
    parser.add_argument("--devices", help="comma-separated numbers of devices (default 20,40,60,80)")
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "results" / "deepar.png"), help="Fig. 4 PNG")
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 5)
    devices = [int(n) for n in args.devices.split(",")] if args.devices else \
        ([DEVICES[0], DEVICES[-1]] if args.quick else list(DEVICES))
    console = Console(width=200)
    costs = SharedCosts()
    rows = run(SCENARIOS, devices, seeds, costs)
    for scenario in SCENARIOS:
        print_scenario(console, rows, scenario, devices, seeds)
    print_timing(console, rows, SCENARIOS, max(devices))
    plot(rows, SCENARIOS, devices, Path(args.plot))
    console.print(f"models prepared once each: {', '.join(name for name, _ in costs.prepared)}; plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
