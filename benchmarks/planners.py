"""Every planner on the papers' settings, scored by the one simulator: latency, throughput, ratio to halocut.

Cases (issue 5): VGG-16 over DistrEdge's DA, DB, DC at 50 and 300 Mbps, NA-ND
with Nano and with Xavier providers, LA-LD (16 devices); CoopAI's RPi 4 with
1-10 devices at 100 Mbps and a 40-400 Mbps gateway sweep (10 devices) for
AlexNet, VGG-16, VGG-19 and YOLOv2; ResNet-50 and MobileNetV2 on DB at
100 Mbps; MW's end device + edge server for AlexNet, SqueezeNet and YOLOv2 at
1.1, 2 and 3 MB/s.

    .venv/bin/python benchmarks/planners.py              # every case (long: tens of minutes)
    .venv/bin/python benchmarks/planners.py --quick      # one case per family
    .venv/bin/python benchmarks/planners.py --cases vgg16/distredge-la --planners halocut,modnn
    .venv/bin/python benchmarks/planners.py --set held-out    # 48 seeded random topologies x 4 models

Per case: each planner's latency, halocut's own search (safety net off) over the best other planner, whether the
net decided the case, halocut over the LP lower bound (``planning/search/lower_bound.py``) and planning seconds.

Prints one table per case and a summary; writes ``benchmarks/results/planners.csv``
and ``planners.png`` (each planner's latency over halocut's, per case).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import random
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

from halocut.compiler.prepare import prepare_model
from halocut.planning import PLANNERS, get_planner
from halocut.planning.planners.halocut import plan_halocut
from halocut.planning.search.lower_bound import work_lower_bound
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import Topology, catalog_device, load_topology, parse_topology

TOPOLOGIES = ROOT / "examples" / "topologies"
SIZES = {"yolov2": 608}
BRUTE_FORCE_ONLY_ON = "mw"  # bf is exhaustive: run it on the small two-device cases only


@dataclasses.dataclass(frozen=True)
class Case:
    model: str
    topology: Topology
    label: str
    family: str


def with_bandwidth(topology: Topology, bandwidth_bps: float, name: str) -> Topology:
    """Every link (and medium) at one bandwidth; Shannon links become fixed-rate."""
    links = tuple(dataclasses.replace(link, bandwidth_bps=bandwidth_bps) for link in topology.links)
    media = tuple(dataclasses.replace(m, bandwidth_bps=bandwidth_bps) for m in topology.media)
    return dataclasses.replace(topology, name=name, links=links, media=media)


def with_kind(topology: Topology, kind: str, name: str) -> Topology:
    """Providers (role device) replaced by catalog devices of ``kind`` with the same names."""
    devices = tuple(catalog_device(kind, d.name, d.role) if d.role == "device" else d for d in topology.devices)
    return dataclasses.replace(topology, name=name, devices=devices)


def coopai(devices: int, gateway_bps: float) -> Topology:
    """CoopAI's camera, gateway and ``devices`` identical RPi 4s sharing the gateway bandwidth."""
    data = yaml.safe_load((TOPOLOGIES / "coopai-rpi4x10.yaml").read_text())
    keep = {"camera", "gw"} | {f"pi-{i}" for i in range(devices)}
    data["devices"] = [d for d in data["devices"] if d["name"] in keep]
    data["links"] = [link for link in data["links"] if set(link["between"]) <= keep]
    data["media"] = [{**m, "bandwidth": f"{gateway_bps / 1e6:g}Mbps"} for m in data["media"]]
    data["name"] = f"coopai-rpi4x{devices}@{gateway_bps / 1e6:g}Mbps"
    return parse_topology(data, data["name"], TOPOLOGIES)


def cases() -> list[Case]:
    found = []
    for group in ("da", "db", "dc"):
        base = load_topology(TOPOLOGIES / f"distredge-{group}.yaml")
        for mbps in (50, 300):
            found.append(Case("vgg16", with_bandwidth(base, mbps * 1e6, f"{group.upper()}@{mbps}"), "", "distredge"))
    for group in ("na", "nb", "nc", "nd"):
        base = load_topology(TOPOLOGIES / f"distredge-{group}.yaml")
        found.append(Case("vgg16", dataclasses.replace(base, name=f"{group.upper()}-nano"), "", "distredge"))
        found.append(Case("vgg16", with_kind(base, "jetson-agx-xavier", f"{group.upper()}-xavier"), "", "distredge"))
    for group in ("la", "lb", "lc", "ld"):
        base = load_topology(TOPOLOGIES / f"distredge-{group}.yaml")
        found.append(Case("vgg16", dataclasses.replace(base, name=group.upper()), "", "distredge"))
    db = load_topology(TOPOLOGIES / "distredge-db.yaml")
    for model in ("resnet50", "mobilenet_v2"):
        found.append(Case(model, with_bandwidth(db, 100e6, "DB@100"), "", "distredge"))
    for model in ("alexnet", "vgg16", "vgg19", "yolov2"):
        for k in range(1, 11):
            found.append(Case(model, coopai(k, 100e6), "", "coopai"))
        for mbps in (40, 100, 200, 300, 400):
            found.append(Case(model, coopai(10, mbps * 1e6), "", "coopai"))
    mw = load_topology(TOPOLOGIES / "mw.yaml")
    for model in ("alexnet", "squeezenet1_1", "yolov2"):
        for rate in (1.1, 2.0, 3.0):
            found.append(Case(model, with_bandwidth(mw, rate * 8e6, f"mw@{rate:g}MB/s"), "", "mw"))
    labelled = {f"{c.model}/{c.topology.name}": c for c in found}  # the k = 10 case is also the sweep's 100 Mbps
    return [dataclasses.replace(c, label=label) for label, c in labelled.items()]


QUICK = ("vgg16/DB@50", "vgg16/LB", "vgg16/coopai-rpi4x4@100Mbps", "alexnet/mw@2MB/s", "resnet50/DB@100")


# --- the held-out set: seeded random topologies a user might have (issue 15). Mixes of Raspberry Pis, Jetsons,
# x86 edge boxes and cloud GPUs (2-12 devices besides the requester), links from 5 Mbps to 1 Gbps, in one of four
# shapes: a star of private links; a Wi-Fi cell whose airtime is shared (a gateway relays); a LAN behind a switch
# plus a cloud GPU over a slow WAN; a chain requester -> switch -> edge -> cloud. Weak or strong requesters.
# Uniform draws over those ranges, seeded; nothing is tuned to halocut. `--set held-out` runs them.

SEED = 15
SHAPES = ("star", "cell", "lan-cloud", "chain")
SMALL = ("rpi3b", "rpi4", "jetson-nano", "jetson-tx2", "jetson-xavier-nx", "jetson-orin-nano")
EDGE = ("intel-nuc", "desktop-i7", "jetson-agx-xavier", "jetson-agx-orin", "gtx-1080ti")
CLOUD = ("tesla-t4", "tesla-v100", "a100")
WEAK_REQUESTERS = ("rpi3b", "rpi4")
STRONG_REQUESTERS = ("jetson-nano", "jetson-xavier-nx", "intel-nuc")
HELD_OUT_MODELS = ("vgg16", "resnet50", "mobilenet_v2", "squeezenet1_1")


def _rate(rng: random.Random, low_mbps: float = 5.0, high_mbps: float = 1000.0) -> str:
    """Log-uniform between ``low_mbps`` and ``high_mbps``."""
    return f"{round(low_mbps * (high_mbps / low_mbps) ** rng.random(), 1)}Mbps"


def _latency(rng: random.Random, low_ms: float, high_ms: float) -> str:
    return f"{round(rng.uniform(low_ms, high_ms), 2)}ms"


def random_topology(seed: int, shape: str | None = None, name: str | None = None) -> Topology:
    """One topology drawn from ``random.Random(seed)`` (the shape too, unless given)."""
    rng = random.Random(seed)
    shape = shape or SHAPES[seed % len(SHAPES)]
    count = rng.randint(2, 12)
    requester = rng.choice(WEAK_REQUESTERS if rng.random() < 0.6 else STRONG_REQUESTERS)
    devices = [{"name": "requester", "role": "requester", "kind": requester}]
    kinds = [rng.choice(SMALL if rng.random() < 0.7 else EDGE) for _ in range(count)]
    names = [f"{kind}-{k}" for k, kind in enumerate(kinds)]
    devices += [{"name": n, "role": "device", "kind": k} for n, k in zip(names, kinds)]
    links, media = [], []
    if shape == "star":
        links = [{"between": ["requester", n], "bandwidth": _rate(rng), "latency": _latency(rng, 0.5, 5)}
                 for n in names]
    elif shape == "cell":
        devices.append({"name": "ap", "role": "gateway"})
        media = [{"name": "wifi", "bandwidth": _rate(rng, 10, 600)}]
        links = [{"between": ["requester", "ap"], "medium": "wifi", "latency": _latency(rng, 1, 4)}]
        links += [{"between": ["ap", n], "medium": "wifi", "latency": _latency(rng, 1, 4)} for n in names]
    else:
        devices.append({"name": "switch", "role": "gateway"})
        cloud = rng.choice(CLOUD)
        devices.append({"name": f"{cloud}-cloud", "role": "cloud", "kind": cloud})
        head = "requester" if shape == "lan-cloud" else names[0]
        links = [{"between": ["requester", "switch"], "bandwidth": _rate(rng, 20, 1000),
                  "latency": _latency(rng, 0.2, 2)}]
        links += [{"between": ["switch", n], "bandwidth": _rate(rng, 20, 1000), "latency": _latency(rng, 0.2, 2)}
                  for n in names]
        links.append({"between": [head, f"{cloud}-cloud"], "bandwidth": _rate(rng, 5, 200),
                      "latency": _latency(rng, 10, 60)})
    data = {"name": name or f"rand-{seed}-{shape}", "devices": devices, "links": links}
    if media:
        data["media"] = media
    return parse_topology(data, data["name"])


def held_out_topologies(count: int = 12, seed: int = SEED) -> list[Topology]:
    """``count`` topologies, the shapes in turn, each from its own seed derived from ``seed``."""
    return [random_topology(seed * 1000 + k, SHAPES[k % len(SHAPES)], f"rand-{k:02d}-{SHAPES[k % len(SHAPES)]}")
            for k in range(count)]



def held_out_cases() -> list[Case]:
    """The seeded random topologies above for each held-out model (48 cases)."""
    return [Case(model, topology, f"{model}/{topology.name}", "held-out")
            for topology in held_out_topologies() for model in HELD_OUT_MODELS]


def run_case(case: Case, planners: list[str], prepared) -> list[dict]:
    rows = []
    bound = work_lower_bound(prepared.graph, case.topology)
    for name in planners:
        if name == "bf" and case.family != BRUTE_FORCE_ONLY_ON:
            continue
        start = time.perf_counter()
        plan = get_planner(name)(prepared.graph, prepared.name, prepared.input_shape, case.topology, CostModel())
        planning_s = time.perf_counter() - start
        result = simulate(prepared.graph, plan, case.topology, requests=8)
        rows.append({"case": case.label, "model": case.model, "topology": case.topology.name, "planner": name,
                     "latency_ms": result.latency_s * 1e3, "throughput_ips": result.throughput_ips,
                     "planning_s": planning_s, "lower_bound_ms": bound * 1e3,
                     "devices_used": len(plan.devices())})
    if "halocut" in planners:  # what halocut's own search finds, without the papers' plans as a safety net
        start = time.perf_counter()
        plan = plan_halocut(prepared.graph, prepared.name, prepared.input_shape, case.topology, CostModel(),
                            safety_net=False)
        own_s = time.perf_counter() - start
        own = simulate(prepared.graph, plan, case.topology, requests=1).latency_s * 1e3
        for row in rows:
            row["halocut_own_ms"], row["halocut_own_planning_s"] = own, own_s
    best = {r["planner"]: r["latency_ms"] for r in rows}
    for row in rows:
        row["ratio_to_halocut"] = row["latency_ms"] / best["halocut"] if "halocut" in best else float("nan")
    return rows


def case_summary(rows: list[dict]) -> dict:
    """One line per case: own search / best other planner, net decided?, halocut / bound, planning seconds."""
    mine = next(r for r in rows if r["planner"] == "halocut")
    others = [r["latency_ms"] for r in rows if r["planner"] != "halocut"]
    best_other = min(others) if others else float("nan")
    own = mine.get("halocut_own_ms", mine["latency_ms"])
    return {"case": mine["case"], "own_ms": own, "best_other_ms": best_other, "own_vs_best": own / best_other,
            "net_decides": own > mine["latency_ms"] * (1 + 1e-9), "bound_ms": mine["lower_bound_ms"],
            "bound_ratio": mine["latency_ms"] / mine["lower_bound_ms"], "plan_s": mine["planning_s"],
            "own_plan_s": mine.get("halocut_own_planning_s", float("nan"))}


def print_summaries(summaries: list[dict]) -> None:
    print(f"\n{'case':<36}{'own ms':>10}{'best other':>11}{'own/best':>9}{'net':>5}{'bound ms':>10}"
          f"{'/bound':>8}{'plan s':>8}{'own s':>8}")
    for s in summaries:
        print(f"{s['case']:<36}{s['own_ms']:>10.2f}{s['best_other_ms']:>11.2f}{s['own_vs_best']:>9.3f}"
              f"{'yes' if s['net_decides'] else '':>5}{s['bound_ms']:>10.2f}{s['bound_ratio']:>8.2f}"
              f"{s['plan_s']:>8.2f}{s['own_plan_s']:>8.2f}")
    import statistics

    own_s = [s["own_plan_s"] for s in summaries]
    print(f"own search planning s: median {statistics.median(own_s):.2f}, worst {max(own_s):.2f}; "
          f"own search worse than the best other on {sum(s['own_vs_best'] > 1 + 1e-9 for s in summaries)} "
          f"of {len(summaries)} cases")


def print_case(rows: list[dict]) -> None:
    print(f"\n{rows[0]['case']}  (lower bound {rows[0]['lower_bound_ms']:.1f} ms)")
    print(f"  {'planner':<14}{'latency ms':>12}{'img/s':>9}{'/halocut':>10}{'plan s':>9}{'devices':>9}")
    for r in sorted(rows, key=lambda r: r["latency_ms"]):
        print(f"  {r['planner']:<14}{r['latency_ms']:>12.1f}{r['throughput_ips']:>9.2f}{r['ratio_to_halocut']:>10.2f}"
              f"{r['planning_s']:>9.3f}{r['devices_used']:>9}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(dict.fromkeys(r["case"] for r in rows))
    planners = sorted({r["planner"] for r in rows})
    ratio = np.full((len(planners), len(labels)), np.nan)
    for r in rows:
        ratio[planners.index(r["planner"]), labels.index(r["case"])] = r["ratio_to_halocut"]
    fig, ax = plt.subplots(figsize=(max(8, 0.32 * len(labels)), 0.4 * len(planners) + 2.5))
    image = ax.imshow(np.log2(ratio), cmap="RdYlGn_r", vmin=0, vmax=3, aspect="auto")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(planners)), planners)
    fig.colorbar(image, ax=ax, label="log2(latency / halocut's)")
    ax.set_title("Simulated latency of each planner relative to halocut (0 = as fast)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one case per family")
    parser.add_argument("--cases", help="comma-separated case labels (model/topology)")
    parser.add_argument("--planners", help="comma-separated planner names (default: all)")
    parser.add_argument("--set", choices=("paper", "held-out", "all"), default="paper",
                        help="the papers' 85 cases, the seeded random held-out cases, or both")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the CSV and plot")
    args = parser.parse_args(argv)
    chosen = {"paper": cases, "held-out": held_out_cases, "all": lambda: cases() + held_out_cases()}[args.set]()
    if args.quick or args.cases:
        wanted = args.cases.split(",") if args.cases else list(QUICK)
        chosen = [c for c in chosen if c.label in wanted]
    planners = args.planners.split(",") if args.planners else sorted(PLANNERS)
    rows, models, summaries = [], {}, []
    for case in chosen:
        if case.model not in models:
            size = SIZES.get(case.model, 224)
            models[case.model] = prepare_model(case.model, (1, 3, size, size))
        case_rows = run_case(case, planners, models[case.model])
        print_case(case_rows)
        rows += case_rows
        if "halocut" in planners:
            summaries.append(case_summary(case_rows))
            line = summaries[-1]
            print(f"  own search {line['own_ms']:.2f} ms / best other {line['best_other_ms']:.2f} = "
                  f"{line['own_vs_best']:.3f}; /bound {line['bound_ratio']:.2f}; own plan s {line['own_plan_s']:.2f}",
                  flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "planners.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "planners.png")
    summarize(rows)
    if summaries:
        print_summaries(summaries)
    print(f"\nwrote {out / 'planners.csv'} and {out / 'planners.png'}")
    return 0


def summarize(rows: list[dict]) -> None:
    own = {r["case"]: r["halocut_own_ms"] for r in rows if "halocut_own_ms" in r}
    mine = {r["case"]: r["latency_ms"] for r in rows if r["planner"] == "halocut"}
    net = [case for case in mine if own.get(case, mine[case]) > mine[case] * (1 + 1e-9)]
    print(f"\nhalocut's own search alone decides {len(mine) - len(net)} of {len(mine)} cases; the safety net "
          f"decides: {', '.join(net) or 'none'}")
    print("\nper planner: geometric mean of latency / halocut's, cases where it beats halocut")
    for name in sorted({r["planner"] for r in rows}):
        ratios = [r["ratio_to_halocut"] for r in rows if r["planner"] == name]
        mean = 2 ** (sum(__import__("math").log2(x) for x in ratios) / len(ratios))
        wins = [r["case"] for r in rows if r["planner"] == name and r["ratio_to_halocut"] < 1 - 1e-9]
        print(f"  {name:<14}{mean:>8.2f}  {len(ratios):>3} cases  beats halocut on: {', '.join(wins) or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
