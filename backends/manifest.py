"""The format of ``manifest.json``: checked against ``manifest.schema.json`` (shipped with the package) when
written and when read; reading also checks the signature (with a trusted key), that every path stays
inside the build (``..``, absolute paths and symlinks out of it are refused), and every file the
manifest lists, artifacts and their extra files alike, against its sha256.

A manifest lists what goes where (``halocut.compiler.manifest`` builds it):

For each device, its parts in execution order: the artifacts (path under
``build/``, backend, target, sha256), every input (name, shape, dtype, and the
device, part, output and region it comes from, halo included) and every output
(and where it goes), with the simulated latency per part and end to end.
Nothing in a manifest points outside the build directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from halocut.backends import signing
from halocut.backends.base import sha256
from halocut.ir.errors import HalocutError
from halocut.ir.files import check_shape, parse_json, read_bytes, write_text
from halocut.ir.names import parse_part_name
from halocut.ir.schema import check, shipped_validator

FORMAT = "halocut-manifest/1"


@dataclass(frozen=True)
class Build:
    """A build as read: the manifest, its exact bytes and signature (what actors check again), the trusted key."""

    path: Path
    manifest: dict
    manifest_bytes: bytes
    signature: bytes | None
    trusted_key: bytes | None  # PEM; None: no key given, the signature was not checked

    def authority(self) -> dict | None:
        """What an actor needs to check the signature itself (None for an unchecked build)."""
        if self.trusted_key is None:
            return None
        return {"manifest": self.manifest_bytes, "signature": self.signature, "key": self.trusted_key}


def write_manifest(manifest: dict, path: Path) -> None:
    check(shipped_validator(__package__, "manifest.schema.json"), manifest, str(path))
    write_text(path, json.dumps(manifest, indent=1) + "\n", force=True)


def load_manifest(build_dir: str | Path, trust: str | Path | None = None) -> dict:
    """Read and validate ``build_dir/manifest.json``; a missing or changed file is an error (see :func:`read_build`)."""
    return read_build(build_dir, trust).manifest


def read_build(build_dir: str | Path, trust: str | Path | None = None) -> Build:
    """Read ``build_dir``: with a trusted public key (a path), the signature is checked first, on the very bytes
    then parsed; then the schema, every path (inside the build) and every listed file's sha256."""
    build_dir = Path(build_dir)
    path = build_dir / "manifest.json"
    if not path.is_file():
        raise HalocutError(f"{build_dir}: no manifest.json (not a halocut build)")
    inside(build_dir, "manifest.json", path)
    data = read_bytes(path)
    signature_path = build_dir / signing.SIGNATURE_FILE
    signature = None
    if signature_path.exists():
        inside(build_dir, signing.SIGNATURE_FILE, signature_path)
        signature = read_bytes(signature_path, 4096)
    key = signing.read_public_key(trust) if trust is not None else None
    if key is not None:
        signing.verify(data, signature, key, str(build_dir))
    manifest = parse_manifest(data, str(path))
    check_files(manifest, build_dir, path)
    return Build(build_dir, manifest, data, signature, key)


def parse_manifest(data: bytes, source: str) -> dict:
    """Manifest bytes parsed and checked against the schema (errors name ``source``)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise HalocutError(f"{source}: not UTF-8 text (byte {error.start})") from None
    manifest = parse_json(text, source)
    check(shipped_validator(__package__, "manifest.schema.json"), manifest, source)
    check_shape(tuple(manifest["model"]["input"]["shape"]), f"{source}: model.input.shape")  # before allocating
    for device, entry in manifest["devices"].items():
        for index, part in enumerate(entry["parts"]):
            try:
                parse_part_name(part["name"])
            except ValueError as error:
                raise HalocutError(f"{source}: devices.{device}.parts[{index}].name: {error}") from None
    return manifest


def listed_files(manifest: dict) -> dict[str, str]:
    """Every file the manifest lists (artifacts and their extra files): path -> sha256."""
    files = {}
    for entry in manifest["devices"].values():
        for part in entry["parts"]:
            for artifact in part["artifacts"]:
                files[artifact["path"]] = artifact["sha256"]
                for extra in artifact.get("extra", []):
                    files[extra["path"]] = extra["sha256"]
    return files


def check_files(manifest: dict, build_dir: Path, path: Path) -> None:
    for device, entry in manifest["devices"].items():
        for part in entry["parts"]:
            for artifact in part["artifacts"]:
                for listed in (artifact, *artifact.get("extra", [])):
                    where = f"{path}: part '{part['name']}' on '{device}': {listed['path']}"
                    file = inside(build_dir, listed["path"], path)
                    if not file.exists():
                        raise HalocutError(f"{where} is missing")
                    if file.is_dir():
                        for child in file.rglob("*"):
                            inside(build_dir, child.relative_to(build_dir).as_posix(), path)
                    if sha256(file) != listed["sha256"]:
                        raise HalocutError(f"{where} does not match its sha256 (tampered or corrupted)")


def inside(build_dir: Path, relative: str, manifest_path: Path) -> Path:
    """``build_dir/relative`` with every symlink resolved; anything that leaves the build is refused."""
    root = Path(build_dir).resolve()
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise HalocutError(f"{manifest_path}: path '{relative}' leaves the build")
    resolved = (root / relative).resolve()
    if resolved != root and root not in resolved.parents:
        raise HalocutError(f"{manifest_path}: '{relative}' is a link to {resolved}, outside the build; refused")
    return resolved
