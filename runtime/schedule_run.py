"""``halocut schedule --run``: a multi-task schedule executed on Ray, every output verified.

Each mobile device, edge server and the cloud is one Ray actor placed by its
resource (as ``halocut run`` places machines, :func:`~halocut.runtime.ray_exec.connect`).
An edge server's actor has r_e slots (``max_concurrency``), a device's one, the
cloud's as many as there are tasks: a schedule that puts more tasks on an edge
than it has slots makes them wait, and they end late.

A task is a chain of at most three stage calls (device, edge, cloud), each on
its machine's actor, each passing its output on as a Ray object. A stage runs
its part (a ``torch.export`` artifact, sent to the actor as bytes with their
sha256) on every sample, for real, and is paced to the schedule's model of the
target hardware: it first waits out the transfer into its machine (bytes over
the allocated bandwidth), then computes, then waits until the modelled compute
time has passed (when the real computation took longer, it ends late and the
report shows it); the last stage also waits out the result's way back. Every
modelled second lasts ``time_scale`` wall seconds. The links are not shaped:
the bytes travel through Ray's object store on this machine, their time is
the model's (an emulated network is issue 13's testbed).

The driver submits each task's chain at its scheduled start and measures each
stage's begin and end on the actor (``time.time()``: one clock on one machine;
on a multi-machine cluster the clocks' offsets add to the measured times).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
from rich.progress import Progress
from rich.table import Table

from halocut.backends.base import Artifact, Target
from halocut.backends.torch import load as load_torch
from halocut.ir.errors import HalocutError, one_line
from halocut.runtime.ray_exec import connect

RELATIVE_TOLERANCE = 1e-4  # design.md: max abs error <= 1e-4 * max(1, max abs of the reference)
ON_TIME = 0.25  # a task is on time when its measured end is within this share of its scheduled end
LEAD_S = 1.0  # wall seconds between the actors being ready and the schedule's instant 0


@dataclass(frozen=True)
class Stage:
    """One call of a task's chain: on ``machine``, the artifact ``part`` (None: a relay, nothing computed),
    after ``receive_s`` of transfer into it, for ``compute_s``, then ``after_s`` (the result's way back);
    modelled seconds for all of the task's samples."""

    machine: str
    part: str | None
    receive_s: float
    compute_s: float
    after_s: float = 0.0


@dataclass(frozen=True)
class TaskRun:
    name: str
    stages: tuple[Stage, ...]
    inputs: tuple[np.ndarray, ...]  # one array per sample
    reference: tuple[np.ndarray, ...]  # the original model's output on each
    start_s: float  # scheduled, modelled seconds from instant 0
    end_s: float


@dataclass(frozen=True)
class Machine:
    name: str
    slots: int  # calls at once: r_e for an edge server, 1 for a device


@dataclass
class Measured:
    name: str
    scheduled_start_s: float  # wall seconds from instant 0 (scaled)
    scheduled_end_s: float
    start_s: float
    end_s: float
    compute_s: float  # real computation on the actors, all stages
    max_error: float
    tolerance: float

    @property
    def verified(self) -> bool:
        return self.max_error <= self.tolerance

    @property
    def end_error(self) -> float:
        """|measured end - scheduled end| over the scheduled end (both from instant 0)."""
        return abs(self.end_s - self.scheduled_end_s) / max(self.scheduled_end_s, 1e-9)

    @property
    def on_time(self) -> bool:
        return self.end_error <= ON_TIME


@dataclass
class ScheduleRun:
    policy: str
    time_scale: float
    tasks: list[Measured]
    wall_s: float
    artifacts: int  # distinct parts compiled (the build cache makes repeats free)
    machines: dict[str, int] = field(default_factory=dict)  # actor -> slots

    def to_json(self) -> dict:
        return {"policy": self.policy, "time_scale": self.time_scale, "wall_s": self.wall_s,
                "artifacts": self.artifacts, "machines": self.machines,
                "verified": sum(t.verified for t in self.tasks), "on_time": sum(t.on_time for t in self.tasks),
                "tasks": [{**t.__dict__, "verified": t.verified, "end_error": t.end_error, "on_time": t.on_time}
                          for t in self.tasks]}


class ScheduleHost:
    """One machine's actor (plain Python, testable without Ray): holds parts, runs paced stages."""

    def __init__(self, machine: str, threads: int = 1):
        import torch

        torch.set_num_threads(max(1, threads))
        self.machine = machine
        self.directory = Path(tempfile.mkdtemp(prefix=f"halocut-schedule-{machine}-"))
        self.runners: dict[str, object] = {}

    def host(self, files: dict[str, tuple[bytes, str]]) -> list[str]:
        """Load each part ``name -> (bytes, sha256)`` once; bytes that do not match their sha256 are refused."""
        for name, (data, digest) in files.items():
            if name in self.runners:
                continue
            if hashlib.sha256(data).hexdigest() != digest:
                raise HalocutError(f"{self.machine}: part '{name}' arrived damaged (sha256 mismatch); refused")
            path = self.directory / f"{name}.pt2"
            path.write_bytes(data)
            self.runners[name] = load_torch(Artifact(name, "torch", Target("torch"), path.relative_to(self.directory)),
                                            self.directory)
        return sorted(self.runners)

    def stage(self, upstream, stage: Stage, scale: float) -> dict:
        """Run one stage on ``upstream`` (the previous stage's result, or the samples); see the module."""
        begin = time.time()
        samples = upstream["y"] if isinstance(upstream, dict) else upstream
        _sleep_until(begin + stage.receive_s * scale)
        ready = time.time()
        if stage.part is None:
            outputs, compute = samples, 0.0
        else:
            runner = self.runners[stage.part]
            outputs = [runner([x])[0] for x in samples]
            compute = time.time() - ready
        _sleep_until(ready + max(stage.compute_s * scale, 0.0))
        _sleep_until(time.time() + stage.after_s * scale)
        previous = upstream.get("stages", []) if isinstance(upstream, dict) else []
        return {"y": outputs, "stages": [*previous, (self.machine, begin, time.time(), compute)]}

    def ping(self) -> str:
        return self.machine

    def cleanup(self) -> None:
        for path in self.directory.iterdir():
            path.unlink()
        self.directory.rmdir()


_RemoteHost = ray.remote(ScheduleHost)


def execute(policy: str, tasks: list[TaskRun], machines: list[Machine], parts: dict[str, Path],
            address: str | None = None, time_scale: float | None = None, wall_target_s: float = 20.0,
            progress: bool = False) -> ScheduleRun:
    """Run ``tasks`` (see the module); ``parts`` maps each part name to its ``.pt2`` file. ``time_scale``
    None: the schedule's last end lasts ``wall_target_s`` wall seconds."""
    makespan = max((t.end_s for t in tasks), default=0.0)
    scale = time_scale if time_scale is not None else wall_target_s / max(makespan, 1e-9)
    if scale <= 0:
        raise HalocutError(f"--time-scale must be positive, got {scale:g}")
    started = connect([m.name for m in machines], address)
    threads = max(1, (os.cpu_count() or 1) // max(1, len(machines))) if not address else 0
    actors = {m.name: _RemoteHost.options(resources={m.name: 1}, num_cpus=0, max_concurrency=m.slots,
                                          max_restarts=0).remote(m.name, threads or (os.cpu_count() or 1))
              for m in machines}
    try:
        wall = time.perf_counter()
        _load(tasks, actors, parts)
        results = _submit(tasks, actors, scale, makespan, progress)
        measured = [_measure(task, result, scale) for task, result in zip(tasks, results)]
        return ScheduleRun(policy, scale, measured, time.perf_counter() - wall, len(parts),
                           {m.name: m.slots for m in machines})
    finally:
        for actor in actors.values():
            try:
                ray.get(actor.cleanup.remote(), timeout=30)
            except ray.exceptions.RayError:
                pass
            ray.kill(actor, no_restart=True)
        if started:
            ray.shutdown()


def _load(tasks: list[TaskRun], actors: dict, parts: dict[str, Path]) -> None:
    needs: dict[str, set[str]] = {}
    for task in tasks:
        for stage in task.stages:
            if stage.part is not None:
                needs.setdefault(stage.machine, set()).add(stage.part)
    refs = []
    for machine, names in needs.items():
        files = {}
        for name in sorted(names):
            data = parts[name].read_bytes()
            files[name] = (data, hashlib.sha256(data).hexdigest())
        refs.append(actors[machine].host.remote(files))
    _get(refs, 600)


def _submit(tasks: list[TaskRun], actors: dict, scale: float, makespan: float, progress: bool) -> list[dict]:
    order = sorted(range(len(tasks)), key=lambda i: tasks[i].start_s)
    zero = time.time() + LEAD_S
    finals: dict[int, ray.ObjectRef] = {}
    with Progress(disable=not progress, transient=True) as bar:
        submitted = bar.add_task("starting tasks at their instants", total=len(tasks))
        for i in order:
            _sleep_until(zero + tasks[i].start_s * scale)
            value = list(tasks[i].inputs)
            for stage in tasks[i].stages:
                value = actors[stage.machine].stage.remote(value, stage, scale)
            finals[i] = value
            bar.advance(submitted)
        results = _get([finals[i] for i in range(len(tasks))], makespan * scale * 2 + 120)
    return [{**r, "zero": zero} for r in results]


def _measure(task: TaskRun, result: dict, scale: float) -> Measured:
    zero, stages = result["zero"], result["stages"]
    errors, tolerance = [], 0.0
    for output, reference in zip(result["y"], task.reference):
        if output.shape != reference.shape:
            raise HalocutError(f"task '{task.name}': output shape {output.shape} != the model's {reference.shape}")
        errors.append(float(np.max(np.abs(output - reference))))
        tolerance = max(tolerance, RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(reference)))))
    return Measured(task.name, task.start_s * scale, task.end_s * scale, stages[0][1] - zero, stages[-1][2] - zero,
                    sum(s[3] for s in stages), max(errors, default=0.0), tolerance)


def _sleep_until(instant: float) -> None:
    while (left := instant - time.time()) > 0:
        time.sleep(min(left, 0.05))


def _get(refs, timeout: float):
    try:
        return ray.get(refs, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise HalocutError(f"the schedule run did not finish within {timeout:.0f} s") from None
    except ray.exceptions.RayTaskError as error:
        cause = error.cause if isinstance(getattr(error, "cause", None), HalocutError) else error
        raise HalocutError(f"a stage failed: {one_line(cause, first=True)}") from None
    except ray.exceptions.RayError as error:
        raise HalocutError(f"a schedule actor failed: {one_line(error, first=True)}") from None


def run_table(run: ScheduleRun) -> Table:
    table = Table(title=f"{run.policy}: scheduled vs measured (wall seconds from instant 0, x{run.time_scale:.3g})")
    for column in ("task", "scheduled start", "start", "scheduled end", "end", "end off", "compute", "max error",
                   "verified"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for t in sorted(run.tasks, key=lambda t: t.scheduled_start_s):
        table.add_row(t.name, f"{t.scheduled_start_s:.3f}", f"{t.start_s:.3f}", f"{t.scheduled_end_s:.3f}",
                      f"{t.end_s:.3f}", f"{t.end_error * 100:.1f} %", f"{t.compute_s * 1e3:.1f} ms",
                      f"{t.max_error:.2e}", "yes" if t.verified else "NO")
    return table


def run_line(run: ScheduleRun) -> str:
    verified, on_time = sum(t.verified for t in run.tasks), sum(t.on_time for t in run.tasks)
    worst = max((t.end_error for t in run.tasks), default=0.0)
    return (f"ran {len(run.tasks)} tasks on {len(run.machines)} actors in {run.wall_s:.1f} s: {verified} outputs "
            f"verified, {on_time} ended within {ON_TIME:.0%} of their scheduled end (worst {worst:.1%}); "
            f"{run.artifacts} parts compiled")
