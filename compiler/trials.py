"""A model taken through every step a user would take: what the zoo test and ``benchmarks/zoo.py`` run.

For one model: inspect it; plan it with ``halocut`` and ``offload`` on each
topology and run every plan with the reference executor beside the model; make
a forced tiled plan (an equal grid over the first splittable volume, the rest on
one device) and compile it with the given backends, which executes and verifies
every artifact; compile the first topology's halocut plan the same way. The
first step that fails ends the trial with one line naming the step and the
reason; nothing raises.

>>> trial = run_trial("lenet5", ["examples/topologies/default.yaml"], compile_plans=False)
>>> trial.ok, trial.tiled
(True, '2x2 until _5')
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import fx

from halocut.compiler.commands import plan_model
from halocut.compiler.driver import CompileOptions, compile_model
from halocut.compiler.inspection import inspect_model
from halocut.compiler.prepare import PreparedModel, prepare_model
from halocut.compiler.verification import verify_plan
from halocut.ir.errors import HalocutError, one_line
from halocut.ir.plan import Plan
from halocut.ir.segments import names, plan as segments_plan, shape_of
from halocut.planning.search.volumes import boundaries, equal_grid, is_closed, providers, segments
from halocut.targets.topology import load_topology

Shape = tuple[int, ...]
PLANNERS = ("halocut", "offload")


@dataclass
class Trial:
    """What one model did at each step; ``failure`` is ``"step: reason"`` for the first step that failed."""

    model: str
    input_shape: Shape | None = None
    layers: int = 0
    tiled: str = ""  # "RxC until LAYER", or "no: why" when no volume can be tiled
    plan_s: float = 0.0  # the slowest of the planners' runs
    compile_s: float = 0.0  # all compiles together
    max_error: float = 0.0  # over every plan run and every artifact verified
    failure: str | None = None
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failure is None

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def run_trial(model: str, topologies: list[str | Path], input_shape: Shape | None = None,
              backends: tuple[str, ...] = ("onnx", "torch"), compile_plans: bool = True) -> Trial:
    """Every step for ``model`` (see the module); never raises for a model that fails."""
    trial = Trial(model, input_shape)
    step = "inspect"
    try:
        report = inspect_model(model, input_shape)
        trial.input_shape, trial.layers = tuple(report.input_shape), len(report.summary.layers)
        step = "prepare"
        prepared = prepare_model(model, trial.input_shape)
        halocut_plan = None
        for path in topologies:
            for planner in PLANNERS:
                step = f"plan {planner} on {Path(path).stem}"
                result = plan_model(model, path, planner, trial.input_shape, prepared)
                trial.plan_s = max(trial.plan_s, result.planning_time_s)
                _check(trial, step, verify_plan(prepared, result.plan, step))
                halocut_plan = halocut_plan or result.plan
        step = "tile"
        tiled, trial.tiled = forced_tiled_plan(prepared, load_topology(topologies[0]))
        if tiled is not None:
            step = "verify tiled plan"
            _check(trial, step, verify_plan(prepared, tiled, step))
        del prepared  # each compile prepares its own copy: a model of gigabytes is held once at a time
        if compile_plans:
            with tempfile.TemporaryDirectory(prefix="halocut-trial-") as scratch:
                for label, plan in (("tiled", tiled), ("halocut", halocut_plan)):
                    if plan is None:
                        continue
                    step = f"compile {label} plan"
                    trial.max_error = max(trial.max_error, _compile(model, trial, topologies[0], plan,
                                                                    Path(scratch) / label, backends))
    except HalocutError as error:
        trial.failure = f"{step}: {one_line(error)}"
    except Exception as error:  # a bug of halocut's, reported as the step that met it
        trial.failure = f"{step}: {type(error).__name__}: {one_line(error)}"
    return trial


def forced_tiled_plan(prepared: PreparedModel, topology) -> tuple[Plan | None, str]:
    """An equal grid over the longest closed volume of the first splittable segment, the rest one stage.

    Layers before that segment run on the first device; the grid is 2x2 (or rows, or columns, where the
    volume's output is one pixel thin), one tile per device of the topology, fastest first.
    """
    graph = prepared.graph
    devices = tuple(d.name for d in providers(topology))
    found = first_volume(graph)
    if isinstance(found, str):
        return None, f"no: {found}"
    before, until = found
    tiling = equal_grid(*shape_of(graph, until)[-2:], list(devices[:4]))
    grid = [region for region, _ in tiling]
    rows, cols = len({r.rows for r in grid}), len({r.cols for r in grid})
    layout = ([("single", before, 0)] if before else []) + [("spatial", until, grid)]
    if until != names(graph)[-1]:
        layout.append(("single", None, 0))
    return segments_plan(graph, prepared.name, prepared.input_shape, layout, devices=devices), \
        f"{rows}x{cols} until {until}"


def first_volume(graph: fx.GraphModule) -> tuple[str | None, str] | str:
    """(last layer before it or None, its last layer) of the first volume that tiles, or why there is none."""
    previous = None
    for segment in segments(graph):
        if segment.splittable:
            for end in reversed(boundaries(graph, segment)[1:]):
                nodes = segment.nodes(0, end)
                if is_closed(nodes) and max(shape_of(graph, nodes[-1].name)[-2:]) >= 2:
                    return previous, nodes[-1].name
        previous = segment.nodes()[-1].name
    return "no layer run that tiles ends in a single feature map of two pixels or more"


def _check(trial: Trial, step: str, report) -> None:
    trial.max_error = max(trial.max_error, report.max_abs_error)
    if not report.ok:
        raise HalocutError(f"not equivalent to the model: max abs error {report.max_abs_error:.3g} > "
                           f"{report.tolerance:.3g}")


def _compile(model: str, trial: Trial, topology, plan: Plan, folder: Path, backends) -> float:
    folder.mkdir(parents=True)
    plan.save(folder / "plan.json")
    options = CompileOptions(model, topology, folder / "build", folder / "plan.json", input_shape=trial.input_shape,
                             backends=tuple(backends), force=True, progress=False)
    start = time.perf_counter()
    compilation = compile_model(options)
    trial.compile_s += time.perf_counter() - start
    return max((v["max_abs_error"] for v in compilation.verification.values()), default=0.0)
