"""Planners: each turns (model graph, topology, cost model) into a Plan and nothing else.

Planners register by name in :data:`PLANNERS`; :func:`get_planner` lists the
known names when given a wrong one. They decide; slicing and cutting are done
by ``passes/`` mechanisms afterwards (style.md item 1).

>>> sorted(PLANNERS)[:1]
['offload']
"""

from __future__ import annotations

from typing import Callable, Protocol

from torch import fx

from compiler.errors import HalocutError
from compiler.plan import Plan
from targets.cost import CostModel
from targets.topology import Topology


class Planner(Protocol):
    def __call__(self, graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                 cost: CostModel) -> Plan: ...


PLANNERS: dict[str, Planner] = {}


def register(name: str) -> Callable[[Planner], Planner]:
    def decorate(planner: Planner) -> Planner:
        PLANNERS[name] = planner
        return planner
    return decorate


def get_planner(name: str) -> Planner:
    if name not in PLANNERS:
        raise HalocutError(f"unknown planner '{name}'; planners: {', '.join(sorted(PLANNERS))}")
    return PLANNERS[name]


from passes.planning import offload  # noqa: E402,F401  (registers itself)
