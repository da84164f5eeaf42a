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
    size: int
    # Always aware (UTC): the published schema then says RFC 3339 ``date-time``.
    received_at: Timestamp
