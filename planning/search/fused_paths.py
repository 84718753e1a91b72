"""Fused-Layer paths between an end device and an edge server (paper 004): costs, timing model, plans.

The leading layers of a network are fused: the output of the ``length``-th
layer (a *unit*: a layer with its activation, or a block between two chain
positions) is cut into row tiles, and each tile is computed from the input by
its own *FL path*. A path runs its first ``k`` units on the end device, sends
the tensor that crosses there to the edge server, which finishes the path;
``k = 0`` sends the input rows (pure offload), ``k = length`` computes the path
wholly on the end device and sends its output. The layers after the fused
ones run on the edge server as one stage.

In a Plan this is one ``spatial`` stage whose tiles, in scheduling order, are
``(Hop(end, until=last node of unit k), Hop(server))``, ``(Hop(server),)``
or ``(Hop(end),)``, then a ``single`` stage on the server. The simulator runs a
device's ready parts in tile order, so the tile order is the path order.

:func:`completion_s` is the paper's timing model (eqs. 4-6) with halocut's
costs and the simulator's rules (one task per device at a time and one message
per link direction, each started as soon as it is ready, lowest tile first),
vectorised over many (order, offloads) choices at once.

>>> from halocut.compiler.prepare import prepare_model
>>> units, rest = fused_units(prepare_model("alexnet", (1, 3, 64, 64)).graph)
>>> [unit[-1] for unit in units][:3], rest[0]
(['features_1', 'features_2', 'features_4'], 'avgpool')
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from torch import fx

from halocut.ir.graph import compute_nodes
from halocut.ir.layers import value_bytes
from halocut.ir.ops import POINTWISE
from halocut.ir.plan import Hop, Plan, Stage, Tile
from halocut.ir.regions import Region
from halocut.passes.halo import compute_halos, has_halo_rule
from halocut.planning.search.cuts import crossings
from halocut.planning.search.layers import split_rows
from halocut.targets.cost import CostModel
from halocut.targets.topology import Link, Topology

REMOTE, SPLIT, LOCAL = 0, 1, 2  # a path offloaded at its first unit, in between, or computed wholly on the end device


@dataclass(frozen=True)
class Ends:
    """The end device (the requester) and the edge server; ``local`` is False when the end device computes nothing."""

    end: str
    server: str
    local: bool


@dataclass(frozen=True)
class PathCost:
    """Seconds one FL path costs when offloaded after ``k`` units, for ``k = 0 .. length``."""

    region: Region
    local_s: tuple[float, ...]  # end-device compute of units 1..k
    send_s: tuple[float, ...]  # the message to the server: the input rows, the crossing tensor, or the tile
    remote_s: tuple[float, ...]  # server compute of units k+1..length
    back_s: float  # sending the tile to the requester, when no layer follows the fused ones


@dataclass(frozen=True)
class FusedCase:
    """One FL strategy: ``length`` fused units cut into ``len(paths)`` row tiles, and what follows them."""

    length: int
    paths: tuple[PathCost, ...]
    options: tuple[int, ...]  # offload positions a path may take
    rest_s: float  # the server's stage after the fused layers (0 when there is none)
    rest_back_s: float  # its output back to the requester
    has_rest: bool


def fused_units(graph: fx.GraphModule) -> tuple[list[list[str]], list[str]]:
    """The leading spatially splittable units (node names) and the names of every node after them."""
    nodes = compute_nodes(graph)
    counts = crossings(graph)
    bounds = [k for k in range(1, len(nodes)) if _chain_position(nodes, counts, k)]
    units, start = [], 0
    for stop in [*bounds, len(nodes)]:
        unit = nodes[start:stop]
        if not all(has_halo_rule(n) for n in unit):
            break
        units.append([n.name for n in unit])
        start = stop
    return units, [n.name for n in nodes[start:]]


def _chain_position(nodes: list[fx.Node], counts: list[int], k: int) -> bool:
    """One tensor, the previous node's, crosses after ``k`` nodes, and no activation is cut from its layer."""
    if nodes[k].meta["layer"].kind in POINTWISE or counts[k] != 1:
        return False
    return any(s is nodes[k - 1] for n in nodes[k:] for s in n.all_input_nodes)


def choose_ends(graph: fx.GraphModule, topology: Topology, cost: CostModel) -> Ends | None:
    """The requester and the other computing device that runs the whole model soonest (input sent to it)."""
    requester = topology.requester
    others = [d for d in topology.compute_devices() if d.name != requester.name]
    if not others:
        return None
    nodes = compute_nodes(graph)
    input_bytes = sum(value_bytes(n) for n in graph.graph.nodes if n.op == "placeholder")

    def offload_s(device) -> float:
        return _send_s(topology.route(requester.name, device.name), input_bytes) + cost.nodes_latency(device, nodes)

    return Ends(requester.name, min(others, key=offload_s).name, requester.computes)


def fused_case(graph: fx.GraphModule, units: list[list[str]], length: int, count: int, topology: Topology,
               cost: CostModel, ends: Ends) -> FusedCase:
    """Costs of ``count`` equal row tiles of the ``length``-th unit's output, each a path."""
    by_name = {n.name: n for n in graph.graph.nodes}
    unit_nodes = [[by_name[name] for name in unit] for unit in units[:length]]
    volume = [n for unit in unit_nodes for n in unit]
    last = volume[-1]
    height, width = last.meta["layer"].output_shape[-2:]
    end, server = topology.device(ends.end), topology.device(ends.server)
    there, back = topology.route(ends.end, ends.server), topology.route(ends.server, ends.end)
    members = {n.name for n in volume}
    inputs = list({s.name: s for n in volume for s in n.all_input_nodes
                   if s.op != "get_attr" and s.name not in members}.values())
    rest = [n for n in compute_nodes(graph) if n.name not in members]
    paths = []
    for _, top, bottom in split_rows(height, {t: 1.0 for t in range(count)}):
        region = Region((top, bottom), (0, width))
        needs = compute_halos(volume, region)
        on_end = [cost.nodes_latency(end, unit, needs) if ends.local else 0.0 for unit in unit_nodes]
        on_server = [cost.nodes_latency(server, unit, needs) for unit in unit_nodes]
        send = [sum(_send_s(there, value_bytes(s, needs[s.name])) for s in inputs)]  # one message per input
        send += [_send_s(there, value_bytes(unit[-1], needs[unit[-1].name])) for unit in unit_nodes[:-1]]
        send += [_send_s(there, value_bytes(last, region)) if rest else 0.0]
        paths.append(PathCost(region, tuple(float(sum(on_end[:k])) for k in range(length + 1)), tuple(send),
                              tuple(float(sum(on_server[k:])) for k in range(length + 1)),
                              0.0 if rest else _send_s(back, value_bytes(last, region))))
    outputs = [n for n in graph.graph.nodes if n.op == "output"][0].all_input_nodes
    return FusedCase(length, tuple(paths), tuple(range(length + 1)) if ends.local else (0,),
                     cost.nodes_latency(server, rest) if rest else 0.0,
                     sum(_send_s(back, value_bytes(n)) for n in outputs) if rest else 0.0, bool(rest))


def _send_s(route: list[Link], size_bytes: float) -> float:
    """One message alone along a route, stored and forwarded at every hop (none when it is empty).

    The MW paper's transfer time (paper 004, eqs. 1-2: each path's message on its own link, at the link's
    rate); the simulator adds the queueing of the paths' messages one after another.
    """
    return sum(link.transfer_s(size_bytes) for link in route) if size_bytes > 0 else 0.0


def fused_plan(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], units: list[list[str]],
               case: FusedCase, order: tuple[int, ...], offloads: tuple[int, ...], ends: Ends,
               planner: str) -> Plan:
    """The plan of an FL strategy: paths as tiles in scheduling order, then the rest on the server."""
    names = tuple(name for unit in units[:case.length] for name in unit)
    tiles = []
    for path, k in zip(order, offloads):
        if k == 0:
            hops = (Hop(ends.server),)
        elif k == case.length:
            hops = (Hop(ends.end),)
        else:
            hops = (Hop(ends.end, until=units[k - 1][-1]), Hop(ends.server))
        tiles.append(Tile(case.paths[path].region, hops))
    stages = [Stage("spatial", names, tiles=tuple(tiles))]
    rest = tuple(n.name for n in compute_nodes(graph) if n.name not in set(names))
    if rest:
        stages.append(Stage("single", rest, device=ends.server))
    return Plan(model, tuple(input_shape), tuple(stages), planner=planner)


def completion_s(case: FusedCase, orders: np.ndarray, offloads: np.ndarray) -> np.ndarray:
    """Inference time of each row's (path order, offload positions), both of shape (rows, paths)."""
    orders, offloads = np.atleast_2d(orders), np.atleast_2d(offloads)
    local, send, remote, back = _tables(case)
    local, send, remote, back = local[orders, offloads], send[orders, offloads], remote[orders, offloads], back[orders]
    kind = np.where(offloads == 0, REMOTE, np.where(offloads == case.length, LOCAL, SPLIT))
    positions = np.broadcast_to(np.arange(orders.shape[1]), orders.shape)
    end_done = np.cumsum(local, axis=1)
    message = (kind != LOCAL) | case.has_rest
    ready = np.where(kind == REMOTE, 0.0, end_done)
    arrive = _list_schedule(message, ready, positions + orders.shape[1] * (kind == LOCAL), send)
    computes = kind != LOCAL
    served = _list_schedule(computes, arrive, positions, remote)
    if case.has_rest:
        start = np.max(np.where(computes, served, 0.0), axis=1)
        start = np.maximum(start, np.max(np.where(message, arrive, 0.0), axis=1))
        return start + case.rest_s + case.rest_back_s
    returned = _list_schedule(computes, served, positions, back)
    return np.maximum(np.max(np.where(computes, returned, 0.0), axis=1),
                      np.max(np.where(kind == LOCAL, end_done, 0.0), axis=1))


@lru_cache(maxsize=16)
def _tables(case: FusedCase) -> tuple[np.ndarray, ...]:
    """The case's costs as arrays: (path, k) for local, send and remote seconds; (path,) for back."""
    return (*(np.array([getattr(p, name) for p in case.paths]) for name in ("local_s", "send_s", "remote_s")),
            np.array([p.back_s for p in case.paths]))


def _list_schedule(present: np.ndarray, ready: np.ndarray, priority: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """One resource per row running its present jobs one at a time: when it is free, the ready job of lowest
    priority starts (or, if none is ready, the first to become ready). Returns each job's finish time."""
    rows = np.arange(present.shape[0])
    now = np.zeros(present.shape[0])
    finish = np.zeros(present.shape)
    pending = present.copy()
    for _ in range(present.shape[1]):
        waiting = pending.any(axis=1)
        earliest = np.min(np.where(pending, ready, np.inf), axis=1)
        now = np.where(waiting, np.maximum(now, earliest), now)
        startable = pending & (ready <= now[:, None] + 1e-12)
        job = np.argmin(np.where(startable, priority, np.iinfo(np.int64).max), axis=1)
        now = np.where(waiting, now + duration[rows, job], now)
        finish[rows, job] = np.where(waiting, now, finish[rows, job])
        pending[rows, job] &= ~waiting
    return finish
