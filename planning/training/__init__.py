"""Training policies (paper 002): HierTrain's hybrid-parallel planner and the baselines it is measured against.

A policy takes the :class:`~halocut.targets.training.TrainingCosts` of a model on a topology's device, edge
and cloud and returns a :class:`~halocut.planning.training.choice.TrainChoice`. :data:`POLICIES` maps a
name to ``"module:function"`` in this package, imported on first use like the inference planners.

- ``hiertrain``: Algorithm 1: 6 mappings x (m_s, m_l), an LP per pair (HiGHS), rounded as Sec. V says;
- ``hiertrain-exact``: the same enumeration with an exact integer search over (b_o, b_s, b_l);
- ``all-edge``, ``all-cloud``: the device sends every sample to one machine, which trains alone;
- ``jointdnn``: device and cloud, one cut, forward and backward (model parallelism);
- ``jointdnn+``: device, edge and cloud, a shortest path over the layer groups;
- ``jalad``: edge and cloud, one cut, tensors sent forward over the edge-cloud link in 8 bits.

>>> sorted(POLICIES)
['all-cloud', 'all-edge', 'hiertrain', 'hiertrain-exact', 'jalad', 'jointdnn', 'jointdnn+']
>>> get_policy("hiertrain").__name__
'plan_hiertrain'
"""

from __future__ import annotations

import importlib
from typing import Callable

from halocut.ir.errors import HalocutError

POLICIES: dict[str, str] = {
    "hiertrain": "hiertrain:plan_hiertrain",
    "hiertrain-exact": "hiertrain:plan_hiertrain_exact",
    "all-edge": "baselines:plan_all_edge",
    "all-cloud": "baselines:plan_all_cloud",
    "jointdnn": "baselines:plan_jointdnn",
    "jointdnn+": "baselines:plan_jointdnn_plus",
    "jalad": "baselines:plan_jalad",
}
# JALAD's own setting (paper 002, Sec. VI-C-5: "we set the number of bits c used in data compression as 8")
DEFAULT_COMPRESS_BITS = {"jalad": 8}


def get_policy(name: str) -> Callable:
    """The policy registered as ``name``; a wrong name lists the known ones."""
    if name not in POLICIES:
        raise HalocutError(f"unknown training policy '{name}'; policies: {', '.join(sorted(POLICIES))}")
    module, function = POLICIES[name].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), function)
