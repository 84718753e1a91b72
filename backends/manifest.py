"""The format of ``manifest.json``: checked against ``manifest.schema.json`` (shipped with the package) when
written and when read; reading also checks every artifact against its sha256.

A manifest lists what goes where (``halocut.compiler.manifest`` builds it):

For each device, its parts in execution order: the artifacts (path under
``build/``, backend, target, sha256), every input (name, shape, dtype, and the
device, part, output and region it comes from, halo included) and every output
(and where it goes), with the simulated latency per part and end to end.
Nothing in a manifest points outside the build directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from halocut.backends.base import sha256
from halocut.ir.errors import HalocutError
from halocut.ir.schema import check, shipped_validator

FORMAT = "halocut-manifest/1"


def write_manifest(manifest: dict, path: Path) -> None:
    check(shipped_validator(__package__, "manifest.schema.json"), manifest, str(path))
    path.write_text(json.dumps(manifest, indent=1) + "\n")


def load_manifest(build_dir: str | Path) -> dict:
    """Read and validate ``build_dir/manifest.json``; a missing or changed artifact is an error."""
    build_dir = Path(build_dir)
    path = build_dir / "manifest.json"
    if not path.is_file():
        raise HalocutError(f"{build_dir}: no manifest.json (not a halocut build)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise HalocutError(f"{path}: not JSON: {error}") from None
    check(shipped_validator(__package__, "manifest.schema.json"), manifest, str(path))
    for device, entry in manifest["devices"].items():
        for part in entry["parts"]:
            for artifact in part["artifacts"]:
                file = build_dir / artifact["path"]
                if not file.is_file():
                    raise HalocutError(f"{path}: part '{part['name']}' on '{device}': {artifact['path']} is missing")
                if sha256(file) != artifact["sha256"]:
                    raise HalocutError(f"{path}: part '{part['name']}' on '{device}': {artifact['path']} does not "
                                       f"match its sha256 (tampered or corrupted)")
    return manifest
