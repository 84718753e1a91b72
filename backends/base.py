"""The one small interface every backend implements, and the registry that finds backends by name.

A backend module exposes::

    emit(part: Part, target: Target, out_dir: Path) -> Artifact   # write the part's executable
    runnable(target: Target) -> bool                              # can this machine run it?
    load(artifact: Artifact, build_dir: Path, threads=None) -> Runner  # list[np.ndarray] -> list[np.ndarray]
    emulated(target: Target) -> str | None                        # optional: the emulator that runs it here

``load`` takes what is runnable or emulated; :func:`execution` says which of the two a target is.

``Part`` is a standalone fx module with example inputs; ``Target`` says what to
compile for (from the device catalog); ``Artifact`` is what ``emit`` wrote.
Paths in an Artifact are relative to the build directory.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import fx

from halocut.ir.errors import HalocutError

BACKENDS = ("onnx", "tvm", "torch")
logger = logging.getLogger(__name__)

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class Part:
    """A unit of work for one device: a standalone module, its example inputs, and tensor names."""

    name: str  # unique in a build, e.g. "s1_t0_h0"
    module: fx.GraphModule
    example_inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def example_outputs(self) -> list[torch.Tensor]:
        with torch.no_grad():
            result = self.module(*self.example_inputs)
        return list(result) if isinstance(result, (tuple, list)) else [result]


@dataclass(frozen=True)
class Target:
    """What to compile for: a backend and its settings, e.g. TVM with an LLVM or CUDA target dict."""

    backend: str  # "onnx", "tvm" or "torch"
    tvm_target: dict | None = None  # {"kind": "llvm", ...} or {"kind": "cuda", "arch": "sm_87"}
    fp16: bool = False  # onnx: also write an FP16 variant
    tensorrt: str | None = None  # onnx: the TensorRT version whose ONNX parser must take the part (Jetson boards)

    def describe(self) -> str:
        """Short and readable: ``onnx``, ``tvm x86``, ``tvm aarch64``, ``tvm cuda sm_87 (host aarch64)``."""
        if self.tvm_target is None:
            return self.backend + (" (+fp16)" if self.fp16 else "")  # the runtime's backend label: no version
        return "tvm " + _describe_tvm(self.tvm_target)


def _describe_tvm(target: dict) -> str:
    if target["kind"] == "cuda":
        host = target.get("host")
        return f"cuda {target.get('arch', '')}".strip() + (f" (host {_describe_tvm(host)})" if host else "")
    if target["kind"] == "llvm":
        return target.get("mtriple", "x86_64").split("-")[0].replace("x86_64", "x86")
    return target["kind"]


@dataclass(frozen=True)
class Artifact:
    part: str
    backend: str
    target: Target
    path: Path  # the main file, relative to the build directory
    extra: tuple[Path, ...] = field(default=())  # other files it needs (FP16 variant, tuning database)
    tensorrt: dict | None = field(default=None, compare=False)  # a Jetson part's TensorRT readiness (backends/onnx)


def backend(name: str):
    """The backend module of that name (``backends/<name>.py``); a wrong name lists the valid ones."""
    if name not in BACKENDS:
        raise HalocutError(f"unknown backend '{name}'; backends: {', '.join(BACKENDS)}")
    return importlib.import_module(f"{__package__}.{name}")


def execution(target: Target) -> str | None:
    """How this machine executes the target's artifacts: ``native``, an emulator's name (``qemu-aarch64``), or
    None when it cannot (CUDA without a GPU): then an artifact is checked structurally only.

    >>> execution(Target("torch")), execution(Target("tvm", {"kind": "cuda", "arch": "sm_87"}))
    ('native', None)
    """
    module = backend(target.backend)
    if module.runnable(target):
        return "native"
    emulated = getattr(module, "emulated", None)
    return emulated(target) if emulated else None


def sha256(path: Path) -> str:
    """Of a file; of a directory (a tuning database), over its files' relative names and contents."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
    for file in files:
        if Path(path).is_dir():
            digest.update(file.relative_to(path).as_posix().encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    """Where compiled artifacts are cached: ``$HALOCUT_CACHE`` or ``~/.cache/halocut``."""
    return Path(os.environ.get("HALOCUT_CACHE") or Path.home() / ".cache" / "halocut")


def cached_emit(emit: Callable[[Part, Target, Path], Artifact], part: Part, target: Target, out_dir: Path,
                salt: str = "") -> Artifact:
    """Run ``emit`` unless the same part for the same target was emitted before; then copy its files.

    The key is :func:`graph_key` (code, weights, input shapes, target) and ``salt`` (e.g. tool versions).
    """
    key = hashlib.sha256((graph_key(part, target) + salt).encode()).hexdigest()[:32]
    entry = cache_root() / target.backend / key
    out_dir.mkdir(parents=True, exist_ok=True)
    if (entry / "files").is_file():
        names = (entry / "files").read_text().split()
        for name in names:
            shutil.copyfile(entry / name, out_dir / name.replace("PART", part.name))
        paths = [Path(n.replace("PART", part.name)) for n in names]
        os.utime(entry)  # used now: trimming removes the least recently used entries first
        logger.info("%s: part '%s' (%s): cache hit %s", target.backend, part.name, target.describe(), key)
        return Artifact(part.name, target.backend, target, paths[0], tuple(paths[1:]))
    artifact = emit(part, target, out_dir)
    staging = entry.with_name(entry.name + f".{os.getpid()}.tmp")
    names = [p.as_posix().replace(part.name, "PART", 1) for p in (artifact.path, *artifact.extra)]
    try:
        staging.mkdir(parents=True, exist_ok=True)
        for path, name in zip((artifact.path, *artifact.extra), names):
            shutil.copyfile(out_dir / path, staging / name)
        (staging / "files").write_text("\n".join(names))
        try:
            staging.rename(entry)
        except OSError:  # another process cached it first
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("%s: part '%s' (%s): compiled, cached as %s", target.backend, part.name, target.describe(), key)
        trim_cache(cache_root(), cache_limit_bytes(), keep=entry)
    except OSError as error:  # a cache is an optimisation: a full disk or a read-only cache fails no build
        shutil.rmtree(staging, ignore_errors=True)
        logger.warning("%s: part '%s' not cached (%s: %s)", target.backend, part.name, cache_root(),
                       error.strerror or error)
    return artifact


CACHE_LIMIT_GB = 10.0  # default bound of the artifact cache; $HALOCUT_CACHE_MAX_GB sets another


def cache_limit_bytes() -> float:
    value = os.environ.get("HALOCUT_CACHE_MAX_GB", "")
    try:
        limit = float(value) if value else CACHE_LIMIT_GB
    except ValueError:
        limit = -1.0
    if not limit >= 0 or limit == float("inf"):
        raise HalocutError(f"$HALOCUT_CACHE_MAX_GB={value!r}: a size in GB (0 or more)")
    return limit * 1e9


def trim_cache(root: Path, limit_bytes: float, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used cache entries (``root/<backend>/<key>``, each with its ``files`` list)
    until the entries hold at most ``limit_bytes``; ``keep`` (the entry just written) stays. Returns what went."""
    entries = []
    for backend in (b for b in root.iterdir() if b.is_dir()) if root.is_dir() else ():
        for entry in backend.iterdir():
            if entry.is_dir() and (entry / "files").is_file():
                size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
                entries.append((entry.stat().st_mtime, size, entry))
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, entry in sorted(entries, key=lambda e: (e[0], str(e[2]))):
        if total <= limit_bytes:
            break
        if entry == keep:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        total -= size
        removed.append(entry)
    if removed:
        logger.info("cache %s: removed %d least recently used entries to stay under %.1f GB", root, len(removed),
                    limit_bytes / 1e9)
    return removed


def graph_key(part: Part, target: Target) -> str:
    """A cache key: the part's code, its weights and input shapes, and the target."""
    digest = hashlib.sha256(part.module.code.encode())
    for name, tensor in sorted(part.module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for attribute in sorted(k for k, v in vars(part.module).items() if isinstance(v, torch.Tensor)):
        digest.update(getattr(part.module, attribute).detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr([tuple(x.shape) for x in part.example_inputs]).encode())
    digest.update(repr((part.input_names, part.output_names)).encode())  # written into ONNX files
    digest.update(repr((target.backend, sorted((target.tvm_target or {}).items()), target.fp16,
                        target.tensorrt)).encode())
    return digest.hexdigest()
