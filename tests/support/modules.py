"""halocut's modules as installed (``halocut.<floor>...``), with their source files, and the floors they sit on."""

from __future__ import annotations

import importlib.util
import pkgutil
from pathlib import Path

# design.md: the floors, lowest first; a module imports only its own folder or a lower floor.
FLOORS = {"ir": 1, "targets": 2, "passes": 2, "backends": 2, "runtime": 3, "planning": 4, "compiler": 5}


def halocut_modules() -> dict[str, Path]:
    """Every module of every halocut package, by its installed name -> its source file."""
    found = {}
    for top in FLOORS:
        spec = importlib.util.find_spec(f"halocut.{top}")
        found[spec.name] = Path(spec.origin)
        for info in pkgutil.walk_packages(spec.submodule_search_locations, f"halocut.{top}."):
            found[info.name] = Path(importlib.util.find_spec(info.name).origin)
    return dict(sorted(found.items()))


def floor_of(module: str) -> tuple[str, int] | None:
    """(folder, floor) of a ``halocut.*`` module name; None for anything else."""
    parts = module.split(".")
    if parts[0] != "halocut" or len(parts) < 2 or parts[1] not in FLOORS:
        return None
    return parts[1], FLOORS[parts[1]]
