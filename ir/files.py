"""The one reader and the one writer of every file halocut reads or writes, with one-line errors.

Reading turns what can go wrong with a file a user names into a
:class:`~halocut.ir.errors.HalocutError` naming it: missing, a folder, too
large (:data:`MAX_BYTES` unless the caller states another bound), not UTF-8,
not JSON or YAML, nested deeper than :data:`MAX_DEPTH`, YAML whose aliases
expand beyond :data:`MAX_YAML_NODES` nodes (a "billion laughs"), or of the
wrong type at the top level. Writing refuses to replace an existing file
unless ``force``, writes a temporary file beside the target and renames it into
place, so nothing is half-written.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> (folder / "t.json").write_text('[1, 2]')
6
>>> read_json(folder / "t.json", expect=dict)
Traceback (most recent call last):
halocut.ir.errors.HalocutError: ...t.json: the top level is a list, expected an object
>>> write_text(folder / "out.txt", "hi\\n")
PosixPath('...out.txt')
>>> write_text(folder / "out.txt", "again\\n")
Traceback (most recent call last):
halocut.ir.errors.HalocutError: ...out.txt exists; use --force to replace it
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import yaml

from halocut.ir.errors import HalocutError, one_line

MAX_BYTES = 16 * 1024 * 1024  # topologies, plans, workloads, manifests, profiles: far below this
MAX_DEPTH = 64  # nesting of JSON or YAML containers
MAX_YAML_NODES = 1_000_000  # YAML nodes once every alias is expanded
_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


MAX_INPUT_BYTES = 1 << 30  # one float32 input tensor: 1 GiB, far beyond any model halocut splits


def check_shape(shape, what: str) -> tuple[int, ...]:
    """A shape of positive ints whose float32 tensor fits :data:`MAX_INPUT_BYTES`, checked before allocating.

    >>> check_shape((1, 3, 100000, 100000), "--input-shape")
    Traceback (most recent call last):
    halocut.ir.errors.HalocutError: --input-shape (1, 3, 100000, 100000): a float32 input of 120.0 GB, more than the 1.1 GB limit
    """
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (tuple, list)) or not shape or \
            not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise HalocutError(f"{what} {shape!r:.80}: expected a sequence of positive integers such as (1, 3, 224, 224)")
    size = 4
    for dim in shape:
        size *= dim
    if size > MAX_INPUT_BYTES:
        raise HalocutError(f"{what} {tuple(shape)}: a float32 input of {size / 1e9:.1f} GB, more than the "
                           f"{MAX_INPUT_BYTES / 1e9:.1f} GB limit")
    return tuple(shape)


def read_bytes(path: str | Path, max_bytes: int = MAX_BYTES) -> bytes:
    """The file's bytes; a missing file, a folder or a file over ``max_bytes`` is a one-line error."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise HalocutError(f"{path}: is a folder, not a file")
        if size > max_bytes:
            raise HalocutError(f"{path}: {size} bytes, more than the {max_bytes} this file may have")
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise HalocutError(f"{path}: file does not exist") from None
    except OSError as error:
        raise HalocutError(f"{path}: cannot read it: {one_line(error.strerror or error)}") from None
    if len(data) > max_bytes:
        raise HalocutError(f"{path}: more than the {max_bytes} bytes this file may have")
    return data


def read_text(path: str | Path, max_bytes: int = MAX_BYTES) -> str:
    """The file as UTF-8 text."""
    data = read_bytes(path, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise HalocutError(f"{path}: not UTF-8 text (byte {error.start} is 0x{data[error.start]:02x})") from None


def read_json(path: str | Path, expect: type | None = dict, max_bytes: int = MAX_BYTES):
    """The file parsed as JSON, nested at most :data:`MAX_DEPTH` deep, of type ``expect`` at the top level."""
    return parse_json(read_text(path, max_bytes), str(path), expect)


def parse_json(text: str, source: str, expect: type | None = dict):
    """``text`` parsed as JSON (errors name ``source``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise HalocutError(f"{source}: not JSON: {error.msg} (line {error.lineno}, column {error.colno})") from None
    except RecursionError:
        raise HalocutError(f"{source}: nested more than {MAX_DEPTH} levels deep") from None
    return _checked(data, source, expect)


def read_yaml(path: str | Path, expect: type | None = dict, max_bytes: int = MAX_BYTES):
    """The file parsed as YAML (``safe_load``: plain data only), aliases expanded to at most
    :data:`MAX_YAML_NODES` nodes, nested at most :data:`MAX_DEPTH` deep, of type ``expect``."""
    return parse_yaml(read_text(path, max_bytes), str(path), expect)


def parse_yaml(text: str, source: str, expect: type | None = dict):
    """``text`` parsed as YAML (errors name ``source``)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _expanded_size(node, source, {}, 0)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as error:
        raise HalocutError(f"{source}: not valid YAML: {one_line(error)}") from None
    except RecursionError:
        raise HalocutError(f"{source}: nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()
    return _checked(data, source, expect)


def _expanded_size(node: yaml.Node, source: str, sizes: dict[int, int], depth: int) -> int:
    """Nodes under ``node`` with every alias expanded (an alias is the same node object met again)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if depth > MAX_DEPTH:
        raise HalocutError(f"{source}: nested more than {MAX_DEPTH} levels deep")
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, source, sizes, depth + 1) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, source, sizes, depth + 1) + _expanded_size(v, source, sizes, depth + 1)
                    for k, v in node.value)
    if size > MAX_YAML_NODES:
        raise HalocutError(f"{source}: its aliases expand to more than {MAX_YAML_NODES} nodes; refused")
    sizes[id(node)] = size
    return size


def _checked(data, source: str, expect: type | None):
    _depth(data, source, 0)
    if expect is not None and not isinstance(data, expect):
        raise HalocutError(f"{source}: the top level is {_TYPE_NAMES.get(type(data), type(data).__name__)}, "
                           f"expected {_TYPE_NAMES.get(expect, expect.__name__)}")
    return data


def _depth(data, source: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise HalocutError(f"{source}: nested more than {MAX_DEPTH} levels deep")
    children = data.values() if isinstance(data, dict) else data if isinstance(data, list) else ()
    for child in children:
        if isinstance(child, (dict, list)):
            _depth(child, source, depth + 1)


def write_bytes(path: str | Path, data: bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` whole or not at all: a temporary file beside it, renamed into place.

    An existing file is replaced only with ``force``; a folder never. Errors name the path, in one line.
    """
    path = Path(path)
    if path.is_dir():
        raise HalocutError(f"{path}: is a folder; give a file name")
    if path.exists() and not force:
        raise HalocutError(f"{path} exists; use --force to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        raise HalocutError(f"{path}: cannot write it: {one_line(error.strerror or error)}") from None
    return path


def check_output(path: str | Path, force: bool, flag: str = "-o") -> Path:
    """Refuse, before any work, an output :func:`write_bytes` would refuse: a folder, an existing file without
    ``force``, a place no file can be made (a file where a folder must be, a folder not writable)."""
    path = Path(path)
    if path.is_dir():
        raise HalocutError(f"{flag} {path}: is a folder; give a file name")
    if path.exists() and not force:
        raise HalocutError(f"{path} exists; use --force to replace it")
    folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not folder.is_dir():
        raise HalocutError(f"{flag} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise HalocutError(f"{flag} {path}: {folder} is not writable")
    return path


def write_text(path: str | Path, text: str, force: bool = False) -> Path:
    """:func:`write_bytes` of UTF-8 text."""
    return write_bytes(path, text.encode("utf-8"), force)


def write_json(path: str | Path, data, force: bool = False) -> Path:
    """:func:`write_text` of ``data`` as indented JSON."""
    return write_text(path, json.dumps(data, indent=1) + "\n", force)
