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

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from torch import fx

from halocut.ir.errors import HalocutError
from halocut.ir.files import read_json, write_json
from halocut.ir.graph import compute_nodes, tensor_inputs
from halocut.ir.names import part_name
from halocut.ir.ops import POINTWISE
from halocut.ir.regions import Interval, Region
from halocut.ir.schema import check, shipped_validator

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
        check(shipped_validator(__package__, "plan.schema.json"), data, source)
        return Plan(data["model"], tuple(data["input_shape"]), tuple(_stage(s) for s in data["stages"]),
                    data.get("planner", "manual"))

    def save(self, path: str | Path, force: bool = True) -> Path:
        """Write the plan whole or not at all (a missing folder is made; an unwritable path is a one-line error);
        an existing file is replaced only with ``force``."""
        return write_json(path, self.to_json(), force)

    @staticmethod
    def load(path: str | Path) -> Plan:
        path = Path(path)
        return Plan.from_json(read_json(path, expect=None), str(path))  # size, UTF-8, depth: one line each

    def devices(self) -> list[str]:
        return list(dict.fromkeys(d for stage in self.stages for d in stage.devices()))

    def simplified(self) -> Plan:
        """The same plan with every split into one part stated as what it is: a spatial stage of one tile on one
        device, or an fc stage of one cluster, becomes a ``single`` stage on that device (a "split" into one
        part would only add halo bookkeeping and a tiled artifact)."""
        return replace(self, stages=tuple(_unsplit(stage) for stage in self.stages))

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


def _unsplit(stage: Stage) -> Stage:
    if stage.kind == "spatial" and len(stage.tiles) == 1 and len(stage.tiles[0].devices) == 1:
        return Stage("single", stage.nodes, device=stage.tiles[0].devices[0].device)
    if stage.kind == "fc" and len(stage.clusters) == 1:
        return Stage("single", stage.nodes, device=stage.clusters[0].device)
    return stage


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


def check_single_output(volume: list[fx.Node]) -> None:
    """Only a spatial volume's last node may be used outside it (tiles produce only its regions)."""
    members = {n.name for n in volume}
    for node in volume[:-1]:
        escaping = [u.name for u in node.users if u.name not in members]
        if escaping and node.meta["layer"].kind != "size":
            raise HalocutError(f"node '{node.name}' inside the spatial volume is also used by "
                               f"{', '.join(escaping)} outside it; only the last node '{volume[-1].name}' may be")


def check_fc(nodes: list[fx.Node], mode: str, features: list[Interval]) -> None:
    """An fc stage's layers fit its mode, it reads one tensor, and its feature ranges cover the split width."""
    names = [n.name for n in nodes]
    if mode not in ("model", "data", "hybrid"):
        raise HalocutError(f"fc mode '{mode}': expected one of model, data, hybrid")
    kinds = [n.meta["layer"].kind for n in nodes]
    linears = [i for i, k in enumerate(kinds) if k == "linear"]
    odd = [n.name for n, k in zip(nodes, kinds) if k not in POINTWISE and k != "linear"]
    expected = 2 if mode == "hybrid" else 1
    if odd or len(linears) != expected or linears[0] != 0:
        raise HalocutError(f"fc stage {names}: mode '{mode}' takes {expected} linear layer(s) first and only "
                           f"pointwise ops besides; got kinds {kinds}")
    members = set(names)
    outside = {s.name for n in nodes for s in tensor_inputs(n) if s.name not in members}
    if len(outside) != 1:
        raise HalocutError(f"fc stage {names} must read exactly one tensor from outside, reads {sorted(outside)}")
    first = nodes[0]
    width = first.meta["layer"].attrs["out_features" if mode != "data" else "in_features"]
    _check_cover(features, width, f"fc stage '{first.name}' ({mode} mode)")


def _check_cover(ranges: list[Interval], width: int, what: str) -> None:
    position = 0
    for start, stop in ranges:
        if start != position or stop <= start:
            raise HalocutError(f"{what}: feature ranges {ranges} must be non-empty, in order and cover 0..{width}")
        position = stop
    if position != width:
        raise HalocutError(f"{what}: feature ranges {ranges} cover 0..{position}, not 0..{width}")


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


@dataclass(frozen=True)
class PartRef:
    """One part of a plan: a single stage, one hop of a tile, an fc cluster, or an fc stage's merge."""

    name: str
    stage: int
    device: str | None  # None for a merge: it runs where its result is used next (merge_device)
    tile: int | None = None
    hop: int = 0
    cluster: int | None = None
    merge: bool = False


def plan_parts(plan: Plan) -> list[PartRef]:
    """Every part of the plan, in execution order (the walk every floor shares).

    >>> plan = Plan("m", (1, 3, 8, 8), (Stage("spatial", ("a",), tiles=(Tile(Region((0, 4), (0, 8)),
    ...     (Hop("d0", "a"), Hop("d1"))),)), Stage("fc", ("b",), mode="model", clusters=(Cluster((0, 2), "d2"),))))
    >>> [(p.name, p.device) for p in plan_parts(plan)]
    [('s0_t0_h0', 'd0'), ('s0_t0_h1', 'd1'), ('s1_c0', 'd2'), ('s1_merge', None)]
    """
    parts = []
    for index, stage in enumerate(plan.stages):
        if stage.kind == "single":
            parts.append(PartRef(part_name(index), index, stage.device))
        elif stage.kind == "spatial":
            parts += [PartRef(part_name(index, t, h), index, hop.device, tile=t, hop=h)
                      for t, tile in enumerate(stage.tiles) for h, hop in enumerate(tile.devices)]
        else:
            parts += [PartRef(part_name(index, cluster=k), index, cluster.device, cluster=k)
                      for k, cluster in enumerate(stage.clusters)]
            parts.append(PartRef(part_name(index, merge=True), index, None, merge=True))
    return parts


def merge_device(plan: Plan, index: int, requester: str, computes) -> str:
    """Where fc stage ``index``'s merge runs: the device of the next stage (the requester after the last),
    or the first cluster's device when that one computes nothing (``computes(name) -> bool``)."""
    following = plan.stages[index + 1].devices()[0] if index + 1 < len(plan.stages) else requester
    return following if computes(following) else plan.stages[index].clusters[0].device

