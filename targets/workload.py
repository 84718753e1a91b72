"""Workloads: DeePar's multi-task setting (paper 000, Sec. III), loaded from YAML, or generated with a seed.

n mobile devices, m edge servers and one cloud. Device i reaches the edge
servers E_i; edge server e runs at most ``capacity`` (r_e) tasks at once and
has a downlink budget B_e^1 (device -> edge) and an uplink budget B_e^2 (edge
-> cloud). Task i runs ``samples`` (N_i) inferences of its model, arrives at
``arrival`` and may be given at most ``downlink`` (B_i^1) and ``uplink``
(B_i^2). ``input_size`` is G_i(0), what one sample weighs on the network (an
encoded picture; default: the float32 input tensor). A file is checked
against ``workload.schema.json`` for structure, then for meaning (catalog
kinds, names, reachable edges, positive rates), with one-line errors naming
the file and the field.

>>> w = generate_workload(seed=1, devices=4, edges=2, window_s=10.0)
>>> len(w.tasks), len(w.edges), w.tasks[0].arrival_s <= w.tasks[-1].arrival_s
(4, 2, True)
>>> parse_workload(w.to_json(), "w.yaml") == w
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from halocut.ir.errors import HalocutError
from halocut.ir.files import read_yaml
from halocut.ir.schema import check, shipped_validator
from halocut.targets.topology import load_catalog, positive_rate, unique_names
from halocut.targets.units import quantity, seconds

# The paper's prototype (Sec. V-A): a Pixel XL phone, a GTX 1080 Ti edge server, a K80 cloud instance.
DEVICE_KIND, EDGE_KIND, CLOUD_KIND = "pixel-xl", "gtx-1080ti", "tesla-k80"
# The four networks of Sec. V-B with the input shapes halocut analyses them at.
MODELS = (("alexnet", (1, 3, 224, 224)), ("vgg16", (1, 3, 224, 224)), ("deepface", (1, 3, 152, 152)),
          ("lenet5", (1, 3, 32, 32)))


@dataclass(frozen=True)
class Edge:
    name: str
    kind: str
    capacity: int  # r_e: tasks computing on it at once
    downlink_bps: float  # B_e^1
    uplink_bps: float  # B_e^2


@dataclass(frozen=True)
class MobileDevice:
    name: str
    kind: str
    edges: tuple[str, ...]  # E_i


@dataclass(frozen=True)
class Task:
    name: str
    device: str
    model: str
    input_shape: tuple[int, ...] | None
    samples: int  # N_i
    arrival_s: float
    downlink_bps: float  # B_i^1
    uplink_bps: float  # B_i^2
    input_bytes: float | None = None  # G_i(0); None: the input tensor's float32 bytes


@dataclass(frozen=True)
class Workload:
    name: str
    cloud: str
    cloud_kind: str
    edges: tuple[Edge, ...]
    devices: tuple[MobileDevice, ...]
    tasks: tuple[Task, ...]
    source: str = field(default="", compare=False)

    def edge(self, name: str) -> Edge:
        return next(e for e in self.edges if e.name == name)

    def device(self, name: str) -> MobileDevice:
        return next(d for d in self.devices if d.name == name)

    def to_json(self) -> dict:
        """The workload as its YAML file writes it (rates in bps, times in s, sizes in bytes)."""
        return {
            "name": self.name,
            "cloud": {"name": self.cloud, "kind": self.cloud_kind},
            "edges": [{"name": e.name, "kind": e.kind, "capacity": e.capacity, "downlink": e.downlink_bps,
                       "uplink": e.uplink_bps} for e in self.edges],
            "devices": [{"name": d.name, "kind": d.kind, "edges": list(d.edges)} for d in self.devices],
            "tasks": [{"name": t.name, "device": t.device, "model": t.model, "samples": t.samples,
                       "arrival": t.arrival_s, "downlink": t.downlink_bps, "uplink": t.uplink_bps,
                       **({"input_shape": list(t.input_shape)} if t.input_shape else {}),
                       **({"input_size": t.input_bytes} if t.input_bytes is not None else {})} for t in self.tasks],
        }


def load_workload(path: str | Path) -> Workload:
    """Read and validate a workload YAML file."""
    return parse_workload(read_yaml(path, expect=None), str(path))


def parse_workload(data: object, source: str = "workload") -> Workload:
    """Build a workload from parsed YAML; ``source`` names it in errors."""
    check(shipped_validator(__package__, "workload.schema.json"), data, source)
    catalog = load_catalog()
    _kind(data["cloud"]["kind"], f"{source}: cloud.kind", catalog)
    edges = tuple(_edge(entry, f"{source}: edges[{i}]", catalog) for i, entry in enumerate(data["edges"]))
    devices = tuple(_device(entry, f"{source}: devices[{i}]", catalog, {e.name for e in edges})
                    for i, entry in enumerate(data["devices"]))
    unique_names([data["cloud"]["name"], *(e.name for e in edges), *(d.name for d in devices)], f"{source}: names", "machine")
    tasks = tuple(_task(entry, f"{source}: tasks[{i}]", {d.name for d in devices})
                  for i, entry in enumerate(data["tasks"]))
    unique_names([t.name for t in tasks], f"{source}: tasks", "task")
    return Workload(data["name"], data["cloud"]["name"], data["cloud"]["kind"], edges, devices, tasks, source)


def _kind(kind: str, where: str, catalog: dict) -> str:
    if kind not in catalog:
        raise HalocutError(f"{where}: unknown kind '{kind}'; known: {', '.join(sorted(catalog))}")
    return kind


def _edge(entry: dict, where: str, catalog: dict) -> Edge:
    return Edge(entry["name"], _kind(entry["kind"], f"{where}.kind", catalog), entry["capacity"],
                positive_rate(entry["downlink"], f"{where}.downlink"),
                positive_rate(entry["uplink"], f"{where}.uplink"))


def _device(entry: dict, where: str, catalog: dict, edges: set[str]) -> MobileDevice:
    for i, edge in enumerate(entry["edges"]):
        if edge not in edges:
            raise HalocutError(f"{where}.edges[{i}]: unknown edge server '{edge}'; edges: {', '.join(sorted(edges))}")
    unique_names(entry["edges"], f"{where}.edges", "edge server")
    return MobileDevice(entry["name"], _kind(entry["kind"], f"{where}.kind", catalog), tuple(entry["edges"]))


def _task(entry: dict, where: str, devices: set[str]) -> Task:
    if entry["device"] not in devices:
        raise HalocutError(f"{where}.device: unknown device '{entry['device']}'")
    try:
        arrival = seconds(entry["arrival"])
    except ValueError as error:
        raise HalocutError(f"{where}.arrival: {error}") from None
    if arrival < 0:
        raise HalocutError(f"{where}.arrival: must not be negative, got {entry['arrival']}")
    size = None
    if "input_size" in entry:
        try:
            size = quantity(entry["input_size"])
        except ValueError as error:
            raise HalocutError(f"{where}.input_size: {error}") from None
        if not size > 0:
            raise HalocutError(f"{where}.input_size: must be positive, got {entry['input_size']}")
    shape = tuple(entry["input_shape"]) if "input_shape" in entry else None
    return Task(entry["name"], entry["device"], entry["model"], shape, entry["samples"], arrival,
                positive_rate(entry["downlink"], f"{where}.downlink"),
                positive_rate(entry["uplink"], f"{where}.uplink"), size)


def generate_workload(seed: int, devices: int, edges: int, window_s: float, reach: tuple[int, int] = (1, 3),
                      models: tuple = MODELS, samples: tuple[int, int] = (1, 1000)) -> Workload:
    """A random workload with the ranges of paper 000, Sec. V-B, one task per device (Sec. III).

    B_i^1 in [20, 300] Mbps, B_i^2 in [10, 50] Mbps, B_e^1 in [5, 20] Gbps, B_e^2 in [0.1, 5] Gbps,
    r_e in [1, 10], N_i in ``samples`` ([1, 1000]), G_i(0) in [10, 1000] KB, arrivals uniform over
    ``window_s``, models drawn uniformly from ``models``. The paper does not say how many edge servers a
    device reaches: here ``reach`` ([1, 3]) of them, drawn uniformly.
    """
    if devices < 1 or edges < 1 or window_s < 0:
        raise HalocutError(f"generate_workload: need devices >= 1, edges >= 1, window >= 0 (got {devices}, {edges}, "
                           f"{window_s})")
    rng = np.random.default_rng(seed)
    edge_list = tuple(Edge(f"edge-{e + 1}", EDGE_KIND, int(rng.integers(1, 11)), float(rng.uniform(5e9, 20e9)),
                           float(rng.uniform(0.1e9, 5e9))) for e in range(edges))
    device_list, tasks = [], []
    arrivals = np.sort(rng.uniform(0.0, window_s, devices))
    for i in range(devices):
        count = int(rng.integers(reach[0], min(reach[1], edges) + 1))
        chosen = sorted(rng.choice(edges, size=count, replace=False).tolist())
        device_list.append(MobileDevice(f"phone-{i + 1}", DEVICE_KIND, tuple(edge_list[e].name for e in chosen)))
        model, shape = models[int(rng.integers(len(models)))]
        tasks.append(Task(f"task-{i + 1}", f"phone-{i + 1}", model, tuple(shape),
                          int(rng.integers(samples[0], samples[1] + 1)), float(arrivals[i]),
                          float(rng.uniform(20e6, 300e6)), float(rng.uniform(10e6, 50e6)),
                          float(rng.uniform(10e3, 1000e3))))
    return Workload(f"generated-s{seed}-d{devices}-e{edges}-w{window_s:g}", "cloud", CLOUD_KIND, edge_list,
                    tuple(device_list), tuple(tasks), f"generate_workload(seed={seed})")
