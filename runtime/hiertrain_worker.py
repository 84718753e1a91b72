"""One HierTrain worker: the class behind each Ray actor of ``halocut train`` (plain Python, testable without Ray).

A :class:`TrainWorker` runs one task of paper 002 (Sec. IV-A): ``o`` trains all N layer groups, ``s`` groups
1..m_s, ``l`` groups 1..m_l, each with its own copy of those groups' parameters and plain SGD. The worker on
the device (the requester) also holds the data and sends each other worker its rows of the batch (8-bit
images, as CIFAR-10 and Tiny ImageNet store them, turned into floats where they are used) and worker_o the
labels. The methods are the steps of one iteration (Sec. IV-B), in the order the driver calls them:

- s, l: :meth:`front` (their groups on their rows, the output to worker_o), :meth:`back` (the gradient from
  worker_o through their groups; their weight gradients to worker_o), :meth:`update` (the averaged gradient);
- o: :meth:`front` (groups 1..m_s on its own rows), :meth:`middle` (with worker_s's rows appended, groups
  m_s+1..m_l), :meth:`rest` (with worker_l's rows, the remaining groups and the loss, the mean over all B
  samples, its backward to layer m_l+1: the gradient of worker_l's rows), :meth:`back_middle` (to layer
  m_s+1: worker_s's rows), :meth:`back_front`, and :meth:`reduce`: per group the gradients of every worker
  holding it are combined and sent back, and worker_o updates.

"Averages" (the paper's word): the loss is the mean over the whole batch, so each worker's gradient is
already its samples' share of it, and the full-batch gradient is their sum, which is the sample-weighted
average of the workers' own mean gradients. That is why the result equals single-process SGD.

After each update a worker writes its parameters to a checkpoint on its own machine (the last two
iterations are kept). A worker Ray restarts is configured again (``rejoin``) and finds them there;
:meth:`restore` rolls every worker back to the last iteration all of them completed, so the driver can redo
the iteration that failed.

>>> import torch
>>> from torch import nn
>>> data = SyntheticData(0, 4, (2,), 3)
>>> groups = [nn.Sequential(nn.Linear(2, 3))]
>>> o = TrainWorker("gpu")
>>> o.configure("o", groups, 0.1, 0, 0, data=data, rows={"o": (0, 4)})
>>> o.front(1, None); o.middle(None)
>>> gradient, loss = o.rest(None, None)
>>> o.back_middle(); o.back_front(); o.reduce(None, None, None, None)
(None, None)
>>> o.completed, loss > 0
(1, True)
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

from halocut.ir.layer_groups import LayerGroup
from halocut.passes.cut import cut_stages


@dataclass(frozen=True)
class SyntheticData:
    """Seeded random 8-bit images and labels: batch ``k`` is the same wherever it is drawn."""

    seed: int
    batch: int
    shape: tuple[int, ...]  # one sample, without the batch dimension
    classes: int

    def batch_at(self, iteration: int) -> tuple[np.ndarray, np.ndarray]:
        generator = np.random.default_rng([self.seed, iteration])
        images = generator.integers(0, 256, (self.batch, *self.shape), dtype=np.uint8)
        return images, generator.integers(0, self.classes, self.batch, dtype=np.int64)


def group_modules(graph: fx.GraphModule, groups: list[LayerGroup]) -> list[fx.GraphModule]:
    """One module per layer group (each takes the previous group's output), cut from the graph; the
    parameters are the graph's own (shared), so a caller that trains them copies them first."""
    stages = cut_stages(graph, [g.nodes[-1] for g in groups[:-1]])
    return [stage.module for stage in stages]


def as_input(images: np.ndarray) -> torch.Tensor:
    """8-bit images as the model's float input, in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)


class TrainWorker:
    """One task's groups and optimizer on one machine; see the module docstring for the protocol."""

    def __init__(self, device: str, threads: int | None = None):
        """An idle worker on the machine ``device``; :meth:`configure` gives it a task. ``threads``: torch's."""
        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self.task = None
        self.folder = None

    def configure(self, task: str, groups: list[nn.Module], lr: float, m_s: int, m_l: int,
                  data: SyntheticData | None = None, rows: dict | None = None, run: str | None = None,
                  rejoin: bool = False) -> None:
        """Take a task of a run: its groups (all N for ``o``; in eval mode: BN keeps its running statistics,
        dropout is off), SGD at ``lr``; for the device's worker the data and ``rows`` (task -> (start, stop) of
        the batch). ``run``: a folder name for the run's checkpoints on this machine (None: in memory only).
        ``rejoin``: a restarted worker taking its task again keeps the checkpoints it wrote before."""
        self.task, self.m_s, self.m_l, self.lr = task, m_s, m_l, lr
        self.data, self.rows = data, rows or {}
        self.folder = Path(tempfile.gettempdir()) / "halocut-train" / run / task if run else None
        self.snapshots: dict[int, list[torch.Tensor]] = {}
        self.groups = [copy.deepcopy(g).eval() for g in groups]
        self.parameters = [p for g in self.groups for p in g.parameters()]
        self.optimizer = torch.optim.SGD(self.parameters, lr=lr) if self.parameters else None  # None: idle
        self._fresh_state()
        if not rejoin:
            self._save(0)

    # --- data (the device's worker only)

    def samples_for(self, iteration: int, task: str, target: str) -> np.ndarray:
        """The rows of batch ``iteration`` for ``task``, sent to the worker on ``target``."""
        images, _ = self.data.batch_at(iteration)
        start, stop = self.rows[task]
        return self._send(target, images[start:stop])

    def labels_for(self, iteration: int, target: str) -> np.ndarray:
        return self._send(target, self.data.batch_at(iteration)[1])

    def _own(self, iteration: int, x: np.ndarray | None) -> np.ndarray:
        if x is not None:
            return x
        images, _ = self.data.batch_at(iteration)
        start, stop = self.rows[self.task]
        return images[start:stop]

    # --- forward

    def front(self, iteration: int, x: np.ndarray | None, target: str | None = None) -> np.ndarray | None:
        """Groups 1..m of this task on its rows (``x``, or the device's own); s and l send the result to
        ``target`` (worker_o's machine), o keeps it for :meth:`middle`."""
        start = time.perf_counter()
        self.iteration = iteration
        count = self.m_s if self.task == "o" else len(self.groups)
        self.front_out = self._run(0, count, as_input(self._own(iteration, x)))
        self._spent(start)
        return None if self.task == "o" else self._send(target, self.front_out.detach().numpy())

    def middle(self, from_s: np.ndarray | None) -> None:
        """worker_o: its output of group m_s with worker_s's rows appended, through groups m_s+1..m_l."""
        start = time.perf_counter()
        self.front_leaf, self.from_s, joined = _join(self.front_out, from_s)
        self.middle_out = self._run(self.m_s, self.m_l, joined)
        self._spent(start)

    def rest(self, from_l: np.ndarray | None, labels: np.ndarray | None, target: str | None = None):
        """worker_o: worker_l's rows appended, groups m_l+1..N, the loss (mean over the batch) and its backward
        down to the input of group m_l+1; returns (the gradient of worker_l's rows, sent to ``target``; loss)."""
        start = time.perf_counter()
        self.middle_leaf, self.from_l, joined = _join(self.middle_out, from_l)
        logits = self._run(self.m_l, len(self.groups), joined)
        if labels is None:
            labels = self.data.batch_at(self.iteration)[1]
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(labels))
        loss.backward()
        self._spent(start)
        return self._send(target, _grad(self.from_l)), float(loss.detach())

    # --- backward

    def back_middle(self, target: str | None = None) -> np.ndarray | None:
        """worker_o: groups m_l..m_s+1 backward; returns the gradient of worker_s's rows (sent to ``target``)."""
        start = time.perf_counter()
        _carry(self.middle_out, self.middle_leaf)
        self._spent(start)
        return self._send(target, _grad(self.from_s))

    def back_front(self) -> None:
        """worker_o: groups m_s..1 backward on its own rows."""
        start = time.perf_counter()
        _carry(self.front_out, self.front_leaf)
        self._spent(start)

    def back(self, gradient: np.ndarray, target: str) -> list[np.ndarray]:
        """worker_s / worker_l: worker_o's gradient through groups m..1; the weight gradients to ``target``."""
        start = time.perf_counter()
        if self.front_out.requires_grad:
            self.front_out.backward(torch.from_numpy(gradient))
        self._spent(start)
        return self._send(target, [_grad(p) for p in self.parameters])

    # --- update

    def reduce(self, from_s: list[np.ndarray] | None, from_l: list[np.ndarray] | None, target_s: str | None,
               target_l: str | None):
        """worker_o: per parameter, its gradient plus those of the workers holding it (their first
        parameters are its first); updates; returns the combined gradients for worker_s and worker_l."""
        start = time.perf_counter()
        for received in (from_s, from_l):
            for parameter, gradient in zip(self.parameters, received or []):
                parameter.grad = _grad(parameter, torch.Tensor) + torch.from_numpy(gradient)
        combined = [_grad(p) for p in self.parameters]
        self._step()
        self._spent(start)
        return tuple(None if received is None else self._send(target, combined[:len(received)])
                     for received, target in ((from_s, target_s), (from_l, target_l)))

    def update(self, combined: list[np.ndarray]) -> None:
        """worker_s / worker_l: the combined gradient from worker_o, then the SGD step."""
        start = time.perf_counter()
        for parameter, gradient in zip(self.parameters, combined):
            parameter.grad = torch.from_numpy(gradient).clone()
        self._step()
        self._spent(start)

    def _step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.completed += 1
        self._save(self.completed)
        self._fresh_state(keep_completed=True)

    # --- statistics, checkpoints, recovery

    def take_statistics(self) -> dict:
        """Compute seconds and bytes sent per target machine since the last call; resets them."""
        taken = {"device": self.device, "task": self.task, "compute_s": self.compute_s, "sent_bytes": self.sent,
                 "completed": self.completed}
        self.compute_s, self.sent = 0.0, {}
        return taken

    def ping(self) -> dict:
        return {"pid": os.getpid(), "device": self.device, "task": self.task}

    def checkpoints(self) -> list[int]:
        """Iterations this worker holds a snapshot of."""
        if self.folder is None:
            return sorted(self.snapshots)
        return sorted(int(p.stem.removeprefix("params-")) for p in self.folder.glob("params-*.pt"))

    def restore(self, iteration: int) -> None:
        """Go back to the parameters after ``iteration``, dropping whatever the failed iteration left."""
        state = self.snapshots.get(iteration)
        if state is None:
            state = torch.load(self.folder / f"params-{iteration}.pt", weights_only=True)
        with torch.no_grad():
            for parameter, value in zip(self.parameters, state):
                parameter.copy_(value)
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        self.completed = iteration
        self._fresh_state(keep_completed=True)

    def state(self) -> list[np.ndarray]:
        """This worker's parameters, in order."""
        return [p.detach().numpy().copy() for p in self.parameters]

    def cleanup(self) -> None:
        """Forget the run: its checkpoints on this machine and its task."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.task = self.folder = None

    def _save(self, iteration: int) -> None:
        state = [p.detach().clone() for p in self.parameters]
        self.snapshots = {k: v for k, v in self.snapshots.items() if k >= iteration - 1}
        self.snapshots[iteration] = state
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{iteration}.partial"
        torch.save(state, partial)
        partial.replace(self.folder / f"params-{iteration}.pt")
        for old in self.checkpoints():
            if old < iteration - 1:
                (self.folder / f"params-{old}.pt").unlink(missing_ok=True)

    def _fresh_state(self, keep_completed: bool = False) -> None:
        if not keep_completed:
            self.completed = 0
            self.compute_s, self.sent = 0.0, {}
        self.iteration = None
        self.front_out = self.front_leaf = self.middle_out = self.middle_leaf = None
        self.from_s = self.from_l = None

    # --- helpers

    def _run(self, first: int, stop: int, h: torch.Tensor) -> torch.Tensor:
        for group in self.groups[first:stop]:
            h = group(h)
        return h

    def _send(self, target: str | None, value):
        if target is not None and target != self.device:
            size = sum(v.nbytes for v in value) if isinstance(value, list) else value.nbytes
            self.sent[target] = self.sent.get(target, 0) + int(size)
        return value

    def _spent(self, start: float) -> None:
        self.compute_s += time.perf_counter() - start


def _grad(tensor, kind=np.ndarray):
    """A tensor's gradient (zeros where it got none), as numpy or as a tensor."""
    if tensor is None:
        return None
    gradient = tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)
    return gradient.detach().numpy().copy() if kind is np.ndarray else gradient


def _join(own: torch.Tensor, received: np.ndarray | None):
    """A phase's input: ``own`` rows as a leaf (so the phase's backward stops there), ``received`` rows
    appended as a leaf whose gradient goes back to its sender. Returns (own leaf, received leaf, input)."""
    mine = own.detach().requires_grad_(own.requires_grad)
    if received is None:
        return mine, None, mine
    theirs = torch.from_numpy(received).requires_grad_()
    return mine, theirs, torch.cat([mine, theirs])


def _carry(output: torch.Tensor, leaf: torch.Tensor) -> None:
    """The gradient that reached ``leaf`` (the next phase's copy of ``output``) carried back through ``output``."""
    if output.requires_grad and leaf.grad is not None:
        output.backward(leaf.grad)
