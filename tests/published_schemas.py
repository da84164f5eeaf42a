"""Validating records against the JSON Schema files churnwatch publishes, as any
consumer would: jsonschema's Draft 2020-12 validator with its format checker, every
``$ref`` resolved inside the one published file (no network)."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from schemas.jsonschema import JSON_DIR


def format_checker() -> FormatChecker:
    """``Draft202012Validator.FORMAT_CHECKER``, which checks ``date-time`` only when
    the rfc3339-validator package is installed (a dev dependency): without it every
    string would pass as a timestamp, so its absence is an error, not a pass."""
    checker = Draft202012Validator.FORMAT_CHECKER
    if "date-time" not in checker.checkers:
        raise RuntimeError("jsonschema cannot check date-time: pip install rfc3339-validator")
    return checker


def load(name: str) -> dict[str, Any]:
    """The published schema ``name`` (``alert.json``, ``deadletter.json``, ...)."""
    schema: dict[str, Any] = json.loads((JSON_DIR / name).read_text())
    return schema


def registry(schema: dict[str, Any]) -> Registry[Any]:
    """``schema`` under its ``$id``, and nothing else: each file must stand alone (a
    consumer may load just the one it needs), so a ``$ref`` to anything outside it
    fails to resolve, and nothing is ever retrieved."""
    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    return Registry().with_resource(schema["$id"], resource)


def validator(name: str) -> Draft202012Validator:
    schema = load(name)
    return Draft202012Validator(schema, format_checker=format_checker(), registry=registry(schema))


def problems(check: Draft202012Validator, record: Any) -> list[str]:
    """Why ``record`` does not validate (empty when it does), one line per error."""
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in check.iter_errors(record)
    ]
