"""TVM backend: import a part into Relax, compile it for an LLVM or CUDA target, export one shared library.

Targets are TVM 0.27 JSON dicts (``Target.tvm_target``): ``{"kind": "llvm"}`` (this machine, x86-64),
``{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}`` (linked with
``aarch64-linux-gnu-gcc``) and ``{"kind": "cuda", "arch": "sm_87"}``, whose host code is x86-64 unless the
dict carries a ``"host"`` target (a Jetson: ``{"kind": "llvm", "mtriple": "aarch64-linux-gnu"}``).

A part is imported through ``torch.export`` and ``from_exported_program`` (``from_fx`` gives wrong numbers
for eval-mode batch norm; it is only the fallback when export fails). ``emit`` writes
``<out_dir>/<part>.<suffix>.so`` and returns an Artifact whose path is that file name, relative to
``out_dir``: the caller passes ``out_dir = build_dir/<device>`` and prefixes the device folder.

Compiled libraries go through the build cache every backend shares (:func:`halocut.backends.base.cached_emit`,
``$HALOCUT_CACHE/tvm``, default ``~/.cache/halocut/tvm``): emitting an unchanged part again copies the cached
library.

CUDA. This TVM build has no CUDA runtime, so ``tvm.compile`` keeps the generated CUDA source in the
library (the runtime would compile it when loaded, on the device). When this machine's ``nvcc`` can
target the ``arch`` (CUDA 13: sm_75 and newer), ``emit`` compiles that source ahead of time into a cubin
and stores the cubin in the library instead, so the device loads machine code for its architecture;
for older archs (Jetson Nano's sm_53) the library keeps the source and says so in a warning.

Tuning. :func:`halocut.backends.tvm_tune.tune` measures MetaSchedule candidates on this machine into a JSON
database (by default the one shared by every build, ``$HALOCUT_CACHE/tune/<suffix>``) that
``emit(..., tuning_database=...)`` applies. It needs psutil and cloudpickle, and a tvm-ffi whose
``save_json`` works; :func:`tuning_unavailable` says what is missing.

TVM is imported inside the functions that use it, so importing this module stays cheap (TVM takes ~3 s).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from halocut.backends.base import Artifact, Part, Runner, Target, cached_emit
from halocut.ir.errors import HalocutError, one_line

logger = logging.getLogger(__name__)

_KINDS = ("llvm", "cuda")


def file_suffix(target: Target) -> str:
    """The file-name suffix of a target: ``x86``, ``aarch64`` (an LLVM triple's arch), ``cuda-<arch>``.

    >>> file_suffix(Target("tvm", {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}))
    'aarch64'
    >>> file_suffix(Target("tvm", {"kind": "cuda", "arch": "sm_87"}))
    'cuda-sm_87'
    """
    spec = _target_dict(target)
    if spec["kind"] == "cuda":
        return f"cuda-{spec.get('arch', 'native')}"
    arch = str(spec.get("mtriple", "x86_64")).split("-")[0]
    return "x86" if arch == "x86_64" else arch


def runnable(target: Target) -> bool:
    """Whether this machine runs the target's code: LLVM code for this machine's own architecture.

    >>> runnable(Target("tvm", {"kind": "llvm"})), runnable(Target("tvm", {"kind": "cuda", "arch": "sm_87"}))
    (True, False)
    """
    spec = target.tvm_target or {}
    machine = {"AMD64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())
    return spec.get("kind") == "llvm" and str(spec.get("mtriple", "x86_64")).startswith(machine)


def emulated(target: Target) -> str | None:
    """``qemu-aarch64`` for aarch64 LLVM code when this machine has qemu and the aarch64 TVM runtime
    (:mod:`halocut.backends.qemu`), else None."""
    spec = target.tvm_target or {}
    if runnable(target) or spec.get("kind") != "llvm" or not str(spec.get("mtriple", "")).startswith("aarch64"):
        return None
    from halocut.backends import qemu

    return "qemu-aarch64" if qemu.unavailable() is None else None


def emit(part: Part, target: Target, out_dir: Path, tuning_database: Path | None = None) -> Artifact:
    """Compile ``part`` for ``target`` into ``out_dir/<part>.<suffix>.so`` (or copy it from the cache).

    ``tuning_database`` is a MetaSchedule JSON database folder (:func:`halocut.backends.tvm_tune.tune`); the
    schedules it holds for the part's kernels are applied, the others stay untuned. The returned
    Artifact's path is relative to ``out_dir`` (the file name); ``extra`` names the tuning database
    when it lies inside ``out_dir``.

    >>> import tempfile, torch
    >>> from torch import fx, nn
    >>> module = fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    >>> x = torch.randn(1, 3, 8, 8)
    >>> out_dir = Path(tempfile.mkdtemp())
    >>> artifact = emit(Part("s0", module, (x,), ("x",), ("y",)), Target("tvm", {"kind": "llvm"}), out_dir)
    >>> artifact.path
    PosixPath('s0.x86.so')
    >>> (y,) = load(artifact, out_dir)([x.numpy()])
    >>> bool(np.allclose(y, module(x).detach().numpy(), atol=1e-5))
    True
    """
    out_dir = Path(out_dir)
    artifact = cached_emit(lambda p, t, o: _emit(p, t, o, tuning_database), part, target, out_dir,
                           salt=_salt(target, tuning_database))
    extra = ()
    if tuning_database is not None and Path(tuning_database).resolve().is_relative_to(out_dir.resolve()):
        extra = (Path(tuning_database).resolve().relative_to(out_dir.resolve()),)
    return Artifact(part=part.name, backend="tvm", target=target, path=artifact.path, extra=extra)


def _emit(part: Part, target: Target, out_dir: Path, tuning_database: Path | None) -> Artifact:
    spec = _target_dict(target)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{part.name}.{file_suffix(target)}.so"
    _export(_compile(part, spec, tuning_database), path, spec, part.name)
    return Artifact(part=part.name, backend="tvm", target=target, path=Path(path.name))


def load(artifact: Artifact, build_dir: Path, threads: int | None = None) -> Runner:
    """A callable running the artifact's library on this machine's CPU: list of arrays in, list out.

    An aarch64 library runs under qemu-aarch64 when :func:`emulated` says so (one emulator process per call).
    ``threads``: TVM's thread pool is per process (``TVM_NUM_THREADS``), set by the caller that owns the
    process; it is accepted here for the common interface.

    The example of :func:`emit` emits a part and runs it.
    """
    if emulated(artifact.target):
        from halocut.backends import qemu

        library = Path(build_dir) / artifact.path
        return lambda inputs: qemu.run(library, list(inputs), part=artifact.part)[0]
    if not runnable(artifact.target):
        raise HalocutError(f"tvm: part '{artifact.part}' is compiled for {artifact.target.describe()}, "
                           f"which this machine ({platform.machine()}) cannot run")
    import tvm
    from tvm import relax

    device = tvm.cpu()
    machine = relax.VirtualMachine(tvm.runtime.load_module(str(Path(build_dir) / artifact.path)), device)

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        result = machine["main"](*(tvm.runtime.tensor(np.ascontiguousarray(x), device) for x in inputs))
        return [tensor.numpy() for tensor in _flatten(result)]

    return run


@functools.cache
def tuning_unavailable() -> str | None:
    """Why MetaSchedule tuning cannot run in this Python environment, or None when it can.

    >>> reason = tuning_unavailable()
    >>> reason is None or reason.startswith("MetaSchedule")
    True
    """
    missing = [name for name in ("psutil", "cloudpickle") if importlib.util.find_spec(name) is None]
    if missing:
        return f"MetaSchedule's worker processes need the Python package(s) {', '.join(missing)}"
    probe = "import tvm; tvm.ir.save_json(tvm.tirx.IntImm('int32', 1))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=300)
    if done.returncode != 0:
        from importlib.metadata import version
        return (f"MetaSchedule stores schedules with tvm.ir.save_json, which crashes (exit {done.returncode}) "
                f"with apache-tvm-ffi {version('apache-tvm-ffi')}; apache-tvm-ffi 0.1.14.post0 works")
    return None


def _import_tensor_intrinsics() -> None:
    """Import ``tvm.s_tir.tensor_intrin`` (MetaSchedule's schedule rules need it) in seconds, not minutes.

    Its ~500 ``@T.prim_func`` definitions each call ``inspect.stack()``, which resolves every frame's module by
    scanning ``sys.modules``: with torch and Ray loaded that is minutes of CPU (218 s measured in the test
    process). During that one import ``inspect.stack`` is replaced by the same list built from the frames
    directly (filename, line, function and the one line of context TVMScript reads, from ``linecache``)."""
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    import inspect
    import linecache

    def stack(context: int = 1):
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno) if context > 0 else ""
            frames.append(inspect.FrameInfo(frame, frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name,
                                            [line] if line else None, 0 if line else None))
            frame = frame.f_back
        return frames

    original, inspect.stack = inspect.stack, stack
    try:
        importlib.import_module("tvm.s_tir.tensor_intrin")
    finally:
        inspect.stack = original


def _target_dict(target: Target) -> dict:
    spec = target.tvm_target
    if target.backend != "tvm" or not isinstance(spec, dict) or spec.get("kind") not in _KINDS:
        raise HalocutError(f"tvm backend: target {target.describe()} is not a TVM target dict with kind "
                           f"{' or '.join(_KINDS)}, e.g. {{\"kind\": \"llvm\"}}")
    return spec


def _salt(target: Target, tuning_database: Path | None) -> str:
    """What the build cache key adds to the part and target: TVM's version, whether CUDA code is a cubin or
    source, and the tuning records applied."""
    import tvm

    digest = hashlib.sha256(tvm.__version__.encode())
    spec = _target_dict(target)
    if spec["kind"] == "cuda":
        digest.update(b"cubin" if spec.get("arch") in _nvcc_archs() else b"source")
    if tuning_database is not None:
        for name in ("database_workload.json", "database_tuning_record.json"):
            record = Path(tuning_database) / name
            digest.update(record.read_bytes() if record.exists() else b"-")
    return digest.hexdigest()


def _import(part: Part):
    """The part as a Relax IRModule: torch.export first, fx as the fallback."""
    from tvm.relax.frontend.torch import from_exported_program, from_fx

    try:
        exported = torch.export.export(part.module, tuple(part.example_inputs))
    except Exception as error:  # noqa: BLE001 - any export failure falls back to the fx importer
        logger.info("tvm: part '%s': torch.export failed (%s); importing with from_fx", part.name,
                    one_line(error, first=True))
        shapes = [(tuple(x.shape), str(x.dtype).removeprefix("torch.")) for x in part.example_inputs]
        try:
            return from_fx(part.module, shapes)
        except Exception as fx_error:  # noqa: BLE001
            raise HalocutError(f"tvm: cannot import part '{part.name}': {one_line(fx_error, first=True)}") from fx_error
    try:
        return from_exported_program(exported)
    except Exception as error:  # noqa: BLE001
        raise HalocutError(f"tvm: cannot import part '{part.name}': {one_line(error, first=True)}") from error


def _fuse(mod, target):
    """Legalize and fuse as ``compile_relax`` does, so tuned kernels match the ones it looks up."""
    import tvm
    from tvm import relax

    passes = [*relax.pipeline.library_dispatch_passes(target), relax.transform.LegalizeOps(),
              relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
              relax.transform.FuseOps(), relax.transform.FuseTIR()]
    with target:
        return tvm.transform.Sequential(passes)(mod)


def _compile(part: Part, spec: dict, tuning_database: Path | None):
    import tvm

    mod = _import(part)
    target = tvm.target.Target(spec)
    try:
        if tuning_database is None:
            return tvm.compile(mod, target=target)
        reason = tuning_unavailable()
        if reason:
            raise HalocutError(f"tvm: cannot apply tuning database to part '{part.name}': {reason}")
        from tvm.s_tir import meta_schedule as ms

        database = ms.database.JSONDatabase(work_dir=str(tuning_database), allow_missing=False)
        return ms.relax_integration.compile_relax(database, mod, target, params=None)
    except HalocutError:
        raise
    except Exception as error:  # noqa: BLE001
        raise HalocutError(f"tvm: cannot compile part '{part.name}' for {target.kind.name}: "
                           f"{one_line(error, first=True)}") from error


def _host_triple(spec: dict) -> str | None:
    host = spec.get("host") if spec["kind"] == "cuda" else spec
    return host.get("mtriple") if isinstance(host, dict) else None


def _linker(spec: dict, part_name: str) -> dict:
    """``export_library`` arguments that link for the host triple: a cross gcc unless it is x86-64."""
    triple = _host_triple(spec)
    if triple is None or triple.startswith("x86_64"):
        return {}
    compiler = f"{triple}-gcc"
    if shutil.which(compiler) is None:
        raise HalocutError(f"tvm: cannot link part '{part_name}' for {triple}: {compiler} not found "
                           f"(Debian: apt-get install gcc-{triple})")
    return {"cc": compiler}


def _export(executable, path: Path, spec: dict, part_name: str) -> None:
    options = _linker(spec, part_name)
    cubins = _cubins(executable, spec, part_name)
    if cubins:
        options["fpack_imports"] = functools.partial(_pack_with_cubins, cubins=cubins)
    try:
        executable.export_library(str(path), **options)
    except Exception as error:  # noqa: BLE001
        raise HalocutError(f"tvm: cannot export part '{part_name}' to {path.name}: "
                           f"{one_line(error, first=True)}") from error


def _modules(module):
    yield module
    for child in module.imports:
        yield from _modules(child)


def _cubins(executable, spec: dict, part_name: str) -> dict[bytes, bytes]:
    """Each CUDA module's source (as packed) -> its cubin for ``spec["arch"]``; empty without nvcc."""
    sources = [str(m.inspect_source()) for m in _modules(executable.mod) if m.kind == "cuda"]
    if not sources:
        return {}
    if spec.get("arch") not in _nvcc_archs():
        logger.warning("tvm: part '%s': no nvcc here for %s; the library carries CUDA source, compiled when "
                       "loaded on the device", part_name, spec.get("arch", "an unnamed arch"))
        return {}
    import tvm
    from tvm.support import nvcc

    cubins = {}
    with tvm.target.Target(spec):
        for source in sources:
            try:
                binary = nvcc.compile_cuda(source, target_format="cubin", arch=spec["arch"], compiler="nvcc")
            except Exception as error:  # noqa: BLE001
                message = str(error).split("Compilation error:")[-1]
                raise HalocutError(f"tvm: nvcc cannot compile part '{part_name}' for {spec['arch']}: "
                                   f"{one_line(message, first=True)}") from error
            cubins[source.encode()] = bytes(binary)
    return cubins


@functools.cache
def _nvcc_archs() -> frozenset[str]:
    """The ``sm_XY`` this machine's nvcc compiles for (CUDA 13 starts at sm_75); empty without nvcc."""
    if shutil.which("nvcc") is None:
        return frozenset()
    listed = subprocess.run(["nvcc", "--list-gpu-arch"], capture_output=True, text=True, timeout=60).stdout
    return frozenset("sm_" + arch for arch in re.findall(r"compute_(\d+)", listed))


_BLOB_SYMBOL = "__tvm_ffi__library_bin"  # where a TVM library keeps its packed imports (tvm-ffi's name)


def _pack_with_cubins(module, is_system_lib: bool, prefix: str, workspace_dir: str, cubins) -> str:
    """``fpack_imports`` for export_library: TVM's packed imports, CUDA sources swapped for cubins.

    The blob goes into an assembler file that ``.incbin``-s it: a C array of a 50 MB blob of weights
    takes gcc minutes, the assembler a moment.
    """
    from tvm.runtime import _ffi_api  # the packers export_library itself uses

    if is_system_lib or prefix:
        raise HalocutError("tvm: embedding cubins into a system library is not supported")
    blob = _swap_cuda_sources(_ffi_api.ModulePackImportsToTensor(module).numpy().tobytes(), cubins)
    blob_path = os.path.join(workspace_dir, "imports.bin")
    with open(blob_path, "wb") as handle:
        handle.write(blob)
    path = os.path.join(workspace_dir, "imports.s")
    with open(path, "w") as handle:
        handle.write(f"""\t.section .rodata.{_BLOB_SYMBOL},"a"
\t.globl {_BLOB_SYMBOL}
\t.type {_BLOB_SYMBOL}, %object
\t.p2align 4
{_BLOB_SYMBOL}:
\t.incbin "{blob_path}"
\t.size {_BLOB_SYMBOL}, . - {_BLOB_SYMBOL}
\t.section .note.GNU-stack,"",%progbits
""")
    return path


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def _packed_string(data: bytes) -> bytes:
    return _u64(len(data)) + data


def _swap_cuda_sources(blob: bytes, cubins: dict[bytes, bytes]) -> bytes:
    """Replace each packed CUDA module (format ``cuda``: fmt, function map, source) by format ``cubin``.

    The blob is ``u64 size`` then the import tree and one ``(type key, u64 length, payload)`` per module;
    a CUDA module's payload is ``fmt, fmap, data``, the layout a CUDA-enabled build writes for its cubins.
    """
    marker = _packed_string(b"cuda")
    data, out, position, swapped = blob[8:], bytearray(), 0, set()
    while (found := data.find(marker, position)) >= 0:
        start = found + len(marker)
        size = int.from_bytes(data[start:start + 8], "little")
        payload = data[start + 8:start + 8 + size]
        source = next((s for s in cubins if payload.startswith(marker) and payload.endswith(_packed_string(s))), None)
        if source is None:
            out += data[position:start]
            position = start
            continue
        fmap = payload[len(marker):size - len(_packed_string(source))]
        new_payload = _packed_string(b"cubin") + fmap + _packed_string(cubins[source])
        out += data[position:start] + _u64(len(new_payload)) + new_payload
        position = start + 8 + size
        swapped.add(source)
    if len(swapped) != len(cubins):
        raise HalocutError(f"tvm: found {len(swapped)} of {len(cubins)} CUDA modules in the packed library; "
                           f"this TVM's library layout is not the one expected")
    out += data[position:]
    return _u64(len(out)) + bytes(out)


def _flatten(value) -> list:
    import tvm

    if isinstance(value, tvm.runtime.Tensor):
        return [value]
    return [tensor for item in value for tensor in _flatten(item)]
