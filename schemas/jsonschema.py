"""JSON Schema files for producers and consumers, generated from the structs.

The structs are the source of truth; ``schemas/json/`` holds their generated
JSON Schema (2020-12) so that non-Python producers and consumers can validate
too. A unit test regenerates them and fails when the committed files drift; run
``python -m schemas.jsonschema`` (or ``make schemas``) after changing a struct.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from schemas.alert import AlertRecord
from schemas.deadletter import DeadLetter
from schemas.events import EVENT_STRUCTS, ClockTick
from schemas.notify import Notification, NotifyDeadLetter

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
    """``struct``'s schema as a standalone file: the struct at the root and, in its
    ``$defs``, every struct it refers to.

    msgspec puts every struct, the root included, in ``$defs`` behind a root
    ``$ref``; the root's body is lifted to the top, so a reference to the root
    itself (a recursive struct) becomes ``#``. Every ``$ref`` in a published file
    must resolve inside that file: consumers load it offline, and a validator
    (jsonschema, ajv, a schema registry) refuses a schema with a dangling one.
    """
    generated = msgspec.json.schema(struct)
    name = generated["$ref"].rsplit("/", 1)[-1]
    defs: dict[str, Any] = dict(generated.get("$defs", {}))
    body: dict[str, Any] = defs.pop(name)
    schema: dict[str, Any] = {
        **{k: v for k, v in body.items() if k not in {"title", "description"}},
        "$schema": DIALECT,
        "$id": f"https://churnwatch.dev/schemas/{title}.json",
        "title": title,
        "description": description,
    }
    if defs:
        schema["$defs"] = defs
    schema = _retarget(schema, {f"#/$defs/{name}": "#"})
    dangling = sorted(set(refs(schema)) - {"#", *(f"#/$defs/{d}" for d in defs)})
    if dangling:
        raise ValueError(f"{title}: $ref without a target in the file: {', '.join(dangling)}")
    return schema


def _retarget(node: Any, moves: dict[str, str]) -> Any:
    """A copy of ``node`` with each ``$ref`` in ``moves`` replaced by its new target."""
    if isinstance(node, dict):
        return {k: moves.get(v, v) if k == "$ref" else _retarget(v, moves) for k, v in node.items()}
    if isinstance(node, list):
        return [_retarget(item, moves) for item in node]
    return node


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` value in ``node``, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


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
    files["notification.json"] = _schema(
        Notification,
        "notification",
        "The body `churnwatch notify` posts to a generic JSON webhook, signed with "
        "HMAC-SHA256 of the body (header X-Churnwatch-Signature: sha256=<hex>). "
        "De-duplicate on `idempotency_key` (also the Idempotency-Key header).",
    )
    files["notify-deadletter.json"] = _schema(
        NotifyDeadLetter,
        "notify-deadletter",
        "An alert transition `churnwatch notify` gave up on, on churnwatch.notify.dead: "
        "the destination, the reason, and the alert record's original bytes (base64).",
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
