"""Seeded random topologies a user might have: the held-out set the planners are scored on beside the papers'.

Each topology mixes Raspberry Pis, Jetsons, x86 edge boxes and cloud GPUs
(2-12 devices besides the requester), with links from 5 Mbps to 1 Gbps, in
one of four shapes: a star of private links to the requester; a Wi-Fi cell
whose airtime is shared (a gateway relays, every device behind it); a LAN
behind a gateway plus a cloud GPU over a slow WAN; a chain requester -> edge
-> cloud with devices on the edge's switch. The requester is weak (a Pi 3, a
Pi 4) or strong (a Jetson, an x86 box). Nothing here is tuned to halocut:
the draws are uniform over the ranges above, seeded.

    .venv/bin/python benchmarks/random_topologies.py            # prints the 12 held-out topologies

>>> [t.name for t in held_out_topologies(2)]
['rand-00-star', 'rand-01-cell']
>>> held_out_topologies(3) == held_out_topologies(3)
True
"""

from __future__ import annotations

import random
import sys

from halocut.targets.topology import Topology, parse_topology

SEED = 15
SHAPES = ("star", "cell", "lan-cloud", "chain")
SMALL = ("rpi3b", "rpi4", "jetson-nano", "jetson-tx2", "jetson-xavier-nx", "jetson-orin-nano")
EDGE = ("intel-nuc", "desktop-i7", "jetson-agx-xavier", "jetson-agx-orin", "gtx-1080ti")
CLOUD = ("tesla-t4", "tesla-v100", "a100")
WEAK_REQUESTERS = ("rpi3b", "rpi4")
STRONG_REQUESTERS = ("jetson-nano", "jetson-xavier-nx", "intel-nuc")
HELD_OUT_MODELS = ("vgg16", "resnet50", "mobilenet_v2", "squeezenet1_1")


def _rate(rng: random.Random, low_mbps: float = 5.0, high_mbps: float = 1000.0) -> str:
    """Log-uniform between ``low_mbps`` and ``high_mbps``."""
    return f"{round(low_mbps * (high_mbps / low_mbps) ** rng.random(), 1)}Mbps"


def _latency(rng: random.Random, low_ms: float, high_ms: float) -> str:
    return f"{round(rng.uniform(low_ms, high_ms), 2)}ms"


def random_topology(seed: int, shape: str | None = None, name: str | None = None) -> Topology:
    """One topology drawn from ``random.Random(seed)`` (the shape too, unless given)."""
    rng = random.Random(seed)
    shape = shape or SHAPES[seed % len(SHAPES)]
    count = rng.randint(2, 12)
    requester = rng.choice(WEAK_REQUESTERS if rng.random() < 0.6 else STRONG_REQUESTERS)
    devices = [{"name": "requester", "role": "requester", "kind": requester}]
    kinds = [rng.choice(SMALL if rng.random() < 0.7 else EDGE) for _ in range(count)]
    names = [f"{kind}-{k}" for k, kind in enumerate(kinds)]
    devices += [{"name": n, "role": "device", "kind": k} for n, k in zip(names, kinds)]
    links, media = [], []
    if shape == "star":
        links = [{"between": ["requester", n], "bandwidth": _rate(rng), "latency": _latency(rng, 0.5, 5)}
                 for n in names]
    elif shape == "cell":
        devices.append({"name": "ap", "role": "gateway"})
        media = [{"name": "wifi", "bandwidth": _rate(rng, 10, 600)}]
        links = [{"between": ["requester", "ap"], "medium": "wifi", "latency": _latency(rng, 1, 4)}]
        links += [{"between": ["ap", n], "medium": "wifi", "latency": _latency(rng, 1, 4)} for n in names]
    else:
        devices.append({"name": "switch", "role": "gateway"})
        cloud = rng.choice(CLOUD)
        devices.append({"name": f"{cloud}-cloud", "role": "cloud", "kind": cloud})
        head = "requester" if shape == "lan-cloud" else names[0]
        links = [{"between": ["requester", "switch"], "bandwidth": _rate(rng, 20, 1000),
                  "latency": _latency(rng, 0.2, 2)}]
        links += [{"between": ["switch", n], "bandwidth": _rate(rng, 20, 1000), "latency": _latency(rng, 0.2, 2)}
                  for n in names]
        links.append({"between": [head, f"{cloud}-cloud"], "bandwidth": _rate(rng, 5, 200),
                      "latency": _latency(rng, 10, 60)})
    data = {"name": name or f"rand-{seed}-{shape}", "devices": devices, "links": links}
    if media:
        data["media"] = media
    return parse_topology(data, data["name"])


def held_out_topologies(count: int = 12, seed: int = SEED) -> list[Topology]:
    """``count`` topologies, the shapes in turn, each from its own seed derived from ``seed``."""
    return [random_topology(seed * 1000 + k, SHAPES[k % len(SHAPES)], f"rand-{k:02d}-{SHAPES[k % len(SHAPES)]}")
            for k in range(count)]


def main() -> int:
    for topology in held_out_topologies():
        computing = [d.kind for d in topology.compute_devices() if d.role != "requester"]
        print(f"{topology.name:<20} requester {topology.requester.kind:<18} {len(computing):>2} devices: "
              f"{', '.join(computing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
