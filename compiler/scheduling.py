"""``halocut schedule``: DeePar's multi-task online scheduler over a workload file (paper 000, Sec. IV).

Each distinct (model, input shape) of a workload is prepared once; its
:class:`~halocut.planning.scheduling.costs.ModelCosts` is computed once per
(model, input shape, device kind, edge kind, cloud kind), so thousands of
tasks of the four models cost four preparations.

>>> from pathlib import Path
>>> workload = Path(__file__).parents[1] / "examples/workloads/small.yaml"
>>> schedule, costs = schedule_file(workload, "deepar")
>>> schedule.policy, len(schedule.tasks) == len(costs.workload.tasks), schedule.total_delay_s > 0
('deepar', True, True)
>>> check_schedule(schedule, costs.workload, costs) > 0
True
"""

from __future__ import annotations

from pathlib import Path

from halocut.compiler.prepare import PreparedModel, prepare_model
from halocut.ir.errors import HalocutError
from halocut.ir.schedule import Schedule
from halocut.planning.scheduling.costs import ModelCosts, model_costs
from halocut.planning.scheduling.online import schedule_workload
from halocut.planning.scheduling.replay import check_schedule
from halocut.targets.cost import CostModel
from halocut.targets.topology import catalog_device
from halocut.targets.workload import Edge, Task, Workload, load_workload

__all__ = ["WorkloadCosts", "schedule_file", "check_schedule_file", "check_schedule"]


class WorkloadCosts:
    """``costs(task, edge) -> ModelCosts`` for one workload, prepared and cached as the module says."""

    def __init__(self, workload: Workload, cost: CostModel | None = None):
        self.workload = workload
        self.cost = cost or CostModel()
        self.prepared: dict[tuple, PreparedModel] = {}
        self._costs: dict[tuple, ModelCosts] = {}
        self.shapes = {t.name: self.model(t).input_shape for t in workload.tasks}

    def model(self, task: Task) -> PreparedModel:
        key = (task.model, task.input_shape)
        if key not in self.prepared:
            try:
                self.prepared[key] = prepare_model(task.model, task.input_shape)
            except HalocutError as error:
                raise HalocutError(f"{self.workload.source}: task '{task.name}'.model: {error}") from None
        return self.prepared[key]

    def __call__(self, task: Task, edge: Edge) -> ModelCosts:
        device = self.workload.device(task.device)
        key = (task.model, task.input_shape, device.kind, edge.kind, self.workload.cloud_kind)
        if key not in self._costs:
            self._costs[key] = model_costs(self.model(task).graph, catalog_device(device.kind), catalog_device(edge.kind),
                                           catalog_device(self.workload.cloud_kind), self.cost)
        return self._costs[key]


def schedule_file(workload_path: str | Path, policy: str = "deepar") -> tuple[Schedule, WorkloadCosts]:
    """Schedule a workload file with ``policy``; returns the schedule and the costs it was priced with."""
    costs = WorkloadCosts(load_workload(workload_path))
    return schedule_workload(costs.workload, costs, policy, costs.shapes), costs


def check_schedule_file(schedule_path: str | Path, workload_path: str | Path) -> tuple[Schedule, int]:
    """``halocut schedule --check``: replay a schedule file against its workload; returns it and the instants
    checked (a violation is a one-line HalocutError)."""
    schedule = Schedule.load(schedule_path)
    costs = WorkloadCosts(load_workload(workload_path))
    return schedule, check_schedule(schedule, costs.workload, costs, str(schedule_path))
