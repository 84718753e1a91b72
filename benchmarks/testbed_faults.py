"""Faults on the emulated testbed (issue 13, item 5): a machine's Ray node killed by its PID, then a link taken
down, each during a stream of requests; no request may be lost or answered wrong.

    sudo .venv/bin/python benchmarks/testbed_faults.py [--model lenet5] [--requests 60] [--after 15]
                                                       [--topology examples/topologies/testbed-3.yaml]

For each fault: ``halocut testbed up``, a spatial plan over every machine (modnn), ``halocut compile``, then
``halocut run --testbed --requests N`` started; ``--after`` seconds later (the run is then streaming its
requests) the fault: (a) SIGTERM to the Ray node of the last machine (the PID the testbed's state records;
``ray start --block`` ends the node's raylet and workers), (b) ``ip link set ... down`` on that machine's veth
into the testbed. The run's report says what was detected, what recovery did (restart or replan) and how long
it took; every answer of a phase with a recovery is verified against the model. ``testbed down`` after each.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
HALOCUT = str(Path(sys.executable).with_name("halocut"))


def halocut(*argv: str, timeout: float = 900) -> str:
    done = subprocess.run([HALOCUT, *argv], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"halocut {' '.join(argv)}: {(done.stderr.strip() or 'exit %d' % done.returncode).splitlines()[-1]}")
    return done.stdout


def state_of(name: str) -> dict:
    from halocut.runtime.testbed.bed import State

    return State.load(name).__dict__


def kill_node(name: str, machine: str) -> str:
    process = next(p for p in state_of(name)["processes"] if p["machine"] == machine)
    os.killpg(process["pid"], signal.SIGTERM)
    return f"SIGTERM to the Ray node of '{machine}' (pid {process['pid']})"


def link_down(name: str, machine: str) -> str:
    namespace = state_of(name)["machines"][machine]["namespace"]
    links = subprocess.run(["ip", "-n", namespace, "-o", "link", "show"], capture_output=True, text=True).stdout
    veths = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if ": hc" in line]
    for veth in veths:
        subprocess.run(["ip", "-n", namespace, "link", "set", veth, "down"], check=True)
    return f"ip link set {', '.join(veths)} down in {namespace}"


def one_fault(kind: str, topology: str, model: str, requests: int, after: float, out: Path) -> dict:
    name = f"fault{os.getpid() % 10000}"
    here = out / kind
    here.mkdir(parents=True, exist_ok=True)
    halocut("testbed", "up", topology, "--name", name)
    try:
        plan, build = here / "plan.json", here / "build"
        halocut("plan", model, "--topology", topology, "--planner", "modnn", "-o", str(plan), "--force")
        halocut("compile", model, "--topology", topology, "--plan", str(plan), "-o", str(build), "--backends", "torch",
                "--force")
        victim = list(state_of(name)["machines"])[-1]
        started = time.perf_counter()
        run = subprocess.Popen([HALOCUT, "run", str(build), "--testbed", name, "--requests", str(requests), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        time.sleep(after)
        what = kill_node(name, victim) if kind == "node killed" else link_down(name, victim)
        injected = time.perf_counter() - started
        stdout, stderr = run.communicate(timeout=900)
        row = {"fault": kind, "what": what, "injected_at_s": round(injected, 1),
               "run_s": round(time.perf_counter() - started, 1), "exit": run.returncode,
               "log": [line for line in stderr.splitlines() if "WARNING" in line or "recover" in line
                       or "replan" in line or "restart" in line][-6:]}
        if run.returncode == 0:
            report = json.loads(stdout.strip().splitlines()[-1])
            row.update(verified=report["verified"], lost=report["requests_lost"], recoveries=report["recoveries"],
                       latency_median_s=report["latency_s"]["median"], throughput_ips=report["throughput_ips"])
        else:
            row["error"] = (stderr.strip() or "no output").splitlines()[-1]
        return row
    finally:
        subprocess.run([HALOCUT, "testbed", "down", "--name", name], capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--topology", default=str(ROOT / "examples/topologies/testbed-3.yaml"))
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--after", type=float, default=15.0, help="seconds from the run's start to the fault")
    parser.add_argument("-o", "--output", help="folder for plans, builds and faults.json (default: a temp dir)")
    args = parser.parse_args()
    console = Console(width=160)
    if os.geteuid() != 0:
        console.print("benchmarks/testbed_faults.py needs root (network namespaces, tc, cgroups)")
        return 2
    out = Path(args.output or tempfile.mkdtemp(prefix="halocut-testbed-faults-"))
    rows = [one_fault(kind, args.topology, args.model, args.requests, args.after, out)
            for kind in ("node killed", "link down")]
    (out / "faults.json").write_text(json.dumps(rows, indent=1))
    table = Table(title=f"faults during a stream of {args.requests} requests ({args.model}, modnn over every machine)")
    for column in ("fault", "injected at s", "exit", "verified", "lost", "recoveries", "run s"):
        table.add_column(column)
    for row in rows:
        recoveries = "; ".join(f"{r['kind']} {r['device']} in {r['seconds']:.1f} s ({r['detail']}, {r['resent']} resent)"
                               for r in row.get("recoveries", [])) or row.get("error", "none")
        table.add_row(f"{row['fault']}: {row['what']}", str(row["injected_at_s"]), str(row["exit"]),
                      str(row.get("verified", "-")), str(row.get("lost", "-")), recoveries, str(row["run_s"]))
    console.print(table)
    for row in rows:
        for line in row["log"]:
            console.print(f"  {row['fault']}: {line}")
    return 0 if all(r["exit"] == 0 and r.get("lost") == 0 and r.get("verified") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
