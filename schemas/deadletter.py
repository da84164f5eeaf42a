"""The dead-letter record: a rejected input with the reason and its original bytes.

Bytes are base64 so the record stays JSON whatever was received (non-UTF-8 input
is one of the reasons). The source coordinates let an operator find, fix and
re-publish the original, and let consumers de-duplicate records re-sent after a
worker restart (processing is at-least-once).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal, get_args

from msgspec import Struct

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


class DeadLetter(Struct, kw_only=True, frozen=True):
    schema_version: int = DEADLETTER_SCHEMA_VERSION
    reason: RejectReason
    detail: str
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key_b64: str | None
    value_b64: str
    size: int
    received_at: datetime
