"""The dead-letter record: a rejected input with the reason and its original bytes.

Bytes are base64 so the record stays JSON whatever was received (non-UTF-8 input
is one of the reasons). The source coordinates let an operator find, fix and
re-publish the original, and let consumers de-duplicate records re-sent after a
worker restart (processing is at-least-once).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, get_args

from msgspec import Meta, Struct

from schemas.events import Timestamp

RejectReason = Literal[
    "too_large",
    "not_utf8",
    "malformed_json",
    "too_deep",
    "not_an_object",
    "missing_field",
    "invalid_field",
    "wrong_type",
    "key_mismatch",
    "future_time",
    "amount_overflow",
]
REJECT_REASONS: Final[tuple[RejectReason, ...]] = get_args(RejectReason)

DEADLETTER_SCHEMA_VERSION: Final = 1
#: Bytes of the original value (and key) a dead letter carries. A broker refuses a
#: record over its ``max.message.bytes`` (Apache Kafka's default is 1 MiB), and base64
#: adds a third: an input record near that size could not be dead-lettered whole.
#: Beyond this the record carries a prefix, ``truncated``, the full ``size`` and the
#: ``sha256`` of the whole value; the original stays at its coordinates in the input.
DEADLETTER_MAX_BYTES: Final = 256 * 1024
#: Standard base64 (with padding) of raw bytes, which need not be UTF-8.
Base64 = Annotated[str, Meta(extra_json_schema={"contentEncoding": "base64"})]


class DeadLetter(Struct, kw_only=True, frozen=True):
    schema_version: int = DEADLETTER_SCHEMA_VERSION
    reason: RejectReason
    detail: str
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key_b64: Base64 | None
    value_b64: Base64
    #: Length of the original value, whole, even when ``value_b64`` holds a prefix.
    size: int
    #: True when ``key_b64`` or ``value_b64`` holds only the first DEADLETTER_MAX_BYTES.
    truncated: bool = False
    #: Hex SHA-256 of the whole original value, to check a re-published fix against.
    sha256: str | None = None
    # Always aware (UTC): the published schema then says RFC 3339 ``date-time``.
    received_at: Timestamp
