"""Imports go only down the floors of design.md (style.md item 12): ir -> targets, passes, backends (peers, each
importing only ir) -> runtime -> planning -> compiler. Tests and benchmarks import halocut only as ``halocut.*``."""

import ast
from pathlib import Path

from tests.support import ROOT
from tests.support.modules import FLOORS, floor_of, halocut_modules

BARE = set(FLOORS)  # a bare "import compiler" would load a second copy of a floor


def imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative ones resolved, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
    return found


def violations(modules: dict[str, Path]) -> list[str]:
    """Every import of these modules (name -> file) that goes sideways or up, as 'file:line: what'."""
    broken = []
    for name, path in modules.items():
        folder, floor = floor_of(name)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for line, imported in imports(path, package):
            if imported.split(".")[0] in BARE:
                broken.append(f"{_shown(path)}:{line}: import {imported} (bare: use halocut.{imported})")
                continue
            target = floor_of(imported)
            if target is None or target[0] == folder:
                continue
            if target[1] >= floor:
                broken.append(f"{_shown(path)}:{line}: {folder} (floor {floor}) imports {imported} "
                              f"(floor {target[1]}): only lower floors")
    return broken


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def test_every_import_goes_down_the_floors():
    broken = violations(halocut_modules())
    assert not broken, "\n".join(broken)


def test_tests_benchmarks_and_examples_import_only_halocut_names():
    broken = []
    for folder in ("tests", "benchmarks", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, imported in imports(path, folder):
                top = imported.split(".")[0]
                if top in BARE or (folder != "tests" and top == "tests"):
                    broken.append(f"{path.relative_to(ROOT)}:{line}: import {imported}")
            if "sys.path" in path.read_text() and path.name != "test_layering.py":
                broken.append(f"{path.relative_to(ROOT)}: edits sys.path")
    assert not broken, "\n".join(broken)


def test_the_check_names_each_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from . import flow\nimport compiler\ndef f():\n    from halocut.planning import PLANNERS\n"
                   "    from halocut.passes.halo import halo_rule\n    from ..targets.cost import CostModel\n")
    assert sorted(imports(bad, "halocut.runtime")) == [(1, "halocut.runtime"), (2, "compiler"),
                                                       (4, "halocut.planning"), (5, "halocut.passes.halo"),
                                                       (6, "halocut.targets.cost")]
    assert violations({"halocut.runtime.bad": bad}) == [
        f"{bad}:2: import compiler (bare: use halocut.compiler)",
        f"{bad}:4: runtime (floor 3) imports halocut.planning (floor 4): only lower floors"]
    peer = tmp_path / "peer.py"
    peer.write_text("from halocut.passes.halo import Region\n")
    assert violations({"halocut.backends.peer": peer}) == [
        f"{peer}:1: backends (floor 2) imports halocut.passes.halo (floor 2): only lower floors"]
