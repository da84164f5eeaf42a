"""JSON Schema files for producers and consumers, generated from the structs.

The structs are the source of truth; ``schemas/json/`` holds their generated
JSON Schema (2020-12) so that non-Python producers and consumers can validate
too. A unit test regenerates them and fails when the committed files drift; run
``python -m schemas.jsonschema`` (or ``make schemas``) after changing a struct.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from schemas.alert import AlertRecord
from schemas.deadletter import DeadLetter
from schemas.events import EVENT_STRUCTS, ClockTick

JSON_DIR = Path(__file__).parent / "json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

_FEEDBACK_RULES = [
    {
        "if": {"properties": {"kind": {"const": "nps"}}},
        "then": {"required": ["score"], "properties": {"score": {"minimum": 0, "maximum": 10}}},
    },
    {
        "if": {"properties": {"kind": {"const": "csat"}}},
        "then": {"required": ["score"], "properties": {"score": {"minimum": 1, "maximum": 5}}},
    },
    {
        "if": {"properties": {"kind": {"const": "support"}}},
        "then": {"required": ["outcome"]},
    },
]


def _schema(struct: type, title: str, description: str) -> dict[str, Any]:
    generated = msgspec.json.schema(struct)
    name = generated["$ref"].rsplit("/", 1)[-1]
    body: dict[str, Any] = generated["$defs"][name]
    schema: dict[str, Any] = {
        **{k: v for k, v in body.items() if k not in {"title", "description"}},
        "$schema": DIALECT,
        "$id": f"https://churnwatch.dev/schemas/{title}.json",
        "title": title,
        "description": description,
    }
    return schema


def generate() -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    for kind, struct in EVENT_STRUCTS.items():
        schema = _schema(
            struct,
            kind,
            f"A {kind} event. Kafka key: the customer_id as UTF-8. Unknown fields are "
            "ignored; `type` is optional but must match the topic when present.",
        )
        # The topic carries the type, so the tag is optional on the wire.
        schema["required"] = [f for f in schema["required"] if f != "type"]
        if kind == "feedback":
            schema["allOf"] = _FEEDBACK_RULES
        files[f"{kind}.json"] = schema
    files["tick.json"] = _schema(
        ClockTick, "tick", "A clock tick on churnwatch.clock: moves a partition's event time."
    )
    files["deadletter.json"] = _schema(
        DeadLetter,
        "deadletter",
        "A rejected input on churnwatch.deadletter: reason, detail, source coordinates "
        "and the original key and value, base64-encoded.",
    )
    files["alert.json"] = _schema(
        AlertRecord,
        "alert",
        "A churn-risk alert on churnwatch.alerts (key: customer_id). Upsert on "
        "(dedup_key, sequence); `starts_at` is the episode's start and `at` the "
        "transition's time, both event time; `observed_at` is processing time.",
    )
    return files


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in generate().items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        sys.stdout.write(f"wrote {path}\n")
