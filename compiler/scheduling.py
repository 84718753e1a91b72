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

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import torch

from halocut.backends.base import Part, Target
from halocut.backends.torch import emit as emit_torch
from halocut.compiler.prepare import PreparedModel, prepare_model
from halocut.ir.errors import HalocutError
from halocut.ir.names import part_name
from halocut.ir.schedule import Schedule, ScheduledTask
from halocut.passes.lower import lower_plan
from halocut.planning.scheduling.costs import ModelCosts, model_costs
from halocut.planning.scheduling.online import schedule_workload
from halocut.planning.scheduling.replay import check_schedule
from halocut.planning.search.cuts import segments_plan
from halocut.runtime.reference import run_lowered
from halocut.runtime.schedule_run import Machine, ScheduleRun, Stage, TaskRun, execute
from halocut.targets.cost import CostModel
from halocut.targets.topology import catalog_device
from halocut.targets.workload import Edge, Task, Workload, load_workload

__all__ = ["WorkloadCosts", "schedule_file", "check_schedule_file", "check_schedule", "run_schedule"]

MAX_RUN_SAMPLES = 2000  # --run executes every sample for real: a workload beyond this is refused


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
                index = self.workload.tasks.index(task)
                raise HalocutError(f"{self.workload.source}: tasks[{index}].model ('{task.name}'): {error}") from None
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


def run_schedule(schedule: Schedule, costs: WorkloadCosts, address: str | None = None,
                 time_scale: float | None = None, progress: bool = False, seed: int = 0) -> ScheduleRun:
    """``halocut schedule --run``: compile each task's parts once (per model, input shape and cuts, through
    the build cache), run the schedule on Ray (:mod:`halocut.runtime.schedule_run`), every task on seeded
    random samples, each output checked against the original model's."""
    workload = costs.workload
    total = sum(t.samples for t in schedule.tasks)
    if total > MAX_RUN_SAMPLES:
        raise HalocutError(f"{workload.source}: --run executes every sample; this workload has {total} "
                           f"(at most {MAX_RUN_SAMPLES}): lower the tasks' samples")
    directory = Path(tempfile.mkdtemp(prefix="halocut-schedule-parts-"))
    parts: dict[str, Path] = {}
    runs = []
    for index, entry in enumerate(schedule.tasks):
        task = next(t for t in workload.tasks if t.name == entry.name)
        prepared = costs.model(task)
        edge = workload.edge(entry.edge) if entry.edge else workload.edge(workload.device(task.device).edges[0])
        names = _parts(prepared, entry.cuts, directory, parts)
        phases = costs(task, edge).phases(entry.choice, entry.cuts, entry.downlink_bps or task.downlink_bps,
                                          entry.uplink_bps or task.uplink_bps, task.input_bytes)
        generator = torch.Generator().manual_seed(seed * 100_003 + index)
        inputs = [torch.randn(prepared.input_shape, generator=generator) for _ in range(entry.samples)]
        with torch.no_grad():
            reference = tuple(prepared.module(x).numpy() for x in inputs)
        runs.append(TaskRun(entry.name, _stages(entry, workload.cloud, names, phases), tuple(x.numpy() for x in inputs),
                            reference, entry.start_s, entry.end_s))
    machines = [Machine(d.name, 1) for d in workload.devices] + [Machine(e.name, e.capacity) for e in workload.edges]
    machines.append(Machine(workload.cloud, max(1, len(runs))))
    return execute(schedule.policy, runs, machines, parts, address, time_scale, progress=progress)


def _parts(prepared: PreparedModel, cuts: tuple[int, int], directory: Path, parts: dict[str, Path]) -> dict[str, str]:
    """The device, edge and cloud parts of ``prepared`` cut at ``cuts`` (role -> part name; empty segments
    have none), each emitted once as a torch.export artifact into ``directory``."""
    roles = ["device", "edge", "cloud"]
    plan = segments_plan(prepared.graph, prepared.name, prepared.input_shape, list(cuts), roles, "deepar")
    key = hashlib.sha256(f"{prepared.name}|{prepared.input_shape}|{cuts}".encode()).hexdigest()[:12]
    recorded: dict[str, tuple] = {}

    def record(name, module, args):
        recorded[name] = (module, [a.detach().clone() for a in args])
        return module(*args)

    named = {stage.device: f"{key}-{stage.device}" for stage in plan.stages}
    if all(name in parts for name in named.values()):
        return named
    example = torch.randn(prepared.input_shape, generator=torch.Generator().manual_seed(0))
    run_lowered(prepared.graph, lower_plan(prepared.graph, plan), example, call=record)
    for index, stage in enumerate(plan.stages):
        module, args = recorded[part_name(index)]
        part = Part(named[stage.device], module, tuple(args), ("x",), ("y",))
        artifact = emit_torch(part, Target("torch"), directory)
        parts[part.name] = directory / artifact.path
    return named


def _stages(entry: ScheduledTask, cloud: str, names: dict[str, str], phases: dict[str, float]) -> tuple[Stage, ...]:
    """The chain of calls of one scheduled task (modelled seconds for all its samples; see schedule_run)."""
    n = entry.samples
    if entry.choice == "device":
        return (Stage(entry.device, names.get("device"), 0.0, phases["device"] * n),)
    chain = []
    if "device" in names:
        chain.append(Stage(entry.device, names["device"], 0.0, phases["device"] * n))
    if entry.choice in ("edge", "edge-cloud"):
        chain.append(Stage(entry.edge, names.get("edge"), phases["downlink"] * n, phases["edge"] * n))
    if entry.choice in ("cloud", "edge-cloud"):
        relay = phases["downlink"] * n if entry.choice == "cloud" else 0.0
        chain.append(Stage(cloud, names.get("cloud"), relay + phases["uplink"] * n, phases["cloud"] * n))
    last = chain[-1]
    chain[-1] = Stage(last.machine, last.part, last.receive_s, last.compute_s, phases["return"] * n)
    return tuple(chain)
