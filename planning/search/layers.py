"""Layer groups and row splits: what several planners ask of a graph before they decide anything.

A *layer group* is a layer and the pointwise ops right after it (fused into
it by every backend); a node is *splittable* when it tiles by rows.
"""

from __future__ import annotations

from torch import fx

from halocut.ir.graph import compute_nodes
from halocut.ir.ops import POINTWISE
from halocut.passes.halo import has_halo_rule


def layer_groups(graph: fx.GraphModule) -> list[list[fx.Node]]:
    """Consecutive groups: a layer and the pointwise ops that follow it with no other user in between."""
    groups: list[list[fx.Node]] = []
    for node in compute_nodes(graph):
        kind = node.meta["layer"].kind
        previous = groups[-1][-1] if groups else None
        sources = [s for s in node.all_input_nodes if s.op != "get_attr"]
        if (kind in POINTWISE and previous is not None and sources == [previous] and len(previous.users) == 1
                and splittable(previous) == splittable(node)):
            groups[-1].append(node)
        else:
            groups.append([node])
    return groups


def splittable(node: fx.Node) -> bool:
    """A node tiles by rows: it has a halo rule and more than one output row."""
    return has_halo_rule(node) and node.meta["layer"].output_shape[-2] > 1


def split_rows(height: int, weights: dict[str, float]) -> list[tuple[str, int, int]]:
    """Rows ``[0, height)`` in proportion to ``weights`` (largest remainders); devices given none are left out.

    >>> split_rows(10, {"a": 1.0, "b": 3.0})
    [('a', 0, 3), ('b', 3, 10)]
    """
    total = sum(weights.values())
    shares = {d: height * w / total for d, w in weights.items()}
    rows = {d: int(s) for d, s in shares.items()}
    for d in sorted(shares, key=lambda d: shares[d] - rows[d], reverse=True)[:height - sum(rows.values())]:
        rows[d] += 1
    spans, start = [], 0
    for device in weights:
        if rows[device]:
            spans.append((device, start, start + rows[device]))
            start += rows[device]
    return spans
