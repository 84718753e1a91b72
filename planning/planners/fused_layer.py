"""``mw``, ``nfl`` and ``bf``: Fused-Layer parallelism between an end device and an edge server (paper 004).

- ``mw`` (Minimizing Waiting, Algorithm 1): for every FL path length (fused
  leading units) and number of paths (equal row tiles, up to
  :data:`MAX_PATHS`), the first path and its offload position minimise its
  transmission completion time (eq. 7, ties: least local compute); each next
  path and position make the end device finish it as close as possible to the
  previous path's transmission completion (eq. 8, ties: more local units).
  The strategies are ranked by the timing model (:func:`completion_s`); the
  best few are scored by the simulator, which picks.
- ``nfl`` (No FL): the paper's partial offloading without fused layers: one
  cut, the layers before it on the end device and the rest on the server,
  every cut position scored by the simulator.
- ``bf`` (Brute Force): every path order and offload position of every FL
  strategy with up to :data:`BF_MAX_PATHS` paths (the paper's BF (2x2) has 4),
  scored by the timing model; strategies are searched smallest first until
  :data:`BF_BUDGET` combinations are spent; the ones left are logged.

The end device is the requester and the server the other computing device
that runs the whole model soonest (on ``mw.yaml``: ``end`` and ``es``); a
requester that computes nothing offloads every path at its first layer. With
no other computing device, everything stays on the requester.
"""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.plan import Plan, single_device_plan
from halocut.planning.search.cuts import cut_positions, segments_plan
from halocut.planning.search.fused_paths import (
    Ends,
    FusedCase,
    choose_ends,
    completion_s,
    fused_case,
    fused_plan,
    fused_units,
)
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import Topology

logger = logging.getLogger(__name__)

MAX_PATHS = 16  # mw: most row tiles tried per FL path length
BF_MAX_PATHS = 4  # bf: most paths (the paper's BF (2x2))
BF_BUDGET = 1_000_000  # bf: most (order, offloads) combinations scored per call
CHUNK = 1 << 16  # bf: combinations scored at once
SIMULATED = 3  # mw: the model's best strategies the simulator chooses among
TIE_FRACTION = 0.01  # mw: eqs. 7-8 values this close (relative) are ties


def minimizing_waiting(case: FusedCase) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Path order and offload positions by eqs. 7-8 (Algorithm 1, lines 5-14).

    Values within :data:`TIE_FRACTION` of the best count as ties (a pooling unit adds next to nothing to a
    path's end-device time, so "the same task completion time" would otherwise never hold).

    >>> from halocut.ir.regions import Region
    >>> from halocut.planning.search.fused_paths import PathCost
    >>> def path(local_s, send_s):
    ...     return PathCost(Region((0, 1), (0, 1)), local_s, send_s, (2.0, 0.0), 0.0)
    >>> case = FusedCase(1, (path((0.0, 3.0), (2.0, 1.0)), path((0.0, 2.0), (3.0, 1.0))), (0, 1), 0.0, 0.0, True)
    >>> minimizing_waiting(case)  # path 0 sent raw first (done at 2), path 1 computed locally until then
    ((0, 1), (0, 1))
    """
    paths, options = case.paths, case.options
    every = [(p, k) for p in range(len(paths)) for k in options]
    done = {pk: paths[pk[0]].local_s[pk[1]] + paths[pk[0]].send_s[pk[1]] for pk in every}
    first = _best(done, min(done.values()), lambda pk: (paths[pk[0]].local_s[pk[1]], pk))
    order, offloads = [first[0]], [first[1]]
    end_s, sent_s = _advance(case, 0.0, 0.0, *first)
    while len(order) < len(paths):
        waiting = {(p, k): abs(sent_s - end_s - paths[p].local_s[k]) for p in range(len(paths)) if p not in order
                   for k in options}
        path, k = _best(waiting, sent_s, lambda pk: (-pk[1], pk[0]))
        order.append(path)
        offloads.append(k)
        end_s, sent_s = _advance(case, end_s, sent_s, path, k)
    return tuple(order), tuple(offloads)


def _best(scores: dict, scale_s: float, tie_break) -> tuple[int, int]:
    """The candidate with the least score, or among those within the tie tolerance, the least ``tie_break``."""
    least = min(scores.values())
    return min((pk for pk, s in scores.items() if s <= least + TIE_FRACTION * scale_s + 1e-12), key=tie_break)


def _advance(case: FusedCase, end_s: float, sent_s: float, path: int, k: int) -> tuple[float, float]:
    """The end device's and the link's completion times once ``path`` is scheduled, offloaded after ``k`` units."""
    cost = case.paths[path]
    end_s += cost.local_s[k]
    if k == case.length and not case.has_rest:
        return end_s, sent_s
    return end_s, max(sent_s, end_s if k > 0 else 0.0) + cost.send_s[k]


def _strategies(graph: fx.GraphModule, topology: Topology, cost: CostModel, ends: Ends, max_paths: int):
    """Every (units, FusedCase) with a fused length and a number of paths up to ``max_paths``."""
    units, _ = fused_units(graph)
    for length in range(1, len(units) + 1):
        height = _output_height(graph, units[length - 1][-1])
        for count in range(1, min(height, max_paths) + 1):
            yield units, fused_case(graph, units, length, count, topology, cost, ends)


def _output_height(graph: fx.GraphModule, name: str) -> int:
    return next(n for n in graph.graph.nodes if n.name == name).meta["layer"].output_shape[-2]


def _fallback(graph: fx.GraphModule, model: str, input_shape, topology: Topology, planner: str) -> Plan:
    plan = single_device_plan(graph, model, input_shape, topology.requester.name)
    return Plan(plan.model, plan.input_shape, plan.stages, planner=planner)


def plan_minimizing_waiting(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                            cost: CostModel, max_paths: int = MAX_PATHS, planner: str = "mw") -> Plan:
    """MW over FL path lengths and 1..``max_paths`` paths; see the module docstring."""
    ends = choose_ends(graph, topology, cost)
    if ends is None or not fused_units(graph)[0]:
        return _fallback(graph, model, input_shape, topology, planner) if ends is None else \
            plan_no_fused_layers(graph, model, input_shape, topology, cost, planner)
    ranked = []
    for units, case in _strategies(graph, topology, cost, ends, max_paths):
        order, offloads = minimizing_waiting(case)
        modelled = float(completion_s(case, np.array(order), np.array(offloads))[0])
        ranked.append((modelled, len(ranked), units, case, order, offloads))
    ranked.sort(key=lambda r: r[:2])
    plans = [fused_plan(graph, model, input_shape, units, case, order, offloads, ends, planner)
             for _, _, units, case, order, offloads in ranked[:SIMULATED]]
    return min(plans, key=lambda p: simulate(graph, p, topology, cost, requests=1).latency_s)


def plan_mw(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
            cost: CostModel) -> Plan:
    return plan_minimizing_waiting(graph, model, input_shape, topology, cost)


def plan_no_fused_layers(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                         cost: CostModel, planner: str = "nfl") -> Plan:
    """One cut between the end device and the server, every cut position (at most two crossing tensors)."""
    ends = choose_ends(graph, topology, cost)
    if ends is None:
        return _fallback(graph, model, input_shape, topology, planner)
    positions = cut_positions(graph, max_crossing=2) if ends.local else [0]
    plans = [segments_plan(graph, model, input_shape, [k], [ends.end, ends.server], planner) for k in positions]
    return min(plans, key=lambda p: simulate(graph, p, topology, cost, requests=1).latency_s)


def brute_force(case: FusedCase, budget: int) -> tuple[float, tuple[int, ...], tuple[int, ...], int]:
    """The best (time, order, offloads) of every path order and offload position, and how many were scored.

    Paths with equal costs are interchangeable, so only distinct orders of them are tried.
    """
    if math.factorial(len(case.paths)) * len(case.options) ** len(case.paths) > budget * len(case.paths):
        return float("inf"), (), (), 0  # even with interchangeable paths, too many
    signature = [(p.local_s, p.send_s, p.remote_s, p.back_s) for p in case.paths]
    orders, seen = [], set()
    for order in itertools.permutations(range(len(case.paths))):
        key = tuple(signature[p] for p in order)
        if key not in seen:
            seen.add(key)
            orders.append(order)
    total = len(orders) * len(case.options) ** len(case.paths)
    if total > budget:
        return float("inf"), (), (), 0
    offloads = np.array(list(itertools.product(case.options, repeat=len(case.paths))), dtype=np.int64)
    best = (float("inf"), (), ())
    step = max(1, CHUNK // len(offloads))
    for first in range(0, len(orders), step):
        chunk = np.array(orders[first:first + step], dtype=np.int64)
        times = completion_s(case, np.repeat(chunk, len(offloads), axis=0), np.tile(offloads, (len(chunk), 1)))
        i = int(np.argmin(times))
        if times[i] < best[0]:
            best = (float(times[i]), orders[first + i // len(offloads)],
                    tuple(int(k) for k in offloads[i % len(offloads)]))
    return (*best, total)


def plan_bf(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
            cost: CostModel, max_paths: int = BF_MAX_PATHS, budget: int = BF_BUDGET) -> Plan:
    ends = choose_ends(graph, topology, cost)
    if ends is None or not fused_units(graph)[0]:
        return _fallback(graph, model, input_shape, topology, "bf") if ends is None else \
            plan_no_fused_layers(graph, model, input_shape, topology, cost, "bf")
    cases = sorted(_strategies(graph, topology, cost, ends, max_paths),
                   key=lambda uc: (len(uc[1].options) ** len(uc[1].paths), uc[1].length))
    best, skipped, offered = None, [], budget
    for units, case in cases:
        found = brute_force(case, budget)
        if not found[3]:
            skipped.append(f"{case.length}x{len(case.paths)}")
            continue
        budget -= found[3]
        if best is None or found[0] < best[0]:
            best = (*found[:3], units, case)
    if skipped:
        logger.warning("bf: search capped at %d combinations; FL strategies (length x paths) not searched: %s",
                       offered, ", ".join(skipped))
    if best is None:
        raise HalocutError(f"bf: a budget of {offered} combinations searches no FL strategy")
    time_s, order, offloads, units, case = best
    return fused_plan(graph, model, input_shape, units, case, order, offloads, ends, "bf")
