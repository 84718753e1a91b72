"""Planners: each turns (model graph, topology, cost model) into a Plan and nothing else.

Planners register by name in :data:`PLANNERS`; :func:`get_planner` lists the
known names when given a wrong one. They decide; slicing and cutting are done
by ``passes/`` mechanisms afterwards (style.md item 1).

>>> {'offload', 'neurosurgeon', 'deepar'} <= set(PLANNERS)
True
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    simulation: object  # runtime.simulate.SimulationResult
    planning_time_s: float


def plan_model(model: str, topology_path: str, planner: str, input_shape: tuple[int, ...] | None = None) -> PlanResult:
    """The work behind ``halocut plan``: prepare the model, run the planner, score the plan with the simulator."""
    from compiler.prepare import prepare_model
    from runtime.simulate import simulate
    from targets.topology import load_topology

    choose = get_planner(planner)
    topology = load_topology(topology_path)
    prepared = prepare_model(model, input_shape)
    start = time.perf_counter()
    plan = choose(prepared.graph, prepared.name, prepared.input_shape, topology, CostModel())
    elapsed = time.perf_counter() - start
    return PlanResult(plan, simulate(prepared.graph, plan, topology), elapsed)


def _register_all() -> None:
    """Import every module of this package: each planner registers itself on import."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_register_all()
