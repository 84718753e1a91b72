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
    module = torch.export.load(build_dir / artifact.path).module()

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            result = module(*(torch.from_numpy(np.ascontiguousarray(x)) for x in inputs))
        result = result if isinstance(result, (tuple, list)) else (result,)
        return [r.numpy() for r in result]
    return run
