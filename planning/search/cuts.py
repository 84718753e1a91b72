"""Shared by the cut planners: where a graph can be cut, and a plan from consecutive segments.

A cut position ``k`` puts the first ``k`` compute nodes (graph order) before the
cut; the tensors crossing it are the values made before ``k`` and used from
``k`` on. Chain positions have one crossing tensor; positions inside a residual
block have two.

>>> from halocut.compiler.prepare import prepare_model
>>> graph = prepare_model("lenet5").graph
>>> cut_positions(graph)[:4]
[0, 1, 2, 3]
"""

from __future__ import annotations

from torch import fx

from halocut.ir.graph import compute_nodes
from halocut.ir.plan import Plan, Stage


def crossing(graph: fx.GraphModule, position: int) -> int:
    """How many values cross a cut after ``position`` compute nodes (the model input counts at 0)."""
    nodes = compute_nodes(graph)
    before = {n.name for n in nodes[:position]} | {n.name for n in graph.graph.nodes if n.op == "placeholder"}
    return len({s.name for n in nodes[position:] for s in n.all_input_nodes if s.name in before})


def cut_positions(graph: fx.GraphModule, max_crossing: int = 2) -> list[int]:
    """Every position (0 .. number of nodes) where at most ``max_crossing`` tensors cross."""
    count = len(compute_nodes(graph))
    return [k for k in range(count + 1) if k in (0, count) or crossing(graph, k) <= max_crossing]


def segments_plan(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], bounds: list[int],
                  devices: list[str], planner: str) -> Plan:
    """Single-device stages: nodes ``bounds[i]:bounds[i+1]`` on ``devices[i]``; empty segments are dropped."""
    names = [n.name for n in compute_nodes(graph)]
    edges = [0, *bounds, len(names)]
    stages = tuple(Stage("single", tuple(names[a:b]), device=d) for a, b, d in zip(edges, edges[1:], devices) if b > a)
    return Plan(model, tuple(input_shape), stages, planner=planner)
