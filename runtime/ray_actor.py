"""One machine's share of a deployment: the class behind each Ray actor (plain Python, testable without Ray).

A :class:`PartHost` picks, for each of its parts, the first artifact this machine can run (the
manifest lists them in preference order), checks the bytes it was sent against the manifest's
sha256 before loading them (a mismatch is refused), loads them with their backend, and runs parts
on the messages of :mod:`halocut.runtime.flow`: it assembles the inputs, runs the part, crops what each
consumer reads. It counts compute seconds and the bytes it sends to other machines.

>>> import hashlib, tempfile, torch
>>> from pathlib import Path
>>> from torch import fx, nn
>>> from halocut.backends.base import Part, Target
>>> from halocut.backends.onnx import emit
>>> from halocut.runtime.flow import Receive, Send, Step
>>> out = Path(tempfile.mkdtemp())
>>> artifact = emit(Part("s0", fx.symbolic_trace(nn.ReLU()), (torch.randn(1, 2),), ("x",), ("y",)), Target("onnx"), out)
>>> data = (out / artifact.path).read_bytes()
>>> entry = {"backend": "onnx", "path": "d/s0.onnx", "sha256": hashlib.sha256(data).hexdigest()}
>>> step = Step("s0", "d", (("x", (1, 2), "float32"),), ("y",), (Receive(0, None, None, None, 0),),
...             (Send(0, None, None, None, "cam", None, 0),), (entry,), 0.0)
>>> host = PartHost("d")
>>> host.host([step], {"d/s0.onnx": data}, {"s0": "d"})
{'s0': 'onnx'}
>>> host.run("s0", np.array([[-1.0, 2.0]], dtype=np.float32))
array([[0., 2.]], dtype=float32)
>>> host.host([step], {}, {"s0": "d"}) == {'s0': 'onnx'}  # already loaded: nothing to send
True
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from halocut.backends.base import Artifact, Target, backend
from halocut.backends.manifest import listed_files, parse_manifest
from halocut.backends.signing import TRUST_ENV, read_public_key, trusted_key_path, verify
from halocut.ir.errors import HalocutError
from halocut.ir.files import read_bytes
from halocut.runtime.cpu import join_cpu_cap, usable_cores
from halocut.runtime.flow import Runner, Step, assemble, crop


MAX_ARTIFACT_BYTES = 8 << 30  # one artifact file an actor receives or reads


@dataclass(frozen=True)
class Staged:
    """An artifact this machine holds already: the build was copied to ``root`` on it before the run
    (``halocut run --staged``), so it is read from disk instead of crossing the network; its sha256 is checked
    like any bytes sent."""

    root: str
    path: str

    def read(self, part: str, device: str) -> bytes:
        file = Path(self.root) / self.path
        try:
            return read_bytes(file, MAX_ARTIFACT_BYTES)
        except HalocutError as error:
            raise HalocutError(f"part '{part}' on '{device}' ({socket.gethostname()}): staged artifact: {error} "
                               f"(--staged: the build must be copied to {self.root} on every machine first)") from None


class PartHost:
    """Hosts parts on one machine (``device`` is the topology's name for it)."""

    def __init__(self, device: str, threads: int | None = None):
        """``threads``: per backend in this process; 0 means the cores usable here (a CPU quota's, on a testbed), None leaves the process as it is."""
        self.device = device
        join_cpu_cap()  # on a testbed: this machine's CPU cap
        self.threads = (threads or usable_cores()) if threads is not None else None
        if self.threads is not None:
            limit_threads(self.threads)
        self.steps: dict[str, Step] = {}
        self.runners: dict[str, Runner] = {}
        self.backends: dict[str, str] = {}
        self.placement: dict[str, str] = {}
        self.hashes: dict[str, str] | None = None
        self.reset()

    def ping(self) -> dict:
        """Who and where this actor is, and the parts it holds (empty after a restart)."""
        return {"device": self.device, "pid": os.getpid(), "host": socket.gethostname(),
                "machine": platform.machine(), "threads": self.threads, "parts": sorted(self.runners)}

    def choose(self, steps: list[Step]) -> dict[str, str]:
        """For each step not yet loaded, the path of the first artifact this machine can run."""
        chosen = {}
        for step in steps:
            if step.name in self.runners:
                continue
            artifact = next((a for a in step.artifacts if _runnable(a)), None)
            if artifact is None:
                kinds = ", ".join(a["target"] for a in step.artifacts)
                raise HalocutError(f"part '{step.name}' on '{self.device}': none of its artifacts ({kinds}) runs on "
                                   f"this machine ({socket.gethostname()}, {platform.machine()}); to run it here, "
                                   f"compile with --backends onnx,torch")
            chosen[step.name] = artifact["path"]
        return chosen

    def host(self, steps: list[Step], blobs: dict, placement: dict[str, str],
             authority: dict | None = None) -> dict[str, str]:
        """Load the steps not loaded yet from ``blobs`` (path -> bytes, a Ray reference to them, or
        :class:`Staged`: the file on this machine's own disk, where the build was copied before the run).

        The bytes must match the manifest's sha256, or the part is refused. With ``authority`` (the
        manifest's bytes, its signature and the trusted public key; this machine's own
        ``$HALOCUT_TRUST`` takes precedence over the key sent), this actor checks the signature itself
        and takes the hashes from the manifest it verified, not from the steps it was handed; a machine
        with ``$HALOCUT_TRUST`` set refuses an unsigned build. ``placement`` says which device runs each
        part (for counting the bytes that leave this machine). Returns part -> backend.
        """
        self.placement = dict(placement)
        self.hashes = self._verified_hashes(authority)
        chosen = self.choose(steps)
        scratch = Path(tempfile.mkdtemp(prefix=f"halocut-{self.device}-"))
        try:
            for step in steps:
                self.steps[step.name] = step
                if step.name in chosen:
                    artifact = next(a for a in step.artifacts if a["path"] == chosen[step.name])
                    self.runners[step.name] = self._load(step.name, artifact, blobs, scratch)
                    self.backends[step.name] = artifact.get("target", artifact["backend"])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return {step.name: self.backends[step.name] for step in steps}

    def _verified_hashes(self, authority: dict | None) -> dict[str, str] | None:
        """path -> sha256 from the manifest whose signature this actor checked (None: unsigned, unchecked)."""
        own = trusted_key_path(None)
        if authority is None and own is None:
            return None
        where = f"actor '{self.device}' ({socket.gethostname()})"
        if authority is None:
            raise HalocutError(f"{where}: ${TRUST_ENV} is set here and the build is not verified by signature; "
                               f"refusing to load it (compile with --sign, run with --trust)")
        key = read_public_key(own) if own is not None else authority["key"]
        verify(authority["manifest"], authority["signature"], key, where)
        return listed_files(parse_manifest(authority["manifest"], f"{where}: manifest.json"))

    def _load(self, part: str, artifact: dict, blobs: dict, scratch: Path) -> Runner:
        if artifact["path"] not in blobs:
            raise HalocutError(f"part '{part}' on '{self.device}': artifact {artifact['path']} was not sent")
        data = blobs[artifact["path"]]
        if isinstance(data, Staged):  # the build is on this machine already: read it here, checked all the same
            data = data.read(part, self.device)
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            import ray
            data = ray.get(data)
        expected = artifact["sha256"] if self.hashes is None else self.hashes.get(artifact["path"])
        if expected is None:
            raise HalocutError(f"part '{part}' on '{self.device}': {artifact['path']} is not in the signed manifest; "
                               f"refusing to load it")
        if hashlib.sha256(data).hexdigest() != expected:
            raise HalocutError(f"part '{part}' on '{self.device}': {artifact['path']} does not match its sha256 in "
                               f"the manifest (tampered or corrupted); refusing to load it")
        path = scratch / Path(artifact["path"]).name
        path.write_bytes(data)
        return load_runner(part, artifact, path, self.threads)

    def run(self, part: str, *messages: np.ndarray):
        """Run one part on its messages; returns what it sends (a tuple when it sends more than one message)."""
        step = self.steps[part]
        start = time.perf_counter()
        inputs = assemble(step, list(messages))
        begin = time.perf_counter()
        outputs = self.runners[part](inputs)
        end = time.perf_counter()
        sends = [crop(outputs, send) for send in step.sends]
        done = time.perf_counter()
        record = self.records.setdefault(part, {"runs": 0, "compute_s": 0.0, "copy_s": 0.0, "bytes_sent": 0,
                                                "samples_s": []})
        record["runs"] += 1
        record["compute_s"] += end - begin
        record["copy_s"] += (begin - start) + (done - end)
        record["samples_s"].append(done - start)
        record["bytes_sent"] += sum(m.nbytes for s, m in zip(step.sends, sends)
                                    if self.placement.get(s.to_part, s.to_device) != self.device)
        return tuple(sends) if len(sends) > 1 else sends[0]

    def statistics(self) -> dict:
        """Per part: runs, compute seconds, seconds assembling and cropping, bytes sent off this machine (totals),
        and each run's seconds (``samples_s``)."""
        return {"device": self.device, "parts": {k: dict(v) for k, v in self.records.items()}}

    def reset(self) -> None:
        self.records: dict[str, dict] = {}


def load_runner(part: str, artifact: dict, path: Path, threads: int | None) -> Runner:
    """A backend's runner for one artifact file; ONNX sessions get ``threads`` intra-op threads (None: all)."""
    target = Target(artifact["backend"], artifact.get("tvm_target"))
    return backend(artifact["backend"]).load(Artifact(part, artifact["backend"], target, Path(path.name)), path.parent,
                                             threads=threads)


def _runnable(artifact: dict) -> bool:
    return backend(artifact["backend"]).runnable(Target(artifact["backend"], artifact.get("tvm_target")))


def limit_threads(threads: int) -> None:
    """Threads for torch, TVM and OpenMP in this process (Ray gives workers OMP_NUM_THREADS=1 otherwise)."""
    for name in ("OMP_NUM_THREADS", "TVM_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    import torch

    torch.set_num_threads(threads)
