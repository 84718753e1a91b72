"""``halocut profile MODEL --training``: forward, backward and update seconds of each layer group, measured here.

HierTrain's profiling stage (paper 002, Sec. III): "we perform one training iteration on each computing
node ... and then record the execution times and output sizes of different DNN layers". Each layer group
(:mod:`halocut.ir.layer_groups`) runs as the training step runs it (torch autograd, eval-mode BN and dropout,
plain SGD) on a batch of ``B`` samples flowing through the groups before it: the forward with autograd
recording (the last group's includes the loss), the backward from a gradient of its output's shape (from
the loss for the last group; the first group computes no input gradient, as in training), and the SGD step
of its parameters. Warm-up runs, then the median of repeats; per-sample figures are the batch's divided by
``B`` (eqs. 1-2 make the time proportional to the samples). ``MO_i`` and ``MP_i`` come with each group.

The result is a halocut profile (``device_figures`` from the fastest forward measured, this machine's
memory and copy bandwidth) with a ``training`` section, so a topology names it as a device like any
profile: ``{name: edge, role: edge, profile: lenet5-train.json}``; the training cost model then reads the
measured groups, and inference costs fall back to the analytic model with these figures.
"""

from __future__ import annotations

import copy
import statistics
import time

import numpy as np
import torch
from torch import fx, nn

from halocut.ir.layer_groups import LayerGroup
from halocut.runtime.hiertrain_worker import as_input, group_modules
from halocut.runtime.profile import FORMAT, copy_bandwidth, host_info, memory_bytes


def profile_training(graph: fx.GraphModule, groups: list[LayerGroup], name: str, input_shape: tuple[int, ...],
                     batch: int, repeats: int = 5, warmup: int = 2, threads: int | None = None) -> dict:
    """Measure every group of an annotated ``graph`` at ``batch`` samples; returns the profile as a JSON-ready dict."""
    if threads:
        torch.set_num_threads(threads)
    modules = [copy.deepcopy(module).eval() for module in group_modules(graph, groups)]
    generator = np.random.default_rng(0)
    h = as_input(generator.integers(0, 256, (batch, *input_shape[1:]), dtype=np.uint8))
    entries = []
    for index, (group, module) in enumerate(zip(groups, modules)):
        last = index == len(groups) - 1
        with torch.no_grad():
            out = module(h)
        labels = torch.from_numpy(generator.integers(0, out.shape[-1], batch)) if last else None
        forward, backward, update = _time_group(module, h, index > 0, labels, repeats, warmup)
        entries.append({"name": group.name, "nodes": list(group.nodes), "forward_s": forward, "backward_s": backward,
                        "update_s": update, "forward_s_per_sample": forward / batch,
                        "backward_s_per_sample": backward / batch, "output_bytes": group.output_bytes,
                        "param_bytes": group.param_bytes, "flops": group.flops})
        h = out
    best = max((e["flops"] / e["forward_s_per_sample"] for e in entries if e["flops"] and e["forward_s"] > 0),
               default=1e9)
    return {"format": FORMAT, "device": "local", "runtime": "torch", "model": name, "input_shape": list(input_shape),
            "host": host_info(),
            "device_figures": {"class": "cpu", "peak_flops": best, "memory_bytes": memory_bytes(),
                               "memory_bandwidth_bytes_per_s": copy_bandwidth(), "backend": "torch"},
            "layers": {},
            "training": {"model": name, "batch": batch, "repeats": repeats, "warmup": warmup,
                         "sample_bytes": int(np.prod(input_shape[1:])), "groups": entries}}


def _time_group(module: nn.Module, x: torch.Tensor, input_grad: bool, labels: torch.Tensor | None, repeats: int,
                warmup: int) -> tuple[float, float, float]:
    """Median seconds of (forward, backward, SGD step) of one group on ``x``."""
    parameters = list(module.parameters())
    optimizer = torch.optim.SGD(parameters, lr=1e-3)
    samples: list[tuple[float, float, float]] = []
    for attempt in range(warmup + repeats):
        inputs = x.detach().requires_grad_(input_grad)
        start = time.perf_counter()
        out = module(inputs)
        if labels is not None:
            out = nn.functional.cross_entropy(out, labels)
        forward = time.perf_counter() - start
        gradient = None if labels is not None else torch.ones_like(out)
        start = time.perf_counter()
        out.backward(gradient)
        backward = time.perf_counter() - start
        start = time.perf_counter()
        optimizer.step()
        update = time.perf_counter() - start
        optimizer.zero_grad(set_to_none=True)
        if attempt >= warmup:
            samples.append((forward, backward, update))
    return tuple(statistics.median(s[i] for s in samples) for i in range(3))
