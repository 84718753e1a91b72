"""``halocut run``: run a build on Ray, verify it against the original model, measure it beside the prediction.

Phases: the first request is verified (the original model, or the in-process executor of the same
artifacts when the model cannot be loaded here; a mismatch is an error); then ``requests`` requests
one at a time (latency, per-part compute time and bytes sent), then the same requests as a pipelined
stream (throughput). When a recovery happened in a phase, every answer of that phase is verified.

>>> summarize_latency([0.01, 0.03, 0.02, 0.04])
{'median': 0.025, 'p90': 0.037, 'mean': 0.025}
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from halocut.backends.manifest import read_build
from halocut.ir.errors import HalocutError
from halocut.runtime.flow import Flow, flow_from_manifest, run_local


@dataclass(frozen=True)
class RunOptions:
    build: str | Path
    image: str | Path | None = None  # else random inputs
    requests: int = 20
    address: str | None = None  # None: an embedded Ray cluster on this machine
    threads: int | None = None  # per actor; None: cores / actors embedded, all cores on a real cluster
    compiled: bool = True  # False: the plain Ray DAG API
    model: str | None = None  # the original model when the manifest's name does not load it (file.py:factory)
    weights: str | Path | None = None  # the state_dict the build was compiled with
    seed: int = 0
    window: int | None = None  # requests in flight in the throughput phase (default: actors + 1)
    trust: str | Path | None = None  # a public key: the build's signature is checked, here and on every actor
    staged: str | Path | None = None  # every machine holds the build here already: actors read it, nothing is sent


@dataclass(frozen=True)
class RunReport:
    model: str
    build: str
    graph: str
    reference: str
    max_abs_error: float
    tolerance: float
    requests: int  # in each of the latency and throughput phases
    requests_lost: int
    latency_s: dict
    throughput_ips: float
    predicted_latency_s: float
    predicted_throughput_ips: float
    critical_path_s: float  # the longest chain of the parts' median seconds (compute and copies)
    dispatch_overhead_s: float  # median latency less the critical path
    threads: int
    actors: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    recoveries: list[dict] = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)
    links: list[dict] = field(default_factory=list)  # per link direction on a testbed (testbed.measure.LinkMeter)

    @classmethod
    def from_json(cls, data: dict) -> "RunReport":
        return cls(**{k: v for k, v in data.items() if k != "verified"})

    @property
    def verified(self) -> bool:
        """Whether the outputs were checked against the original model (not only the build's own artifacts)."""
        return self.reference == "original model"

    def to_json(self) -> dict:
        return {**self.__dict__, "verified": self.verified}


Reference = Callable[[np.ndarray], dict[str, np.ndarray]]  # an input -> the expected output of each model output


def run_build(options: RunOptions,
              load_reference: Callable[[Flow], tuple[Reference, str]] | None = None) -> RunReport:
    """Run ``options.build`` and return what was verified and measured (the CLI prints it).

    ``load_reference(flow)`` gives the expected outputs and what they come from: the original model
    (:func:`halocut.compiler.commands.run_build` prepares it); without it, the in-process executor of the
    same artifacts.
    """
    import ray

    from halocut.runtime.ray_exec import Deployment, connect

    if options.requests < 1:
        raise HalocutError(f"--requests {options.requests}: at least one request")
    build = Path(options.build)
    read = read_build(build, options.trust)  # the signature first, before anything of the build is loaded
    flow = flow_from_manifest(read.manifest)
    inputs = make_inputs(flow, options.image, options.requests, options.seed)
    reference, label = (load_reference or (lambda f: local_reference(f, build, 'no model given')))(flow)
    timings = {}
    start = time.perf_counter()
    started = connect(flow.devices(), options.address)
    timings["connect"] = time.perf_counter() - start
    threads = options.threads if options.threads is not None else (
        0 if options.address else max(1, (os.cpu_count() or 1) // len(flow.devices())))
    deployment = Deployment(flow, build, threads=threads, compiled=options.compiled, authority=read.authority(),
                            staged=options.staged)
    try:
        start = time.perf_counter()
        deployment.start()
        timings["start"] = time.perf_counter() - start
        measured = _measure(deployment, inputs, lambda answers, xs: verify(answers, xs, reference, label),
                            options.window or len(deployment.actors) + 1)
    finally:
        deployment.close()
        if started:
            ray.shutdown()
    critical = critical_path_s(flow, {p: float(np.median(r["samples_s"])) for p, r in measured.parts.items()})
    latency = summarize_latency(measured.latencies)
    return RunReport(flow.model, str(build), deployment.graph, label, measured.error, measured.allowed, len(inputs),
                     measured.lost, latency, len(inputs) / measured.stream_s, flow.predicted_latency_s,
                     flow.predicted_throughput_ips, critical, latency["median"] - critical, threads,
                     _actors(flow, measured.parts, deployment.placement, deployment.backends),
                     describe_outputs(measured.first), [r.to_json() for r in deployment.recoveries], timings)


@dataclass(frozen=True)
class _Measured:
    first: dict
    error: float
    allowed: float
    latencies: list[float]
    parts: dict
    stream_s: float
    lost: int


def _measure(deployment, inputs: list[np.ndarray], check, window: int) -> _Measured:
    """Verify the first request, then the latency phase (one at a time) and the throughput phase (pipelined)."""
    (first,), _ = deployment.stream(inputs[:1])
    error, allowed = check([first], inputs[:1])
    deployment.reset()
    answers, latencies = _phase(deployment, inputs, 1, check)
    parts = deployment.statistics()
    start = time.perf_counter()
    streamed, _ = _phase(deployment, inputs, window, check)
    stream_s = time.perf_counter() - start
    lost = sum(answer is None for answer in answers + streamed)
    return _Measured(first, error, allowed, latencies, parts, stream_s, lost)


def _phase(deployment, inputs: list[np.ndarray], window: int, check):
    """One stream; when the deployment recovered during it, every answer is checked, not just the first."""
    before = len(deployment.recoveries)
    answers, latencies = deployment.stream(inputs, window=window)
    if len(deployment.recoveries) > before:
        check(answers, inputs)
    return answers, latencies


def make_inputs(flow: Flow, image: str | Path | None, count: int, seed: int) -> list[np.ndarray]:
    """``count`` requests: an image (resized, scaled to [0, 1], ImageNet-normalised) repeated, or seeded noise."""
    if image is None:
        generator = np.random.default_rng(seed)
        return [generator.standard_normal(flow.input_shape, dtype=np.float32) for _ in range(count)]
    from PIL import Image, UnidentifiedImageError

    batch, channels, height, width = flow.input_shape
    try:
        picture = Image.open(image).convert("RGB" if channels == 3 else "L").resize((width, height))
    except (OSError, UnidentifiedImageError) as error:
        raise HalocutError(f"--input {image}: cannot read it as an image: {error}") from None
    array = np.asarray(picture, dtype=np.float32).reshape(height, width, channels) / 255.0
    if channels == 3:
        array = (array - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    x = np.ascontiguousarray(np.broadcast_to(array.transpose(2, 0, 1)[None], flow.input_shape), dtype=np.float32)
    return [x] * count


def local_reference(flow: Flow, build: Path, why: str) -> tuple[Reference, str]:
    """The in-process executor of the build's own artifacts, when the original model cannot be loaded."""
    from halocut.runtime.ray_actor import PartHost

    host = PartHost("requester")
    try:
        host.host(list(flow.steps), {a["path"]: (build / a["path"]).read_bytes()
                                     for s in flow.steps for a in s.artifacts}, {})
    except HalocutError as error:
        raise HalocutError(f"cannot verify: the model does not load here ({why}) and {error}") from None
    return (lambda x: run_local(flow, host.runners, x),
            f"in-process executor of the same artifacts (the model does not load here: {why})")


def verify(answers: list[dict], inputs: list[np.ndarray], reference, label: str) -> tuple[float, float]:
    """Max abs error of answers against the reference; above the tolerance it is an error."""
    import torch

    from halocut.runtime.reference import max_error

    worst, allowed = 0.0, 0.0
    for index, (answer, x) in enumerate(zip(answers, inputs)):
        expected = reference(x)
        error, tolerance = max_error([torch.from_numpy(answer[n]) for n in expected],
                                     [torch.from_numpy(v) for v in expected.values()])
        if not error <= tolerance:
            raise HalocutError(f"request {index}: the deployment's output differs from the {label}: max abs error "
                               f"{error:.3g} > {tolerance:.3g} (compiled with --weights? pass the same --weights)")
        worst, allowed = max(worst, error), max(allowed, tolerance)
    return worst, allowed


def critical_path_s(flow: Flow, seconds: dict[str, float]) -> float:
    """The longest chain of part times through the flow (what a request waits for with free transfers)."""
    finish: dict[str, float] = {}
    for step in flow.steps:
        ready = max((finish[r.from_part] for r in step.receives if r.from_part is not None), default=0.0)
        finish[step.name] = ready + seconds.get(step.name, 0.0)
    return max(finish.values(), default=0.0)


def summarize_latency(samples: list[float]) -> dict:
    values = np.asarray(samples, dtype=float)
    return {"median": round(float(np.median(values)), 9), "p90": round(float(np.percentile(values, 90)), 9),
            "mean": round(float(values.mean()), 9)}


def describe_outputs(answer: dict[str, np.ndarray]) -> list[dict]:
    """Shape of each output; for a row of scores, the best class and its score."""
    described = []
    for name, value in answer.items():
        entry = {"name": name, "shape": list(value.shape)}
        if value.ndim == 2 and value.shape[0] == 1 and value.shape[1] > 1:
            entry.update(top1=int(value[0].argmax()), score=float(value[0].max()))
        described.append(entry)
    return described


def _actors(flow: Flow, parts: dict, placement: dict, backends: dict) -> list[dict]:
    actors = []
    for device in dict.fromkeys(placement.values()):
        names = [s.name for s in flow.steps if placement[s.name] == device]
        records = [parts.get(n, {"runs": 0, "compute_s": 0.0, "bytes_sent": 0}) for n in names]
        actors.append({"device": device, "parts": names, "backends": sorted({backends.get(n, "?") for n in names}),
                       "compute_s": sum(r["compute_s"] / max(1, r["runs"]) for r in records),
                       "part_median_s": {n: float(np.median(parts[n]["samples_s"])) for n in names if n in parts},
                       "predicted_s": sum(flow.step(n).predicted_s for n in names),
                       "bytes_sent": int(sum(r["bytes_sent"] / max(1, r["runs"]) for r in records))})
    return actors


def run_table(report: RunReport):
    """The per-actor table of a run, measured beside predicted, with the totals as its caption."""
    from rich.table import Table

    table = Table(title=f"{report.model}: {len(report.actors)} actor(s), {report.graph} graph, {report.requests} "
                        f"requests")
    for column in ("actor", "parts", "backend", "compute ms/request", "predicted ms", "KB sent/request"):
        table.add_column(column, justify="left" if column in ("actor", "parts", "backend") else "right")
    for actor in report.actors:
        table.add_row(actor["device"], ", ".join(actor["parts"]), ", ".join(actor["backends"]),
                      f"{actor['compute_s'] * 1e3:.2f}", f"{actor['predicted_s'] * 1e3:.2f}",
                      f"{actor['bytes_sent'] / 1e3:.1f}")
    latency = report.latency_s
    table.caption = (f"latency median {latency['median'] * 1e3:.2f} ms, p90 {latency['p90'] * 1e3:.2f} ms (predicted "
                     f"{report.predicted_latency_s * 1e3:.2f} ms); throughput {report.throughput_ips:.2f} img/s "
                     f"(predicted {report.predicted_throughput_ips:.2f}); critical path {report.critical_path_s * 1e3:.2f}"
                     f" ms, dispatch overhead {report.dispatch_overhead_s * 1e3:.2f} ms/request")
    return table


def links_table(report: RunReport):
    """Per link direction of a testbed run: bytes, busy seconds, achieved rate against the configured one."""
    from rich.table import Table

    table = Table(title="links (testbed)")
    for column in ("link", "direction", "KB", "busy s", "achieved Mbps", "peak Mbps", "configured Mbps",
                   "peak / configured"):
        table.add_column(column, justify="left" if column in ("link", "direction") else "right")
    for link in report.links:
        achieved, peak = link["achieved_bps"], link.get("peak_bps")
        table.add_row(link["link"], f"{link['from']} -> {link['to']}", f"{link['bytes'] / 1e3:,.1f}",
                      f"{link['busy_s']:.3f}", f"{achieved / 1e6:.2f}" if achieved else "-",
                      f"{peak / 1e6:.2f}" if peak else "-", f"{link['configured_bps'] / 1e6:g}",
                      f"{peak / link['configured_bps']:.2f}" if peak else "-")
    table.caption = ("bytes: all the link carried (tensors and Ray's messages); achieved: bytes over the 5 ms intervals "
                     "in which the sender moved any; peak: the most a 50 ms window moved")
    return table


def verified_line(report: RunReport) -> str:
    outputs = "; ".join(f"{o['name']} {tuple(o['shape'])}" + (f" top-1 class {o['top1']} ({o['score']:.3g})"
                                                              if "top1" in o else "") for o in report.outputs)
    if not report.verified:
        return (f"NOT verified against the model: the outputs match the {report.reference} (max abs error "
                f"{report.max_abs_error:.3g} <= {report.tolerance:.3g}), which shows the distribution is right, not "
                f"that the build is the model; output {outputs}")
    return (f"verified against the {report.reference}: max abs error {report.max_abs_error:.3g} <= "
            f"{report.tolerance:.3g}; output {outputs}")
