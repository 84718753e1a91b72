"""What a training policy returns, and how it becomes a :class:`~halocut.ir.train_plan.TrainPlan` with its report.

>>> TrainChoice("all-edge", 1.5, chain=("edge", "edge")).is_hiertrain
False
"""

from __future__ import annotations

from dataclasses import dataclass

from halocut.ir.train_plan import TrainPlan
from halocut.targets.topology import Topology
from halocut.targets.training import (HierTrainModel, Message, Schedule, TrainingCosts, chain_messages, link_bytes,
                                      messages)


@dataclass(frozen=True)
class TrainChoice:
    """A policy's schedule (HierTrain tasks) or chain (one worker per group), and its T_total."""

    policy: str
    t_total_s: float
    schedule: Schedule | None = None
    chain: tuple[str, ...] | None = None
    lp_b: tuple[float, float, float] | None = None  # the LP's (b_o, b_s, b_l) before rounding
    lp_t_total_s: float | None = None  # the LP's optimum for the chosen mapping and (m_s, m_l)
    solved: int = 0  # LPs solved, or integer points evaluated by the exact search

    @property
    def is_hiertrain(self) -> bool:
        return self.schedule is not None


def to_train_plan(choice: TrainChoice, costs: TrainingCosts, topology: Topology, input_shape: tuple[int, ...],
                  planning_time_s: float) -> TrainPlan:
    """The plan file of a choice: the schedule, and per worker its layers, samples and the bytes it sends."""
    found = messages(costs, choice.schedule) if choice.schedule else chain_messages(costs, list(choice.chain))
    report = {"t_total_s": choice.t_total_s, "planning_time_s": planning_time_s, "topology": topology.name,
              "per_worker": _per_worker(choice, costs, found),
              "link_bytes": link_bytes(topology, costs, found), "sample_bytes": costs.sample_bytes,
              "tables": {name: table.source for name, table in costs.tables.items()}}
    if choice.schedule:
        model = HierTrainModel(costs, choice.schedule.mapping, choice.schedule.m_s, choice.schedule.m_l)
        report["phases_s"] = model.phase_seconds(choice.schedule.b)
    if choice.lp_b is not None:
        report["lp"] = {"b": list(choice.lp_b), "t_total_s": choice.lp_t_total_s, "solved": choice.solved}
    schedule = choice.schedule
    return TrainPlan(costs.model, tuple(input_shape), costs.batch, choice.policy, dict(costs.workers),
                     tuple(g.name for g in costs.groups),
                     dict(zip("osl", schedule.mapping)) if schedule else None,
                     schedule.m_s if schedule else None, schedule.m_l if schedule else None,
                     tuple(int(x) for x in schedule.b) if schedule else None, choice.chain, costs.compress_bits,
                     report)


def _per_worker(choice: TrainChoice, costs: TrainingCosts, found: list[Message]) -> dict[str, dict]:
    workers = {}
    for role, name in costs.workers.items():
        if choice.schedule:
            schedule = choice.schedule
            task = "osl"[schedule.mapping.index(name)]
            layers = {"o": costs.layers, "s": schedule.m_s, "l": schedule.m_l}[task]
            samples = schedule.b["osl".index(task)]
            entry = {"task": task.upper(), "layers": [1, layers] if layers else [], "samples": int(samples)}
        else:
            held = [i + 1 for i, w in enumerate(choice.chain) if w == name]
            entry = {"layers": held, "samples": costs.batch if held else 0}
        sends: dict[str, float] = {}
        for message in found:
            if message.source == name:
                sends[message.target] = sends.get(message.target, 0.0) + message.size_bytes
        workers[name] = {"role": role, **entry, "sends_bytes": sends}
    return workers
