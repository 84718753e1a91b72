"""The compile pipeline: a named list of steps, each timed, from a model and a topology to ``build/``.

frontend -> fold -> analyse -> plan -> lower -> emit -> verify -> manifest

Every step is a function of the :class:`Compilation` state. The build happens
in a temporary directory beside the output and is renamed into place at the
end, so an interrupted compile never leaves a manifest pointing to missing
files; an existing non-empty output is refused unless ``force``.

>>> [name for name, _ in STEPS]
['frontend', 'fold', 'analyse', 'plan', 'lower', 'emit', 'verify', 'manifest']
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.progress import Progress
from torch import fx, nn

from halocut.backends import signing, tvm_tune
from halocut.backends.base import Artifact, Part, Target, backend, execution
from halocut.backends.onnx import JETSON_TENSORRT
from halocut.backends.tvm_tune import TuneReport
from halocut.backends.manifest import write_manifest
from halocut.compiler import prepare
from halocut.compiler.frontend import LoadedModel, Shape
from halocut.compiler.manifest import build_manifest
from halocut.ir.errors import HalocutError
from halocut.ir.plan import Plan, merge_device, plan_parts
from halocut.passes.lower import LoweredStage, lower_plan
from halocut.planning import get_planner
from halocut.runtime.reference import call_module, max_error, run_lowered
from halocut.runtime.simulate import SimulationResult, simulate
from halocut.targets.cost import CostModel
from halocut.targets.topology import Device, Topology, load_topology

AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
X86 = {"kind": "llvm"}


@dataclass
class CompileOptions:
    model: str | nn.Module
    topology: str | Path
    output: str | Path
    plan: str | Path | None = None
    planner: str = "halocut"
    input_shape: Shape | None = None
    weights: str | Path | None = None
    backends: tuple[str, ...] | None = None  # restrict every device to these backends
    force: bool = False
    fp16: bool = False
    stop_after: str | None = None
    progress: bool = True
    tune: int = 0  # MetaSchedule trials per part for this machine's own (x86) TVM targets, shared database
    sign: str | Path | None = None  # ed25519 private key (halocut keygen): manifest.sig is written beside the manifest


@dataclass
class Compilation:
    """State handed from step to step."""

    options: CompileOptions
    loaded: LoadedModel | None = None
    graph: fx.GraphModule | None = None
    topology: Topology | None = None
    plan: Plan | None = None
    lowered: list[LoweredStage] = field(default_factory=list)
    parts: dict[str, tuple[Part, str]] = field(default_factory=dict)  # name -> (part, device)
    artifacts: dict[str, list[Artifact]] = field(default_factory=dict)
    verification: dict[str, dict] = field(default_factory=dict)  # check label -> max error, tolerance, parts, how
    verified: dict[str, dict] = field(default_factory=dict)  # artifact path -> how it was verified
    simulation: SimulationResult | None = None
    staging: Path | None = None
    manifest_path: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    tuning: list[TuneReport] = field(default_factory=list)  # compile --tune: one report per tuned part
    example: torch.Tensor | None = None
    reference: object = None

    # what the preparation steps (halocut.compiler.prepare) read
    @property
    def model(self):
        return self.options.model

    @property
    def input_shape(self):
        return self.options.input_shape

    @property
    def weights(self):
        return self.options.weights


def targets_for(device: Device, only: tuple[str, ...] | None = None, fp16: bool = False) -> list[Target]:
    """What each kind of machine gets, from its catalog backend (``only`` keeps those backends)."""
    cuda = {"kind": "cuda", "arch": device.cuda_arch} if device.cuda_arch else None
    choices = {
        "tvm-aarch64": [Target("tvm", AARCH64)],
        "tvm-x86": [Target("tvm", X86), Target("torch")],
        "tensorrt-onnx": [Target("onnx", fp16=fp16, tensorrt=device.tensorrt or JETSON_TENSORRT)] + ([Target("tvm", {**cuda, "host": AARCH64})] if cuda else []),
        "cuda": ([Target("tvm", cuda)] if cuda else []) + [Target("torch")],
        "torch": [Target("torch")],
    }[device.backend or "torch"]
    if only:
        choices = [t for t in choices if t.backend in only] or [Target(b, fp16=fp16) if b != "tvm" else
                                                               Target("tvm", X86) for b in only]
    return choices


def step_frontend(c: Compilation) -> None:
    prepare.step_load(c)
    c.topology = load_topology(c.options.topology)


def step_plan(c: Compilation) -> None:
    if c.options.plan is not None:
        c.plan = Plan.load(c.options.plan).simplified()
        if tuple(c.plan.input_shape) != tuple(c.loaded.input_shape):
            raise HalocutError(f"{c.options.plan}: plan is for input shape {tuple(c.plan.input_shape)}, the model "
                               f"is compiled at {tuple(c.loaded.input_shape)}")
    else:
        c.plan = get_planner(c.options.planner)(c.graph, c.loaded.name, c.loaded.input_shape, c.topology, CostModel())
    c.plan.validate(c.graph, {d.name for d in c.topology.devices})
    c.simulation = simulate(c.graph, c.plan, c.topology, requests=4)


def step_lower(c: Compilation) -> None:
    """Cut and slice the plan into parts, and record each part's example inputs by running the reference."""
    c.lowered = lower_plan(c.graph, c.plan)
    c.example = torch.randn(c.loaded.input_shape, generator=torch.Generator().manual_seed(0))
    devices = _part_devices(c)
    recorded: dict[str, tuple[fx.GraphModule, list]] = {}

    def record(name, module, args):
        module = independent(module)
        recorded[name] = (module, [a.detach().clone() for a in args])
        return module(*args)

    run_lowered(c.graph, c.lowered, c.example, call=record)
    interfaces = _interfaces(c.plan, c.lowered)
    for name, (module, args) in recorded.items():
        inputs, outputs = interfaces[name]
        c.parts[name] = (Part(name, module, tuple(args), inputs, outputs), devices[name])
    with torch.no_grad():
        c.reference = c.loaded.module(c.example)


def independent(module: fx.GraphModule) -> fx.GraphModule:
    """A part's own module, in eval mode: its submodules and buffers copied, its parameters shared (read only).

    Sliced and cut modules are built in training mode around the model's own submodules; a batch norm that
    was not folded (one after a concat) would be shared by sibling tiles and the model, and torch.onnx.export
    puts back the training mode it found, so a later export or run would use batch statistics and overwrite
    running_mean (issue 12, item 4)."""
    shared = {id(p): p for p in module.parameters()}
    return copy.deepcopy(module, memo=shared).eval()


def step_emit(c: Compilation) -> None:
    staging = _staging_dir(c.options)
    c.staging = staging
    jobs = [(name, part, device, target) for name, (part, device) in c.parts.items()
            for target in targets_for(c.topology.device(device), c.options.backends, c.options.fp16)]
    with Progress(disable=not c.options.progress, transient=True) as bar:
        task = bar.add_task("emitting parts", total=len(jobs))
        for name, part, device, target in jobs:
            bar.update(task, description=f"{name} -> {device} ({target.describe()})")
            artifact = _emit(part, target, staging / device, c.options.tune, c.tuning)
            c.artifacts.setdefault(name, []).append(_under(artifact, device))
            bar.advance(task)


def step_verify(c: Compilation) -> None:
    """Stitch the artifacts of each backend this machine executes (natively, or aarch64 TVM libraries under
    qemu-aarch64) through the reference executor and compare with the model; record per artifact how it was
    verified (``c.verified``), ``structural only`` with the reason where it could not be executed."""
    groups: dict[str, dict[str, Artifact]] = {}
    hows: dict[str, str] = {}
    for name, artifacts in c.artifacts.items():
        for artifact in artifacts:
            how = execution(artifact.target)
            if how is None:
                c.verified[artifact.path.as_posix()] = {"how": "structural only", "why": _unexecuted(artifact)}
                continue
            label = artifact.target.describe() if artifact.target.tvm_target else artifact.backend
            groups.setdefault(label, {})[name] = artifact
            hows[label] = how
    for label, chosen in sorted(groups.items()):
        runners = {name: backend(a.backend).load(a, c.staging) for name, a in chosen.items()}

        def call(name, module, args, runners=runners):
            if name not in runners:
                return call_module(name, c.parts[name][0].module, args)
            outputs = [torch.from_numpy(np.asarray(o)) for o in runners[name]([a.detach().numpy() for a in args])]
            return outputs[0] if len(outputs) == 1 else tuple(outputs)

        error, allowed = max_error(run_lowered(c.graph, c.lowered, c.example, call=call), c.reference)
        c.verification[label] = {"max_abs_error": error, "tolerance": allowed, "parts": sorted(runners),
                                 "how": hows[label]}
        for artifact in chosen.values():
            c.verified[artifact.path.as_posix()] = {"how": hows[label], "check": label}
        if not error <= allowed:
            raise HalocutError(f"{label} artifacts are not equivalent to the model: max abs error {error:.3g} > "
                               f"{allowed:.3g}")


def _unexecuted(artifact: Artifact) -> str:
    """Why this machine cannot execute an artifact (the reason a build's summary gives)."""
    spec = artifact.target.tvm_target or {}
    if spec.get("kind") == "cuda":
        return f"CUDA code for {spec.get('arch', 'a GPU')}: this machine has no GPU"
    if spec.get("kind") == "llvm":
        from halocut.backends import qemu

        return qemu.unavailable() or f"{artifact.target.describe()} code is not executed here"
    return f"{artifact.target.describe()} does not run here"


def step_manifest(c: Compilation) -> None:
    manifest = build_manifest(c)
    write_manifest(manifest, c.staging / "manifest.json")
    if c.options.sign is not None:  # signed before the build is published: never a build without its signature
        signing.sign_build(c.staging, c.options.sign)
    c.manifest_path = _publish(c.staging, Path(c.options.output), c.options.force) / "manifest.json"


STEPS: list[tuple[str, Callable[[Compilation], None]]] = [
    ("frontend", step_frontend), ("fold", prepare.step_fold), ("analyse", prepare.step_analyse), ("plan", step_plan),
    ("lower", step_lower), ("emit", step_emit), ("verify", step_verify), ("manifest", step_manifest),
]


def get_pipeline(stop_after: str | None = None) -> list[tuple[str, Callable[[Compilation], None]]]:
    """The steps up to and including ``stop_after``; a wrong name lists the valid ones."""
    names = [name for name, _ in STEPS]
    if stop_after is None:
        return list(STEPS)
    if stop_after not in names:
        raise HalocutError(f"unknown step '{stop_after}'; steps: {', '.join(names)}")
    return STEPS[:names.index(stop_after) + 1]


def compile_model(options: CompileOptions) -> Compilation:
    """Run the pipeline; returns the final state (``manifest_path`` says where the build is)."""
    _check_output(Path(options.output), options.force)
    if options.sign is not None:
        signing.check_private_key(options.sign)  # a key that will not sign is refused before any work
    compilation = Compilation(options)
    try:
        with _ended_by_signals():
            for name, step in get_pipeline(options.stop_after):
                start = time.perf_counter()
                step(compilation)
                compilation.timings[name] = time.perf_counter() - start
    finally:
        if compilation.staging is not None and compilation.staging.exists() and compilation.manifest_path is None:
            shutil.rmtree(compilation.staging, ignore_errors=True)
    return compilation


@contextlib.contextmanager
def _ended_by_signals():
    """SIGTERM and SIGHUP end the compile as Ctrl-C does (the half-made build is removed on the way out), then
    the process exits 128 + the signal's number. Only the main thread can set handlers; elsewhere, nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def end(number, frame):
        raise SystemExit(128 + number)
    previous = {sig: signal.signal(sig, end) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def summary_table(c: Compilation):
    """Parts per device, artifact sizes, predicted latency, verification and step times."""
    from rich.table import Table

    table = Table(title=f"{c.loaded.name if c.loaded else c.options.model} for "
                        f"{c.topology.name if c.topology else c.options.topology}")
    for column in ("device", "parts", "artifacts", "verified", "size", "predicted busy"):
        table.add_column(column, justify="left" if column in ("device", "parts", "artifacts", "verified") else "right")
    by_device: dict[str, list[str]] = {}
    for name, (_, device) in c.parts.items():
        by_device.setdefault(device, []).append(name)
    root = c.manifest_path.parent if c.manifest_path else c.staging
    for device, names in by_device.items():
        artifacts = [a for n in names for a in c.artifacts.get(n, [])]
        files = [root / p for a in artifacts for p in (a.path, *a.extra)] if root else []
        size = sum(f.stat().st_size for f in files if f.is_file())
        kinds = sorted({a.target.describe() for a in artifacts})
        busy = c.simulation.busy_s.get(device, 0.0) if c.simulation else 0.0
        table.add_row(device, ", ".join(names), "; ".join(kinds) or "-", _verified_cell(c, artifacts),
                      f"{size / 1e6:.2f} MB", f"{busy * 1e3:.2f} ms")
    if c.simulation:
        table.caption = (f"predicted latency {c.simulation.latency_s * 1e3:.2f} ms, throughput "
                         f"{c.simulation.throughput_ips:.2f} img/s, lower bound {c.simulation.lower_bound_s * 1e3:.2f} ms; "
                         + "; ".join(f"{k} ({v['how']}): max error {v['max_abs_error']:.2g}" for k, v in c.verification.items())
                         + _unverified_line(c)
                         + "\nsteps: " + ", ".join(f"{k} {v:.2f} s" for k, v in c.timings.items())
                         + (f"\n{tuning_line(c.tuning)}" if c.tuning else ""))
    return table


def _verified_cell(c: Compilation, artifacts: list[Artifact]) -> str:
    """``tvm aarch64: qemu-aarch64; onnx: native``: how each kind of a device's artifacts was verified."""
    hows = {a.target.describe(): c.verified.get(a.path.as_posix(), {}).get("how", "-") for a in artifacts}
    return "; ".join(f"{kind}: {how}" for kind, how in sorted(hows.items())) or "-"


def _unverified_line(c: Compilation) -> str:
    """The summary's warning that some artifacts were not executed: how many, which kinds, and why."""
    reasons: dict[str, list[str]] = {}
    for path, entry in c.verified.items():
        if entry["how"] == "structural only":
            reasons.setdefault(entry["why"], []).append(path)
    return "".join(f"\nNOT VERIFIED by execution ({len(paths)} artifact{'s' if len(paths) > 1 else ''}, e.g. "
                   f"{paths[0]}): {why}; checked structurally only" for why, paths in sorted(reasons.items()))


def tuning_line(reports: list[TuneReport]) -> str:
    """``tuning: 5 kernels in 2 parts, 3 found in the database, 2 tuned (64 trials); database ...``."""
    kernels = sum(len(r.tasks) for r in reports)
    hits = sum(r.hits for r in reports)
    databases = ", ".join(sorted({str(r.database) for r in reports}))
    return (f"tuning: {kernels} kernel(s) in {len(reports)} part(s), {hits} found in the database, {kernels - hits} "
            f"tuned ({sum(r.trials_run for r in reports)} trials); database {databases}")


def _part_devices(c: Compilation) -> dict[str, str]:
    """Which device runs each part; an fc stage's merge runs where its result is used next."""
    requester = c.topology.requester.name
    return {p.name: p.device if p.device is not None else
            merge_device(c.plan, p.stage, requester, lambda d: c.topology.device(d).computes)
            for p in plan_parts(c.plan)}


def _emit(part: Part, target: Target, out_dir: Path, trials: int, tuning: list[TuneReport]) -> Artifact:
    """Emit one part; TVM parts for this machine's own target are tuned first when asked, in the shared
    database of their target kind (kernels it holds are not tuned again), and the report is appended to
    ``tuning``."""
    module = backend(target.backend)
    if trials and target.backend == "tvm" and module.runnable(target):
        report = tvm_tune.tune(part, target, trials)
        tuning.append(report)
        return module.emit(part, target, out_dir, tuning_database=report.database)
    return module.emit(part, target, out_dir)


def _interfaces(plan: Plan, lowered: list[LoweredStage]) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Input and output tensor names of every part, as the manifest and the runtime name them."""
    names = {}
    for p in plan_parts(plan):
        stage = lowered[p.stage]
        if p.tile is not None:
            hop = stage.tiles[p.tile].hops[p.hop]
            names[p.name] = (hop.inputs, hop.outputs)
        elif p.cluster is not None:
            names[p.name] = ((stage.fc.input,), ("partial",))
        elif p.merge:
            names[p.name] = (tuple(f"part{k}" for k in range(len(stage.fc.clusters))), (stage.fc.output,))
        else:
            names[p.name] = (stage.whole.inputs, stage.whole.outputs)
    return names


def _under(artifact: Artifact, device: str) -> Artifact:
    return Artifact(artifact.part, artifact.backend, artifact.target, Path(device) / artifact.path,
                    tuple(Path(device) / p for p in artifact.extra), tensorrt=artifact.tensorrt)


def _check_output(output: Path, force: bool) -> None:
    if output.exists() and not output.is_dir():
        raise HalocutError(f"output '{output}' exists and is not a directory")
    if output.exists() and any(output.iterdir()) and not force:
        raise HalocutError(f"output '{output}' is not empty; use --force to replace it")


def _staging_dir(options: CompileOptions) -> Path:
    output = Path(options.output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _publish(staging: Path, output: Path, force: bool) -> Path:
    """Move the finished build into place: the old output (with --force) goes only once the new one is whole."""
    output = output.resolve()
    if output.exists():
        retired = output.parent / f".{output.name}.old-{os.getpid()}"
        output.rename(retired)
        staging.rename(output)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(output)
    return output
