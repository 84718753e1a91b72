"""The documented work behind each CLI command (style.md item 8): the CLI parses and prints, tests call these.

Each function takes what a user names (a model spec, files, options), prepares
the model the one way plans expect (:func:`halocut.compiler.prepare.prepare_model`),
and hands the lower floors a prepared graph.

- ``halocut plan``: :func:`plan_model`
- ``halocut simulate``: :func:`simulate_model`
- ``halocut compile``: :func:`halocut.compiler.driver.compile_model`
- ``halocut profile``: :func:`profile_model`
- ``halocut bench``: :func:`bench_build`
- ``halocut run``: :func:`run_build`

>>> from pathlib import Path
>>> topology = Path(__file__).parents[1] / "examples/topologies/default.yaml"
>>> result = plan_model("lenet5", topology, "offload")
>>> result.plan.planner, result.simulation.latency_s > 0
('offload', True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from halocut.backends.manifest import load_manifest
from halocut.compiler.driver import Compilation, CompileOptions, compile_model
from halocut.compiler.prepare import PreparedModel, prepare_model
from halocut.ir.errors import HalocutError
from halocut.ir.graph import output_nodes
from halocut.ir.plan import Plan, single_device_plan
from halocut.planning import get_planner
from halocut.runtime import bench, profile, run
from halocut.runtime.flow import Flow
from halocut.runtime.gantt import plot_timeline
from halocut.runtime.simulate import SimulationResult, simulate, stream_timeline
from halocut.targets.cost import CostModel
from halocut.targets.topology import load_topology

__all__ = ["CompileOptions", "Compilation", "compile_model", "plan_model", "simulate_model", "profile_model",
           "bench_build", "run_build", "PlanResult"]


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    simulation: SimulationResult
    planning_time_s: float


def plan_model(model: str, topology_path: str | Path, planner: str,
               input_shape: tuple[int, ...] | None = None) -> PlanResult:
    """``halocut plan``: prepare the model, run the planner, score the plan with the simulator."""
    choose = get_planner(planner)
    topology = load_topology(topology_path)
    prepared = prepare_model(model, input_shape)
    start = time.perf_counter()
    plan = choose(prepared.graph, prepared.name, prepared.input_shape, topology, CostModel())
    elapsed = time.perf_counter() - start
    return PlanResult(plan, simulate(prepared.graph, plan, topology), elapsed)


def simulate_model(model: str, topology_path: str | Path, plan_path: str | Path | None = None,
                   input_shape: tuple[int, ...] | None = None, requests: int = 8,
                   gantt_path: str | Path | None = None) -> tuple[SimulationResult, Path]:
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
    result = simulate(prepared.graph, plan, topology, requests=requests)
    gantt = Path(gantt_path or f"{prepared.name.replace(':', '-')}-{topology.name}.png")
    title = f"{prepared.name} on {topology.name}: {result.latency_s * 1e3:.1f} ms, {result.throughput_ips:.1f} img/s"
    timeline = stream_timeline(prepared.graph, plan, topology, requests=min(requests, 4))
    plot_timeline(timeline, gantt, title, [d.name for d in topology.devices if d.computes])
    return result, gantt


def profile_model(model: str, input_shape: tuple[int, ...] | None = None, runtime: str = "torch",
                  repeats: int = 5, warmup: int = 2, max_sweep: int = 8, progress: bool = True) -> dict:
    """``halocut profile``: measure the layers of ``model`` (and tiles of its spatial layers) on this machine;
    returns the profile as a JSON-ready dict (see :mod:`halocut.runtime.profile`)."""
    prepared = prepare_model(model, input_shape)
    return profile.profile_graph(prepared.graph, prepared.name, prepared.input_shape, runtime, repeats, warmup,
                                 max_sweep, progress)


def bench_build(build_dir: str | Path, parts: list[str] | None = None, model: str | None = None,
                runtimes: list[str] | None = None, profile_runtime: str | None = None, repeats: int = 20,
                warmup: int = 3, threads: int | None = None, progress: bool = True) -> dict:
    """``halocut bench``: time a build's artifacts here against their stages unsplit (see
    :mod:`halocut.runtime.bench`). ``model``: what to prepare the stages from when the manifest's model
    name does not load (a ``file.py:factory``)."""
    build_dir = Path(build_dir)
    manifest = load_manifest(build_dir)
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
    """The expected outputs of an input, and what they come from: the original model (by the manifest's name,
    or ``model``); when it cannot be loaded, the in-process executor of the build's artifacts."""
    try:
        prepared = prepare_model(model or flow.model, flow.input_shape, weights)
    except HalocutError as error:
        return run.local_reference(flow, build, str(error))
    return _original(prepared, flow, model), "original model"


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
