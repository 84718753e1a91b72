"""torch backend: each part as a ``torch.export`` program (``.pt2``) for machines that run PyTorch.

>>> import torch, tempfile
>>> from pathlib import Path
>>> from torch import fx, nn
>>> from halocut.backends.base import Part, Target
>>> part = Part("p", fx.symbolic_trace(nn.Sequential(nn.Conv2d(3, 4, 3))), (torch.randn(1, 3, 8, 8),), ("x",), ("y",))
>>> out = Path(tempfile.mkdtemp())
>>> load(emit(part, Target("torch"), out), out)([part.example_inputs[0].numpy()])[0].shape
(1, 4, 6, 6)
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from halocut.backends.base import Artifact, Part, Runner, Target, cached_emit
from halocut.ir.errors import HalocutError, one_line


def emit(part: Part, target: Target, out_dir: Path) -> Artifact:
    """Emit through the build cache (see :func:`halocut.backends.base.cached_emit`)."""
    return cached_emit(_emit, part, target, out_dir, salt=f"{torch.__version__}")


def _emit(part: Part, target: Target, out_dir: Path) -> Artifact:
    """Write ``<part>.pt2`` into ``out_dir``; the path returned is relative to it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad():
            program = torch.export.export(part.module, part.example_inputs)
    except Exception as error:
        message = one_line(error)
        raise HalocutError(f"part '{part.name}': torch.export failed: {message}") from None
    path = Path(f"{part.name}.pt2")
    torch.export.save(program, out_dir / path)
    return Artifact(part.name, "torch", target, path)


def runnable(target: Target) -> bool:
    return True


def load(artifact: Artifact, build_dir: Path, threads: int | None = None) -> Runner:
    """The exported program as a callable. ``threads`` is torch's per process (``torch.set_num_threads``),
    set by the caller that owns the process; it is accepted here for the common interface."""
    module = safe_load(build_dir / artifact.path).module()

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            result = module(*(torch.from_numpy(np.ascontiguousarray(x)) for x in inputs))
        result = result if isinstance(result, (tuple, list)) else (result,)
        return [r.numpy() for r in result]
    return run


# What torch.export.save writes into a .pt2 archive (under its one top folder); nothing else is accepted.
_ALLOWED = ("archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id",
            "models/", "data/weights/", "data/constants/", "data/sample_inputs/")
_PICKLED = ("custom_obj_", "opaque_obj_")  # constants torch unpickles as arbitrary objects
_FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_lock = threading.Lock()


def check_archive(path: Path) -> None:
    """Refuse a ``.pt2`` that is not a current torch.export archive of tensors and JSON: legacy archives, custom
    or opaque objects (which torch would unpickle) and files torch.export.save does not write."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise HalocutError(f"{path}: not a torch.export archive ({one_line(error)})") from None
    top = {name.split("/", 1)[0] for name in names}
    if len(top) != 1:
        raise HalocutError(f"{path}: not a torch.export archive (entries under {len(top)} top folders)")
    inner = [name.split("/", 1)[1] if "/" in name else "" for name in names]
    if "archive_format" not in inner:
        raise HalocutError(f"{path}: a legacy or foreign archive (no archive_format); refused: it may need pickle")
    for name in inner:
        if not name.startswith(_ALLOWED) or any(marker in name for marker in _PICKLED) or ".." in name.split("/"):
            raise HalocutError(f"{path}: archive entry '{name}' is not what torch.export.save writes for tensors "
                               f"and graphs; refused (it could unpickle arbitrary objects)")


def safe_load(path: Path):
    """``torch.export.load`` that cannot unpickle arbitrary objects: the archive is checked first, and every
    ``torch.load`` inside runs with ``weights_only`` forced on (torch would fall back to full pickle)."""
    check_archive(path)
    with _lock:
        before = os.environ.get(_FORCE)
        os.environ[_FORCE] = "1"
        try:
            with warnings.catch_warnings():  # torch repeats its own warnings (and logs tracebacks) about it
                warnings.simplefilter("ignore")
                logging.disable(logging.WARNING)
                try:
                    return torch.export.load(path)
                finally:
                    logging.disable(logging.NOTSET)
        except Exception as error:  # noqa: BLE001 - a refused unpickle surfaces as several error types
            raise HalocutError(f"{path}: refused: loading it needs more than tensors and graphs "
                               f"({one_line(error, first=True, limit=100)})") from None
        finally:
            if before is None:
                os.environ.pop(_FORCE, None)
            else:
                os.environ[_FORCE] = before
