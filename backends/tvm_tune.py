"""MetaSchedule tuning into one shared database per target kind, so a kernel is tuned once.

The database is ``$HALOCUT_CACHE/tune/<suffix>`` (:func:`database_dir`; the suffix is
:func:`halocut.backends.tvm.file_suffix`, e.g. ``x86``): MetaSchedule's JSON workloads and records. Before
tuning a part, its kernels (MetaSchedule's extracted tasks) are looked up there by structural hash: the same
conv workload in another part, another tile of the same height or another model is a hit and is not
tuned again. The part's budget of trials is spread over its tasks by each task's weight in the FLOPs
(FLOPs per call x calls, :func:`split_trials`); a task whose database records already hold its share is
a hit, one holding fewer is topped up to its share, so tuning again with a larger budget continues; a kernel
whose every schedule is measured (the search found no new one) is a hit from then on.

Each task is tuned on its own (its trials are its own, deterministic, and the progress says which task
runs); one runner pool serves them all.
"""

from __future__ import annotations

import functools
import importlib.util
import json
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
_WORKER_TIMEOUT_S = 300.0  # a measuring worker's first run imports TVM, ~20 s on 2 loaded cores


@dataclass(frozen=True)
class TaskTuning:
    """One kernel of a part: its FLOPs weight, the trials it should have, had before and got now."""

    name: str
    flops: float  # FLOPs per call x calls in the part
    calls: int  # how many times the part calls the kernel
    trials_wanted: int
    trials_before: int  # candidates of this kernel the database held (failed ones too)
    trials_run: int  # candidates measured now
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
        raise HalocutError(f"tvm: cannot extract the kernels of part '{part.name}': "
                           f"{one_line(error, first=True)}") from error
    flops = [_flops(task) for task in tasks]
    wanted = split_trials(flops, trials)
    runner = None
    results = []
    exhausted = _Exhausted(database)
    for task, task_flops, want in zip(tasks, flops, wanted):
        mod = task.dispatched[0]
        before = _trials(db, mod)
        run = 0 if exhausted.holds(mod) else max(0, want - before)
        best = _best(db, mod)
        if run:
            if runner is None:
                runner = _runner()
            best = _tune_task(ms, task, run, db, database, runner, part.name, progress, best)
            asked, run = run, _trials(db, mod) - before
            if run < asked:  # the search found no more new schedules: every one the space holds is measured
                exhausted.add(mod)
        results.append(TaskTuning(task.task_name, task_flops, max(int(task.weight), 1), want, before, run, best))
    return TuneReport(part.name, database, tuple(results))


def _tune_task(ms, task, trials: int, db, work_dir: Path, runner, part_name: str, progress: Progress | None,
               best: float | None) -> float | None:
    """Tune one task for ``trials`` new candidates; returns the best time in the database after it."""
    callback = _progress_callback(task.task_name, trials, progress, best)
    _quiet_console()
    context = ms.TuneContext(mod=task.dispatched[0], target=task.target, space_generator="post-order-apply",
                             search_strategy=_strategy(ms, trials), task_name=task.task_name,
                             logger=_search_logger(str(work_dir)), rand_state=0,
                             num_threads=os.cpu_count() or 1).clone()
    if progress:
        progress("start", task.task_name, 0, trials, best)
    try:
        ms.tune_tasks(tasks=[context], task_weights=[float(task.weight)], work_dir=str(work_dir),
                      max_trials_global=trials,
                      num_trials_per_iter=max(1, min(64, trials)), database=db,
                      cost_model="xgb" if importlib.util.find_spec("xgboost") else "random",
                      builder=_pool_builder(), runner=runner,
                      measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), callback])
    except Exception as error:  # noqa: BLE001
        raise HalocutError(f"tvm: tuning kernel '{task.task_name}' of part '{part_name}' failed: "
                           f"{one_line(error, first=True)}") from error
    best = _best(db, task.dispatched[0])
    if progress:
        progress("done", task.task_name, trials, trials, best)
    return best


def _strategy(ms, trials: int):
    """MetaSchedule's evolutionary search with its population sized to the trials: the default (512 schedules
    evolved, 50 unmeasured ones drawn first) costs minutes of search per task even when only a few trials are
    measured; from 64 trials on it is the default."""
    return ms.search_strategy.EvolutionarySearch(population_size=min(512, max(32, 8 * trials)),
                                                 init_min_unmeasured=min(50, max(8, trials)))


def _quiet_console() -> None:
    """MetaSchedule's task scheduler logs every batch's task table at INFO; unless the application set a level
    for MetaSchedule's logger, only its warnings pass (the progress callback says the rest)."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


@functools.cache
def _search_logger(work_dir: str) -> logging.Logger:
    """Where each task's search logs go: ``<database>/logs/search.log``. MetaSchedule's own per-task loggers
    (``get_loggers_from_work_dir``) reconfigure logging for the whole process at every call and fail when a
    handler without a name (pytest's) sits on its logger."""
    logger = logging.getLogger(f"halocut.tvm_tune.search:{work_dir}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    (Path(work_dir) / "logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(Path(work_dir) / "logs" / "search.log")
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
    logger.addHandler(handler)
    return logger


@functools.cache
def _runner():
    """One measuring pool for the process: its workers start once (seconds each), not per task."""
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.LocalRunner(timeout_sec=_WORKER_TIMEOUT_S)


_BUILD_TIMEOUT_S = 120.0  # a candidate LLVM takes longer over (a huge unroll) is a failed trial, not a hang


def _builder_initializer() -> None:
    tvm_backend._import_tensor_intrinsics()


@functools.cache
def _build_pool():
    """One build worker for the process. MetaSchedule's LocalBuilder starts a fresh worker for every batch,
    and each imports TVM's tensor intrinsics again: ~60 s per batch measured on 2 loaded cores, more than the
    builds. Building in this process instead has no timeout: one candidate kept LLVM busy for 12 minutes."""
    from tvm.support.popen_pool import PopenPoolExecutor

    return PopenPoolExecutor(max_workers=1, timeout=_BUILD_TIMEOUT_S, initializer=_builder_initializer)


def _pool_builder():
    """A builder that keeps its worker (:func:`_build_pool`) and kills a build past :data:`_BUILD_TIMEOUT_S`."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _worker_func
    from tvm.support.popen_pool import StatusKind

    @derived_object
    class PoolBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            jobs = [(None, None, build_input.mod, build_input.target, None) for build_input in build_inputs]
            for done in _build_pool().map_with_error_catching(lambda job: _worker_func(*job), jobs):
                if done.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(done.value, None))
                elif done.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"build timed out after {_BUILD_TIMEOUT_S:.0f} s"))
                else:
                    results.append(BuilderResult(None, f"build failed: {one_line(str(done.value), first=True)}"))
            return results

    return PoolBuilder()


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


class _Exhausted:
    """Kernels whose whole schedule space is measured (a pad or a concat has one schedule), kept beside the
    database in ``exhausted.json`` as structural hashes, so they are hits whatever the budget asks."""

    def __init__(self, database: Path):
        self.path = Path(database) / "exhausted.json"
        self.hashes = set(json.loads(self.path.read_text())) if self.path.is_file() else set()

    @staticmethod
    def _key(mod) -> str:
        from tvm_ffi import structural_hash

        return str(structural_hash(mod))

    def holds(self, mod) -> bool:
        return self._key(mod) in self.hashes

    def add(self, mod) -> None:
        self.hashes.add(self._key(mod))
        staging = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        staging.write_text(json.dumps(sorted(self.hashes)))
        staging.replace(self.path)


def _trials(db, mod) -> int:
    """How many candidates of the workload the database holds, failed ones (recorded as 1e10 s) included."""
    if not db.has_workload(mod):
        return 0
    workload = db.commit_workload(mod)
    return sum(1 for record in db.get_all_tuning_records() if record.workload.same_as(workload))


def _best(db, mod) -> float | None:
    """The workload's best measured seconds per call (mean of its runs), None without a successful record."""
    if not db.has_workload(mod):
        return None
    found = db.get_top_k(db.commit_workload(mod), 1)
    return sum(float(s) for s in found[0].run_secs) / len(found[0].run_secs) if found else None


def _flops(task) -> float:
    """FLOPs of one call of the task's kernel times its calls; 1 when TVM cannot count them (an unknown loop)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        per_call = float(estimate_tir_flops(task.dispatched[0]))
    except Exception:  # noqa: BLE001
        per_call = 1.0
    return max(per_call, 1.0) * max(int(task.weight), 1)
