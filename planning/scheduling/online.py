"""DeePar's online scheduler (paper 000, Algorithm 1) and its three baselines, on one event simulation.

Events are task arrivals and the starts and ends of scheduled tasks (Sec. IV-B).
Tasks are taken in order of arrival. For a task arriving at t_a, every known
event at or after t_a is a candidate start t (delayed scheduling, lines 6-8);
at each, every resource choice j in 0 .. 3m over the task's reachable edge
servers E_i (eq. 13) is tried: when it violates no resource restriction, b_i^1
and b_i^2 get the most bandwidth still free, capped by B_i^1 and B_i^2 (line
11: ``B_j^1 - sum b_i^1 x_ij``), the best cuts for those bandwidths give
w_{i,j} (:mod:`~halocut.planning.scheduling.costs`), and the smallest
``w_{i,j} + (t - t_a)`` wins (lines 12-15; ties go to the earlier start, then
the lower j, so a delay is taken only when it strictly wins).

Where the transcription is loose, and what is done here:

- Algorithm 1 checks resources at the candidate instant only ("temporarily
  update the task set I for et_known"). A task scheduled to start later (a
  delayed one) may then begin while this one still runs and break (8)-(10)
  there, so resources are checked over the task's whole run [t, t + w): the
  bandwidth free is the least free over that interval, found by a fixed point
  (a smaller bandwidth lengthens w, which can only widen the interval; it
  stops when w no longer grows).
- A mobile device computes one task at a time (a device with several tasks
  queues them); the paper has one task per device, where this never binds.
- Candidate starts are scanned in time order and the scan stops once t - t_a
  alone reaches the best total found: no later start can win (w >= 0).
- The total delay reported is sum(end - arrival): eq. (7)'s delays plus the
  waits the delayed starts add. Without the waits a policy could delay every
  task for free.

Baselines (Sec. V-B), under the same events and the same resource checks:
``device-only`` (the whole model on the device), ``edge-only`` (the whole model
on the least-loaded reachable edge server that has capacity, running tasks over
r_e, else wait for the next event), ``cloud-only`` (the input relayed through the
reachable edge server whose free bandwidth gives the smallest delay, the whole
model on the cloud; wait when no edge has bandwidth left).
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from typing import Callable

from halocut.ir.errors import HalocutError
from halocut.ir.schedule import Schedule, ScheduledTask
from halocut.planning.scheduling.costs import USES_DOWNLINK, USES_EDGE, USES_UPLINK, ModelCosts
from halocut.targets.workload import Edge, Task, Workload

FREE_FRACTION = 1e-9  # bandwidth below this share of a budget counts as none left (float residue)
MAX_FIXED_POINT = 64  # rounds of the bandwidth / interval fixed point before a choice is given up at that start

CostsOf = Callable[[Task, Edge], ModelCosts]  # a task's ModelCosts with that edge server's kind


@dataclass
class _Allocation:
    task: str
    device: str
    edge: str | None
    start_s: float
    end_s: float
    computes: bool  # z_ie
    downlink_bps: float
    uplink_bps: float


@dataclass(frozen=True)
class _Option:
    kind: str
    edge: Edge | None
    index: int
    cuts: tuple[int, int]
    latency_s: float
    downlink_bps: float
    uplink_bps: float


class _Resources:
    """Every allocation that has not ended before the current arrival, by edge server and by device."""

    def __init__(self):
        self.by_edge: dict[str, list[_Allocation]] = {}
        self.by_device: dict[str, list[_Allocation]] = {}
        self.events: list[float] = []  # sorted starts and ends

    def add(self, allocation: _Allocation) -> None:
        if allocation.edge is not None:
            self.by_edge.setdefault(allocation.edge, []).append(allocation)
        self.by_device.setdefault(allocation.device, []).append(allocation)
        bisect.insort(self.events, allocation.start_s)
        bisect.insort(self.events, allocation.end_s)

    def forget_before(self, now: float) -> None:
        for table in (self.by_edge, self.by_device):
            for key, allocations in table.items():
                table[key] = [a for a in allocations if a.end_s > now]
        del self.events[:bisect.bisect_left(self.events, now)]

    def events_from(self, now: float) -> list[float]:
        return [now] + [t for t in self.events[bisect.bisect_right(self.events, now):]]

    def peak(self, edge: str, start: float, end: float) -> tuple[int, float, float]:
        """Most tasks computing, downlink and uplink in use on ``edge`` at any instant of [start, end]
        (just ``start`` when end <= start)."""
        allocations = self.by_edge.get(edge, [])
        instants = [start] + [a.start_s for a in allocations if start < a.start_s < end]
        count = down = up = 0.0
        for t in instants:
            active = [a for a in allocations if a.start_s <= t < a.end_s]
            count = max(count, sum(a.computes for a in active))
            down = max(down, sum(a.downlink_bps for a in active))
            up = max(up, sum(a.uplink_bps for a in active))
        return int(count), down, up

    def running(self, edge: str, t: float) -> int:
        return sum(a.computes for a in self.by_edge.get(edge, []) if a.start_s <= t < a.end_s)

    def device_busy(self, device: str, start: float, end: float) -> bool:
        return any(a.start_s < max(end, start + 1e-12) and start < a.end_s for a in self.by_device.get(device, []))


def schedule_workload(workload: Workload, costs_of: CostsOf, policy: str = "deepar",
                      input_shapes: dict[str, tuple[int, ...]] | None = None) -> Schedule:
    """Schedule every task of ``workload`` with ``policy`` (``deepar``, ``device-only``, ``edge-only``,
    ``cloud-only``); ``costs_of(task, edge)`` gives its :class:`ModelCosts`; ``input_shapes`` the shape each
    task's model is analysed at (for the schedule's record)."""
    if policy not in POLICIES:
        raise HalocutError(f"unknown scheduling policy '{policy}'; policies: {', '.join(POLICIES)}")
    choose = POLICIES[policy]
    resources = _Resources()
    edge_index = {e.name: j + 1 for j, e in enumerate(workload.edges)}
    m = len(workload.edges)
    scheduled = []
    begin = time.perf_counter()
    for task in sorted(workload.tasks, key=lambda t: t.arrival_s):  # stable: file order breaks ties
        started = time.perf_counter()
        resources.forget_before(task.arrival_s)
        edges = [workload.edge(name) for name in workload.device(task.device).edges]
        start, option = choose(task, edges, costs_of, resources, edge_index, m)
        uses = option.edge.name if option.edge is not None else None
        resources.add(_Allocation(task.name, task.device, uses, start, start + option.latency_s,
                                  USES_EDGE[option.kind], option.downlink_bps, option.uplink_bps))
        shape = (input_shapes or {}).get(task.name, task.input_shape or ())
        scheduled.append(ScheduledTask(task.name, task.device, task.model, tuple(shape), task.samples, option.kind,
                                       uses, option.index, option.cuts, task.arrival_s, start,
                                       start + option.latency_s, option.downlink_bps, option.uplink_bps,
                                       time.perf_counter() - started))
    order = {t.name: i for i, t in enumerate(workload.tasks)}
    return Schedule(policy, workload.name, tuple(sorted(scheduled, key=lambda t: order[t.name])),
                    time.perf_counter() - begin)


def _try(task: Task, kind: str, edge: Edge | None, index: int, start: float, resources: _Resources,
         price: Callable[[float, float], tuple[tuple[int, int], float]]) -> _Option | None:
    """The option of ``kind`` on ``edge`` starting at ``start``, or None when it violates a restriction."""
    window_end = start
    for _ in range(MAX_FIXED_POINT):
        down = up = 0.0
        if edge is not None:
            count, used_down, used_up = resources.peak(edge.name, start, window_end)
            if USES_EDGE[kind] and count >= edge.capacity:
                return None
            if USES_DOWNLINK[kind]:
                down = min(task.downlink_bps, edge.downlink_bps - used_down)
                if down <= edge.downlink_bps * FREE_FRACTION:
                    return None
            if USES_UPLINK[kind]:
                up = min(task.uplink_bps, edge.uplink_bps - used_up)
                if up <= edge.uplink_bps * FREE_FRACTION:
                    return None
        cuts, latency = price(down or task.downlink_bps, up or task.uplink_bps)
        end = start + latency
        if resources.device_busy(task.device, start, end):
            return None
        if end <= window_end or edge is None:
            return _Option(kind, edge, index, cuts, latency, down, up)
        window_end = end
    return None


def _options(task: Task, edges: list[Edge], costs_of: CostsOf, edge_index: dict[str, int], m: int):
    """(kind, edge, j, price) for j in 0 .. 3m over the reachable edges, in order of j."""
    def best(costs: ModelCosts, kind: str):
        return lambda b1, b2: _as_pair(costs.best(kind, b1, b2, task.samples, task.input_bytes))

    options = [("device", None, 0, best(costs_of(task, edges[0]), "device"))]
    for offset, kind in ((0, "edge"), (m, "cloud"), (2 * m, "edge-cloud")):
        options += [(kind, e, edge_index[e.name] + offset, best(costs_of(task, e), kind)) for e in edges]
    return sorted(options, key=lambda o: o[2])


def _as_pair(best) -> tuple[tuple[int, int], float]:
    return best.cuts, best.delay_s


def _deepar(task, edges, costs_of, resources, edge_index, m):
    options = _options(task, edges, costs_of, edge_index, m)
    opt, chosen = float("inf"), None
    for start in resources.events_from(task.arrival_s):
        wait = start - task.arrival_s
        if wait >= opt:
            break
        for kind, edge, index, price in options:
            option = _try(task, kind, edge, index, start, resources, price)
            if option is not None and option.latency_s + wait < opt:
                opt, chosen = option.latency_s + wait, (start, option)
    return chosen


def _fixed(costs: ModelCosts, kind: str, cuts: tuple[int, int], task: Task):
    return lambda b1, b2: (cuts, costs.delay(kind, cuts, b1, b2, task.samples, task.input_bytes))


def _device_only(task, edges, costs_of, resources, edge_index, m):
    costs = costs_of(task, edges[0])
    price = _fixed(costs, "device", (costs.layers, costs.layers), task)
    for start in resources.events_from(task.arrival_s):
        option = _try(task, "device", None, 0, start, resources, price)
        if option is not None:
            return start, option
    raise AssertionError("a device is free once its tasks end")


def _edge_only(task, edges, costs_of, resources, edge_index, m):
    for start in resources.events_from(task.arrival_s):
        candidates = []
        for edge in edges:
            costs = costs_of(task, edge)
            option = _try(task, "edge", edge, edge_index[edge.name], start, resources,
                          _fixed(costs, "edge", (0, costs.layers), task))
            if option is not None:
                candidates.append((resources.running(edge.name, start) / edge.capacity, option.index, option))
        if candidates:
            return start, min(candidates, key=lambda c: c[:2])[2]
    raise AssertionError("an edge server is free once its tasks end")


def _cloud_only(task, edges, costs_of, resources, edge_index, m):
    for start in resources.events_from(task.arrival_s):
        candidates = []
        for edge in edges:
            option = _try(task, "cloud", edge, edge_index[edge.name] + m, start, resources,
                          _fixed(costs_of(task, edge), "cloud", (0, 0), task))
            if option is not None:
                candidates.append((option.latency_s, option.index, option))
        if candidates:
            return start, min(candidates, key=lambda c: c[:2])[2]
    raise AssertionError("bandwidth is free once its tasks end")


POLICIES = {"deepar": _deepar, "device-only": _device_only, "edge-only": _edge_only, "cloud-only": _cloud_only}
