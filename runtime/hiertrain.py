"""``halocut train``: HierTrain's hybrid-parallel training step on Ray actors, checked against single-process SGD.

Three :class:`~halocut.runtime.hiertrain_worker.TrainWorker` actors, one per task of the plan's schedule,
each placed by the custom resource named after its machine (the embedded cluster offers all three here;
``--address`` joins real machines started with ``ray start --resources '{"edge": 1}'``). Each holds its
layer groups' parameters and an SGD optimizer. One iteration is paper 002's Sec. IV-B, phase by phase:

1. the device sends worker_s, worker_l and worker_o their rows of the batch (and worker_o the labels);
2. forward: worker_s and worker_l run their groups and send the outputs to worker_o, which runs groups 1..m_s
   on its own rows meanwhile, then m_s+1..m_l with worker_s's rows appended, then the rest for all B rows
   and the loss (mean over B);
3. backward: worker_o sends worker_l the gradient at layer m_l + 1 as soon as it has it, then worker_s the
   one at layer m_s + 1; they carry them back through their groups;
4. update: worker_s and worker_l send their weight gradients to worker_o, which combines them per group
   (see the worker's docstring on "averaging") and sends them back; every worker takes the SGD step.

Measured per iteration: seconds (driver wall clock), bytes per topology link (what each worker sent, along
the route), compute seconds per worker. After the run the command trains the same model single-process on
the same batches (same initialisation, sample order and mean loss) and reports the largest parameter
difference; every worker's copy of every group must match within rtol 1e-5, atol 4e-5.

A worker killed mid-iteration (``kill=(machine, iteration)`` kills its actor once, as a machine failing
would): Ray restarts it, it reads its last checkpoint back, every worker rolls back to the last iteration
all completed, and the iteration is done again.

Starting actors takes seconds, so the example is not run::

    result = train(TrainOptions(plan, topology, modules, steps=3))
    result.max_param_error, result.seconds_per_iteration
"""

from __future__ import annotations

import copy
import logging
import os
import re
import statistics
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import ray
import torch
from ray import exceptions as rex
from torch import nn

from halocut.ir.errors import HalocutError, one_line
from halocut.ir.train_plan import TrainPlan
from halocut.runtime.hiertrain_worker import SyntheticData, TrainWorker, as_input
from halocut.runtime.ray_exec import connect
from halocut.targets.topology import Topology

logger = logging.getLogger("halocut.runtime")

RTOL, ATOL = 1e-5, 4e-5  # torch.distributed.pipelining's own tests compare against single-process SGD so
MAX_RESTARTS = 5  # per worker, and failed iterations per run
_RemoteWorker = ray.remote(TrainWorker)
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours its task names


@dataclass(frozen=True)
class TrainOptions:
    plan: TrainPlan
    topology: Topology
    groups: list[nn.Module]  # the model's layer groups, initial parameters (the plan's groups, in order)
    steps: int = 3
    lr: float = 0.01
    seed: int = 0
    classes: int | None = None  # labels drawn from 0..classes-1 (default: the model's output width)
    address: str | None = None
    threads: int | None = None  # per worker; default: cores / 3 embedded, all of them on a cluster
    kill: tuple[str, int] | None = None  # (machine, iteration): kill that worker once, mid-iteration
    timeout_s: float = 300.0


@dataclass(frozen=True)
class TrainResult:
    steps: int
    seconds: list[float]  # per completed iteration (a redone one: its successful try)
    losses: list[float]
    bytes_per_link: dict[str, float]  # per iteration
    sent_bytes: dict[str, dict[str, float]]  # per iteration: machine -> target machine -> bytes
    compute_s: dict[str, float]  # per iteration, median: machine -> seconds
    max_param_error: float
    equivalent: bool
    recoveries: list[dict] = field(default_factory=list)
    predicted_t_total_s: float | None = None

    @property
    def seconds_per_iteration(self) -> float:
        return statistics.median(self.seconds)

    def to_json(self) -> dict:
        return {"steps": self.steps, "seconds_per_iteration": self.seconds_per_iteration,
                "iteration_seconds": self.seconds, "losses": self.losses, "bytes_per_link": self.bytes_per_link,
                "sent_bytes": self.sent_bytes, "compute_s": self.compute_s, "max_param_error": self.max_param_error,
                "equivalent": self.equivalent, "rtol": RTOL, "atol": ATOL, "recoveries": self.recoveries,
                "predicted_t_total_s": self.predicted_t_total_s}


def train(options: TrainOptions, cluster: "TrainCluster | None" = None) -> TrainResult:
    """Run ``options.steps`` iterations of the plan's schedule on Ray, then check them against single-process
    SGD. ``cluster``: actors to reuse (by default the run starts its own, and Ray if it is not running)."""
    plan = options.plan
    if not plan.is_hiertrain:
        raise HalocutError(f"policy '{plan.policy}' plans a chain of workers (model parallelism); halocut train "
                           "runs HierTrain schedules (policies hiertrain, hiertrain-exact, all-edge, all-cloud)")
    if plan.compress_bits != 32:
        raise HalocutError(f"the plan compresses the edge-cloud link to {plan.compress_bits} bits; the training "
                           "step sends float32 (plan it without --compress-bits)")
    if options.steps < 1:
        raise HalocutError(f"steps {options.steps}: need at least 1")
    names = [d.name for d in options.topology.devices]
    missing = [w for w in plan.workers.values() if w not in names]
    if missing:
        raise HalocutError(f"plan workers: '{missing[0]}' is not a machine of topology '{options.topology.name}'")
    classes = options.classes or _classes(options.groups, plan.input_shape)
    data = SyntheticData(options.seed, plan.batch, tuple(plan.input_shape[1:]), classes)
    if cluster is not None:
        return _run(options, data, cluster)
    with TrainCluster(list(plan.workers.values()), options.address, options.threads) as own:
        return _run(options, data, own)


def _run(options: TrainOptions, data: SyntheticData, cluster: "TrainCluster") -> TrainResult:
    workers = _Workers(options, data, cluster)
    try:
        return _measure(options, workers, data)
    finally:
        workers.cleanup()


class TrainCluster:
    """One idle :class:`TrainWorker` actor per machine, placed by the machine's resource; runs reuse them.

    Starting actors takes seconds, so the example is not run::

        with TrainCluster(["device", "edge", "cloud"]) as cluster:
            first, second = train(options_a, cluster), train(options_b, cluster)
    """

    def __init__(self, machines: list[str], address: str | None = None, threads: int | None = None):
        self.started = connect(machines, address)
        threads = threads or (0 if address else max(1, (os.cpu_count() or 1) // len(machines)))
        self.actors = {m: _RemoteWorker.options(resources={m: 1}, num_cpus=0, max_restarts=MAX_RESTARTS,
                                                max_task_retries=0).remote(m, threads or None) for m in machines}
        ray.get([a.ping.remote() for a in self.actors.values()], timeout=600)

    def __enter__(self) -> "TrainCluster":
        return self

    def __exit__(self, *exc) -> None:
        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)
        if self.started:
            ray.shutdown()


class _Workers:
    """A run's three tasks on the cluster's actors, and the calls of one iteration."""

    def __init__(self, options: TrainOptions, data: SyntheticData, cluster: TrainCluster):
        self.options, self.plan, self.data = options, options.plan, data
        self.run_id = uuid.uuid4().hex[:12]
        self.machine = dict(self.plan.mapping)  # task -> machine
        self.device = self.plan.workers["device"]
        missing = [m for m in self.machine.values() if m not in cluster.actors]
        if missing:
            raise HalocutError(f"the training cluster has no worker on '{missing[0]}'")
        self.actors = {task: cluster.actors[machine] for task, machine in self.machine.items()}
        self._get([self._configure(task) for task in self.actors])

    def _configure(self, task: str, rejoin: bool = False):
        on_device = self.machine[task] == self.device
        rows = {t: (r.start, r.stop) for t in "osl" for r in [self.plan.samples(t)]}
        return self.actors[task].configure.remote(
            task, self.options.groups[:self.plan.layers(task)], self.options.lr, self.plan.m_s, self.plan.m_l,
            self.data if on_device else None, rows if on_device else None, self.run_id, rejoin)

    def active(self, task: str) -> bool:
        return task == "o" or self.plan.layers(task) > 0

    def submit(self, iteration: int) -> dict:
        """Every call of one iteration, in the order of Sec. IV-B; returns the refs to wait for."""
        a, m, device = self.actors, self.machine, self.actors[self._task_on(self.device)]
        x = {t: None if m[t] == self.device else device.samples_for.remote(iteration, t, m[t])
             for t in "osl" if self.active(t)}
        labels = None if m["o"] == self.device else device.labels_for.remote(iteration, m["o"])
        out = {t: a[t].front.remote(iteration, x[t], m["o"]) for t in "sl" if self.active(t)}
        a["o"].front.remote(iteration, x["o"])
        a["o"].middle.remote(out.get("s"))
        to_l, loss = a["o"].rest.options(num_returns=2).remote(out.get("l"), labels, m["l"] if "l" in out else None)
        to_s = a["o"].back_middle.remote(m["s"] if "s" in out else None)
        a["o"].back_front.remote()
        grads = {t: a[t].back.remote({"s": to_s, "l": to_l}[t], m["o"]) for t in out}
        combined = a["o"].reduce.options(num_returns=2).remote(grads.get("s"), grads.get("l"), m["s"], m["l"])
        done = [a[t].update.remote(combined["sl".index(t)]) for t in out]
        stats = [actor.take_statistics.remote() for actor in a.values()]
        return {"loss": loss, "done": done, "stats": stats}

    def _task_on(self, machine: str) -> str:
        return next(t for t, name in self.machine.items() if name == machine)

    def kill(self, machine: str) -> None:
        """End a worker's process as a failing machine would; Ray restarts it (``max_restarts``)."""
        ray.kill(self.actors[self._task_on(machine)], no_restart=False)

    def recover(self, error: Exception) -> dict:
        """After a failed iteration: wait for the workers, roll all back to the last iteration all completed."""
        start = time.perf_counter()
        info = self._alive(start)
        restarted = [t for t, i in zip(self.actors, info) if i["task"] != t]
        self._get([self._configure(t, rejoin=True) for t in restarted])
        held = self._get([a.checkpoints.remote() for a in self.actors.values()])
        last = min(max(h) for h in held)
        if any(last not in h for h in held):
            raise HalocutError(f"cannot recover: the workers hold checkpoints {held}, no iteration common to all")
        self._get([a.restore.remote(last) for a in self.actors.values()])
        self._get([a.take_statistics.remote() for a in self.actors.values()])
        return {"error": _cause(error), "restarted": [self.machine[t] for t in restarted],
                "restored_iteration": last, "seconds": time.perf_counter() - start}

    def _alive(self, start: float) -> list[dict]:
        """Every worker's ping, once each answers (a restarting one does after its constructor ran again)."""
        while True:
            try:
                return self._get([a.ping.remote() for a in self.actors.values()], 10.0)
            except (rex.ActorUnavailableError, rex.GetTimeoutError):
                if time.perf_counter() - start > self.options.timeout_s:
                    raise HalocutError(f"a training worker did not come back within {self.options.timeout_s:.0f} s")
                time.sleep(0.2)
            except rex.ActorDiedError as error:
                raise HalocutError(f"a training worker is gone for good ({one_line(error, first=True)}); "
                                   "its layers exist nowhere else") from None

    def cleanup(self) -> None:
        try:
            self._get([a.cleanup.remote() for a in self.actors.values()], 30.0)
        except rex.RayError:
            logger.warning("a training worker could not remove its checkpoints (run %s)", self.run_id)

    def states(self) -> dict[str, list[np.ndarray]]:
        return dict(zip(self.actors, self._get([a.state.remote() for a in self.actors.values()])))

    def _get(self, refs, timeout: float | None = None):
        return ray.get(refs, timeout=timeout or self.options.timeout_s)


def _measure(options: TrainOptions, workers: _Workers, data: SyntheticData) -> TrainResult:
    plan, topology = options.plan, options.topology
    seconds, losses, sent, compute, recoveries = [], [], [], [], []
    completed, killed = 0, False
    while completed < options.steps:
        iteration = completed + 1
        start = time.perf_counter()
        refs = workers.submit(iteration)
        try:
            if options.kill and not killed and options.kill[1] == iteration:
                ray.get(refs["loss"], timeout=options.timeout_s)  # the forward is done: kill in the backward
                workers.kill(options.kill[0])
                killed = True
            loss = ray.get(refs["loss"], timeout=options.timeout_s)
            ray.get(refs["done"], timeout=options.timeout_s)
            stats = ray.get(refs["stats"], timeout=options.timeout_s)
        except rex.RayError as error:
            if len(recoveries) >= MAX_RESTARTS:
                raise HalocutError(f"training failed {len(recoveries) + 1} times; last: {_cause(error)}") from None
            _settle(refs)
            recovery = workers.recover(error)
            completed = recovery["restored_iteration"]
            del seconds[completed:], losses[completed:], sent[completed:], compute[completed:]
            recoveries.append(recovery)
            logger.warning("iteration %d failed (%s); restarted %s, redoing it from iteration %d's parameters "
                           "(recovery took %.2f s)", iteration, recovery["error"], recovery["restarted"] or "none",
                           completed, recovery["seconds"])
            continue
        seconds.append(time.perf_counter() - start)
        losses.append(loss)
        sent.append({s["device"]: s["sent_bytes"] for s in stats})
        compute.append({s["device"]: s["compute_s"] for s in stats})
        completed = iteration
    error, equivalent = _compare(workers.states(), workers, options, data)
    machines = list(plan.workers.values())
    per_iteration = {a: {b: float(np.median([s.get(a, {}).get(b, 0) for s in sent])) for b in machines if b != a}
                     for a in machines}
    return TrainResult(options.steps, seconds, losses, _per_link(topology, per_iteration), per_iteration,
                       {m: float(np.median([c.get(m, 0.0) for c in compute])) for m in machines}, error, equivalent,
                       recoveries, plan.report.get("t_total_s"))


def _cause(error: Exception) -> str:
    """The innermost error of a Ray failure, in one line (Ray wraps it once per task it passed through)."""
    while isinstance(getattr(error, "cause", None), BaseException):
        error = error.cause
    text = _COLOURS.sub("", str(error))
    return f"{type(error).__name__}: {one_line(text, first=True)}"


def _settle(refs: dict) -> None:
    """Wait until every call of a failed iteration has ended (failed or not) before touching the workers."""
    pending = [refs["loss"], *refs["done"], *refs["stats"]]
    ray.wait(pending, num_returns=len(pending), timeout=60)


def _per_link(topology: Topology, sent: dict[str, dict[str, float]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for source, targets in sent.items():
        for target, size in targets.items():
            for link in topology.route(source, target):
                totals[link.key] = totals.get(link.key, 0.0) + size
    return totals


def _compare(states: dict[str, list[np.ndarray]], workers: _Workers, options: TrainOptions,
             data: SyntheticData) -> tuple[float, bool]:
    """Every worker's parameters against single-process SGD on the same batches: (max abs error, within tol)."""
    reference = single_process_sgd(options.groups, data, options.steps, options.lr)
    error, equivalent = 0.0, True
    for task, state in states.items():
        for mine, theirs in zip(state, reference[:len(state)]):
            difference = np.abs(mine - theirs)
            error = max(error, float(difference.max(initial=0.0)))
            equivalent &= bool(np.all(difference <= ATOL + RTOL * np.abs(theirs)))
    return error, equivalent


def single_process_sgd(groups: list[nn.Module], data: SyntheticData, steps: int, lr: float) -> list[np.ndarray]:
    """The model's groups trained in one process: batch ``k`` of ``data`` for k = 1..steps, mean loss, SGD."""
    model = nn.Sequential(*[copy.deepcopy(g) for g in groups]).eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for iteration in range(1, steps + 1):
        images, labels = data.batch_at(iteration)
        loss = nn.functional.cross_entropy(model(as_input(images)), torch.from_numpy(labels))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return [p.detach().numpy().copy() for p in model.parameters()]


def _classes(groups: list[nn.Module], input_shape) -> int:
    with torch.no_grad():
        return int(nn.Sequential(*groups).eval()(torch.zeros(1, *input_shape[1:])).shape[-1])
