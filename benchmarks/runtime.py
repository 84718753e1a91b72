"""`halocut run` against its prediction: measured vs predicted latency and dispatch overhead for 1, 2 and 4 actors.

    .venv/bin/python benchmarks/runtime.py [--model resnet18] [--input-shape 1,3,224,224] [--requests 20]
                                           [--runtime torch] [--repeats 15] [--threads 1] [--plain-api]

Every machine of the topology is this machine's own profile (`halocut profile --device local`, the
same runtime as the artifacts: torch programs by default), so the prediction is for here. Target
(issue 7): the measured latency of the 1-actor and the multi-actor deployments within 25 % of the
prediction. The plans are pipelines cut where the FLOPs balance (one actor computes at a time within a
request, so actors do not share the cores while one request is measured); every actor uses as many
threads as the profile did (`--threads`, default 1: on a small machine shared with other jobs, OpenMP
threads waiting at each barrier for a descheduled sibling make two threads slower than one). Links between the local machines are 10 Gbps, 50 us. Dispatch overhead is the
median latency less the critical path of the parts' measured compute (and copy) time: what Ray's
dispatch and the transfers cost a request. `--plain-api` also runs each deployment on the plain Ray
DAG API for comparison.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
from halocut.compiler.commands import profile_model, run_build
from halocut.compiler.driver import CompileOptions, compile_model
from halocut.compiler.frontend import parse_shape
from halocut.compiler.prepare import prepare_model
from halocut.ir.segments import names, plan
from halocut.runtime.profile import write_profile
from halocut.runtime.run import RunOptions

TOLERANCE = 0.25
ACTORS = (1, 2, 4)


def local_topology(path: Path, profile: Path, count: int) -> None:
    """``count`` machines that are each this machine's profile, behind a camera that only requests."""
    machines = [f"local-{i}" for i in range(count)]
    devices = [{"name": "camera", "role": "requester", "profile": profile.name}]
    devices += [{"name": m, "role": "edge", "profile": profile.name} for m in machines]
    links = [{"between": [a, b], "bandwidth": "10Gbps", "latency": "50us"}
             for i, a in enumerate(["camera", *machines]) for b in machines[i:] if a != b]
    path.write_text(yaml.safe_dump({"name": f"local-x{count}", "description": "this machine, profiled, as "
                                    f"{count} machine(s)", "devices": devices, "links": links}, sort_keys=False))


def pipeline_plan(model: str, shape, count: int, path: Path) -> None:
    """``count`` single stages on local-0..local-{count-1}, cut where the cumulative FLOPs reach i/count."""
    graph = prepare_model(model, shape).graph
    order = names(graph)
    flops = {n.name: n.meta["layer"].flops for n in graph.graph.nodes if "layer" in n.meta}
    total, running, cuts = sum(flops.values()), 0.0, []
    for name in order[:-1]:
        running += flops.get(name, 0)
        if len(cuts) < count - 1 and running >= total * (len(cuts) + 1) / count:
            cuts.append(name)
    segments = [("single", cut, i) for i, cut in enumerate(cuts)] + [("single", None, len(cuts))]
    plan(graph, model, shape, segments, devices=tuple(f"local-{i}" for i in range(count))).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--input-shape", default="1,3,224,224")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"])
    parser.add_argument("--repeats", type=int, default=15, help="profile repeats per layer (the median is kept)")
    parser.add_argument("--threads", type=int, default=1, help="threads when profiling and per actor")
    parser.add_argument("--plain-api", action="store_true", help="also run on the plain Ray DAG API")
    args = parser.parse_args()
    shape = parse_shape(args.input_shape)
    backend = "torch" if args.runtime == "torch" else "onnx"
    threads = args.threads
    torch.set_num_threads(threads)  # the profile measures in this process
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        os.environ.setdefault("HALOCUT_CACHE", str(scratch / "cache"))
        start = time.perf_counter()
        profile = write_profile(profile_model(args.model, shape, args.runtime, repeats=args.repeats,
                                              progress=False),
                                scratch / f"{args.model}-local.json")
        print(f"profiled {args.model} {shape} with {args.runtime} in {time.perf_counter() - start:.1f} s", flush=True)
        for count in ACTORS:
            local_topology(scratch / f"local-x{count}.yaml", profile, count)
            pipeline_plan(args.model, shape, count, scratch / f"plan-{count}.json")
            build = scratch / f"build-{count}"
            compile_model(CompileOptions(args.model, scratch / f"local-x{count}.yaml", build,
                                         scratch / f"plan-{count}.json", input_shape=shape, backends=(backend,),
                                         progress=False))
            for compiled in (True, False) if args.plain_api else (True,):
                report = run_build(RunOptions(build, requests=args.requests, threads=threads, compiled=compiled))
                rows.append((count, report))
                print(f"{count} actor(s), {report.graph}: median {report.latency_s['median'] * 1e3:.2f} ms, "
                      f"predicted {report.predicted_latency_s * 1e3:.2f} ms", flush=True)
    table = Table(title=f"halocut run: {args.model} {shape}, {args.runtime} artifacts, profiled here, "
                        f"{threads} thread(s) per actor, {args.requests} requests")
    for column in ("actors", "graph", "predicted ms", "median ms", "p90 ms", "error", f"within {TOLERANCE:.0%}",
                   "critical path ms", "dispatch ms/request", "img/s", "predicted img/s", "max abs error"):
        table.add_column(column, justify="left" if column in ("graph",) else "right")
    for count, report in rows:
        error = report.latency_s["median"] / report.predicted_latency_s - 1
        table.add_row(str(count), report.graph, f"{report.predicted_latency_s * 1e3:.2f}",
                      f"{report.latency_s['median'] * 1e3:.2f}", f"{report.latency_s['p90'] * 1e3:.2f}",
                      f"{error:+.1%}", "yes" if abs(error) <= TOLERANCE else "NO", f"{report.critical_path_s * 1e3:.2f}",
                      f"{report.dispatch_overhead_s * 1e3:.2f}", f"{report.throughput_ips:.2f}",
                      f"{report.predicted_throughput_ips:.2f}", f"{report.max_abs_error:.2g}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
