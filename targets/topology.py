"""Topologies: the machines, links and shared media a model is compiled for, loaded from YAML.

A file is checked against ``topology.schema.json`` (shipped with the package)
for its structure, then for meaning: catalog kinds exist, names are unique,
rates are positive, every device is reachable. Errors name the file, the
field and the problem in one line.

>>> from pathlib import Path
>>> topology = load_topology(Path(__file__).parent.parent / "examples/topologies/default.yaml")
>>> topology.requester.role
'requester'
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from halocut.ir.errors import HalocutError
from halocut.ir.files import read_json, read_yaml
from halocut.ir.schema import check, shipped_validator
from halocut.targets.units import bits_per_second, quantity, seconds

ROLES = ("requester", "device", "edge", "cloud", "gateway")


@dataclass(frozen=True)
class Device:
    """A machine. ``peak_flops`` is 0 for a pure relay (a gateway that computes nothing)."""

    name: str
    role: str
    kind: str  # catalog kind, "figures" or "profile"
    device_class: str | None = None  # "cpu" or "gpu"
    peak_flops: float = 0.0
    memory_bytes: float = 0.0
    memory_bandwidth_bytes_per_s: float = 0.0
    backend: str | None = None
    cuda_arch: str | None = None
    tensorrt: str | None = None  # a Jetson board's TensorRT version, from its JetPack (``jetpack``)
    jetpack: str | None = None
    efficiency: dict = field(default_factory=dict, compare=False)
    profile_path: Path | None = None
    dispatch_s: float = 0.0  # what the runtime costs each part run here (a Ray actor call), on top of its compute
    submit_s: float = 0.0  # the requester's driver: its time to submit one part of a request (one at a time)

    @property
    def computes(self) -> bool:
        return self.peak_flops > 0 or self.profile_path is not None


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    bandwidth_bps: float
    latency_s: float = 0.0
    overhead_s: float = 0.0  # per message, on top of latency
    medium: str | None = None

    @property
    def key(self) -> str:
        return f"{self.a}--{self.b}"

    def transfer_s(self, size_bytes: float, bandwidth_bps: float | None = None) -> float:
        """Seconds to send ``size_bytes`` alone on this link: latency + bytes * 8 / bandwidth + overhead."""
        return self.latency_s + self.overhead_s + size_bytes * 8.0 / (bandwidth_bps or self.bandwidth_bps)


@dataclass(frozen=True)
class Medium:
    """A gateway or Wi-Fi cell: its bandwidth is divided among the transfers crossing it at once."""

    name: str
    bandwidth_bps: float


@dataclass(frozen=True)
class TracePoint:
    target: str  # a link key "a--b" or a medium name
    at_s: float
    bandwidth_bps: float


@dataclass(frozen=True)
class Topology:
    name: str
    devices: tuple[Device, ...]
    links: tuple[Link, ...]
    media: tuple[Medium, ...] = ()
    trace: tuple[TracePoint, ...] = ()
    source: str = ""

    def device(self, name: str) -> Device:
        for device in self.devices:
            if device.name == name:
                return device
        raise HalocutError(f"topology '{self.name}': no device '{name}'; devices: "
                           f"{', '.join(d.name for d in self.devices)}")

    @property
    def requester(self) -> Device:
        return next(d for d in self.devices if d.role == "requester")

    def compute_devices(self) -> list[Device]:
        return [d for d in self.devices if d.computes]

    def medium(self, name: str) -> Medium:
        return next(m for m in self.media if m.name == name)

    def route(self, source: str, target: str) -> list[Link]:
        """The links a message takes from ``source`` to ``target``: fewest hops, then least latency."""
        routes = self.__dict__.get("_route_table")
        if routes is None:  # kept on the instance: hashing a topology's fields for a cache costs more than a route
            routes = _routes(self)
            object.__setattr__(self, "_route_table", routes)
        return routes[(source, target)]

    def bandwidth_at(self, target: str, time_s: float, default: float) -> float:
        """A link's or medium's bandwidth at ``time_s`` under the trace (``default`` when none applies)."""
        points = [p for p in self.trace if p.target == target and p.at_s <= time_s]
        return max(points, key=lambda p: p.at_s).bandwidth_bps if points else default


MAX_TOPOLOGY_BYTES = 4 * 1024 * 1024  # thousands of machines fit in far less


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology YAML file."""
    path = Path(path)
    data = read_yaml(path, expect=None, max_bytes=MAX_TOPOLOGY_BYTES)  # size, UTF-8, aliases, depth: one line each
    return parse_topology(data, str(path), path.parent)


def parse_topology(data: object, source: str = "topology", base: Path = Path(".")) -> Topology:
    """Build a topology from parsed YAML; ``source`` names it in errors, ``base`` resolves profile paths."""
    check(shipped_validator(__package__, "topology.schema.json"), data, source)
    catalog = load_catalog()
    devices = tuple(_device(entry, f"{source}: devices[{i}]", catalog, base) for i, entry in enumerate(data["devices"]))
    unique_names([d.name for d in devices], f"{source}: devices", "device")
    media = tuple(_medium(entry, f"{source}: media[{i}]") for i, entry in enumerate(data.get("media", [])))
    unique_names([m.name for m in media], f"{source}: media", "medium")
    names, medium_rates = {d.name for d in devices}, {m.name: m.bandwidth_bps for m in media}
    links = tuple(_link(entry, f"{source}: links[{i}]", names, medium_rates) for i, entry in enumerate(data["links"]))
    unique_names([tuple(sorted((link.a, link.b))) for link in links], f"{source}: links", "link")
    requesters = [d.name for d in devices if d.role == "requester"]
    if len(requesters) != 1:
        raise HalocutError(f"{source}: devices: expected exactly one requester, found {len(requesters)}"
                           f"{' (' + ', '.join(requesters) + ')' if requesters else ''}")
    trace = tuple(_trace_point(entry, f"{source}: trace[{i}]", links, media) for i, entry in enumerate(data.get("trace", [])))
    topology = Topology(data["name"], devices, links, media, trace, source)
    _check_reachable(topology, source)
    return topology


def _device(entry: dict, where: str, catalog: dict, base: Path) -> Device:
    device = _device_figures(entry, where, catalog, base)
    if "dispatch" in entry:
        device = replace(device, dispatch_s=_duration(entry["dispatch"], f"{where}.dispatch"))
    if "submit" in entry:
        if device.role != "requester":
            raise HalocutError(f"{where}.submit: only the requester submits (its driver sends every part's call)")
        device = replace(device, submit_s=_duration(entry["submit"], f"{where}.submit"))
    return device


def _device_figures(entry: dict, where: str, catalog: dict, base: Path) -> Device:
    given = [key for key in ("kind", "figures", "profile") if key in entry]
    if len(given) > 1:
        raise HalocutError(f"{where}: give one of kind, figures or profile, not {' and '.join(given)}")
    name, role = entry["name"], entry["role"]
    if not given:
        if role != "gateway":
            raise HalocutError(f"{where} ('{name}'): needs a kind, figures or profile (only a gateway may compute nothing)")
        return Device(name, role, "relay")
    if "kind" in entry:
        kind = entry["kind"]
        if kind not in catalog:
            raise HalocutError(f"{where}.kind: unknown kind '{kind}'; known: {', '.join(sorted(catalog))}")
        return _from_figures(name, role, kind, catalog[kind], f"targets/devices.yaml: {kind}")
    if "figures" in entry:
        return _from_figures(name, role, "figures", entry["figures"], f"{where}.figures")
    return _from_profile(name, role, base / entry["profile"], f"{where}.profile")


def _from_figures(name: str, role: str, kind: str, figures: dict, where: str) -> Device:
    values = {}
    for key in ("peak_flops", "memory_bytes", "memory_bandwidth_bytes_per_s"):
        try:
            values[key] = quantity(figures[key])
        except ValueError as error:
            raise HalocutError(f"{where}.{key}: {error}") from None
        if not values[key] > 0:
            raise HalocutError(f"{where}.{key}: must be positive, got {figures[key]}")
    return Device(name, role, kind, figures["class"], backend=figures["backend"], cuda_arch=figures.get("cuda_arch"),
                  tensorrt=figures.get("tensorrt"), jetpack=figures.get("jetpack"),
                  efficiency=dict(figures.get("efficiency", {})), **values)


def _from_profile(name: str, role: str, path: Path, where: str) -> Device:
    if not path.exists():
        raise HalocutError(f"{where}: profile '{path}' does not exist")
    try:
        profile = read_json(path)
    except HalocutError as error:
        raise HalocutError(f"{where}: profile {error}") from None
    figures = profile.get("device_figures")
    if not isinstance(figures, dict):
        raise HalocutError(f"{where}: '{path}' is not a halocut profile (no device_figures)")
    device = _from_figures(name, role, "profile", figures, f"{where} ({path})")
    return Device(**{**device.__dict__, "profile_path": path.resolve()})


def _medium(entry: dict, where: str) -> Medium:
    return Medium(entry["name"], positive_rate(entry["bandwidth"], f"{where}.bandwidth"))


def _link(entry: dict, where: str, names: set[str], medium_rates: dict[str, float]) -> Link:
    a, b = entry["between"]
    for end in (a, b):
        if end not in names:
            raise HalocutError(f"{where}.between: unknown device '{end}'")
    if a == b:
        raise HalocutError(f"{where}.between: a link needs two different devices, got '{a}' twice")
    medium = entry.get("medium")
    if medium is not None and medium not in medium_rates:
        raise HalocutError(f"{where}.medium: unknown medium '{medium}'; media: {', '.join(medium_rates) or 'none'}")
    if "shannon" in entry:
        s = entry["shannon"]
        if min(s["bandwidth_hz"], s["power_w"], s["gain"], s["noise_w"]) <= 0:
            raise HalocutError(f"{where}.shannon: bandwidth_hz, power_w, gain and noise_w must be positive")
        bandwidth = s["bandwidth_hz"] * math.log2(1 + s["power_w"] * s["gain"] / s["noise_w"])
    elif "bandwidth" in entry:
        bandwidth = positive_rate(entry["bandwidth"], f"{where}.bandwidth")
    elif medium is not None:
        bandwidth = medium_rates[medium]
    else:
        raise HalocutError(f"{where}: needs a bandwidth, a shannon rate or a medium")
    latency = _duration(entry.get("latency", 0), f"{where}.latency")
    overhead = _duration(entry.get("overhead", 0), f"{where}.overhead")
    return Link(a, b, bandwidth, latency, overhead, medium)


def _trace_point(entry: dict, where: str, links: tuple[Link, ...], media: tuple[Medium, ...]) -> TracePoint:
    targets = {link.key for link in links} | {f"{link.b}--{link.a}" for link in links} | {m.name for m in media}
    if entry["target"] not in targets:
        raise HalocutError(f"{where}.target: '{entry['target']}' is neither a link (a--b) nor a medium")
    target = entry["target"]
    link = next((link for link in links if f"{link.b}--{link.a}" == target), None)
    return TracePoint(link.key if link else target, _duration(entry["at"], f"{where}.at"),
                      positive_rate(entry["bandwidth"], f"{where}.bandwidth"))


def positive_rate(value, where: str) -> float:
    """A data rate in bits per second, positive and finite; errors name ``where`` in one line."""
    try:
        rate = bits_per_second(value)
    except ValueError as error:
        raise HalocutError(f"{where}: {error}") from None
    if not rate > 0:
        raise HalocutError(f"{where}: bandwidth must be positive, got {value}")
    return rate


def _duration(value, where: str) -> float:
    try:
        duration = seconds(value)
    except ValueError as error:
        raise HalocutError(f"{where}: {error}") from None
    if duration < 0:
        raise HalocutError(f"{where}: must not be negative, got {value}")
    return duration


def unique_names(names: list, where: str, what: str) -> None:
    """Refuse the first name that repeats (a tuple shows as ``a -- b``), naming ``where``."""
    seen = set()
    for name in names:
        if name in seen:
            shown = " -- ".join(name) if isinstance(name, tuple) else name
            raise HalocutError(f"{where}: duplicate {what} '{shown}'")
        seen.add(name)


def _check_reachable(topology: Topology, source: str) -> None:
    start = topology.requester.name
    seen = {start}
    queue = deque([start])
    neighbours = _neighbours(topology)
    while queue:
        for other, _ in neighbours[queue.popleft()]:
            if other not in seen:
                seen.add(other)
                queue.append(other)
    for device in topology.devices:
        if device.name not in seen:
            raise HalocutError(f"{source}: device '{device.name}' is not reachable from the requester "
                               f"'{start}' through any link")


def _neighbours(topology: Topology) -> dict[str, list[tuple[str, Link]]]:
    neighbours: dict[str, list[tuple[str, Link]]] = {d.name: [] for d in topology.devices}
    for link in topology.links:
        neighbours[link.a].append((link.b, link))
        neighbours[link.b].append((link.a, link))
    return neighbours


@cache
def _routes(topology: Topology) -> dict[tuple[str, str], list[Link]]:
    neighbours = _neighbours(topology)
    routes = {}
    for source in neighbours:
        best: dict[str, tuple[int, float, list[Link]]] = {source: (0, 0.0, [])}
        frontier = [source]
        while frontier:
            following = []
            for name in frontier:
                hops, latency, path = best[name]
                for other, link in neighbours[name]:
                    candidate = (hops + 1, latency + link.latency_s, path + [link])
                    if other not in best or candidate[:2] < best[other][:2]:
                        if other not in best:
                            following.append(other)
                        best[other] = candidate
            frontier = following
        routes.update({(source, target): path for target, (_, _, path) in best.items()})
    return routes


def catalog_device(kind: str, name: str | None = None, role: str = "device") -> Device:
    """A device of a catalog kind (named after the kind unless ``name`` is given)."""
    catalog = load_catalog()
    if kind not in catalog:
        raise HalocutError(f"unknown device kind '{kind}'; known: {', '.join(sorted(catalog))}")
    return _from_figures(name or kind, role, kind, catalog[kind], f"targets/devices.yaml: {kind}")


@cache
def load_catalog() -> dict[str, dict]:
    """The device catalog ``targets/devices.yaml``: kind -> entry (figures, backend, sources)."""
    return yaml.safe_load(resources.files(__package__).joinpath("devices.yaml").read_text())
