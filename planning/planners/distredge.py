"""``distredge``: DistrEdge (paper 003, section IV): LC-PSS cuts the model into layer-volumes, OSDS splits them.

- Layer-volumes: runs of spatially splittable layer groups (``layerwise.layer_groups``) cut only where the
  last layer's output is the one value still needed afterwards; each volume is a ``spatial`` stage tiled by
  rows of its last layer. Layers that need their whole input (the classifier) form ``single`` stages on the
  provider holding the largest share of what they read (paper V-A: "the service provider with the highest
  allocated amount of the last layer-volume").
- Service providers: every computing device but the requester (the requester alone if there is no other).
- LC-PSS (Algorithm 1, :func:`lc_pss`) greedily adds partition points minimising the score of eqs. 3-4,
  averaged over :data:`RANDOM_SPLITS` random split decisions with ``alpha =`` :data:`ALPHA`
  (:class:`PartitionScore`).
- OSDS (Algorithm 2, ``distredge_env.osds``): DDPG over the split points, trained against the simulator.
  The episode budget is the ``episodes`` argument, else the environment variable ``HALOCUT_DISTREDGE_EPISODES``,
  else :data:`DEFAULT_EPISODES` (the paper trains 4000). Seeded: the same inputs give the same plan.
- The plan returned is the best simulated of: every split decision OSDS tried, the trained actor's own,
  rows in proportion to each provider's speed on the volume, and every volume on one provider (Fig. 1 d).
  Not in the paper (whose requester only sends and collects): the requester running the model alone is a
  candidate too, so that slow links (HierTrain's 3 Mbps) never make distributing worse than not.

>>> from pathlib import Path
>>> from halocut.compiler.prepare import prepare_model
>>> from halocut.targets.topology import load_topology
>>> prepared = prepare_model("vgg11", (1, 3, 64, 64))
>>> topology = load_topology(Path(__file__).parents[2] / "examples/topologies/distredge-db.yaml")
>>> plan = plan_distredge(prepared.graph, "vgg11", prepared.input_shape, topology, CostModel(), episodes=0)
>>> [(stage.kind, stage.devices()) for stage in plan.stages]
[('spatial', ['xavier-0']), ('single', ['xavier-0'])]
"""

from __future__ import annotations

import math
import os
import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.graph import compute_nodes
from halocut.ir.layers import value_bytes
from halocut.ir.plan import Plan, single_device_plan
from halocut.ir.regions import Region
from halocut.passes.halo import compute_halos
from halocut.planning.search.distredge_env import Parts, SplitProblem, Volume, osds, outside_inputs
from halocut.planning.search.layers import layer_groups, split_rows, splittable
from halocut.runtime.simulate import simulate
from halocut.targets.cost import CostModel, region_fraction
from halocut.targets.topology import Topology

ALPHA = 0.75  # paper V: LC-PSS alpha
RANDOM_SPLITS = 100  # paper V: |R_s^r|
DEFAULT_EPISODES = 200
EPISODES_VARIABLE = "HALOCUT_DISTREDGE_EPISODES"


def plan_distredge(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                   cost: CostModel, episodes: int | None = None, seed: int = 0) -> Plan:
    budget = episode_budget(episodes)
    providers = [d.name for d in topology.compute_devices() if d.name != topology.requester.name]
    providers = providers or [d.name for d in topology.compute_devices()]
    if not providers:
        raise HalocutError(f"distredge: topology '{topology.name}' has no device that computes")
    volumes = partition(layout(graph), len(providers), ALPHA, seed)
    problem = SplitProblem(graph, model, input_shape, volumes, topology, cost, providers)
    reference_s = problem.latency_s(proportional_splits(problem))
    for provider in providers:  # Fig. 1 (d): every volume on one provider
        problem.latency_s(tuple(((provider, 0, problem.height(s)),) for s in range(len(problem.spatial))))
    if problem.spatial and len(providers) > 1 and budget > 0:
        with _training_context():
            osds(problem, reference_s, budget, seed)
    if topology.requester.computes and topology.requester.name not in providers:
        local = single_device_plan(graph, model, input_shape, topology.requester.name)
        if simulate(graph, local, topology, cost, requests=1).latency_s < problem.best[0]:
            return Plan(model, tuple(input_shape), local.stages, planner="distredge")
    return problem.plan(problem.best[1])


def episode_budget(episodes: int | None) -> int:
    """The OSDS episode budget: the argument, else ``HALOCUT_DISTREDGE_EPISODES``, else the default."""
    if episodes is None:
        text = os.environ.get(EPISODES_VARIABLE, str(DEFAULT_EPISODES))
        try:
            episodes = int(text)
        except ValueError:
            raise HalocutError(f"{EPISODES_VARIABLE}={text!r}: expected a whole number of episodes") from None
    if episodes < 0:
        raise HalocutError(f"distredge: episodes must be 0 or more, got {episodes}")
    return episodes


def proportional_splits(problem: SplitProblem) -> tuple[Parts, ...]:
    """Each volume's rows in proportion to each provider's speed on the whole volume (a linear ratio)."""
    splits = []
    for step, index in enumerate(problem.spatial):
        weights = {p: 1.0 / max(problem.compute_s(p, index, None), 1e-12) for p in problem.providers}
        splits.append(tuple(split_rows(problem.height(step), weights)))
    return tuple(splits)


# --- the model's layout: runs of spatial segments between clean cut points, and whole-input stages


@dataclass(frozen=True)
class Block:
    """A run of spatial segments (LC-PSS partitions it at segment boundaries) or, if not spatial, one stage."""

    segments: tuple[tuple[fx.Node, ...], ...]
    spatial: bool


def layout(graph: fx.GraphModule) -> list[Block]:
    """Splittable layer groups cut into segments where only the last layer's output crosses; the rest single.

    >>> from halocut.compiler.prepare import prepare_model
    >>> blocks = layout(prepare_model("alexnet", (1, 3, 96, 96)).graph)
    >>> [(b.spatial, len(b.segments)) for b in blocks]
    [(True, 8), (False, 1)]
    """
    nodes = compute_nodes(graph)
    position = {n.name: i + 1 for i, n in enumerate(nodes)}
    clean = clean_positions(graph)
    blocks: list[Block] = []
    run: list[list[fx.Node]] = []
    for group in [*layer_groups(graph), None]:
        if group is not None and all(splittable(n) for n in group):
            run.append(group)
            continue
        segments, current = [], []
        for member in run:
            current += member
            if position[member[-1].name] in clean:
                segments.append(tuple(current))
                current = []
        if segments:
            blocks.append(Block(tuple(segments), True))
        _add_single(blocks, current + (group or []))
        run = []
    return blocks


def _add_single(blocks: list[Block], nodes: list[fx.Node]) -> None:
    if not nodes:
        return
    if blocks and not blocks[-1].spatial:
        blocks[-1] = Block((blocks[-1].segments[0] + tuple(nodes),), False)
    else:
        blocks.append(Block((tuple(nodes),), False))


def clean_positions(graph: fx.GraphModule) -> set[int]:
    """Positions ``p`` (compute nodes before the cut) where the one value needed later is node ``p - 1``'s."""
    nodes = compute_nodes(graph)
    index = {n.name: i for i, n in enumerate(nodes)}
    last_use: dict[str, int] = {}
    for node in graph.graph.nodes:
        at = index.get(node.name, len(nodes))  # the output node reads after every compute node
        for source in node.all_input_nodes:
            if source.op != "get_attr":
                last_use[source.name] = max(last_use.get(source.name, -1), at)
    return {p for p in range(1, len(nodes) + 1)
            if [v for v, used in last_use.items() if used >= p and index.get(v, -1) < p] == [nodes[p - 1].name]}


# --- LC-PSS


def lc_pss(count: int, score: Callable[[int, int], float]) -> list[int]:
    """Algorithm 1: partition points over layers ``0 .. count``; ``score(a, b)`` is the averaged C_p of volume [a, b).

    Each loop tries, in every volume, each point ``j`` (an end point: no new cut) and adds the best; it stops
    when no volume gains a point. C_p of a scheme is the sum of its volumes' scores, so comparing the two
    halves of a volume with the whole is comparing the schemes.

    >>> lc_pss(4, lambda a, b: 3 + (b - a) ** 2)
    [0, 2, 4]
    """
    points = [0, count]
    while True:
        chosen = set(points)
        for a, b in zip(points, points[1:]):
            best, best_j = math.inf, a
            for j in range(a, b + 1):
                total = score(a, j) + score(j, b) if a < j < b else score(a, b)
                if total < best:
                    best, best_j = total, j
            chosen.add(best_j)
        if len(chosen) == len(points):
            return points
        points = sorted(chosen)


class PartitionScore:
    """Eqs. 3-4: ``C_p = alpha * T + (1 - alpha) * O`` of a volume, averaged over random split decisions.

    T: the bytes sent to the volume's split-parts: each part's input rows with their halo, less the rows its
    provider computed itself in the volume before (the i-th part of every volume is the i-th provider's,
    eq. 6); O: the operations (FLOPs) the split-parts compute, the halo rows computed
    twice included. More volumes mean less halo recomputation (O falls) but more data sent between them (T
    rises), which is the trade-off the paper describes (alpha = 0: layer by layer; 1: few volumes). The paper
    sums bytes and operations without saying how they are scaled; here each is divided by its value for the
    initial scheme (every run one volume), so both are dimensionless. A random split decision gives every
    segment ``parts - 1`` sorted uniform points; a volume uses those of its last segment (eq. 9's rounding).
    """

    def __init__(self, runs: list[tuple[tuple[fx.Node, ...], ...]], parts: int, alpha: float,
                 samples: int = RANDOM_SPLITS, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.alpha = alpha
        self.tables = [self._tables(run, np.sort(rng.random((samples, len(run), parts - 1)), axis=-1))
                       for run in runs]
        self.bytes0 = sum(t[0][0][len(t[0]) - 1] for t in self.tables) or 1.0
        self.flops0 = sum(t[1][0][len(t[1]) - 1] for t in self.tables) or 1.0

    def score(self, run: int, a: int, b: int) -> float:
        sent, computed = self.tables[run]
        return self.alpha * sent[a][b] / self.bytes0 + (1.0 - self.alpha) * computed[a][b] / self.flops0

    def _tables(self, run, fractions: np.ndarray) -> tuple[list[list[float]], list[list[float]]]:
        """Bytes sent to and FLOPs computed by every volume [a, b) of the run, summed over the samples."""
        count = len(run)
        sent = [[0.0] * (count + 1) for _ in range(count + 1)]
        computed = [[0.0] * (count + 1) for _ in range(count + 1)]
        walk = _SegmentWalk(run)
        for sample in fractions:
            edges = [_edges(segment[-1].meta["layer"].output_shape[-2], points) for segment, points in zip(run, sample)]
            for b in range(1, count + 1):
                for part in range(len(edges[b - 1]) - 1):
                    self._add_part(walk, edges, b, part, sent, computed)
        return sent, computed

    @staticmethod
    def _add_part(walk, edges, b: int, part: int, sent, computed) -> None:
        """Walk one split-part of volumes ending at ``b`` back through the run, adding to every [s, b)."""
        rows: tuple[int, int] | None = (edges[b - 1][part], edges[b - 1][part + 1])
        flops = 0.0
        for s in range(b - 1, -1, -1):
            if rows is None or rows[1] <= rows[0]:  # the part needs nothing of the earlier segments
                computed[s][b] += flops
                continue
            segment_flops, rows, read_bytes = walk(s, rows)
            flops += segment_flops
            computed[s][b] += flops
            if s > 0 and rows is not None:  # the i-th part's provider holds its own rows of the volume before
                held = (edges[s - 1][part], edges[s - 1][part + 1])
                kept = max(0, min(rows[1], held[1]) - max(rows[0], held[0]))
                read_bytes *= 1.0 - kept / (rows[1] - rows[0])
            sent[s][b] += read_bytes


def _edges(height: int, points: np.ndarray) -> list[int]:
    """Eq. 9's rounding of sorted split points in [0, 1] to row edges ``0 .. height``."""
    return [0, *(min(math.floor(height * u + 0.5), height) for u in points), height]


class _SegmentWalk:
    """Memoised halo of one segment: (FLOPs, rows it needs of the previous segment, bytes it reads from outside)."""

    def __init__(self, run):
        self.run = run
        self.nodes = {n.name: n for segment in run for node in segment for n in (node, *node.all_input_nodes)}
        self.sources = [outside_inputs(segment) for segment in run]
        self.memo: dict[tuple[int, int, int], tuple[float, tuple[int, int] | None, float]] = {}

    def __call__(self, s: int, rows: tuple[int, int]) -> tuple[float, tuple[int, int] | None, float]:
        key = (s, *rows)
        if key not in self.memo:
            self.memo[key] = self._walk(s, rows) if rows[1] > rows[0] else (0.0, None, 0.0)
        return self.memo[key]

    def _walk(self, s: int, rows: tuple[int, int]):
        segment = list(self.run[s])
        needs = compute_halos(segment, Region(rows, (0, segment[-1].meta["layer"].output_shape[-1])))
        flops = sum(n.meta["layer"].flops * region_fraction(n.meta["layer"], needs[n.name]) for n in segment
                    if not needs[n.name].is_empty())
        read = sum(value_bytes(self.nodes[v], needs[v]) for v in self.sources[s] if v in needs)
        previous = self.run[s - 1][-1].name if s > 0 else None
        before = needs.get(previous)
        return flops, (before.rows if before is not None and not before.is_empty() else None), read


def partition(blocks: list[Block], parts: int, alpha: float, seed: int) -> list[Volume]:
    """LC-PSS on every spatial run (one score for the whole model), then the volumes in graph order."""
    runs = [b.segments for b in blocks if b.spatial]
    scores = PartitionScore(runs, parts, alpha, seed=seed)
    volumes, run = [], 0
    for block in blocks:
        if not block.spatial:
            volumes.append(Volume(block.segments[0], False))
            continue
        points = lc_pss(len(block.segments), lambda a, b, r=run: scores.score(r, a, b))
        volumes += [Volume(sum(block.segments[a:b], ()), True) for a, b in zip(points, points[1:])]
        run += 1
    return volumes


@contextmanager
def _training_context():
    """One torch thread (the networks are small: threads only add synchronisation), and the global random
    generators, which stable-baselines3 seeds, put back afterwards so planning leaves no trace."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
