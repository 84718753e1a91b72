"""Building ``manifest.json`` from a finished compilation (the format and its checks: halocut.backends.manifest).

For each device, its parts in execution order: the artifacts (path under
``build/``, backend, target, sha256), every input (name, shape, dtype, and the
device, part, output and region it comes from, halo included) and every output
(and where it goes), with the simulated latency per part and end to end.
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

from halocut.backends.base import sha256
from halocut.backends.manifest import FORMAT
from halocut.ir.graph import output_nodes
from halocut.ir.names import parse_part_name, part_name
from halocut.ir.regions import Region, full_region

PACKAGES = ("halocut", "torch", "torchvision", "onnx", "onnxruntime", "onnx-graphsurgeon", "polygraphy", "apache-tvm",
            "ray")


def build_manifest(c) -> dict:
    """The manifest of a finished :class:`halocut.compiler.driver.Compilation` (artifacts in ``c.staging``)."""
    sources = _producers(c)
    consumers: dict[str, list[dict]] = {}
    parts_by_device: dict[str, list[dict]] = {d.name: [] for d in c.topology.devices}
    predicted = _predicted(c)
    for name, (part, device) in c.parts.items():
        inputs = []
        for input_name, example in zip(part.input_names, part.example_inputs):
            origin = _origin(c, name, input_name, sources)
            for source in origin:
                if source.get("part"):
                    consumers.setdefault((source["part"], source["output"]), []).append(
                        {"device": device, "part": name})
            inputs.append({"name": input_name, "shape": list(example.shape), "dtype": _dtype(example),
                           "from": origin})
        parts_by_device[device].append({
            "name": name, "kind": parse_part_name(name).kind, "predicted_s": predicted.get(name, 0.0),
            "artifacts": [_artifact_json(a, c.staging, c.topology.device(device), c.verified)
                          for a in c.artifacts.get(name, [])],
            "inputs": inputs,
            "outputs": [{"name": n, "shape": list(o.shape), "dtype": _dtype(o)}
                        for n, o in zip(part.output_names, part.example_outputs())],
        })
    for entries in parts_by_device.values():
        for entry in entries:
            for output in entry["outputs"]:
                output["to"] = _destinations(c, entry["name"], output["name"], consumers)
    shape = list(c.loaded.input_shape)
    return {
        "format": FORMAT,
        "model": {"name": c.loaded.name, "input": {"name": _input_name(c), "shape": shape, "dtype": "float32"},
                  "tracer": c.loaded.tracer, "source": c.loaded.source},
        "toolchain": {**{p: _version(p) for p in PACKAGES}, "python": platform.python_version()},
        "topology": _topology_json(c.topology),
        "plan": c.plan.to_json(),
        "devices": {d: {"role": c.topology.device(d).role, "kind": c.topology.device(d).kind,
                        "backend": c.topology.device(d).backend, "parts": entries}
                    for d, entries in parts_by_device.items()},
        "timeline": {"latency_s": c.simulation.latency_s, "throughput_ips": c.simulation.throughput_ips,
                     "lower_bound_s": c.simulation.lower_bound_s,
                     "intervals": [{"resource": i.resource, "label": i.label, "kind": i.kind, "start_s": i.start_s,
                                    "end_s": i.end_s} for i in c.simulation.timeline]},
        "verification": c.verification,
    }


def _artifact_json(artifact, root: Path, device, verified: dict[str, dict]) -> dict:
    files = [artifact.path, *artifact.extra]
    entry = {"backend": artifact.backend, "target": artifact.target.describe(),
             "tvm_target": artifact.target.tvm_target, "path": artifact.path.as_posix(),
             "sha256": sha256(root / artifact.path),
             "extra": [{"path": p.as_posix(), "sha256": sha256(root / p)} for p in files[1:]],
             "verified": verified.get(artifact.path.as_posix(), {"how": "structural only",
                                                                  "why": "stopped before the verify step"})}
    if artifact.tensorrt is not None:  # a Jetson part's TensorRT check (halocut.backends.onnx)
        entry["tensorrt"] = {**artifact.tensorrt, "jetpack": device.jetpack}
    return entry


def _producers(c) -> dict[str, list[dict]]:
    """Value name -> where its pieces are produced: device, part, output name, region."""
    requester = c.topology.requester.name
    sources: dict[str, list[dict]] = {}
    for node in c.graph.graph.nodes:
        if node.op == "placeholder":
            sources[node.name] = [{"device": requester, "part": None, "output": node.name,
                                   "region": _full(node)}]
    devices = {name: device for name, (_, device) in c.parts.items()}
    nodes = {n.name: n for n in c.graph.graph.nodes}
    for index, stage in enumerate(c.lowered):
        if stage.tiles:
            output = stage.tiles[0].part.output
            sources[output] = [{"device": devices[part_name(index, t, len(tile.hops) - 1)],
                                "part": part_name(index, t, len(tile.hops) - 1), "output": output,
                                "region": tile.part.output_region.to_json()} for t, tile in enumerate(stage.tiles)]
        elif stage.fc is not None:
            merge = part_name(index, merge=True)
            sources[stage.fc.output] = [{"device": devices[merge], "part": merge, "output": stage.fc.output,
                                         "region": None}]
        else:
            for output in stage.whole.outputs:
                sources[output] = [{"device": devices[part_name(index)], "part": part_name(index), "output": output,
                                    "region": _full(nodes[output]) if output in nodes else None}]
    return sources


def _origin(c, name: str, input_name: str, sources: dict) -> list[dict]:
    """Where one input of one part comes from (for a tile: the overlapping pieces, halo included)."""
    part = parse_part_name(name)
    lowered = c.lowered[part.stage]
    devices = {n: d for n, (_, d) in c.parts.items()}
    if part.kind == "tile":
        lowered_tile = lowered.tiles[part.tile]
        outside = dict(lowered_tile.part.inputs)
        if input_name not in outside:  # made by an earlier hop of this tile's chain
            maker = next(k for k in range(part.hop) if input_name in lowered_tile.hops[k].outputs)
            name = part_name(part.stage, part.tile, maker)
            return [{"device": devices[name], "part": name, "output": input_name, "region": None}]
        wanted = outside[input_name]
        return [dict(source, region=_overlap(source["region"], wanted)) for source in sources[input_name]
                if _overlap(source["region"], wanted) is not None]
    if part.kind == "merge":
        cluster = part_name(part.stage, cluster=int(input_name.removeprefix("part")))
        return [{"device": devices[cluster], "part": cluster, "output": "partial", "region": None}]
    if part.kind == "cluster":
        span = lowered.fc.input_features[part.cluster]
        return [dict(source, features=list(span) if span else None) for source in sources[lowered.fc.input]]
    return sources[input_name]


def _destinations(c, part: str, output: str, consumers: dict[tuple[str, str], list[dict]]) -> list[dict]:
    """Consumers of a part's output; the model's own outputs also go back to the requester."""
    targets = list({(d["device"], d["part"]): d for d in consumers.get((part, output), [])}.values())
    finals = [n.name for n in output_nodes(c.graph)]
    if output in finals and parse_part_name(part).kind != "cluster":
        targets.append({"device": c.topology.requester.name, "part": None})
    return targets


def _overlap(region: dict | None, wanted: Region) -> dict | None:
    if region is None:
        return wanted.to_json()
    overlap = Region.from_json(region).intersect(wanted)
    return None if overlap.is_empty() else overlap.to_json()


def _predicted(c) -> dict[str, float]:
    totals: dict[str, float] = {}
    for interval in c.simulation.timeline:
        if interval.kind == "compute" and interval.request == 0:
            totals[interval.label] = totals.get(interval.label, 0.0) + interval.end_s - interval.start_s
    return totals


def _topology_json(topology) -> dict:
    return {"name": topology.name,
            "devices": [{"name": d.name, "role": d.role, "kind": d.kind, "class": d.device_class,
                         "peak_flops": d.peak_flops, "memory_bytes": d.memory_bytes, "backend": d.backend,
                         "cuda_arch": d.cuda_arch} for d in topology.devices],
            "links": [{"between": [link.a, link.b], "bandwidth_bps": link.bandwidth_bps, "latency_s": link.latency_s,
                       "medium": link.medium} for link in topology.links],
            "media": [{"name": m.name, "bandwidth_bps": m.bandwidth_bps} for m in topology.media]}


def _full(node) -> dict | None:
    region = full_region(node)
    return None if region is None else region.to_json()


def _input_name(c) -> str:
    return next(n.name for n in c.graph.graph.nodes if n.op == "placeholder")


def _dtype(tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
