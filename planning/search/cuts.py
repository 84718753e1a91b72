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
    return crossings(graph)[position]


UNCUTTABLE = 1 << 20  # what a value that is not a tensor counts for: more than any cut may carry


def crossings(graph: fx.GraphModule) -> list[int]:
    """:func:`crossing` at every position 0 .. number of compute nodes, in one sweep over the edges.

    A value made by compute node ``d`` (a placeholder: before position 0) and last used by compute node
    ``u`` crosses every position from ``d + 1`` to ``u``. A value that is neither a tensor nor a tuple of
    tensors (``nn.MultiheadAttention``'s ``(output, None)``, read by a ``getitem``) has no size to send
    between machines: it counts :data:`UNCUTTABLE`, so no cut falls where it crosses.
    """
    nodes = compute_nodes(graph)
    made = {n.name: 0 for n in graph.graph.nodes if n.op == "placeholder"}
    made.update({n.name: i + 1 for i, n in enumerate(nodes)})
    last: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for source in node.all_input_nodes:
            if source.name in made:
                last[source.name] = i
    steps = [0] * (len(nodes) + 2)
    weight = {n.name: 1 if "tensor_meta" in n.meta or n.op == "placeholder" else UNCUTTABLE for n in nodes}
    for name, used in last.items():
        if made[name] <= used:
            steps[made[name]] += weight.get(name, 1)
            steps[used + 1] -= weight.get(name, 1)
    counts, running = [], 0
    for step in steps[:-1]:
        running += step
        counts.append(running)
    return counts


def cut_positions(graph: fx.GraphModule, max_crossing: int = 2) -> list[int]:
    """Every position (0 .. number of nodes) where at most ``max_crossing`` tensors cross."""
    counts = crossings(graph)
    count = len(counts) - 1
    return [k for k in range(count + 1) if k in (0, count) or counts[k] <= max_crossing]


def segments_plan(graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], bounds: list[int],
                  devices: list[str], planner: str) -> Plan:
    """Single-device stages: nodes ``bounds[i]:bounds[i+1]`` on ``devices[i]``; empty segments are dropped."""
    names = [n.name for n in compute_nodes(graph)]
    edges = [0, *bounds, len(names)]
    stages = tuple(Stage("single", tuple(names[a:b]), device=d) for a, b, d in zip(edges, edges[1:], devices) if b > a)
    return Plan(model, tuple(input_shape), stages, planner=planner)
