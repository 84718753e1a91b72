"""Execute aarch64 TVM libraries on this x86-64 machine under ``qemu-aarch64`` (user-mode emulation).

A Pi's part is an aarch64 shared library that needs the TVM runtime; nothing here runs it natively. The
runtime comes from the apache-tvm and apache-tvm-ffi wheels of the same versions as this environment's, in
their ``manylinux_2_28_aarch64`` builds (``pip download``): their ``libtvm_runtime.so`` and ``libtvm_ffi.so``
are the aarch64 runtime a Pi would use. ``tvm_runner.cc`` (beside this file), cross-compiled once with
``aarch64-linux-gnu-g++`` against them, loads a library with the Relax VM, feeds it raw input files and
writes its outputs; ``qemu-aarch64 -L /usr/aarch64-linux-gnu`` runs it with the cross toolchain's C and C++
libraries. The three files are made once (:func:`prepare`, run by ``make install``) and kept inside the
environment or in ``$HALOCUT_CACHE`` (:func:`runtime_dir`), so later builds neither download nor compile.

Timings under emulation say nothing about a Pi: :func:`run` returns them for ``halocut bench``, which labels
them emulated.

Debian: ``apt-get install qemu-user g++-aarch64-linux-gnu`` (the Makefile does).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib.metadata import version
from pathlib import Path

import numpy as np

from halocut.backends.base import cache_root
from halocut.ir.errors import HalocutError

SYSROOT = Path("/usr/aarch64-linux-gnu")  # the cross toolchain's aarch64 libc and libstdc++
CROSS_CXX = "aarch64-linux-gnu-g++"
RUNNER_SOURCE = Path(__file__).with_name("tvm_runner.cc")
RUN_TIMEOUT_S = 1800.0  # a VGG part runs minutes emulated; an emulator that hangs is ended
_LIBRARIES = {"apache-tvm": "tvm/lib/libtvm_runtime.so", "apache-tvm-ffi": "tvm_ffi/lib/libtvm_ffi.so"}
_DTYPE_CODES = {"i": 0, "u": 1, "f": 2, "b": 6}  # numpy kind -> DLPack type code (6: bool)


def emulator() -> str | None:
    """The qemu-aarch64 binary on PATH (qemu-user or qemu-user-static), or None."""
    return shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")


def runtime_dir() -> Path:
    """Where this environment's aarch64 TVM runtime and runner are (or will be) kept, keyed by both wheels'
    versions: inside the environment (``<sys.prefix>/share/halocut/qemu-aarch64``, where ``make install``
    puts it) when that is writable or already prepared, else under ``$HALOCUT_CACHE/qemu-aarch64``."""
    key = f"tvm-{version('apache-tvm')}-ffi-{version('apache-tvm-ffi')}"
    places = [Path(sys.prefix) / "share" / "halocut" / "qemu-aarch64" / key, cache_root() / "qemu-aarch64" / key]
    for place in places:
        if (place / "tvm_runner").is_file():
            return place
    return next((p for p in places if os.access(_existing_parent(p), os.W_OK)), places[-1])


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@functools.cache
def unavailable() -> str | None:
    """Why aarch64 libraries cannot be executed here, or None when they can (the runtime is prepared once).

    >>> reason = unavailable()
    >>> reason is None or "aarch64" in reason or "qemu" in reason
    True
    """
    if emulator() is None:
        return "qemu-aarch64 not found (Debian: apt-get install qemu-user)"
    if not (SYSROOT / "lib" / "ld-linux-aarch64.so.1").exists():
        return f"no aarch64 C library in {SYSROOT} (Debian: apt-get install g++-aarch64-linux-gnu)"
    try:
        prepare()
    except HalocutError as error:
        return str(error)
    return None


def prepare(quiet: bool = True) -> Path:
    """Make the aarch64 runtime and runner in :func:`runtime_dir` if they are not there; returns that folder.

    Written into a temporary sibling and renamed, so a concurrent or interrupted preparation leaves no half
    folder behind."""
    done = runtime_dir()
    if (done / "tvm_runner").is_file():
        return done
    if shutil.which(CROSS_CXX) is None:
        raise HalocutError(f"cannot build the aarch64 TVM runner: {CROSS_CXX} not found "
                           f"(Debian: apt-get install g++-{CROSS_CXX.removesuffix('-g++')})")
    done.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=done.name + ".", dir=done.parent))
    try:
        wheels = work / "wheels"
        for package, member in _LIBRARIES.items():
            _download(package, wheels, quiet)
            (wheel,) = wheels.glob(package.replace("-", "_") + "-*.whl")
            with zipfile.ZipFile(wheel) as archive:
                (work / Path(member).name).write_bytes(archive.read(member))
        shutil.rmtree(wheels)
        _compile_runner(work)
        try:
            work.rename(done)
        except OSError:  # another process prepared it first
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return done


def run(library: Path, inputs: list[np.ndarray], repeats: int = 1, part: str = "") -> tuple[list[np.ndarray],
                                                                                             list[float]]:
    """Run an aarch64 TVM library's ``main`` under qemu; returns its outputs and the emulated seconds per run."""
    reason = unavailable()
    if reason:
        raise HalocutError(f"cannot run aarch64 part '{part or Path(library).name}': {reason}")
    runtime = prepare()
    with tempfile.TemporaryDirectory(prefix="halocut-qemu-") as work:
        work = Path(work)
        lines = []
        for index, array in enumerate(inputs):
            array = np.ascontiguousarray(array)
            if array.dtype.kind not in _DTYPE_CODES:
                raise HalocutError(f"aarch64 part '{part or Path(library).name}': input {index} is {array.dtype}, "
                                   f"which the qemu runner does not pass")
            path = work / f"in{index}.bin"
            array.tofile(path)
            lines.append(" ".join(map(str, [path, _DTYPE_CODES[array.dtype.kind], array.dtype.itemsize * 8,
                                            array.ndim, *array.shape])))
        (work / "inputs.txt").write_text("\n".join(lines) + "\n")
        (work / "out").mkdir()
        command = [emulator(), "-L", str(SYSROOT), str(runtime / "tvm_runner"), str(Path(library).resolve()),
                   str(work / "inputs.txt"), str(work / "out"), str(max(1, repeats))]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                                  env={**os.environ, "TVM_NUM_THREADS": os.environ.get("TVM_NUM_THREADS", "1")})
        except subprocess.TimeoutExpired:
            raise HalocutError(f"aarch64 part '{part or Path(library).name}' did not finish under qemu-aarch64 "
                               f"in {RUN_TIMEOUT_S:.0f} s") from None
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            last = next((line for line in reversed(lines) if "Error" in line or "tvm_runner:" in line),
                        lines[-1] if lines else f"exit status {done.returncode}")
            raise HalocutError(f"aarch64 part '{part or Path(library).name}' failed under qemu-aarch64: "
                               f"{last.strip()}")
        times = [float(line.split()[1]) / 1e3 for line in done.stdout.splitlines() if line.startswith("run_ms ")]
        return _read_outputs(work / "out"), times


def _read_outputs(folder: Path) -> list[np.ndarray]:
    kinds = {code: kind for kind, code in _DTYPE_CODES.items()}
    outputs = []
    for line in (folder / "outputs.txt").read_text().splitlines():
        name, code, bits, ndim, *shape = line.split()
        dtype = np.dtype(bool) if int(code) == 6 else np.dtype(f"{kinds[int(code)]}{int(bits) // 8}")
        outputs.append(np.fromfile(folder / name, dtype=dtype).reshape([int(d) for d in shape[:int(ndim)]]))
    return outputs


def _download(package: str, into: Path, quiet: bool) -> None:
    """This environment's version of ``package`` as its aarch64 manylinux wheel (no dependencies)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--platform",
               "manylinux_2_28_aarch64", "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}",
               f"{package}=={version(package)}", "-d", str(into)] + (["--quiet"] if quiet else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise HalocutError(f"downloading the aarch64 wheel of {package} took over 900 s") from None
    if done.returncode != 0:
        last = next((l for l in reversed(done.stderr.splitlines()) if l.strip()), f"exit {done.returncode}")
        raise HalocutError(f"cannot download the aarch64 wheel of {package}=={version(package)} (the aarch64 TVM "
                           f"runtime comes from it): {last.strip()}")


def _compile_runner(folder: Path) -> None:
    include = Path(__import__("tvm_ffi").__file__).parent / "include"
    command = [CROSS_CXX, "-std=c++17", "-O2", f"-I{include}", str(RUNNER_SOURCE), "-o", str(folder / "tvm_runner"),
               f"-L{folder}", "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-Wl,-rpath,$ORIGIN"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        first = next((l for l in done.stderr.splitlines() if "error" in l), done.stderr.strip()[:300])
        raise HalocutError(f"cannot compile the aarch64 TVM runner ({RUNNER_SOURCE.name}): {first}")


if __name__ == "__main__":  # make install: prepare the runtime once, say why not without failing the install
    reason = unavailable()
    print(f"aarch64 parts will run under qemu-aarch64 ({runtime_dir()})" if reason is None else
          f"aarch64 parts will not be executed here: {reason}")
