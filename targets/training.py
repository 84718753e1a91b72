"""Training cost: per-sample forward / backward and per-iteration update seconds of each layer group on each
worker, link prices, and HierTrain's training time of one iteration (paper 002, eqs. 1-12).

Per worker and layer group ``i`` (see :mod:`halocut.ir.layer_groups`) a :class:`TrainingTable` holds
``L^f_i`` and ``L^b_i`` (seconds per sample) and ``L^u_i`` (seconds per iteration), from a measured
training profile (``halocut profile MODEL --training``) when the device's profile has one for this model,
else estimated from the catalog's analytic model: forward = the layer at batch ``B`` divided by ``B``;
backward = 2x forward for layers with multiply-adds (the input gradient and the weight gradient; 1x for the
model's first layer, whose input needs no gradient) and 1x for the rest; update (plain SGD) = reading the
parameter and its gradient and writing the parameter, ``3 * MP_i`` bytes over the device's memory bandwidth,
plus one small kernel per tensor.

Links follow the topology's route hop by hop, as the simulator does: ``seconds = latency + bytes * 8 /
bandwidth`` per hop. With ``compress_bits`` (JALAD's option) the tensors sent forward over the edge-cloud
link are quantised to that many bits (their accuracy cost is not modelled).

:class:`HierTrainModel` writes eq. (12) for a fixed mapping and ``(m_s, m_l)`` as a sum of maxima of
functions linear in ``(b_o, b_s, b_l)`` (plus a linear and a constant part), so the LP the planner solves and
the evaluation of a rounded schedule are the same formula.

>>> from halocut.ir.layer_groups import LayerGroup
>>> groups = (LayerGroup("a", ("a",), 0, 0, 400, 100, (25,)), LayerGroup("b", ("b",), 0, 0, 40, 4, (1,)))
>>> tables = {w: TrainingTable((f, f), (2 * f, 2 * f), (0.0, 0.0), "given")
...           for w, f in (("pi", 1e-2), ("nuc", 2e-3), ("gpu", 1e-4))}
>>> routes = {(a, b): Route(0.0, 0.0 if a == b else 8 / 1e6) for a in tables for b in tables}
>>> costs = TrainingCosts("m", 10, groups, 1000.0, {"device": "pi", "edge": "nuc", "cloud": "gpu"}, tables, routes)
>>> round(t_total(costs, Schedule(("nuc", "pi", "gpu"), 0, 0, (10, 0, 0))), 4)  # all-edge: 10 kB at 1 Mbps, 10 x 2 x 6 ms
0.2
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.files import read_json
from halocut.ir.layer_groups import LayerGroup
from halocut.targets.cost import FREE, KERNELS_WITH_MACS, analytic_latency_share, efficiency_of
from halocut.targets.topology import Device, Topology

TRAINING_ROLES = ("device", "edge", "cloud")


@dataclass(frozen=True)
class TrainingTable:
    """One worker's figures per layer group: seconds per sample forward and backward, seconds per update."""

    forward_s: tuple[float, ...]
    backward_s: tuple[float, ...]
    update_s: tuple[float, ...]
    source: str  # "profile <path>" or "analytic"


@dataclass(frozen=True)
class Route:
    """A message's price between two workers along the topology's route."""

    latency_s: float
    seconds_per_byte: float
    forward_seconds_per_byte: float | None = None  # tensors sent forward, when a hop compresses them

    def seconds(self, size_bytes, forward: bool = False):
        rate = self.forward_seconds_per_byte if forward and self.forward_seconds_per_byte is not None else \
            self.seconds_per_byte
        return self.latency_s + size_bytes * rate


@dataclass(frozen=True)
class TrainingCosts:
    """Everything eqs. 1-12 read: the groups (``MO_i``, ``MP_i``), ``Q``, the workers' tables and routes."""

    model: str
    batch: int
    groups: tuple[LayerGroup, ...]
    sample_bytes: float  # Q, per sample, as the device sends it
    workers: dict[str, str]  # role (device, edge, cloud) -> topology device name
    tables: dict[str, TrainingTable]  # worker name -> table
    routes: dict[tuple[str, str], Route]
    compress_bits: int = 32

    @property
    def layers(self) -> int:
        return len(self.groups)

    def route(self, source: str, target: str) -> Route:
        return self.routes[(source, target)]


@dataclass(frozen=True)
class Schedule:
    """A HierTrain schedule: ``mapping`` = (worker_o, worker_s, worker_l), layers ``m_s <= m_l``, samples
    ``b = (b_o, b_s, b_l)`` in that order of the batch."""

    mapping: tuple[str, str, str]
    m_s: int
    m_l: int
    b: tuple[int, int, int]


@dataclass(frozen=True)
class Message:
    source: str
    target: str
    size_bytes: float
    forward: bool  # compressible (a tensor sent forward)
    what: str


def hiertrain_workers(topology: Topology) -> dict[str, str]:
    """HierTrain's three workers: the device (the requester, which holds the data), the one edge and the one
    cloud machine of the topology; anything else is a one-line error."""
    found = {"device": [topology.requester.name]}
    for role in ("edge", "cloud"):
        found[role] = [d.name for d in topology.devices if d.role == role and d.computes]
    for role, names in found.items():
        if len(names) != 1:
            raise HalocutError(f"topology '{topology.name}': HierTrain needs exactly one {role} machine (roles "
                               f"requester, edge, cloud), found {len(names)}{': ' + ', '.join(names) if names else ''}")
    device = topology.device(found["device"][0])
    if not device.computes:
        raise HalocutError(f"topology '{topology.name}': the requester '{device.name}' computes nothing; "
                           "HierTrain trains on it")
    return {role: names[0] for role, names in found.items()}


def training_costs(topology: Topology, graph: fx.GraphModule, groups: list[LayerGroup], model: str, batch: int,
                   sample_bytes: float, compress_bits: int = 32) -> TrainingCosts:
    """The costs of training ``groups`` of an annotated ``graph`` at ``batch`` on the topology's three workers."""
    if not 1 <= compress_bits <= 32:
        raise HalocutError(f"compress bits {compress_bits}: expected 1..32")
    workers = hiertrain_workers(topology)
    tables = {name: training_table(topology.device(name), graph, groups, model, batch) for name in workers.values()}
    compressed = frozenset({workers["edge"], workers["cloud"]}) if compress_bits < 32 else None
    routes = {(a, b): _route(topology, a, b, compressed, compress_bits / 32.0)
              for a in workers.values() for b in workers.values()}
    return TrainingCosts(model, batch, tuple(groups), float(sample_bytes), workers, tables, routes, compress_bits)


def _route(topology: Topology, source: str, target: str, compressed: frozenset | None, factor: float) -> Route:
    if source == target:
        return Route(0.0, 0.0)
    links = topology.route(source, target)
    latency = sum(link.latency_s + link.overhead_s for link in links)
    per_byte = [8.0 / link.bandwidth_bps for link in links]
    if compressed is None:
        return Route(latency, sum(per_byte))
    shrunk = [rate * factor if {link.a, link.b} == compressed else rate for link, rate in zip(links, per_byte)]
    return Route(latency, sum(per_byte), sum(shrunk))


def training_table(device: Device, graph: fx.GraphModule, groups: list[LayerGroup], model: str,
                   batch: int) -> TrainingTable:
    """A worker's table: its measured training profile of this model where it has one, else the estimate."""
    if device.profile_path is not None:
        measured = _measured(device.profile_path, model, groups)
        if measured is not None:
            return measured
    return estimate_training(device, graph, groups, batch)


def estimate_training(device: Device, graph: fx.GraphModule, groups: list[LayerGroup], batch: int) -> TrainingTable:
    """The analytic estimate (module docstring) of each group at ``batch`` samples on ``device``."""
    nodes = {n.name: n for n in graph.graph.nodes}
    efficiency = efficiency_of(device)
    bandwidth = device.memory_bandwidth_bytes_per_s * efficiency.memory_fraction
    forward, backward, update = [], [], []
    first_kernel = True
    for group in groups:
        f = b = u = 0.0
        for name in group.nodes:
            layer = nodes[name].meta["layer"]
            if layer.kind in FREE:
                continue
            seconds = float(analytic_latency_share(device, layer, batch)) / batch
            f += seconds
            if layer.kind in KERNELS_WITH_MACS:
                b += seconds if first_kernel else 2.0 * seconds
                first_kernel = False
            else:
                b += seconds
            if layer.param_bytes:
                u += 2 * 0.25 * efficiency.layer_overhead_s + 3.0 * layer.param_bytes / bandwidth
        forward.append(f)
        backward.append(b)
        update.append(u)
    return TrainingTable(tuple(forward), tuple(backward), tuple(update), "analytic")


def _measured(path: Path, model: str, groups: list[LayerGroup]) -> TrainingTable | None:
    training = _training_section(path)
    if training is None or training.get("model") != model:
        return None
    entries = training.get("groups", [])
    if [e.get("name") for e in entries] != [g.name for g in groups]:
        return None
    try:
        return TrainingTable(tuple(float(e["forward_s_per_sample"]) for e in entries),
                             tuple(float(e["backward_s_per_sample"]) for e in entries),
                             tuple(float(e["update_s"]) for e in entries), f"profile {path}")
    except (KeyError, TypeError, ValueError):
        raise HalocutError(f"{path}: training.groups: every group needs forward_s_per_sample, "
                           "backward_s_per_sample and update_s numbers") from None


@cache
def _training_section(path: Path) -> dict | None:
    section = read_json(path).get("training")
    return section if isinstance(section, dict) else None


class HierTrainModel:
    """Eq. (12) for one mapping and ``(m_s, m_l)``: ``T(b) = sum_p max_k (c_pk + a_pk . b) + a_3 . b + c``.

    ``phases`` lists, per phase of eqs. (5)-(8), its branches as ``(constant, (coef_o, coef_s, coef_l))``.
    Eqs. (9)-(10) are ``linear`` (they depend on ``b_o + b_s + b_l = B`` only); eq. (11) is ``constant``.
    A message's latency is paid when its task takes part (``m > 0``; worker_o always does), its bytes in
    proportion to the samples.

    Where the transcription is garbled or loose, the paper's definitions decide: Sec. IV-C-1 lists the batch
    sizes as ``b in {b_o, b_o + b_l, b_o + b_l + b_s}``, but eq. (7) and the procedure of Sec. IV-B (worker_s
    stops at layer m_s, worker_l at m_l) give worker_o ``b_o + b_s`` samples over layers m_s+1..m_l, as used
    here. ``MP_i`` is called a "number of parameters" (Table 1) yet divided by a bandwidth in eq. (11): it is
    the parameters' bytes here (float32, times 8 bits). Eq. (4) has no latency term; the topology's link
    latencies are added per message (0 in the paper's setting).
    """

    def __init__(self, costs: TrainingCosts, mapping: tuple[str, str, str], m_s: int, m_l: int):
        if not 0 <= m_s <= m_l <= costs.layers:
            raise HalocutError(f"layers m_s={m_s}, m_l={m_l}: need 0 <= m_s <= m_l <= {costs.layers}")
        self.costs, self.mapping, self.m_s, self.m_l = costs, mapping, m_s, m_l
        o, s, l = (costs.tables[w] for w in mapping)
        wo, ws, wl = mapping
        device = costs.workers["device"]
        q, mo = costs.sample_bytes, [g.output_bytes for g in costs.groups]
        front, middle, back = slice(0, m_s), slice(m_s, m_l), slice(m_l, costs.layers)

        def inbound(worker: str, active: bool) -> tuple[float, float]:
            route = costs.route(device, worker)
            return (route.latency_s if active and worker != device else 0.0), q * _rate(route, True)

        def boundary(worker: str, m: int) -> tuple[Route, Route, float]:
            return costs.route(worker, wo), costs.route(wo, worker), mo[m - 1] if m else 0.0

        in_o, in_s, in_l = inbound(wo, True), inbound(ws, m_s > 0), inbound(wl, m_l > 0)
        (s_up, s_down, mo_s), (l_up, l_down, mo_l) = boundary(ws, m_s), boundary(wl, m_l)
        ls, ll = (m_s > 0) * (s_up.latency_s), (m_l > 0) * (l_up.latency_s)
        # eq. (5): inputs arrive, layers 1..m_s run on all three; worker_s sends its output to worker_o
        forward_1 = [(in_o[0], (in_o[1] + sum(o.forward_s[front]), 0.0, 0.0)),
                     (in_s[0] + ls, (0.0, in_s[1] + sum(s.forward_s[front]) + mo_s * _rate(s_up, True), 0.0)),
                     (in_l[0], (0.0, 0.0, in_l[1] + sum(l.forward_s[front])))]
        # eq. (6): backward over layers 1..m_s; T_s,grad = worker_o -> worker_s, the size of layer m_s's output
        backward_1 = [(0.0, (sum(o.backward_s[front]), 0.0, 0.0)),
                      ((m_s > 0) * s_down.latency_s, (0.0, sum(s.backward_s[front]) + mo_s * _rate(s_down), 0.0)),
                      (0.0, (0.0, 0.0, sum(l.backward_s[front])))]
        # eq. (7): layers m_s+1..m_l on worker_o (for b_o + b_s samples) and worker_l, which sends layer m_l's output
        o_middle_f, o_middle_b = sum(o.forward_s[middle]), sum(o.backward_s[middle])
        forward_2 = [(0.0, (o_middle_f, o_middle_f, 0.0)),
                     (ll, (0.0, 0.0, sum(l.forward_s[middle]) + mo_l * _rate(l_up, True)))]
        # eq. (8)
        backward_2 = [(0.0, (o_middle_b, o_middle_b, 0.0)),
                      ((m_l > 0) * l_down.latency_s, (0.0, 0.0, sum(l.backward_s[middle]) + mo_l * _rate(l_down)))]
        self.phases = [forward_1, backward_1, forward_2, backward_2]
        # eqs. (9) + (10): layers m_l+1..N on worker_o for all B samples
        rest = sum(o.forward_s[back]) + sum(o.backward_s[back])
        self.linear = (rest, rest, rest)
        # eq. (11): updates in parallel, then the gradient exchange of the shared layers: 2 * sum MP_i / B
        mp = [g.param_bytes for g in costs.groups]
        exchange = [up.seconds(sum(mp[:m])) + down.seconds(sum(mp[:m])) if m else 0.0
                    for up, down, m in ((s_up, s_down, m_s), (l_up, l_down, m_l))]
        self.update_s = max(sum(o.update_s), sum(s.update_s[front]), sum(l.update_s[:m_l]))
        self.exchange_s = max(exchange)
        self.constant = self.update_s + self.exchange_s

    def evaluate(self, b) -> np.ndarray | float:
        """T_total at ``b`` (a triple, or an array ``(..., 3)`` of them); eq. (12)."""
        b = np.asarray(b, dtype=float)
        total = self.constant + b @ np.asarray(self.linear)
        for branches in self.phases:
            total = total + np.max([c + b @ np.asarray(a) for c, a in branches], axis=0)
        return total if total.ndim else float(total)

    def phase_seconds(self, b) -> dict[str, float]:
        """The terms of eq. (12) at ``b``: each phase's maximum, phase 3, the update and the exchange."""
        b = np.asarray(b, dtype=float)
        names = ("forward_1", "backward_1", "forward_2", "backward_2")
        seconds = {n: float(max(c + b @ np.asarray(a) for c, a in branches)) for n, branches in zip(names, self.phases)}
        seconds["forward_backward_3"] = float(b @ np.asarray(self.linear))
        seconds["update"], seconds["exchange"] = self.update_s, self.exchange_s
        return seconds


def _rate(route: Route, forward: bool = False) -> float:
    return route.seconds(1.0, forward) - route.latency_s


def t_total(costs: TrainingCosts, schedule: Schedule) -> float:
    """Eq. (12): seconds of one training iteration under ``schedule``."""
    return HierTrainModel(costs, schedule.mapping, schedule.m_s, schedule.m_l).evaluate(schedule.b)


def messages(costs: TrainingCosts, schedule: Schedule) -> list[Message]:
    """What crosses the network in one iteration of ``schedule`` (the messages eqs. 5-11 price)."""
    (wo, ws, wl), (m_s, m_l), (b_o, b_s, b_l) = schedule.mapping, (schedule.m_s, schedule.m_l), schedule.b
    device, q = costs.workers["device"], costs.sample_bytes
    mo = [g.output_bytes for g in costs.groups]
    found = [Message(device, w, q * b, True, "samples") for w, b, active in
             ((wo, b_o, True), (ws, b_s, m_s > 0), (wl, b_l, m_l > 0)) if active and w != device]
    for worker, m, b in ((ws, m_s, b_s), (wl, m_l, b_l)):
        if m:
            shared = sum(g.param_bytes for g in costs.groups[:m])
            found += [Message(worker, wo, mo[m - 1] * b, True, "activations"),
                      Message(wo, worker, mo[m - 1] * b, False, "activation gradients"),
                      Message(worker, wo, shared, False, "weight gradients"),
                      Message(wo, worker, shared, False, "averaged gradients")]
    return found


def chain_messages(costs: TrainingCosts, assignment: list[str]) -> list[Message]:
    """What crosses the network in one iteration when group ``i`` is trained on ``assignment[i]``."""
    device, batch = costs.workers["device"], costs.batch
    found = [Message(device, assignment[0], batch * costs.sample_bytes, True, "samples")]
    for i, (here, following) in enumerate(zip(assignment, assignment[1:])):
        size = batch * costs.groups[i].output_bytes
        found += [Message(here, following, size, True, "activations"),
                  Message(following, here, size, False, "activation gradients")]
    return [m for m in found if m.source != m.target]


def link_bytes(topology: Topology, costs: TrainingCosts, found: list[Message]) -> dict[str, float]:
    """Bytes per topology link (``a--b``) of these messages, hop by hop along their routes (tensors sent
    forward over the edge-cloud link shrunk to ``compress_bits``)."""
    compressed = {costs.workers["edge"], costs.workers["cloud"]}
    totals: dict[str, float] = {}
    for message in found:
        for link in topology.route(message.source, message.target):
            shrink = costs.compress_bits / 32.0 if message.forward and {link.a, link.b} == compressed else 1.0
            totals[link.key] = totals.get(link.key, 0.0) + message.size_bytes * shrink
    return totals


def chain_node_s(costs: TrainingCosts, worker: str, group: int) -> float:
    """A layer group trained on one worker for the whole batch (model parallelism): forward, backward, update."""
    table = costs.tables[worker]
    return costs.batch * (table.forward_s[group] + table.backward_s[group]) + table.update_s[group]


def chain_edge_s(costs: TrainingCosts, source: str, target: str, group: int | None) -> float:
    """Moving from ``source`` to ``target`` after ``group`` (None: the input samples, from the device): the
    forward tensor one way, its gradient back (none for the input)."""
    if source == target:
        return 0.0
    if group is None:
        return costs.route(source, target).seconds(costs.batch * costs.sample_bytes, forward=True)
    size = costs.batch * costs.groups[group].output_bytes
    return costs.route(source, target).seconds(size, forward=True) + costs.route(target, source).seconds(size)


def chain_time(costs: TrainingCosts, assignment: list[str]) -> float:
    """Seconds of one iteration when group ``i`` is trained on ``assignment[i]`` for all samples, one worker
    after the other (JointDNN's model: each group's update counted on its path, as its graph does)."""
    total = chain_edge_s(costs, costs.workers["device"], assignment[0], None)
    for i, worker in enumerate(assignment):
        total += chain_node_s(costs, worker, i)
        if i + 1 < len(assignment):
            total += chain_edge_s(costs, worker, assignment[i + 1], i)
    return total
