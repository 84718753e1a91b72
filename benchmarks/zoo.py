"""The zoo: every torchvision classifier and segmentation model, and halocut's own U-Net, detector neck and
super-resolution net, taken through every step a user takes (``halocut.compiler.trials``): inspect, plan with
halocut and offload on two example topologies (every plan run beside the model), a forced tiled plan on the
first splittable volume, both compiled with ``--backends onnx,torch`` and every artifact verified.

    .venv/bin/python benchmarks/zoo.py [--models resnet18,unet] [--timeout 900] [--json results.json [--resume]]

Each model runs in its own process (a crash or a hang is that model's failure, ended after --timeout).
Input 1x3x96x96, except the models whose input size is fixed (ViT, MaxViT: 224) and halocut's own (64).
Prints a table (model, layers, tiled?, plan s, compile s, max error, result) and the count that pass.
"""

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torchvision
from rich.console import Console
from rich.progress import track
from rich.table import Table

from halocut.ir.files import write_bytes

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGIES = ["examples/topologies/default.yaml", "examples/topologies/distredge-da.yaml"]
OWN = ["unet", "fpn_detector", "srnet"]


def shape_for(model: str):
    if model in OWN:
        return None
    if model.startswith("vit_") or model == "maxvit_t":
        return (1, 3, 224, 224)
    return (1, 3, 96, 96)


def all_models() -> list[str]:
    """The own models, then torchvision's classifiers and segmentation models, smallest first (parameters, from
    the weights' metadata: nothing is downloaded), so a run that is cut short has covered the most models."""
    zoo = [*torchvision.models.list_models(module=torchvision.models),
           *torchvision.models.list_models(module=torchvision.models.segmentation)]
    return [*OWN, *sorted(zoo, key=lambda m: torchvision.models.get_model_weights(m).DEFAULT.meta["num_params"])]


def one(model: str) -> None:
    from halocut.compiler.trials import run_trial
    print(json.dumps(run_trial(model, [ROOT / t for t in TOPOLOGIES], shape_for(model)).to_json(), default=str))


def trial(model: str, timeout: float) -> dict:
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, __file__, "--one", model], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:  # subprocess.run ends its own child
        return {"model": model, "ok": False, "failure": f"timed out after {timeout:.0f} s", "wall_s": timeout}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": model, "ok": False, "failure": f"process exit {done.returncode}: {tail[:160]}",
                "wall_s": time.perf_counter() - start}
    return {**json.loads(lines[-1]), "wall_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated names (default: the whole zoo)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    parser.add_argument("--json", help="write the results here (after each model)")
    parser.add_argument("--resume", action="store_true", help="keep the models --json already holds; run the rest")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.one)
    # ended by a signal, subprocess.run ends the running model's process before this one exits
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    models = args.models.split(",") if args.models else all_models()
    results = []
    if args.resume:
        if not args.json:
            parser.error("--resume needs --json")
        if Path(args.json).exists():
            results = [r for r in json.loads(Path(args.json).read_text()) if r["model"] in models]
        models = [m for m in models if m not in {r["model"] for r in results}]
    for model in track(models, description="zoo"):
        results.append(trial(model, args.timeout))
        if args.json:
            write_bytes(args.json, json.dumps(results, indent=1).encode(), force=True)  # whole or not at all
    table = Table(title=f"halocut zoo: {', '.join(Path(t).stem for t in TOPOLOGIES)}, backends onnx,torch")
    for column in ("model", "layers", "tiled?", "plan s", "compile s", "max error", "result"):
        table.add_column(column, justify="right" if column.endswith(("s", "error", "layers")) else "left")
    for r in results:
        table.add_row(r["model"], str(r.get("layers", "")), r.get("tiled", ""), f"{r.get('plan_s', 0):.1f}",
                      f"{r.get('compile_s', 0):.1f}", f"{r.get('max_error', 0):.2g}",
                      "pass" if r["ok"] else f"FAIL {r['failure']}")
    console = Console(width=200)
    console.print(table)
    console.print(f"{sum(r['ok'] for r in results)} of {len(results)} models pass")


if __name__ == "__main__":
    main()
