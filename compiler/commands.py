"""The documented work behind each CLI command (style.md item 8): the CLI parses and prints, tests call these.

Each function takes what a user names (a model spec, files, options), prepares
the model the one way plans expect (:func:`halocut.compiler.prepare.prepare_model`),
and hands the lower floors a prepared graph.

- ``halocut plan``: :func:`plan_model`
- ``halocut simulate``: :func:`simulate_model`
- ``halocut compile``: :func:`halocut.compiler.driver.compile_model`
- ``halocut tune``: :func:`tune_model`
- ``halocut profile``: :func:`profile_model`; on a machine of a Ray cluster, :func:`profile_model_on`
- ``halocut bench``: :func:`bench_build`
- ``halocut run``: :func:`run_build`
- ``halocut profile --training``: :func:`profile_training_model`
- ``halocut train-plan``: :func:`train_plan_model`
- ``halocut train``: :func:`train_model`

>>> from pathlib import Path
>>> topology = Path(__file__).parents[1] / "examples/topologies/default.yaml"
>>> result = plan_model("lenet5", topology, "offload")
>>> result.plan.planner, result.simulation.latency_s > 0
('offload', True)
"""

from __future__ import annotations

import contextlib
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import fx

from halocut.backends import tvm as tvm_backend, tvm_tune
from halocut.backends.base import Target
from halocut.backends.manifest import load_manifest
from halocut.backends.tvm_tune import TuneReport
from halocut.compiler.driver import AARCH64, X86, Compilation, CompileOptions, compile_model
from halocut.compiler.frontend import file_sha256, load_model
from halocut.compiler.prepare import PreparedModel, prepare_model
from halocut.ir.errors import HalocutError
from halocut.ir.files import check_output, read_json
from halocut.ir.graph import output_nodes
from halocut.ir.layer_groups import LayerGroup, layer_groups
from halocut.ir.layers import annotate_layers
from halocut.ir.plan import Plan, single_device_plan
from halocut.ir.train_plan import TrainPlan
from halocut.planning import get_planner
from halocut.planning.training import DEFAULT_COMPRESS_BITS, get_policy
from halocut.planning.training.choice import to_train_plan
from halocut.runtime import bench, hiertrain, profile, run
from halocut.runtime.flow import Flow
from halocut.runtime.gantt import plot_timeline
from halocut.runtime.hiertrain_worker import group_modules
from halocut.runtime.simulate import SimulationResult, simulate, stream_timeline
from halocut.runtime.train_profile import profile_training
from halocut.targets.cost import CostModel
from halocut.targets.topology import load_topology
from halocut.targets.training import training_costs

__all__ = ["CompileOptions", "Compilation", "compile_model", "tune_model", "plan_model", "simulate_model", "profile_model",
           "bench_build", "run_build", "PlanResult", "training_model", "profile_training_model", "train_plan_model",
           "train_model"]


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    simulation: SimulationResult
    planning_time_s: float


def plan_model(model: str, topology_path: str | Path, planner: str,
               input_shape: tuple[int, ...] | None = None, prepared: PreparedModel | None = None) -> PlanResult:
    """``halocut plan``: prepare the model (or take ``prepared``, the same model already prepared at that input
    shape: a caller planning it many times holds one copy), run the planner, score the plan with the simulator."""
    choose = get_planner(planner)
    topology = load_topology(topology_path)
    prepared = prepared or prepare_model(model, input_shape)
    start = time.perf_counter()
    plan = choose(prepared.graph, prepared.name, prepared.input_shape, topology, CostModel())
    elapsed = time.perf_counter() - start
    return PlanResult(plan, simulate(prepared.graph, plan, topology), elapsed)


def simulate_model(model: str, topology_path: str | Path, plan_path: str | Path | None = None,
                   input_shape: tuple[int, ...] | None = None, requests: int = 8,
                   gantt_path: str | Path | None = None, force: bool = True) -> tuple[SimulationResult, Path]:
    """``halocut simulate``: load everything, simulate (the whole model on the requester without a plan),
    draw the Gantt chart of a short stream; returns the result and the chart's path."""
    topology = load_topology(topology_path)
    plan = Plan.load(plan_path) if plan_path else None
    shape = input_shape or (plan.input_shape if plan else None)
    prepared = prepare_model(model, shape)
    if plan is None:
        plan = single_device_plan(prepared.graph, prepared.name, prepared.input_shape, topology.requester.name)
    elif tuple(plan.input_shape) != tuple(prepared.input_shape):
        raise HalocutError(f"{plan_path}: plan is for input shape {tuple(plan.input_shape)}, the model is "
                           f"analysed at {tuple(prepared.input_shape)}")
    gantt = check_output(gantt_path or f"{prepared.name.replace(':', '-')}-{topology.name}.png", force, "--gantt")
    result = simulate(prepared.graph, plan, topology, requests=requests)
    title = f"{prepared.name} on {topology.name}: {result.latency_s * 1e3:.1f} ms, {result.throughput_ips:.1f} img/s"
    timeline = stream_timeline(prepared.graph, plan, topology, requests=min(requests, 4))
    plot_timeline(timeline, gantt, title, [d.name for d in topology.devices if d.computes], force)
    return result, gantt


TUNE_TARGETS = {"x86": X86, "aarch64": AARCH64}  # --target: a target kind -> its TVM target dict


def tune_model(model: str, topology_path: str | Path, trials: int = 64, target: str = "x86",
               plan_path: str | Path | None = None, planner: str = "halocut", input_shape: tuple[int, ...] | None = None,
               progress: bool = True) -> list[TuneReport]:
    """``halocut tune``: plan the model (or load ``plan_path``), lower it to parts and tune every part's TVM
    kernels for ``target`` (a kind of :data:`TUNE_TARGETS`) into the shared database of that kind
    (:func:`halocut.backends.tvm_tune.database_dir`), ``trials`` per part spread by FLOPs. Every part is tuned,
    whichever device the plan gives it, so the database also serves a plan that moves parts; kernels the
    database holds are hits and are not tuned again. Returns one report per part.

    The target is checked before any work (no aarch64 machine here to measure on)::

        tune_model("lenet5", "examples/topologies/default.yaml", trials=2, target="aarch64")
        # HalocutError: cannot tune for aarch64 on this machine (x86_64): ...
    """
    if target not in TUNE_TARGETS:
        raise HalocutError(f"unknown tuning target '{target}'; targets: {', '.join(TUNE_TARGETS)}")
    chosen = Target("tvm", TUNE_TARGETS[target])
    if not tvm_backend.runnable(chosen):
        raise HalocutError(f"cannot tune for {target} on this machine ({platform.machine()}): MetaSchedule measures "
                           f"every candidate on the machine that runs it, and timings under an emulator (qemu) say "
                           f"nothing about a real {target} board; run halocut tune on one")
    if trials < 1:
        raise HalocutError(f"tune: trials must be at least 1, got {trials}")
    reason = tvm_backend.tuning_unavailable()
    if reason:
        raise HalocutError(f"cannot tune: {reason}")
    with tempfile.TemporaryDirectory() as scratch:
        options = CompileOptions(model, topology_path, Path(scratch) / "build", plan_path, planner, input_shape,
                                 stop_after="lower", progress=False)
        parts = [part for part, _ in compile_model(options).parts.values()]
    reports = []
    with _tuning_progress(progress) as report_progress:
        for part in parts:
            reports.append(tvm_tune.tune(part, chosen, trials, progress=report_progress(part.name)))
    return reports


@contextlib.contextmanager
def _tuning_progress(enabled: bool):
    """A rich progress bar per tuned kernel: trials done of its share, the best time so far."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("best {task.fields[best]}"), TimeElapsedColumn())
    with Progress(*columns, disable=not enabled) as bar:
        def for_part(name: str):
            tasks = {}

            def report(event: str, kernel: str, done: int, total: int, best_s: float | None) -> None:
                best = f"{best_s * 1e3:.3f} ms" if best_s is not None else "-"
                if event == "start":
                    tasks[kernel] = bar.add_task(f"{name} {kernel}", total=total, best=best)
                bar.update(tasks[kernel], completed=done, best=best)
            return report
        yield for_part


def profile_model(model: str, input_shape: tuple[int, ...] | None = None, runtime: str = "torch",
                  repeats: int = 5, warmup: int = 2, max_sweep: int = 8, progress: bool = True) -> dict:
    """``halocut profile``: measure the layers of ``model`` (and tiles of its spatial layers) on this machine;
    returns the profile as a JSON-ready dict (see :mod:`halocut.runtime.profile`)."""
    prepared = prepare_model(model, input_shape)
    return profile.profile_graph(prepared.graph, prepared.name, prepared.input_shape, runtime, repeats, warmup,
                                 max_sweep, progress)


def profile_model_on(device: str, address: str, model: str, input_shape: tuple[int, ...] | None = None,
                     runtime: str = "torch", repeats: int = 5, warmup: int = 2, max_sweep: int = 8) -> dict:
    """``halocut profile --device NAME --address ADDR``: :func:`profile_model` run as a Ray task on the machine
    that offers the resource ``device`` in the cluster at ``address`` (a real board or a testbed namespace, in its
    CPU cgroup there), with the threads the runtime's actors use there (:func:`~halocut.runtime.cpu.usable_cores`). The model
    must load on that machine (a zoo name does; a ``file.py:factory`` path must exist there)."""
    import ray

    from halocut.runtime.cpu import join_cpu_cap, usable_cores
    from halocut.runtime.ray_actor import limit_threads
    from halocut.runtime.ray_exec import connect

    def measure() -> dict:
        join_cpu_cap()
        limit_threads(usable_cores())
        result = profile_model(model, input_shape, runtime, repeats, warmup, max_sweep, progress=False)
        return {**result, "device": device}

    started = connect([device], address)
    try:
        task = ray.remote(measure).options(resources={device: 0.001}, num_cpus=0, max_retries=0)
        try:
            return ray.get(task.remote())
        except ray.exceptions.RayTaskError as error:
            cause = error.as_instanceof_cause()
            if isinstance(cause, HalocutError):
                raise HalocutError(f"profiling on '{device}': {str(cause).splitlines()[0]}") from None
            raise HalocutError(f"profiling on '{device}' failed: {str(error.cause).splitlines()[0]}") from None
    finally:
        if started:
            ray.shutdown()


def run_on_testbed(options, name: str):
    """``halocut run BUILD --testbed NAME``: the run (:func:`run_build`, on the plain DAG API: compiled graphs
    crash raylets across nodes in Ray 2.60) started from the requester's namespace against the testbed's Ray head,
    measured per link meanwhile (:class:`~halocut.runtime.testbed.measure.LinkMeter`); the run's report with
    ``links`` added."""
    import json
    import sys

    from halocut.runtime.run import RunReport
    from halocut.runtime.testbed.bed import State, require_root
    from halocut.runtime.testbed.measure import LinkMeter, child_error, halocut_in_head

    require_root()
    state = State.load(name)
    if not state.ready or not state.head:
        raise HalocutError(f"testbed '{name}' has no Ray head ready (up --no-ray, or a crashed up)")
    argv = ["run", str(Path(options.build).resolve()), "--requests", str(options.requests), "--plain-api", "--json"]
    for flag, value in (("--input", options.image), ("--threads", options.threads), ("--model", options.model),
                        ("--weights", options.weights), ("--window", options.window), ("--trust", options.trust),
                        ("--staged", options.staged)):
        if value is not None:
            argv += [flag, str(Path(value).resolve()) if flag in ("--input", "--weights", "--trust", "--staged") else str(value)]
    with LinkMeter(state) as meter:
        done = halocut_in_head(state, argv)
    for line in done.stderr.splitlines():
        if line.strip() and "halocut: error: " not in line:
            print(line, file=sys.stderr)
    if done.returncode:
        raise child_error(done, f"testbed '{name}'")
    report = RunReport.from_json(json.loads(done.stdout.strip().splitlines()[-1]))
    return RunReport(**{**report.__dict__, "links": meter.report})


def bench_build(build_dir: str | Path, parts: list[str] | None = None, model: str | None = None,
                runtimes: list[str] | None = None, profile_runtime: str | None = None, repeats: int = 20,
                warmup: int = 3, threads: int | None = None, progress: bool = True, trust=None) -> dict:
    """``halocut bench``: time a build's artifacts here against their stages unsplit (see
    :mod:`halocut.runtime.bench`). ``model``: what to prepare the stages from when the manifest's model
    name does not load (a ``file.py:factory``). ``trust``: a public key; the build's signature is checked before
    any artifact is read."""
    build_dir = Path(build_dir)
    manifest = load_manifest(build_dir, trust)
    hint = "; name the build's model with --model" if model is None else ""
    name = model or manifest["model"]["name"]
    try:
        prepared = prepare_model(name, tuple(manifest["model"]["input"]["shape"]))
    except HalocutError as error:
        raise HalocutError(f"{build_dir}: cannot prepare the build's model '{name}' again ({error}){hint}") from None
    return bench.bench_build(build_dir, manifest, prepared.graph, parts, runtimes, profile_runtime, repeats, warmup,
                             threads, progress, hint, name)


def run_build(options: run.RunOptions) -> run.RunReport:
    """``halocut run``: run a build on Ray across its machines, verify it against the original model (prepared
    here, by the manifest's name or ``options.model``), measure it beside the prediction."""
    return run.run_build(options, lambda flow: reference_for(flow, Path(options.build), options.model,
                                                             options.weights))


def reference_for(flow: Flow, build: Path, model: str | None, weights) -> tuple[run.Reference, str]:
    """The expected outputs of an input, and what they come from: the original model (``model``, else as the
    manifest's ``model.source`` records it: a name, or a file whose sha256 still matches, with its weights);
    when it cannot be loaded, the in-process executor of the build's artifacts, and the run says it is not
    verified against the model."""
    spec, why = (model, None) if model else _recorded_model(build, flow)
    if spec is None:
        return run.local_reference(flow, build, why)
    if weights is None and not model:
        weights, why = _recorded_weights(build)
        if why:
            return run.local_reference(flow, build, why)
    try:
        prepared = prepare_model(spec, flow.input_shape, weights)
    except HalocutError as error:
        return run.local_reference(flow, build, str(error))
    return _original(prepared, flow, model), "original model"


def _source(build: Path) -> dict | None:
    return read_json(build / "manifest.json")["model"].get("source")


def _recorded_model(build: Path, flow: Flow) -> tuple[str | None, str | None]:
    """(the spec that loads the build's model again, or None and why it cannot be)."""
    source = _source(build)
    if source is None or source["kind"] == "name":
        return (source or {}).get("name", flow.model), None
    if source["kind"] == "module":
        return None, (f"it was compiled from an in-memory {source.get('class', 'module')}, which cannot be loaded "
                      f"again; pass --model")
    path = Path(source["path"])
    if not path.is_file():
        return None, f"its model file {path} is gone; pass --model"
    if file_sha256(path) != source["sha256"]:
        return None, f"its model file {path} changed since the build (sha256 differs); pass --model"
    return f"{path}:{source['factory']}", None


def _recorded_weights(build: Path) -> tuple[Path | None, str | None]:
    recorded = (_source(build) or {}).get("weights")
    if recorded is None:
        return None, None
    path = Path(recorded["path"])
    if not path.is_file() or file_sha256(path) != recorded["sha256"]:
        return None, f"its weights file {path} is {'gone' if not path.is_file() else 'changed'}; pass --weights"
    return path, None


def _original(prepared: PreparedModel, flow: Flow, model: str | None) -> run.Reference:
    names = [n.name for n in output_nodes(prepared.graph)]
    built = sorted({final.name for final in flow.finals})
    if sorted(names) != built:
        raise HalocutError(f"model '{model or flow.model}' returns {names}, the build {built}")
    module = prepared.module.eval()

    def original(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            result = module(torch.from_numpy(x))
        values = result if isinstance(result, (list, tuple)) else [result]
        return {name: value.numpy() for name, value in zip(names, values)}
    return original


# --- training (paper 002, HierTrain): halocut profile --training, halocut train-plan, halocut train

@dataclass(frozen=True)
class TrainingModel:
    """A model as training sees it: traced (batch norms not folded: training updates them), annotated, its
    chain of layer groups."""

    name: str
    graph: fx.GraphModule
    groups: list[LayerGroup]
    input_shape: tuple[int, ...]

    @property
    def sample_bytes(self) -> int:
        """Q: one sample as the device sends it, an 8-bit image."""
        return int(np.prod(self.input_shape[1:]))


def training_model(model: str, input_shape: tuple[int, ...] | None = None) -> TrainingModel:
    """Load and trace ``model``, annotate it, and find its layer groups (:mod:`halocut.ir.layer_groups`)."""
    loaded = load_model(model, input_shape)
    annotate_layers(loaded.graph_module, loaded.input_shape)
    return TrainingModel(loaded.name, loaded.graph_module, layer_groups(loaded.graph_module), loaded.input_shape)


def profile_training_model(model: str, input_shape: tuple[int, ...] | None = None, batch: int = 32,
                           repeats: int = 5, warmup: int = 2) -> dict:
    """``halocut profile MODEL --training``: forward, backward and update seconds of every layer group here
    (see :mod:`halocut.runtime.train_profile`)."""
    if batch < 1:
        raise HalocutError(f"batch {batch}: need at least 1")
    trained = training_model(model, input_shape)
    return profile_training(trained.graph, trained.groups, trained.name, trained.input_shape, batch, repeats, warmup)


def train_plan_model(model: str, topology_path: str | Path, batch: int, policy: str = "hiertrain",
                     input_shape: tuple[int, ...] | None = None, compress_bits: int | None = None) -> TrainPlan:
    """``halocut train-plan``: the training costs of ``model`` on the topology's device, edge and cloud
    (profiles where the topology has them, the catalog's estimate elsewhere), then the policy's schedule;
    the plan's report has ``t_total_s``, ``planning_time_s`` (the policy alone), per worker its layers,
    samples and bytes sent."""
    if batch < 1:
        raise HalocutError(f"batch {batch}: need at least 1")
    choose = get_policy(policy)
    topology = load_topology(topology_path)
    trained = training_model(model, input_shape)
    bits = compress_bits or DEFAULT_COMPRESS_BITS.get(policy, 32)
    costs = training_costs(topology, trained.graph, trained.groups, trained.name, batch, trained.sample_bytes, bits)
    start = time.perf_counter()
    choice = choose(costs)
    elapsed = time.perf_counter() - start
    return to_train_plan(choice, costs, topology, trained.input_shape, elapsed)


def train_model(model: str, topology_path: str | Path, plan_path: str | Path, steps: int = 3, lr: float = 0.01,
                seed: int = 0, address: str | None = None, threads: int | None = None,
                kill: tuple[str, int] | None = None) -> hiertrain.TrainResult:
    """``halocut train``: the plan's schedule trained for ``steps`` iterations on Ray actors, checked against
    single-process SGD on the same batches (see :mod:`halocut.runtime.hiertrain`)."""
    plan = TrainPlan.load(plan_path)
    topology = load_topology(topology_path)
    trained = training_model(model, plan.input_shape)
    if trained.name != plan.model:
        raise HalocutError(f"{plan_path}: the plan is for model '{plan.model}', not '{trained.name}'")
    names = [g.name for g in trained.groups]
    if list(plan.groups) != names:
        raise HalocutError(f"{plan_path}: groups {list(plan.groups)} are not the model's layer groups {names}")
    modules = group_modules(trained.graph, trained.groups)
    return hiertrain.train(hiertrain.TrainOptions(plan, topology, modules, steps, lr, seed, address=address,
                                                  threads=threads, kill=kill))
