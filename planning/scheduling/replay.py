"""Replay a schedule against its workload and check DeePar's constraints (8)-(19) at every event instant.

Per task: it is scheduled exactly once (24); its record agrees with the
workload (device, model, samples, arrival: what its delay is counted from, the
input shape when the workload fixes one); its times and bandwidths are finite
numbers; it starts at or after its arrival; its edge server is one it reaches
(13); its choice, index j and cuts agree (eqs. 14-19: ``device`` c1 = c2 = l,
``edge`` c1 < l = c2, ``cloud`` c1 = c2 < l, ``edge-cloud`` c1 < c2 < l); its
bandwidths are within its caps (11), positive where used and 0 where not; its
end minus its start is eqs. 1-6 recomputed for its cuts and bandwidths. At
every arrival, start and end: each edge server computes at most r_e tasks (8)
and carries at most B_e^1 downlink (9) and B_e^2 uplink (10); a device computes
one task at a time. The first violation is a one-line :class:`HalocutError`
naming the constraint, the task, the edge (or "no edge server") and the instant.
"""

from __future__ import annotations

import math

from halocut.ir.errors import HalocutError
from halocut.ir.schedule import Schedule, ScheduledTask
from halocut.planning.scheduling.costs import USES_DOWNLINK, USES_EDGE, USES_UPLINK
from halocut.planning.scheduling.online import CostsOf
from halocut.targets.workload import Task, Workload

RELATIVE = 1e-6  # float slack on sums and recomputed latencies


def check_schedule(schedule: Schedule, workload: Workload, costs_of: CostsOf, source: str = "schedule") -> int:
    """Raise on the first violated constraint; returns the number of event instants checked."""
    tasks = {t.name: t for t in workload.tasks}
    seen = set()
    for entry in schedule.tasks:
        if entry.name not in tasks:
            raise HalocutError(f"{source}: {_at(entry)}: not a task of workload '{workload.name}'")
        if entry.name in seen:
            raise HalocutError(f"{source}: constraint (24) violated: {_at(entry)}: scheduled twice")
        seen.add(entry.name)
        _check_task(entry, tasks[entry.name], workload, costs_of, source)
    missing = [name for name in tasks if name not in seen]
    if missing:
        task = tasks[missing[0]]
        raise HalocutError(f"{source}: constraint (24) violated: task '{task.name}' (no edge server, "
                           f"t={task.arrival_s:.6g} s): arrives but is not scheduled")
    instants = sorted({t.arrival_s for t in workload.tasks} | {t.start_s for t in schedule.tasks} |
                      {t.end_s for t in schedule.tasks})
    for instant in instants:
        active = [t for t in schedule.tasks if t.start_s <= instant < t.end_s]
        for edge in workload.edges:
            on = [t for t in active if t.edge == edge.name]
            computing = [t.name for t in on if USES_EDGE[t.choice]]
            if len(computing) > edge.capacity:
                raise HalocutError(f"{source}: constraint (8) violated at t={instant:.6g} s: edge '{edge.name}' "
                                   f"computes {len(computing)} tasks ({', '.join(computing)}), r_e = {edge.capacity}")
            for number, field, budget in ((9, "downlink_bps", edge.downlink_bps), (10, "uplink_bps", edge.uplink_bps)):
                used = sum(getattr(t, field) for t in on)
                if used > budget * (1 + RELATIVE):
                    raise HalocutError(f"{source}: constraint ({number}) violated at t={instant:.6g} s: edge "
                                       f"'{edge.name}' carries {used / 1e6:.6g} Mbps for tasks "
                                       f"{', '.join(t.name for t in on)}, budget {budget / 1e6:.6g} Mbps")
        for device in workload.devices:
            on = [t for t in active if t.device == device.name]
            if len(on) > 1:
                raise HalocutError(f"{source}: device '{device.name}' runs tasks "
                                   f"{', '.join(f'{t.name} ({_edge(t)})' for t in on)} at once at t={instant:.6g} s")
    return len(instants)


def _at(entry: ScheduledTask) -> str:
    return f"task '{entry.name}' ({_edge(entry)}, t={entry.start_s:.6g} s)"


def _edge(entry: ScheduledTask) -> str:
    return f"edge '{entry.edge}'" if entry.edge is not None else "no edge server"


def _check_task(entry: ScheduledTask, task: Task, workload: Workload, costs_of: CostsOf, source: str) -> None:
    where = f"{source}: {_at(entry)}"
    recorded = {"device": (entry.device, task.device), "model": (entry.model, task.model),
                "samples": (entry.samples, task.samples),
                "input_shape": (entry.input_shape, task.input_shape or entry.input_shape)}
    for name, (value, expected) in recorded.items():
        if value != expected:
            raise HalocutError(f"{where}: {name} is {value!r}, the workload says {expected!r}")
    if abs(entry.arrival_s - task.arrival_s) > 1e-9:
        raise HalocutError(f"{where}: arrival_s is {entry.arrival_s:.6g} s, the workload says {task.arrival_s:.6g} s")
    for name in ("start_s", "end_s", "downlink_bps", "uplink_bps"):
        if not math.isfinite(getattr(entry, name)):
            raise HalocutError(f"{where}: {name} is {getattr(entry, name)}, not a finite number")
    if entry.start_s < task.arrival_s - 1e-9:
        raise HalocutError(f"{where}: starts at t={entry.start_s:.6g} s, before it arrives at {task.arrival_s:.6g} s")
    reachable = workload.device(task.device).edges
    if entry.choice == "device":
        if entry.edge is not None or entry.index != 0:
            raise HalocutError(f"{where}: constraint (13) violated: choice device uses an edge server (j = "
                               f"{entry.index})")
        edge = workload.edge(reachable[0])
    else:
        if entry.edge not in reachable:
            raise HalocutError(f"{where}: constraint (13) violated: edge '{entry.edge}' is not in E_i "
                               f"({', '.join(reachable)})")
        edge = workload.edge(entry.edge)
        m, j = len(workload.edges), [e.name for e in workload.edges].index(entry.edge) + 1
        expected = {"edge": j, "cloud": j + m, "edge-cloud": j + 2 * m}[entry.choice]
        if entry.index != expected:
            raise HalocutError(f"{where}: index j = {entry.index} does not name choice {entry.choice} there "
                               f"(j = {expected})")
    costs = costs_of(task, edge)
    c1, c2, last = *entry.cuts, costs.layers
    if not 0 <= c1 <= c2 <= last or c1 not in costs.positions or c2 not in costs.positions:
        raise HalocutError(f"{where}: constraint (14) violated: cuts ({c1}, {c2}) are not cut positions with "
                           f"0 <= c1 <= c2 <= l = {last}")
    rule = {"device": c1 == c2 == last, "edge": c1 < last and c2 == last, "cloud": c1 == c2 < last,
            "edge-cloud": c1 < c2 < last}
    if not rule[entry.choice]:
        raise HalocutError(f"{where}: constraints (17)-(19) violated: cuts ({c1}, {c2}) with l = {last} do not make "
                           f"choice {entry.choice}")
    for number, field, uses, cap in ((11, "downlink_bps", USES_DOWNLINK, task.downlink_bps),
                                     (11, "uplink_bps", USES_UPLINK, task.uplink_bps)):
        value = getattr(entry, field)
        if value < 0 or value > cap * (1 + RELATIVE) or (uses[entry.choice] and value <= 0) or \
                (not uses[entry.choice] and value != 0):
            raise HalocutError(f"{where}: constraint ({number}) violated: {field} = {value:.6g} (cap {cap:.6g}, "
                               f"{'used' if uses[entry.choice] else 'unused'} by choice {entry.choice})")
    latency = costs.delay(entry.choice, entry.cuts, entry.downlink_bps or 1.0, entry.uplink_bps or 1.0,
                          task.samples, task.input_bytes)
    if abs(entry.latency_s - latency) > RELATIVE * max(latency, 1e-9):
        raise HalocutError(f"{where}: runs {entry.latency_s:.6g} s (ends at t={entry.end_s:.6g} s), eqs. 1-6 give "
                           f"{latency:.6g} s for its cuts and bandwidths")
