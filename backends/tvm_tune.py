"""MetaSchedule tuning into one shared database per target kind, so a kernel is tuned once.

The database is ``$HALOCUT_CACHE/tune/<suffix>`` (:func:`database_dir`; the suffix is
:func:`halocut.backends.tvm.file_suffix`, e.g. ``x86``): MetaSchedule's JSON workloads and records. Before
tuning a part, its kernels (MetaSchedule's extracted tasks) are looked up there by structural hash: the same
conv workload in another part, another tile of the same height or another model is a hit and is not
tuned again. The part's budget of trials is spread over its tasks by each task's weight in the FLOPs
(FLOPs per call x calls, :func:`split_trials`); a task whose database records already hold its share is
a hit, one holding fewer is topped up to its share, so tuning again with a larger budget continues.

Each task is tuned on its own (its trials are its own, deterministic, and the progress says which task
runs); one runner pool serves them all.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from halocut.backends import tvm as tvm_backend
from halocut.backends.base import Part, Target, cache_root
from halocut.ir.errors import HalocutError, one_line

MIN_TRIALS_PER_TASK = 4  # below this a task's search draws little more than its initial random schedules
_WORKER_TIMEOUT_S = tvm_backend._WORKER_TIMEOUT_S


@dataclass(frozen=True)
class TaskTuning:
    """One kernel of a part: its FLOPs weight, the trials it should have, had before and got now."""

    name: str
    flops: float  # FLOPs per call x calls in the part
    calls: int  # how many times the part calls the kernel
    trials_wanted: int
    trials_before: int  # measured records found in the database
    trials_run: int
    best_s: float | None  # best measured time per call, None when nothing was measured

    @property
    def hit(self) -> bool:
        return self.trials_run == 0


@dataclass(frozen=True)
class TuneReport:
    part: str
    database: Path
    tasks: tuple[TaskTuning, ...]

    @property
    def hits(self) -> int:
        return sum(t.hit for t in self.tasks)

    @property
    def trials_run(self) -> int:
        return sum(t.trials_run for t in self.tasks)

    def summary(self) -> str:
        """One line: ``part 's0': 3 kernels, 2 hits, 1 tuned (12 trials), database ...``."""
        tuned = len(self.tasks) - self.hits
        return (f"part '{self.part}': {len(self.tasks)} kernel(s), {self.hits} hit(s) in the database, {tuned} tuned "
                f"({self.trials_run} trials); database {self.database}")


# progress(event, task_name, trials_done, trials_total, best_s): event is "start", "trials" or "done"
Progress = Callable[[str, str, int, int, float | None], None]


def database_dir(target: Target) -> Path:
    """The shared tuning database of a target kind: ``$HALOCUT_CACHE/tune/<suffix>``.

    >>> database_dir(Target("tvm", {"kind": "llvm"})).relative_to(cache_root()).as_posix()
    'tune/x86'
    """
    return cache_root() / "tune" / tvm_backend.file_suffix(target)


def split_trials(flops: list[float], trials: int, minimum: int = MIN_TRIALS_PER_TASK) -> list[int]:
    """Trials per task, proportional to each task's FLOPs; each task gets at least ``minimum`` trials, or
    the even share ``trials // tasks`` when that is smaller, and never fewer than 1.

    The shares sum to ``trials`` (largest remainders round up; what the minimum gives small tasks is taken
    from the largest), except when there are more tasks than trials: then each gets 1. Deterministic:
    ties go to the earlier task.

    >>> split_trials([90.0, 9.0, 1.0], 100)
    [87, 9, 4]
    >>> split_trials([1.0, 1.0], 3)
    [2, 1]
    >>> split_trials([1.0, 1.0, 1.0], 2)
    [1, 1, 1]
    >>> split_trials([5.0], 0)
    [0]
    """
    if trials <= 0 or not flops:
        return [0] * len(flops)
    total = sum(flops)
    weights = [f / total if total > 0 else 1 / len(flops) for f in flops]
    floor = min(minimum, max(1, trials // len(flops)))
    exact = [w * trials for w in weights]
    shares = [math.floor(x) for x in exact]
    order = sorted(range(len(flops)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:trials - sum(shares)]:
        shares[i] += 1
    lifted = [max(floor, s) for s in shares]
    excess = sum(lifted) - trials  # taken back from the largest tasks, one trial at a time
    while excess > 0 and any(n > floor for n in lifted):
        largest = max(range(len(lifted)), key=lambda i: (lifted[i], -i))
        lifted[largest] -= 1
        excess -= 1
    return lifted


def tune(part: Part, target: Target, trials: int, database: Path | None = None,
         progress: Progress | None = None) -> TuneReport:
    """Tune the part's kernels that the database lacks, ``trials`` for the whole part, spread by FLOPs.

    ``database`` defaults to :func:`database_dir` of the target. Only targets this machine runs can be tuned,
    since every candidate is measured here. Tuning takes minutes, so the example is not run::

        report = tune(part, Target("tvm", {"kind": "llvm"}), trials=64)
        print(report.summary())
        artifact = emit(part, Target("tvm", {"kind": "llvm"}), out_dir, tuning_database=report.database)
    """
    reason = tvm_backend.tuning_unavailable()
    if reason:
        raise HalocutError(f"tvm: cannot tune part '{part.name}': {reason}")
    if not tvm_backend.runnable(target):
        raise HalocutError(f"tvm: cannot tune part '{part.name}' for {target.describe()}: tuning measures every "
                           f"candidate on this machine, which cannot run that target (timings under an emulator "
                           f"such as qemu say nothing about the real device)")
    import tvm
    from tvm.s_tir import meta_schedule as ms

    tvm_backend._import_tensor_intrinsics()
    database = Path(database or database_dir(target))
    database.mkdir(parents=True, exist_ok=True)
    spec = tvm_backend._target_dict(target)
    tuning_target = tvm.target.Target({**spec, "num-cores": spec.get("num-cores", os.cpu_count() or 1)})
    try:
        db = ms.database.JSONDatabase(work_dir=str(database))
        tasks = ms.relax_integration.extract_tasks(tvm_backend._fuse(tvm_backend._import(part), tuning_target),
                                                   tuning_target)
    except HalocutError:
        raise
    except Exception as error:  # noqa: BLE001
        raise HalocutError(f"tvm: cannot extract the kernels of part '{part.name}': {one_line(error, first=True)}") from error
    flops = [_flops(task) for task in tasks]
    wanted = split_trials(flops, trials)
    runner = None
    results = []
    for task, task_flops, want in zip(tasks, flops, wanted):
        before = _measured(db, task.dispatched[0], want)
        run = max(0, want - len(before))
        best = min((_seconds(r) for r in before), default=None)
        if run:
            if runner is None:
                runner = _runner()
            best = _tune_task(ms, task, run, db, database, runner, part.name, progress, best)
        results.append(TaskTuning(task.task_name, task_flops, max(int(task.weight), 1), want, len(before), run, best))
    return TuneReport(part.name, database, tuple(results))


def _tune_task(ms, task, trials: int, db, work_dir: Path, runner, part_name: str, progress: Progress | None,
               best: float | None) -> float | None:
    """Tune one task for ``trials`` new candidates; returns the best time in the database after it."""
    callback = _progress_callback(task.task_name, trials, progress, best)
    _quiet_console()
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        [task], str(work_dir), strategy=tvm_backend._strategy(ms, trials), num_threads=os.cpu_count() or 1, seed=0)
    _quiet_console()
    if progress:
        progress("start", task.task_name, 0, trials, best)
    try:
        ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir), max_trials_global=trials,
                      num_trials_per_iter=max(1, min(64, trials)), database=db,
                      cost_model="xgb" if importlib.util.find_spec("xgboost") else "random",
                      builder=_in_process_builder(), runner=runner,
                      measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), callback])
    except Exception as error:  # noqa: BLE001
        raise HalocutError(f"tvm: tuning kernel '{task.task_name}' of part '{part_name}' failed: "
                           f"{one_line(error, first=True)}") from error
    found = _measured(db, task.dispatched[0], 1)
    best = _seconds(found[0]) if found else None
    if progress:
        progress("done", task.task_name, trials, trials, best)
    return best


class _DropInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def _quiet_console() -> None:
    """MetaSchedule logs every batch's task table to stdout; it stays in the database's ``logs/`` files, and
    the console gets only warnings (the progress callback says the rest)."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    if not any(isinstance(f, _DropInfo) for f in logger.filters):
        logger.addFilter(_DropInfo())  # records logged on it directly ("Logging directory: ...")
    for handler in logger.handlers:
        if type(handler) is logging.StreamHandler:
            handler.setLevel(logging.WARNING)


@functools.cache
def _runner():
    """One measuring pool for the process: its workers start once (seconds each), not per task."""
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.LocalRunner(timeout_sec=_WORKER_TIMEOUT_S)


def _in_process_builder():
    """A builder that compiles candidates in this process. MetaSchedule's LocalBuilder starts a fresh worker
    for every batch, and each worker imports TVM's tensor intrinsics again: ~60 s per batch measured on 2
    loaded cores, more than the builds. Here they are imported once (:func:`_import_tensor_intrinsics`)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            for build_input in build_inputs:
                try:
                    results.append(BuilderResult(default_export(default_build(build_input.mod, build_input.target,
                                                                              None)), None))
                except Exception as error:  # noqa: BLE001 - a candidate that fails to build is a failed trial
                    results.append(BuilderResult(None, f"in-process build: {one_line(error, first=True)}"))
            return results

    return InProcessBuilder()


def _progress_callback(name: str, trials: int, progress: Progress | None, best: float | None):
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    state = {"done": 0, "best": best}

    @derived_object
    class Report(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
            for result in runner_results:
                seconds = [float(s) for s in (result.run_secs or [])]
                if seconds and max(seconds) < 1e9:
                    mean = sum(seconds) / len(seconds)
                    state["best"] = mean if state["best"] is None else min(state["best"], mean)
            state["done"] += len(runner_results)
            if progress:
                progress("trials", name, min(state["done"], trials), trials, state["best"])

    return Report()


def _measured(db, mod, k: int) -> list:
    """Up to ``k`` of the workload's best records that ran (failed candidates are not kept as records)."""
    if k <= 0 or not db.has_workload(mod):
        return []
    return list(db.get_top_k(db.commit_workload(mod), k))


def _seconds(record) -> float:
    seconds = [float(s) for s in record.run_secs]
    return sum(seconds) / len(seconds)


def _flops(task) -> float:
    """FLOPs of one call of the task's kernel times its calls; 1 when TVM cannot count them (an unknown loop)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        per_call = float(estimate_tir_flops(task.dispatched[0]))
    except Exception:  # noqa: BLE001
        per_call = 1.0
    return max(per_call, 1.0) * max(int(task.weight), 1)
