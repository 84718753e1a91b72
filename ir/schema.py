"""JSON Schema checks for the files halocut reads (plans, topologies), with one-line errors.

>>> check({"type": "object", "required": ["name"]}, {}, "t.yaml")
Traceback (most recent call last):
halocut.ir.errors.HalocutError: t.yaml: top level: 'name' is a required property
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import jsonschema

from halocut.ir.errors import HalocutError


@cache
def shipped_validator(package: str, filename: str) -> jsonschema.Draft202012Validator:
    """The validator of a schema file shipped inside a package."""
    return jsonschema.Draft202012Validator(json.loads(resources.files(package).joinpath(filename).read_text()))


def check(schema: dict | jsonschema.Draft202012Validator, data: object, source: str) -> None:
    """Raise a HalocutError naming ``source`` and the field of the first violation, if any."""
    validator = schema if isinstance(schema, jsonschema.Draft202012Validator) else \
        jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        raise HalocutError(f"{source}: {where or 'top level'}: {error.message}")
