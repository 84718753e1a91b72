"""The Plan: the one contract between planners, slicer, backends, simulator and runtime.

A plan is an ordered list of stages, each covering a set of compute nodes:
``single`` (one device), ``spatial`` (tiles of the last node's output, each
computed by a chain of devices) or ``fc`` (clusters of linear layers). It
round-trips through JSON, is checked against ``plan.schema.json`` for its
structure, and :meth:`Plan.validate` checks it against the graph: every node
exactly once, no stage reading from a later one, tiles covering the output
exactly once, devices known.

>>> plan = Plan("m", (1, 3, 8, 8), (Stage("single", ("conv",), device="pi4-0"),))
>>> Plan.from_json(plan.to_json()) == plan
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import fx

from compiler.errors import HalocutError
from compiler.schema import check, shipped_validator
from passes.cut import compute_nodes
from passes.halo import Interval, Region
from passes.slice import check_fc, check_single_output

FORMAT = "halocut-plan/1"


@dataclass(frozen=True)
class Hop:
    """One device of a tile's chain: computes from where the previous hop stopped up to ``until``."""

    device: str
    until: str | None = None


@dataclass(frozen=True)
class Tile:
    region: Region
    devices: tuple[Hop, ...]


@dataclass(frozen=True)
class Cluster:
    features: Interval
    device: str


@dataclass(frozen=True)
class Stage:
    kind: str  # "single", "spatial" or "fc"
    nodes: tuple[str, ...]
    device: str | None = None
    tiles: tuple[Tile, ...] = ()
    mode: str | None = None  # fc: "model", "data" or "hybrid"
    clusters: tuple[Cluster, ...] = ()

    def devices(self) -> list[str]:
        """Every device this stage uses, in first-use order."""
        names = [self.device] if self.device else []
        names += [hop.device for tile in self.tiles for hop in tile.devices]
        names += [cluster.device for cluster in self.clusters]
        return list(dict.fromkeys(names))


@dataclass(frozen=True)
class Plan:
    model: str
    input_shape: tuple[int, ...]
    stages: tuple[Stage, ...]
    planner: str = "manual"

    def to_json(self) -> dict:
        return {"format": FORMAT, "model": self.model, "planner": self.planner,
                "input_shape": list(self.input_shape), "stages": [_stage_json(s) for s in self.stages]}

    @staticmethod
    def from_json(data: dict, source: str = "plan") -> Plan:
        """Build from parsed JSON; a structural error names ``source`` and the field."""
        check(shipped_validator("compiler", "plan.schema.json"), data, source)
        return Plan(data["model"], tuple(data["input_shape"]), tuple(_stage(s) for s in data["stages"]),
                    data.get("planner", "manual"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @staticmethod
    def load(path: str | Path) -> Plan:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise HalocutError(f"{path}: file does not exist") from None
        except json.JSONDecodeError as error:
            raise HalocutError(f"{path}: not JSON: {error}") from None
        return Plan.from_json(data, str(path))

    def devices(self) -> list[str]:
        return list(dict.fromkeys(d for stage in self.stages for d in stage.devices()))

    def validate(self, graph_module: fx.GraphModule, devices: set[str] | None = None) -> None:
        """Check the plan against an annotated graph (and a topology's device names, if given)."""
        nodes = {n.name: n for n in compute_nodes(graph_module)}
        stage_of: dict[str, int] = {}
        for index, stage in enumerate(self.stages):
            where = f"stages[{index}]"
            for name in stage.nodes:
                if name not in nodes:
                    raise HalocutError(f"plan: {where}.nodes: no layer named '{name}'")
                if name in stage_of:
                    raise HalocutError(f"plan: {where}.nodes: '{name}' is already in stages[{stage_of[name]}]")
                stage_of[name] = index
            _check_stage(stage, where, nodes)
            unknown = [d for d in stage.devices() if devices is not None and d not in devices]
            if unknown:
                raise HalocutError(f"plan: {where}: unknown device '{unknown[0]}'; devices: {', '.join(sorted(devices))}")
        missing = [name for name in nodes if name not in stage_of]
        if missing:
            raise HalocutError(f"plan: layers in no stage: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        for name, node in nodes.items():
            for source in node.all_input_nodes:
                if source.name in stage_of and stage_of[source.name] > stage_of[name]:
                    raise HalocutError(f"plan: stages[{stage_of[name]}] ('{name}') reads '{source.name}' from "
                                       f"the later stages[{stage_of[source.name]}]")


def _check_stage(stage: Stage, where: str, nodes: dict[str, fx.Node]) -> None:
    if stage.kind == "spatial":
        last = max(stage.nodes, key=list(nodes).index)
        shape = tuple(nodes[last].meta["tensor_meta"].shape)
        _check_tiling([t.region for t in stage.tiles], shape, f"{where}.tiles")
        for t, tile in enumerate(stage.tiles):
            untils = [hop.until for hop in tile.devices]
            if untils[-1] is not None or any(u is None for u in untils[:-1]):
                raise HalocutError(f"plan: {where}.tiles[{t}].devices: every hop but the last needs 'until', "
                                   f"the last must have none")
            bad = [u for u in untils[:-1] if u not in stage.nodes]
            if bad:
                raise HalocutError(f"plan: {where}.tiles[{t}].devices: until '{bad[0]}' is not a layer of this stage")
            order = [list(nodes).index(u) for u in untils[:-1]]
            if order != sorted(set(order)) or (order and untils[-2] == last):
                raise HalocutError(f"plan: {where}.tiles[{t}].devices: until layers must be distinct, in graph "
                                   f"order, and before the stage's last layer '{last}'")
        try:
            check_single_output([nodes[n] for n in sorted(stage.nodes, key=list(nodes).index)])
        except HalocutError as error:
            raise HalocutError(f"plan: {where}: {error}") from None
    if stage.kind == "fc":
        try:
            check_fc([nodes[n] for n in sorted(stage.nodes, key=list(nodes).index)], stage.mode,
                     [c.features for c in stage.clusters])
        except HalocutError as error:
            raise HalocutError(f"plan: {where}: {error}") from None


def _check_tiling(regions: list[Region], shape: tuple[int, ...], where: str) -> None:
    if len(shape) != 4:
        raise HalocutError(f"plan: {where}: the stage's last layer has shape {shape}, not (N, C, H, W)")
    height, width = shape[2], shape[3]
    count = np.zeros((height, width), dtype=np.int32)
    for i, region in enumerate(regions):
        if region.is_empty():
            raise HalocutError(f"plan: {where}[{i}]: rows {list(region.rows)} cols {list(region.cols)} covers nothing")
        if region.clip(height, width) != region:
            raise HalocutError(f"plan: {where}[{i}]: rows {list(region.rows)} cols {list(region.cols)} lies "
                               f"outside the {height}x{width} output")
        count[region.rows[0]:region.rows[1], region.cols[0]:region.cols[1]] += 1
    if (count != 1).any():
        row, col = np.argwhere(count != 1)[0]
        raise HalocutError(f"plan: {where}: output position ({row}, {col}) is covered {count[row, col]} times, "
                           f"not exactly once")


def _stage_json(stage: Stage) -> dict:
    data: dict = {"kind": stage.kind, "nodes": list(stage.nodes)}
    if stage.device:
        data["device"] = stage.device
    if stage.tiles:
        data["tiles"] = [{**t.region.to_json(), "devices": [{"device": h.device, "until": h.until}
                                                             for h in t.devices]} for t in stage.tiles]
    if stage.mode:
        data["mode"] = stage.mode
    if stage.clusters:
        data["clusters"] = [{"features": list(c.features), "device": c.device} for c in stage.clusters]
    return data


def _stage(data: dict) -> Stage:
    tiles = tuple(Tile(Region.from_json(t), tuple(Hop(h["device"], h.get("until")) for h in t["devices"]))
                  for t in data.get("tiles", ()))
    clusters = tuple(Cluster(tuple(c["features"]), c["device"]) for c in data.get("clusters", ()))
    return Stage(data["kind"], tuple(data["nodes"]), data.get("device"), tiles, data.get("mode"), clusters)


def single_device_plan(graph_module: fx.GraphModule, model: str, input_shape: tuple[int, ...],
                       device: str) -> Plan:
    """The trivial plan: every layer on one device."""
    names = tuple(n.name for n in compute_nodes(graph_module))
    return Plan(model, tuple(input_shape), (Stage("single", names, device=device),))
