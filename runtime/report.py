"""What ``halocut topology check`` and ``halocut simulate`` print: rich tables of a topology and a simulation."""

from __future__ import annotations

from rich.table import Table

from halocut.ir.schedule import Schedule
from halocut.runtime.simulate import SimulationResult
from halocut.targets.topology import Topology


def topology_tables(topology: Topology) -> list[Table]:
    devices = Table(title=f"topology '{topology.name}': devices")
    for column in ("name", "role", "kind", "class", "peak GFLOPS", "memory GB", "backend", "cuda arch"):
        devices.add_column(column, justify="right" if column in ("peak GFLOPS", "memory GB") else "left")
    for d in topology.devices:
        devices.add_row(d.name, d.role, d.kind, d.device_class or "-", f"{d.peak_flops / 1e9:,.1f}" if d.computes else "-",
                        f"{d.memory_bytes / 1e9:.1f}" if d.memory_bytes else "-", d.backend or "-", d.cuda_arch or "-")
    links = Table(title="links")
    for column in ("between", "bandwidth", "latency", "medium"):
        links.add_column(column)
    for link in topology.links:
        links.add_row(f"{link.a} -- {link.b}", _rate(link.bandwidth_bps), f"{link.latency_s * 1e3:g} ms",
                      link.medium or "-")
    tables = [devices, links]
    if topology.media:
        media = Table(title="shared media")
        media.add_column("name")
        media.add_column("bandwidth")
        for medium in topology.media:
            media.add_row(medium.name, _rate(medium.bandwidth_bps))
        tables.append(media)
    return tables


def simulation_table(result: SimulationResult, title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("latency (1 request)", f"{result.latency_s * 1e3:.2f} ms")
    table.add_row(f"throughput ({result.requests} requests)", f"{result.throughput_ips:.2f} images/s")
    table.add_row("lower bound", f"{result.lower_bound_s * 1e3:.2f} ms  (latency / bound = "
                  f"{result.latency_s / result.lower_bound_s:.2f})")
    for name, busy in result.busy_s.items():
        if busy > 0:
            table.add_row(f"busy {name}", f"{busy * 1e3:.2f} ms")
    for link, size in result.bytes_per_link.items():
        if size > 0:
            table.add_row(f"sent {link}", f"{size / 1e3:,.1f} KB")
    return table


def _rate(bps: float) -> str:
    for unit, scale in (("Gbps", 1e9), ("Mbps", 1e6), ("kbps", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g} {unit}"
    return f"{bps:g} bps"


def schedule_table(schedule: Schedule, limit: int = 60) -> Table:
    """One row per task of a multi-task schedule (the first ``limit`` by arrival; a last row counts the rest)."""
    table = Table(title=f"{schedule.policy} on {schedule.workload}")
    for column in ("task", "device", "model", "samples", "choice", "edge", "cuts", "arrival s", "start s", "end s",
                   "delay s", "downlink", "uplink"):
        table.add_column(column, justify="left" if column in ("task", "device", "model", "choice", "edge")
                         else "right")
    tasks = sorted(schedule.tasks, key=lambda t: (t.arrival_s, t.name))
    for t in tasks[:limit]:
        table.add_row(t.name, t.device, t.model, str(t.samples), t.choice, t.edge or "-", f"{t.cuts[0]},{t.cuts[1]}",
                      f"{t.arrival_s:.3f}", f"{t.start_s:.3f}", f"{t.end_s:.3f}", f"{t.delay_s:.3f}",
                      _rate(t.downlink_bps) if t.downlink_bps else "-", _rate(t.uplink_bps) if t.uplink_bps else "-")
    if len(tasks) > limit:
        table.add_row(f"... {len(tasks) - limit} more", *[""] * 12)
    return table
