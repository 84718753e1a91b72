"""Seeded random training cases (style.md item 14): layer groups, three workers' tables and routes, drawn
the same for a seed, for properties of the training cost model and the planners."""

from __future__ import annotations

import numpy as np

from halocut.ir.layer_groups import LayerGroup
from halocut.targets.training import Route, TrainingCosts, TrainingTable

WORKERS = {"device": "pi", "edge": "nuc", "cloud": "gpu"}


def random_costs(seed: int, layers: int | None = None, batch: int | None = None, latency: bool = True,
                 compress_bits: int = 32) -> TrainingCosts:
    """A random model of 1-6 groups on a slow device, a middling edge and a fast cloud, links of 0.5-50 Mbps."""
    rng = np.random.default_rng(seed)
    layers = layers or int(rng.integers(1, 7))
    batch = batch or int(rng.integers(1, 41))
    groups = tuple(LayerGroup(f"g{i}", (f"g{i}",), 0, 0, int(rng.integers(10, 200_000)), int(rng.integers(4, 20_000)),
                              (1,)) for i in range(layers))
    tables = {}
    for name, speed in (("pi", 1.0), ("nuc", 0.2), ("gpu", 0.01)):
        forward = rng.uniform(1e-4, 5e-3, layers) * speed * rng.uniform(0.3, 3.0)
        tables[name] = TrainingTable(tuple(forward), tuple(forward * rng.uniform(1.0, 3.0, layers)),
                                     tuple(rng.uniform(0, 2e-3, layers) * speed), "random")
    rates = {frozenset(("pi", "nuc")): rng.uniform(0.5e6, 50e6), frozenset(("nuc", "gpu")): rng.uniform(0.5e6, 50e6)}
    delays = {key: (rng.uniform(0, 0.03) if latency else 0.0) for key in rates}
    routes = {}
    for a in tables:
        for b in tables:
            if a == b:
                routes[(a, b)] = Route(0.0, 0.0)
                continue
            hops = [frozenset((a, b))] if frozenset((a, b)) in rates else [frozenset(("pi", "nuc")),
                                                                           frozenset(("nuc", "gpu"))]
            per_byte = [8.0 / rates[h] for h in hops]
            shrunk = [r * compress_bits / 32 if h == frozenset(("nuc", "gpu")) else r for h, r in zip(hops, per_byte)]
            routes[(a, b)] = Route(sum(delays[h] for h in hops), sum(per_byte),
                                   sum(shrunk) if compress_bits < 32 else None)
    return TrainingCosts("random", batch, groups, float(rng.integers(100, 20_000)), dict(WORKERS), tables, routes,
                         compress_bits)
