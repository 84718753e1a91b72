"""Planning: policy. Each planner turns (model graph, topology, cost model) into a Plan and nothing else.

Planners live one file each in ``planners/``; what several of them share
(cut positions, volume tables, the boundary DP, min-max splits, CoopAI's
units, fused paths) lives in ``search/``. They decide; slicing and cutting
are done by ``halocut.passes`` mechanisms afterwards (style.md item 1).

:data:`PLANNERS` is a table ``name -> "module:function"`` (modules of
``planners/``), imported on first use by :func:`get_planner`, so naming a plan
or inspecting a model does not import what a planner needs (the distredge
planner's stable-baselines3).

>>> {'offload', 'neurosurgeon', 'deepar', 'halocut'} <= set(PLANNERS)
True
>>> get_planner("offload").__name__
'plan_offload'
"""

from __future__ import annotations

if __name__ != "halocut.planning":  # one module, one name: a second copy would have its own HalocutError and registries
    raise ImportError(f"import halocut.planning, not {__name__}")

import functools
import importlib
from typing import Protocol

from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.plan import Plan
from halocut.targets.cost import CostModel
from halocut.targets.topology import Topology


class Planner(Protocol):
    def __call__(self, graph: fx.GraphModule, model: str, input_shape: tuple[int, ...], topology: Topology,
                 cost: CostModel) -> Plan: ...


PLANNERS: dict[str, str] = {
    "offload": "offload:plan_offload",
    "neurosurgeon": "neurosurgeon:plan_neurosurgeon",
    "deepar": "deepar:plan_deepar",
    "modnn": "layerwise:plan_modnn",
    "coedge": "layerwise:plan_coedge",
    "deepthings": "fused:plan_deepthings",
    "deeperthings": "fused:plan_deeperthings",
    "aofl": "fused:plan_aofl",
    "sls": "coopai:plan_sls",
    "mls": "coopai:plan_mls",
    "distredge": "distredge:plan_distredge",
    "mw": "fused_layer:plan_mw",
    "nfl": "fused_layer:plan_no_fused_layers",
    "bf": "fused_layer:plan_bf",
    "halocut": "halocut:plan_halocut",
}


def get_planner(name: str) -> Planner:
    """The planner registered as ``name``, imported now; a wrong name lists the known ones."""
    if name not in PLANNERS:
        raise HalocutError(f"unknown planner '{name}'; planners: {', '.join(sorted(PLANNERS))}")
    module, function = PLANNERS[name].split(":")
    planner = getattr(importlib.import_module(f"{__package__}.planners.{module}"), function)

    @functools.wraps(planner)
    def simplified(*args, **kwargs) -> Plan:
        return planner(*args, **kwargs).simplified()  # no split into one part (Plan.simplified)
    return simplified
