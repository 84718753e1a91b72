"""``halocut bench``: time every artifact of a build on this machine, and each stage run unsplit.

For every part of ``build/manifest.json`` and every artifact of it this machine
runs (ONNX with onnxruntime, TVM x86 libraries, torch ``.pt2`` programs), the
part runs on its own recorded inputs: warm-up runs, then ``repeats`` timed
runs (fewer when they take over :data:`BUDGET_S`), giving the median and p90
latency and the achieved GFLOPS (the part's FLOPs over the median). A part
whose artifacts all target other machines (TVM aarch64 or CUDA) says so; its
aarch64 TVM libraries still run under qemu-aarch64 when this machine has it
(``emulated``: outputs checked against the part's module, times labelled
emulated and kept out of every figure: an emulator's times say nothing of a Pi).

"The same layers run unsplit": the model is prepared again and the manifest's
plan lowered again (passes/lower), so every part's module, inputs and layers
are known; each stage's nodes are cut out whole (passes/cut), emitted with the
same backend and target as the stage's parts, and timed on the full input.
``ratio = sum of the parts' medians / unsplit median`` shows what halos, small
tiles and clusters cost; a single stage is its own unsplit form (ratio 1).

FLOPs of a part: each layer's ``node.meta["layer"].flops`` scaled to the region
the part computes of it (the halo pass's regions, ``targets.cost.region_fraction``)
or, for an fc cluster, to its share of the features.

The result is a superset of a ``halocut profile`` JSON (``device_figures`` and
``layers``: per-layer ``latency_s`` and ``heights``), so a topology can name it
as a device: ``{name: local, role: edge, profile: build/bench.json}``. Each
measured part's median (of one runtime, ``runtime``) is spread over its layers
in proportion to the analytic cost model's estimate for them (pointwise ops
fused into the kernel before them get none, as the cost model sums them), so
the cost model, summing those layers over the same regions, gives back the
measured latency of every single and spatial stage (of every tile, unless two
tiles need a layer at the same height; then their mean; the simulator costs fc
clusters from the catalog-style figures instead). ``parts`` and ``stages`` hold every
runtime's timings; ``host.load_average`` (1-minute, before and after) says how
busy the machine was, since other processes' load skews small kernels' timings.

>>> time_runner(lambda inputs: inputs, [], repeats=5, warmup=1).repeats
5
"""

from __future__ import annotations

import hashlib
import os
import statistics
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import fx

from halocut.backends.base import Artifact, Part, Target, backend
from halocut.ir.errors import HalocutError
from halocut.ir.graph import split_hops
from halocut.ir.names import parse_part_name, part_name
from halocut.ir.ops import FREE
from halocut.ir.plan import Plan, plan_parts
from halocut.ir.regions import EMPTY, Region
from halocut.passes.halo import compute_halos
from halocut.passes.lower import LoweredStage, lower_plan
from halocut.runtime.profile import copy_bandwidth, host_info, memory_bytes, record_values
from halocut.runtime.reference import run_lowered
from halocut.targets.cost import CostModel, fusable, region_fraction
from halocut.targets.topology import Device

FORMAT = "halocut-bench/1"
RUNTIME_OF = {"onnx": "onnxruntime", "tvm": "tvm", "torch": "torch"}  # artifact backend -> runtime
RUNTIMES = tuple(RUNTIME_OF.values())
BUDGET_S = 5.0  # per timing: stop repeating after this long, once MIN_REPEATS samples are in
MIN_REPEATS = 3
EMULATED_RUNS = 3  # runs of an emulated artifact, the first a warm-up: its outputs are checked, its times labelled

Layers = list[tuple[fx.Node, Region | None, float]]  # node, region of its output computed (None: all), share


@dataclass(frozen=True)
class Timing:
    median_s: float
    p90_s: float
    repeats: int

    def to_json(self, flops: float) -> dict:
        return {"median_s": self.median_s, "p90_s": self.p90_s, "repeats": self.repeats,
                "gflops": flops / self.median_s / 1e9 if self.median_s > 0 else None}


@dataclass(frozen=True)
class Rebuilt:
    """A build's parts made again from its model and plan: modules, recorded inputs, layers computed."""

    graph: fx.GraphModule
    plan: Plan
    lowered: list[LoweredStage]
    parts: dict[str, tuple[fx.GraphModule, list[torch.Tensor]]]  # name -> (module, inputs)
    values: dict[str, object]  # every graph value of the example run
    layers: dict[str, Layers]  # part -> the layers it computes
    volumes: list[list[fx.Node]]  # stage -> its nodes in graph order

    def flops(self, part: str) -> float:
        """FLOPs a part computes, halo included (see the module docstring)."""
        return float(sum(n.meta["layer"].flops * region_fraction(n.meta["layer"], r) * s
                         for n, r, s in self.layers[part]))

    def stage_flops(self, index: int) -> float:
        return float(sum(n.meta["layer"].flops for n in self.volumes[index]))


def time_runner(run: Callable[[list], object], inputs: list, repeats: int, warmup: int,
                budget_s: float = BUDGET_S) -> Timing:
    """Median and p90 of ``repeats`` timed calls after ``warmup`` untimed ones (fewer past ``budget_s``)."""
    for _ in range(warmup):
        run(inputs)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeats and (len(samples) < MIN_REPEATS or time.perf_counter() - start < budget_s):
        began = time.perf_counter()
        run(inputs)
        samples.append(time.perf_counter() - began)
    return Timing(statistics.median(samples), float(np.percentile(samples, 90)), len(samples))


def bench_build(build_dir: str | Path, manifest: dict, graph: fx.GraphModule, parts: list[str] | None = None,
                runtimes: list[str] | None = None, profile_runtime: str | None = None, repeats: int = 20,
                warmup: int = 3, threads: int | None = None, progress: bool = True, hint: str = "",
                model: str | None = None) -> dict:
    """Benchmark a build's artifacts here; returns the bench JSON (see the module docstring).

    ``manifest``: the build's, loaded and checked; ``graph``: its model prepared again (traced, BN folded,
    annotated: :func:`halocut.compiler.commands.bench_build` does both); ``parts``: only these (stages
    they belong to are still timed unsplit); ``runtimes``: a subset of :data:`RUNTIMES`;
    ``profile_runtime``: whose timings fill ``layers`` (default: the runtime that timed the most parts,
    then the fastest); ``threads``: torch's and TVM's thread count while timing (default theirs;
    onnxruntime keeps its own); ``hint``: added to an error saying the model does not fit the build;
    ``model``: the model's name in such errors (default: the manifest's).

    Compiling takes a while, so the example is not run::

        result = commands.bench_build("build/r18", repeats=5)  # resnet18 whole on a Jetson: its ONNX runs here
        result["stages"][0]["ratio"]  # {'onnxruntime': 1.0}: a single stage is its own unsplit form
    """
    build_dir = Path(build_dir)
    load_before = os.getloadavg()
    if repeats < 1 or warmup < 0:
        raise HalocutError(f"bench: repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    if threads is not None and threads < 1:
        raise HalocutError(f"bench: threads must be >= 1, got {threads}")
    runtimes = _check_runtimes(runtimes)
    entries = _manifest_parts(manifest)
    chosen = _select(entries, parts, build_dir)
    rebuilt = rebuild(manifest, build_dir, graph, hint, model)
    jobs = [(name, a) for name in chosen for a in _runnable(entries[name][1], runtimes)]
    stages = sorted({parse_part_name(name).stage for name in chosen})
    wholes = _unsplit_jobs(jobs)
    emulated_jobs = [(name, a) for name in chosen for a in _emulated(entries[name][1], runtimes)]
    with _progress(progress) as bar, tempfile.TemporaryDirectory(prefix="halocut-bench-") as work, \
            _thread_count(threads):
        task = bar.add_task("benchmarking", total=len(jobs) + len(wholes) + len(emulated_jobs))
        runs = _time_parts(build_dir, rebuilt, jobs, repeats, warmup, bar, task)
        unsplit = _time_unsplit(rebuilt, wholes, runs, Path(work), repeats, warmup, bar, task)
        emulated = _run_emulated(build_dir, rebuilt, emulated_jobs, entries, bar, task)
    runtime = _profile_runtime(runs, profile_runtime)
    figures = _figures(rebuilt, runs, unsplit, runtime)
    return {
        "format": FORMAT, "device": "local", "runtime": runtime, "model": manifest["model"]["name"],
        "input_shape": manifest["model"]["input"]["shape"], "build": str(build_dir),
        "host": {**host_info(), "threads": threads, "load_average": [load_before[0], os.getloadavg()[0]]},
        "manifest_sha256": hashlib.sha256((build_dir / "manifest.json").read_bytes()).hexdigest(),
        "repeats": repeats, "warmup": warmup, "device_figures": figures,
        "layers": _profile_layers(rebuilt, runs, unsplit, runtime, _local_device(figures)) if runtime else {},
        "parts": [_part_json(name, entries[name], rebuilt, runs.get(name, {}), runtimes) for name in chosen],
        "stages": [_stage_json(i, rebuilt, entries, runs, unsplit) for i in stages],
        "emulated": emulated,
    }


def rebuild(manifest: dict, build_dir: Path, graph: fx.GraphModule, hint: str = "",
            model: str | None = None) -> Rebuilt:
    """Lower the build's plan again on its prepared model (named ``model`` in errors, default the manifest's
    name): the same parts, and the stages whole."""
    name = model or manifest["model"]["name"]
    shape = tuple(manifest["model"]["input"]["shape"])
    plan = Plan.from_json(manifest["plan"], f"{build_dir}/manifest.json plan")
    try:
        lowered = lower_plan(graph, plan)
    except HalocutError as error:
        raise HalocutError(f"{build_dir}: the build's plan does not fit model '{name}' ({error}){hint}") from None
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    parts: dict[str, tuple[fx.GraphModule, list[torch.Tensor]]] = {}

    def record(part, module, args):
        parts[part] = (module, [a.detach().clone() for a in args])
        return module(*args)

    run_lowered(graph, lowered, example, call=record)
    volumes = _volumes(graph, plan)
    rebuilt = Rebuilt(graph, plan, lowered, parts, record_values(graph, example),
                      _part_layers(plan, volumes), volumes)
    _check_matches(manifest, rebuilt, name, hint, build_dir)
    return rebuilt


def write_bench(result: dict, path: str | Path, force: bool = True) -> Path:
    from halocut.runtime.profile import write_profile

    return write_profile(result, path, force)


def bench_tables(result: dict) -> list:
    """Rich tables: every part's timings, then every stage's parts against its layers unsplit."""
    from rich.table import Table

    parts = Table(title=f"{result['model']}: parts on this machine ({result['host']['processor']})")
    for column in ("part", "device", "runtime", "target", "median ms", "p90 ms", "GFLOPS"):
        parts.add_column(column, justify="right" if column.endswith(("ms", "GFLOPS")) else "left")
    for part in result["parts"]:
        for runtime, run in part["runs"].items():
            parts.add_row(part["name"], part["device"], runtime, run["target"], _ms(run["median_s"]),
                          _ms(run["p90_s"]), "-" if run["gflops"] is None else f"{run['gflops']:.2f}")
        if not part["runs"]:
            parts.add_row(part["name"], part["device"], "-", part["note"], "-", "-", "-")
    host = result["host"]
    parts.caption = (f"threads: {host['threads'] or 'default'}; load average {host['load_average'][0]:.1f} -> "
                     f"{host['load_average'][1]:.1f} on {host['cpus']} cpus; profile layers from "
                     f"{result['runtime'] or 'nothing'}")
    stages = Table(title="stages: parts against the same layers unsplit")
    for column in ("stage", "kind", "runtime", "parts ms", "unsplit ms", "ratio", "FLOPs split/unsplit"):
        stages.add_column(column, justify="left" if column in ("stage", "kind", "runtime") else "right")
    for stage in result["stages"]:
        flops = f"{stage['split_flops'] / stage['flops']:.3f}" if stage["flops"] else "-"
        for runtime, timing in stage["unsplit"].items():
            split, ratio = stage["split_s"][runtime], stage["ratio"][runtime]
            missing = f"{len(stage['missing'][runtime])} of {len(stage['parts'])} parts not timed"
            stages.add_row(f"s{stage['index']}", stage["kind"], runtime, missing if split is None else _ms(split),
                           _ms(timing["median_s"]), "-" if ratio is None else f"{ratio:.2f}", flops)
        if not stage["unsplit"]:
            stages.add_row(f"s{stage['index']}", stage["kind"], "-", "no part timed here", "-", "-", flops)
    tables = [parts, stages]
    if result.get("emulated"):
        emulated = Table(title="emulated on this machine: outputs checked, times are NOT the device's")
        for column in ("part", "device", "target", "emulator", "max abs error", "emulated ms"):
            emulated.add_column(column, justify="right" if column in ("max abs error", "emulated ms") else "left")
        for run in result["emulated"]:
            emulated.add_row(run["name"], run["device"], run["target"], run["emulator"], f"{run['max_abs_error']:.2g}",
                             _ms(run["emulated_median_s"]))
        emulated.caption = "user-mode emulation (qemu-aarch64) runs ARM code many times slower than a Pi: no timing claims"
        tables.append(emulated)
    return tables


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


# --- the manifest and the rebuilt model

def _check_runtimes(runtimes: list[str] | None) -> tuple[str, ...]:
    unknown = [r for r in runtimes or () if r not in RUNTIMES]
    if unknown:
        raise HalocutError(f"unknown runtime '{unknown[0]}'; runtimes: {', '.join(RUNTIMES)}")
    return tuple(runtimes) if runtimes else RUNTIMES


def _manifest_parts(manifest: dict) -> dict[str, tuple[str, dict]]:
    """Part name -> (device, manifest entry), in plan order."""
    entries = {p["name"]: (device, p) for device, e in manifest["devices"].items() for p in e["parts"]}
    return dict(sorted(entries.items(), key=lambda item: _order(item[0])))


def _order(name: str) -> tuple:
    p = parse_part_name(name)
    return p.stage, p.merge, p.tile if p.tile is not None else -1, p.hop, p.cluster if p.cluster is not None else -1


def _select(entries: dict, wanted: list[str] | None, build_dir: Path) -> list[str]:
    unknown = [name for name in wanted or () if name not in entries]
    if unknown:
        raise HalocutError(f"{build_dir}: no part '{unknown[0]}'; parts: {', '.join(entries)}")
    return [name for name in entries if not wanted or name in wanted]


def _volumes(graph: fx.GraphModule, plan: Plan) -> list[list[fx.Node]]:
    order = {n.name: (i, n) for i, n in enumerate(graph.graph.nodes)}
    return [[order[name][1] for name in sorted(stage.nodes, key=lambda n: order[n][0])] for stage in plan.stages]


def _part_layers(plan: Plan, volumes: list[list[fx.Node]]) -> dict[str, Layers]:
    """Which layers each part computes, over which region of their output, at which share of features."""
    layers: dict[str, Layers] = {}
    halos: dict[tuple[int, int], dict[str, Region]] = {}
    for p in plan_parts(plan):
        stage, volume = plan.stages[p.stage], volumes[p.stage]
        if p.tile is not None:
            tile = stage.tiles[p.tile]
            needs = halos.setdefault((p.stage, p.tile), compute_halos(volume, tile.region))
            hop = split_hops(volume, [d.until for d in tile.devices])[p.hop]
            layers[p.name] = [(n, needs.get(n.name, EMPTY), 1.0) for n in hop
                              if not needs.get(n.name, EMPTY).is_empty()]
        elif p.cluster is not None:
            width = volume[0].meta["layer"].attrs["in_features" if stage.mode == "data" else "out_features"]
            features = stage.clusters[p.cluster].features
            share = (features[1] - features[0]) / width
            layers[p.name] = [(n, None, share) for n in volume if n.meta["layer"].kind == "linear"]
        else:
            layers[p.name] = [] if p.merge else [(n, None, 1.0) for n in volume]
    return layers


def _check_matches(manifest: dict, rebuilt: Rebuilt, name: str, hint: str, build_dir: Path) -> None:
    for device, entry in manifest["devices"].items():
        for part in entry["parts"]:
            made = rebuilt.parts.get(part["name"])
            shapes = [list(x.shape) for x in made[1]] if made else None
            if shapes != [i["shape"] for i in part["inputs"]]:
                raise HalocutError(f"{build_dir}: model '{name}' prepared again does not give part "
                                   f"'{part['name']}' its inputs {[i['shape'] for i in part['inputs']]} "
                                   f"(got {shapes}){hint}")


def _runnable(entry: dict, runtimes: tuple[str, ...]) -> list[Artifact]:
    """The part's artifacts this machine runs, one per selected runtime, in the manifest's order."""
    found: dict[str, Artifact] = {}
    for a in entry["artifacts"]:
        runtime = RUNTIME_OF[a["backend"]]
        if runtime in runtimes and runtime not in found and _runs_here(a):
            found[runtime] = _artifact(entry["name"], a)
    return list(found.values())


def _emulated(entry: dict, runtimes: tuple[str, ...]) -> list[Artifact]:
    """The part's artifacts this machine runs only under an emulator (aarch64 TVM libraries under qemu)."""
    from halocut.backends.base import execution

    return [_artifact(entry["name"], a) for a in entry["artifacts"] if RUNTIME_OF[a["backend"]] in runtimes
            and not _runs_here(a) and execution(_artifact("", a).target) not in (None, "native")]


def _run_emulated(build_dir: Path, rebuilt: Rebuilt, jobs: list[tuple[str, Artifact]], entries: dict,
                  bar: Progress, task) -> list[dict]:
    """Each emulated artifact run a few times in one emulator process on its recorded inputs: its outputs
    against the part's own module, and emulated times, which are not the device's (no timing claims)."""
    from halocut.backends import qemu

    results = []
    for name, artifact in jobs:
        bar.update(task, description=f"{name} ({artifact.target.describe()}, emulated)")
        module, inputs = rebuilt.parts[name]
        with torch.no_grad():
            expected = module(*inputs)
        expected = [t.numpy() for t in (expected if isinstance(expected, (tuple, list)) else [expected])]
        outputs, times = qemu.run(build_dir / artifact.path, [x.numpy() for x in inputs], repeats=EMULATED_RUNS,
                                  part=name)
        error = max(float(np.abs(np.asarray(o, np.float64) - e).max()) for o, e in zip(outputs, expected))
        results.append({"name": name, "device": entries[name][0], "target": artifact.target.describe(),
                        "artifact": artifact.path.as_posix(), "emulator": "qemu-aarch64",
                        "max_abs_error": error, "emulated_median_s": statistics.median(times[1:] or times),
                        "runs": len(times), "note": "emulated: these times are not the device's"})
        bar.advance(task)
    return results


def _artifact(part: str, a: dict) -> Artifact:
    return Artifact(part, a["backend"], Target(a["backend"], a.get("tvm_target")), Path(a["path"]))


def _runs_here(a: dict) -> bool:
    return backend(a["backend"]).runnable(_artifact("", a).target)


# --- timing

@contextmanager
def _thread_count(threads: int | None):
    """torch's threads, and TVM's (read when its thread pool starts), set for the block."""
    if threads is None:
        yield
        return
    before, variable = torch.get_num_threads(), os.environ.get("TVM_NUM_THREADS")
    torch.set_num_threads(threads)
    os.environ["TVM_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if variable is None:
            os.environ.pop("TVM_NUM_THREADS", None)
        else:
            os.environ["TVM_NUM_THREADS"] = variable


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), disable=not enabled, transient=True)


def _time_parts(build_dir: Path, rebuilt: Rebuilt, jobs: list[tuple[str, Artifact]], repeats: int, warmup: int,
                bar: Progress, task) -> dict[str, dict[str, tuple[Artifact, Timing]]]:
    runs: dict[str, dict[str, tuple[Artifact, Timing]]] = {}
    for name, artifact in jobs:
        bar.update(task, description=f"{name} ({artifact.target.describe()})")
        inputs = [x.numpy() for x in rebuilt.parts[name][1]]
        timing = time_runner(backend(artifact.backend).load(artifact, build_dir), inputs, repeats, warmup)
        runs.setdefault(name, {})[RUNTIME_OF[artifact.backend]] = (artifact, timing)
        bar.advance(task)
    return runs


def _unsplit_jobs(jobs: list[tuple[str, Artifact]]) -> dict[tuple[int, str], Target]:
    """(stage, runtime) -> target, for each runtime that times a part of a stage: the first such part's."""
    targets: dict[tuple[int, str], Target] = {}
    for name, artifact in jobs:
        targets.setdefault((parse_part_name(name).stage, RUNTIME_OF[artifact.backend]), artifact.target)
    return dict(sorted(targets.items()))


def _time_unsplit(rebuilt: Rebuilt, wholes: dict[tuple[int, str], Target], runs: dict, work: Path, repeats: int,
                  warmup: int, bar: Progress, task) -> dict[tuple[int, str], Timing]:
    """Each stage's nodes whole, with each runtime that timed one of its parts, on that part's target."""
    unsplit = {}
    for (index, runtime), target in wholes.items():
        if rebuilt.plan.stages[index].kind == "single":  # the part is the whole stage
            unsplit[index, runtime] = runs[part_name(index)][runtime][1]
            bar.advance(task)
            continue
        bar.update(task, description=f"s{index} unsplit ({target.describe()}): compiling")
        whole = rebuilt.lowered[index].whole
        inputs = [rebuilt.values[n] for n in whole.inputs]
        part = Part(f"s{index}_unsplit", whole.module, tuple(inputs), whole.inputs, whole.outputs)
        module = backend(target.backend)
        artifact = module.emit(part, target, work)
        bar.update(task, description=f"s{index} unsplit ({target.describe()})")
        unsplit[index, runtime] = time_runner(module.load(artifact, work), [x.numpy() for x in inputs], repeats,
                                              warmup)
        bar.advance(task)
    return unsplit


# --- the JSON

def _part_json(name: str, entry: tuple[str, dict], rebuilt: Rebuilt, runs: dict, runtimes: tuple[str, ...]) -> dict:
    device, manifest_entry = entry
    flops = rebuilt.flops(name)
    elsewhere = [a["target"] for a in manifest_entry["artifacts"] if not _runs_here(a)]
    unselected = [a["target"] for a in manifest_entry["artifacts"]
                  if _runs_here(a) and RUNTIME_OF[a["backend"]] not in runtimes]
    note = None
    if not runs:
        note = (f"not timed: its runtimes are not selected ({', '.join(unselected)})" if unselected else
                f"no artifact runnable here ({', '.join(elsewhere) or 'none in the build'})")
    return {"name": name, "device": device, "stage": parse_part_name(name).stage, "kind": manifest_entry["kind"],
            "flops": flops, "predicted_s": manifest_entry["predicted_s"],
            "runs": {runtime: {"backend": a.backend, "target": a.target.describe(), "artifact": a.path.as_posix(),
                               **timing.to_json(flops)} for runtime, (a, timing) in runs.items()},
            "not_runnable_here": elsewhere, "not_selected": unselected, "note": note}


def _stage_json(index: int, rebuilt: Rebuilt, entries: dict, runs: dict, unsplit: dict) -> dict:
    names = [n for n in entries if parse_part_name(n).stage == index]
    flops = rebuilt.stage_flops(index)
    measured = sorted({r for (i, r) in unsplit if i == index})
    missing = {r: [n for n in names if r not in runs.get(n, {})] for r in measured}
    split = {r: None if missing[r] else sum(runs[n][r][1].median_s for n in names) for r in measured}
    return {"index": index, "kind": rebuilt.plan.stages[index].kind, "parts": names, "flops": flops,
            "split_flops": sum(rebuilt.flops(n) for n in names),
            "unsplit": {r: unsplit[index, r].to_json(flops) for r in measured}, "split_s": split,
            "ratio": {r: None if split[r] is None else split[r] / unsplit[index, r].median_s for r in measured},
            "missing": missing}


def _profile_runtime(runs: dict, wanted: str | None) -> str | None:
    counts: dict[str, list[float]] = defaultdict(list)
    for by_runtime in runs.values():
        for runtime, (_, timing) in by_runtime.items():
            counts[runtime].append(timing.median_s)
    if wanted is not None:
        if wanted not in counts:
            raise HalocutError(f"profile runtime '{wanted}' timed no part; timed: {', '.join(counts) or 'none'}")
        return wanted
    return max(counts, key=lambda r: (len(counts[r]), -sum(counts[r])), default=None)


def _figures(rebuilt: Rebuilt, runs: dict, unsplit: dict, runtime: str | None) -> dict:
    """Device figures as ``halocut profile`` writes them; the peak is the best FLOP/s achieved here."""
    rates = [rebuilt.flops(name) / by_runtime[runtime][1].median_s for name, by_runtime in runs.items()
             if runtime in by_runtime and by_runtime[runtime][1].median_s > 0]
    rates += [rebuilt.stage_flops(i) / t.median_s for (i, r), t in unsplit.items() if r == runtime and t.median_s > 0]
    return {"class": "cpu", "peak_flops": max([r for r in rates if r > 0], default=1e9),
            "memory_bytes": memory_bytes(), "memory_bandwidth_bytes_per_s": copy_bandwidth(), "backend": "tvm-x86"}


def _local_device(figures: dict) -> Device:
    return Device("local", "device", "profile", figures["class"], figures["peak_flops"], figures["memory_bytes"],
                  figures["memory_bandwidth_bytes_per_s"], figures["backend"])


def _profile_layers(rebuilt: Rebuilt, runs: dict, unsplit: dict, runtime: str, device: Device) -> dict:
    """Per-layer entries of the profile format: from each stage unsplit, and heights from its tiles."""
    layers: dict[str, dict] = {}
    for index, volume in enumerate(rebuilt.volumes):
        if (index, runtime) in unsplit:
            points = _tile_points(rebuilt, runs, index, runtime, device)
            for node, _, seconds in _attribute([(n, None, 1.0) for n in volume], unsplit[index, runtime], device):
                layers[node.name] = _layer_entry(node, seconds, points.get(node.name, {}))
    return layers


def _tile_points(rebuilt: Rebuilt, runs: dict, index: int, runtime: str, device: Device) -> dict[str, dict]:
    """Layer -> {height: seconds at full width} from the stage's timed tiles (the mean where tiles share a height)."""
    points: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for name, by_runtime in runs.items():
        part = parse_part_name(name)
        if part.kind == "tile" and part.stage == index and runtime in by_runtime:
            for node, region, seconds in _attribute(rebuilt.layers[name], by_runtime[runtime][1], device):
                width_share = region.width / node.meta["layer"].output_shape[-1]
                points[node.name][region.height].append(seconds / width_share)
    return {name: {h: statistics.fmean(v) for h, v in by_height.items()} for name, by_height in points.items()}


def _layer_entry(node: fx.Node, seconds: float, heights: dict[int, float]) -> dict:
    """A profile layer: feature maps get heights (the full height from the unsplit run, unless a tile had it)."""
    layer = node.meta["layer"]
    entry = {"kind": layer.kind, "output_shape": list(layer.output_shape), "flops": layer.flops, "latency_s": seconds}
    if len(layer.output_shape) == 4:
        heights = {layer.output_shape[-2]: seconds, **heights}
        entry["heights"] = {str(h): heights[h] for h in sorted(heights)}
    return entry


def _attribute(items: Layers, timing: Timing, device: Device) -> list[tuple[fx.Node, Region | None, float]]:
    """A part's median spread over its layers in proportion to the cost model's estimate for each."""
    members = {n.name for n, _, _ in items}
    costed = [(n, r) for n, r, _ in items if n.meta["layer"].kind not in FREE]
    model = CostModel()
    weights = [model.latency(device, n.meta["layer"], r, None, fused=fusable(n, members)) for n, r in costed]
    if not sum(weights):
        weights = [1.0] * len(costed)
    total = sum(weights)
    return [(n, r, timing.median_s * w / total) for (n, r), w in zip(costed, weights)]
