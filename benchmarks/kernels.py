"""Generated kernels side by side: onnxruntime, torch .pt2, TVM untuned and TVM tuned at growing budgets.

    nice .venv/bin/python benchmarks/kernels.py [--models resnet18,mobilenet_v2] [--budgets 64,256,1024] \
        [-o build/kernels-out] [--repeats 10]
    .venv/bin/python benchmarks/kernels.py --report build/kernels-out   # the tables again, from results.json
    nice .venv/bin/python benchmarks/kernels.py --resume --budgets 2048  # continue a run with a larger budget

Parts: each model at 224 is planned by halocut's own planner on ``examples/topologies/default.yaml`` (a
real plan; its first stage is a tiled volume); the largest tile of stage 0 and the whole of stage 1 are
benchmarked. Each is emitted with the ONNX, torch and TVM backends and timed in a fresh process per thread
count (``TVM_NUM_THREADS``, ``OMP_NUM_THREADS``, onnxruntime's intra-op threads and torch's threads all set to
it: one thread, then every core), median of ``--repeats`` runs after warm-ups, outputs checked against the
part's torch module.

Tuning: one MetaSchedule database for the benchmark (``<out>/cache/tune/x86``; ``$HALOCUT_CACHE`` points into
``<out>`` so nothing outside is read or written). Budgets are cumulative trials per part: the 256 run tops up
the 64 run's records (:mod:`halocut.backends.tvm_tune`), so the row at a budget is what tuning that many trials
in all gives. TVM's target is this machine's CPU (``mcpu`` from LLVM, e.g. ``znver4``: AVX-512) for every TVM
column, untuned included; ``--mcpu ''`` uses the generic x86-64 target halocut's builds use. Each budget's
wall-clock tuning minutes are recorded; ``kernels`` lists every tuned kernel's best time and GFLOPS, the
slowest first, which is where the gap to onnxruntime stays.

onnxruntime, torch and untuned TVM are timed once, before tuning; each budget's TVM row is timed after its
tuning. On a machine shared with other work the load changes between them (``load_average_before`` and
``_after`` are recorded), so once tuning is done every artifact (baselines, untuned, each budget's library,
kept in its folder) is timed again in one pass (``side_by_side``), and those are the ratios to quote.

Results go to ``<out>/results.json`` after every step (a stopped run keeps what it measured) and a PNG of
latency against trials per part (``<out>/curve.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "examples/topologies/default.yaml"


def bench_parts(model: str, work: Path) -> dict:
    """The largest tile of stage 0 and stage 1 of the planner's plan for ``model``, as halocut Parts."""
    from halocut.compiler.commands import plan_model
    from halocut.compiler.driver import CompileOptions, compile_model

    plan_path = work / f"{model}-plan.json"
    plan_model(model, TOPOLOGY, "halocut").plan.save(plan_path, True)
    options = CompileOptions(model, TOPOLOGY, work / "unused", plan_path, stop_after="lower", progress=False)
    parts = {name: part for name, (part, _) in compile_model(options).parts.items()}
    tiles = [p for name, p in parts.items() if name.startswith("s0_t")]
    if not tiles or "s1" not in parts:
        raise SystemExit(f"{model}: the plan has no tiled stage 0 followed by a single stage 1: {sorted(parts)}")
    largest = max(tiles, key=lambda p: p.example_inputs[0].shape[-2])
    return {f"{model}/{largest.name}": largest, f"{model}/s1": parts["s1"]}


def tvm_target(mcpu: str) -> dict:
    return {"kind": "llvm", "mcpu": mcpu} if mcpu else {"kind": "llvm"}


def emit_all(parts: dict, out: Path, target: dict, tuning_database: Path | None = None, label: str = "") -> dict:
    """Artifacts of every part: ``{part: {runtime: artifact json}}``; with a database only TVM tuned."""
    from halocut.backends import onnx as onnx_backend, torch as torch_backend, tvm as tvm_backend
    from halocut.backends.base import Target

    artifacts = {}
    for key, part in parts.items():
        folder = out / "build" / key.replace("/", "-") / (label.replace(" @", "-") or "base")
        chosen = {}
        if tuning_database is None:
            chosen["onnxruntime"] = onnx_backend.emit(part, Target("onnx"), folder)
            chosen["torch"] = torch_backend.emit(part, Target("torch"), folder)
            chosen["tvm untuned"] = tvm_backend.emit(part, Target("tvm", target), folder)
        else:
            chosen[label] = tvm_backend.emit(part, Target("tvm", target), folder, tuning_database=tuning_database)
        artifacts[key] = {name: {"backend": a.backend, "tvm_target": a.target.tvm_target,
                                 "path": str(folder / a.path)} for name, a in chosen.items()}
    return artifacts


def save_inputs(parts: dict, out: Path) -> dict:
    """Each part's recorded inputs and its torch module's outputs, as .npy files the measuring process reads."""
    files = {}
    for key, part in parts.items():
        folder = out / "data" / key.replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        inputs = [str(folder / f"in{i}.npy") for i in range(len(part.example_inputs))]
        for path, x in zip(inputs, part.example_inputs):
            np.save(path, x.detach().numpy())
        outputs = [str(folder / f"out{i}.npy") for i in range(len(part.example_outputs()))]
        for path, y in zip(outputs, part.example_outputs()):
            np.save(path, y.detach().numpy())
        files[key] = {"inputs": inputs, "outputs": outputs}
    return files


def measure(jobs: list[dict], threads: int, repeats: int) -> list[dict]:
    """Time the jobs in a fresh process whose thread pools all have ``threads`` threads."""
    env = {**os.environ, "TVM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"jobs": jobs, "threads": threads, "repeats": repeats}, handle)
    done = subprocess.run([sys.executable, __file__, "--measure", handle.name], env=env, capture_output=True,
                          text=True)
    os.unlink(handle.name)
    if done.returncode != 0:
        raise SystemExit(f"measuring failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure_here(spec_path: str) -> None:
    import torch

    from halocut.backends.base import Artifact, Target, backend
    from halocut.runtime.bench import time_runner

    spec = json.loads(Path(spec_path).read_text())
    threads = spec["threads"]
    torch.set_num_threads(threads)
    results = []
    for job in spec["jobs"]:
        a = job["artifact"]
        path = Path(a["path"])
        artifact = Artifact(job["part"], a["backend"], Target(a["backend"], a["tvm_target"]), Path(path.name))
        run = backend(a["backend"]).load(artifact, path.parent, threads)
        inputs = [np.load(p) for p in job["inputs"]]
        outputs = run(inputs)
        references = [np.load(p) for p in job["outputs"]]
        error = max(float(np.max(np.abs(np.asarray(o) - r))) for o, r in zip(outputs, references))
        allowed = 1e-4 * max(1.0, max(float(np.max(np.abs(r))) for r in references))
        timing = time_runner(run, inputs, repeats=spec["repeats"], warmup=2)
        results.append({"median_s": timing.median_s, "repeats": timing.repeats, "max_error": error,
                        "error_ok": error <= allowed})
    print(json.dumps(results))


def measure_all(artifacts: dict, files: dict, thread_counts: list[int], repeats: int) -> dict:
    """``{part: {runtime: {threads: timing}}}``."""
    jobs, keys = [], []
    for key, runtimes in artifacts.items():
        for runtime, artifact in runtimes.items():
            jobs.append({"part": key.split("/")[1], "artifact": artifact, **files[key]})
            keys.append((key, runtime))
    found: dict = {}
    for threads in thread_counts:
        for (key, runtime), result in zip(keys, measure(jobs, threads, repeats)):
            found.setdefault(key, {}).setdefault(runtime, {})[str(threads)] = result
    return found


def tune_all(parts: dict, target: dict, budget: int, database: Path) -> dict:
    """Tune every part up to ``budget`` trials (cumulative); per part: minutes, trials run, hits, kernels."""
    from rich.console import Console

    from halocut.backends import tvm_tune
    from halocut.backends.base import Target

    console = Console(stderr=True)
    found = {}
    for key, part in parts.items():
        start = time.perf_counter()

        def progress(event, task, done, total, best, key=key):
            if event != "start":
                best_text = f"{best * 1e3:.3f} ms" if best is not None else "-"
                console.print(f"  {key} {task}: {done}/{total} trials, best {best_text}", highlight=False)

        report = tvm_tune.tune(part, Target("tvm", target), budget, database, progress)
        found[key] = {"minutes": (time.perf_counter() - start) / 60, "trials_run": report.trials_run,
                      "hits": report.hits, "kernels": [
                          {"name": t.name, "flops": t.flops, "calls": t.calls, "trials": t.trials_before + t.trials_run,
                           "best_s": t.best_s} for t in report.tasks]}
        console.print(f"{key} @ {budget}: {report.summary()} in {found[key]['minutes']:.1f} min", highlight=False)
    return found


def saved_artifacts(results: dict, out: Path) -> dict:
    """Every artifact a run emitted, from its folders (``emit_all``'s layout): the baselines, TVM untuned and
    each budget's TVM library. Emitting again would not do: the database now holds every budget's trials."""
    artifacts = {}
    budgets = [str(b) for b in results["budgets"] if str(b) in results.get("tuned", {})]
    for key in results["timings"]:
        folder, name = out / "build" / key.replace("/", "-"), key.split("/")[1]
        found = {"onnxruntime": ("onnx", None, folder / "base" / f"{name}.onnx"),
                 "torch": ("torch", None, folder / "base" / f"{name}.pt2"),
                 "tvm untuned": ("tvm", results["tvm_target"], folder / "base" / f"{name}.x86.so"),
                 **{f"tvm @{b}": ("tvm", results["tvm_target"], folder / f"tvm-{b}" / f"{name}.x86.so")
                    for b in budgets}}
        artifacts[key] = {runtime: {"backend": backend, "tvm_target": target, "path": str(path)}
                          for runtime, (backend, target, path) in found.items() if path.is_file()}
    return artifacts


def tables(results: dict) -> list:
    from rich.table import Table

    made = []
    budgets = [str(b) for b in results["budgets"] if str(b) in results.get("tuned", {})]
    passes = [("timed as the run went (baselines before tuning, each budget after its step)", results["timings"])]
    if results.get("side_by_side"):
        again = results["side_by_side"]
        passes.append((f"every artifact timed again side by side after tuning (load "
                       f"{again['load_average'][0]:.1f} -> {again['load_average'][1]:.1f})", again["timings"]))
    for (when, timings), threads in ((p, t) for p in passes for t in results["threads"]):
        table = Table(title=f"median ms per part, {threads} thread(s); TVM target {results['tvm_target']}; "
                            f"ratio = best TVM / onnxruntime; {when}")
        for column in ("part", "onnxruntime", "torch .pt2", "TVM untuned", *(f"TVM @{b}" for b in budgets),
                       "TVM/ort"):
            table.add_column(column, justify="left" if column == "part" else "right")
        for key, runtimes in timings.items():
            def ms(runtime):
                entry = runtimes.get(runtime, {}).get(str(threads))
                if entry is None:
                    return None, "-"
                mark = "" if entry["error_ok"] else " (WRONG)"
                return entry["median_s"], f"{entry['median_s'] * 1e3:.2f}{mark}"
            ort = ms("onnxruntime")[0]
            tvm_values = [ms(f"tvm @{b}")[0] for b in budgets] or [ms("tvm untuned")[0]]
            last = next((v for v in reversed(tvm_values) if v is not None), None)
            ratio = f"{last / ort:.2f}x" if last and ort else "-"
            table.add_row(key, ms("onnxruntime")[1], ms("torch")[1], ms("tvm untuned")[1],
                          *(ms(f"tvm @{b}")[1] for b in budgets), ratio)
        made.append(table)
    if budgets:
        tuning = Table(title="tuning (cumulative trials per part): minutes of this budget's step, trials run, "
                             "kernels already in the database")
        tuning.add_column("part")
        for b in budgets:
            tuning.add_column(f"@{b}", justify="right")
        for key in results["timings"]:
            cells = []
            for b in budgets:
                step = results["tuned"][b].get(key)
                cells.append(f"{step['minutes']:.1f} min, {step['trials_run']} trials, {step['hits']} hits"
                             if step else "-")
            tuning.add_row(key, *cells)
        made.append(tuning)
        slow = Table(title=f"slowest kernels after {budgets[-1]} trials (best measured time x calls)")
        for column in ("part", "kernel", "trials", "ms", "GFLOPS"):
            slow.add_column(column, justify="left" if column in ("part", "kernel") else "right")
        for key, step in results["tuned"][budgets[-1]].items():
            kernels = sorted((k for k in step["kernels"] if k["best_s"]), key=lambda k: -k["best_s"] * k["calls"])
            for k in kernels[:3]:
                slow.add_row(key, k["name"], str(k["trials"]), f"{k['best_s'] * k['calls'] * 1e3:.3f}",
                             f"{k['flops'] / (k['best_s'] * k['calls']) / 1e9:.1f}")
        made.append(slow)
    return made


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = [b for b in results["budgets"] if str(b) in results.get("tuned", {})]
    keys = list(results["timings"])
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
    for axis, key in zip(axes[0], keys):
        runtimes = results["timings"][key]
        for threads in results["threads"]:
            t = str(threads)
            xs = [0] + budgets
            ys = [runtimes.get("tvm untuned", {}).get(t, {}).get("median_s")] + [
                runtimes.get(f"tvm @{b}", {}).get(t, {}).get("median_s") for b in budgets]
            points = [(x, y * 1e3) for x, y in zip(xs, ys) if y]
            line, = axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"TVM, {t} thr")
            ort = runtimes.get("onnxruntime", {}).get(t, {}).get("median_s")
            if ort:
                axis.axhline(ort * 1e3, linestyle="--", color=line.get_color(), label=f"onnxruntime, {t} thr")
        axis.set_title(key, fontsize=9)
        axis.set_xlabel("trials per part")
        axis.set_ylabel("median ms")
        axis.set_yscale("log")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def report(results: dict, out: Path) -> None:
    from rich.console import Console

    console = Console(width=200)
    for table in tables(results):
        console.print(table)
    plot(results, out / "curve.png")
    console.print(f"results: {out / 'results.json'}, curve: {out / 'curve.png'}")


def _resumed(previous: dict, fresh: dict) -> dict:
    """A stopped run continued: its measurements kept, the budgets it finished skipped, larger ones added.

    The database holds every trial so far, so a new budget must exceed the largest one measured (a smaller one
    would be measured with more trials than it names)."""
    done = [int(b) for b in previous.get("tuned", {})]
    new = [b for b in fresh["budgets"] if b not in done]
    if done and new and min(new) <= max(done):
        raise SystemExit(f"--resume: budgets {new} not above the {max(done)} trials already in the database")
    if previous["tvm_target"] != fresh["tvm_target"] or previous["models"] != fresh["models"]:
        raise SystemExit("--resume: another target or other models than the run in that folder")
    return {**previous, "budgets": sorted(set(done) | set(new))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--budgets", default="64,256,1024", help="cumulative MetaSchedule trials per part")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--mcpu", default=None, help="LLVM CPU of the TVM target (default: this machine's)")
    parser.add_argument("-o", "--output", default=str(ROOT / "build/kernels-out"))
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in -o: keep its measurements and budgets, add the larger --budgets")
    parser.add_argument("--report", metavar="DIR", help="print the tables of a finished or stopped run")
    parser.add_argument("--no-side-by-side", action="store_true",
                        help="skip timing every artifact again side by side once tuning is done")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return _measure_here(args.measure)
    if args.report:
        return report(json.loads((Path(args.report) / "results.json").read_text()), Path(args.report))
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["HALOCUT_CACHE"] = str(out / "cache")
    import tvm

    mcpu = tvm.target.codegen.llvm_get_system_cpu() if args.mcpu is None else args.mcpu
    target = tvm_target(mcpu)
    thread_counts = sorted({1, os.cpu_count() or 1})
    results = {"models": args.models.split(","), "budgets": [int(b) for b in args.budgets.split(",")],
               "threads": thread_counts, "tvm_target": target, "repeats": args.repeats, "timings": {}, "tuned": {},
               "load_average_before": os.getloadavg()}
    if args.resume:
        results = _resumed(json.loads((out / "results.json").read_text()), results)
    save = lambda: (out / "results.json").write_text(json.dumps(results, indent=1))  # noqa: E731
    parts = {}
    for model in results["models"]:
        parts.update(bench_parts(model, out))
    files = save_inputs(parts, out)
    results["parts"] = {key: {"input_shapes": [list(x.shape) for x in p.example_inputs]} for key, p in parts.items()}
    if not results["timings"]:
        for key, runtimes in measure_all(emit_all(parts, out, target), files, thread_counts, args.repeats).items():
            results["timings"].setdefault(key, {}).update(runtimes)
        save()
    database = out / "cache" / "tune" / "x86"
    for budget in results["budgets"]:
        if str(budget) in results["tuned"]:
            continue
        results["tuned"][str(budget)] = tune_all(parts, target, budget, database)
        label = f"tvm @{budget}"
        artifacts = emit_all(parts, out, target, database, label)
        for key, runtimes in measure_all(artifacts, files, thread_counts, args.repeats).items():
            results["timings"][key].update(runtimes)
        results["load_average_after"] = os.getloadavg()
        save()
        report(results, out)
    if results["tuned"] and not args.no_side_by_side:  # the ratios that count: every runtime under the same load
        before = os.getloadavg()
        timings = measure_all(saved_artifacts(results, out), files, thread_counts, args.repeats)
        results["side_by_side"] = {"timings": timings, "load_average": [before[0], os.getloadavg()[0]]}
        save()
    report(results, out)


if __name__ == "__main__":
    main()
