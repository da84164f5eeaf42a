"""What the notifier (``churnwatch notify``) sends: the generic webhook body and its
dead letters.

A generic JSON webhook receives one ``Notification`` per alert transition, signed
with HMAC-SHA256 of the exact body bytes (header ``X-Churnwatch-Signature:
sha256=<hex>``). Delivery is at least once: a receiver de-duplicates on
``idempotency_key`` (also sent as the ``Idempotency-Key`` header), which is
``<dedup_key>:<sequence>`` of the alert, the same for every retry and every
redelivery after a restart.

A transition that could not be delivered (the endpoint refused it, or every retry
failed) is written to the notifier's dead-letter topic as a ``NotifyDeadLetter``,
with the reason and the alert record's original bytes, and the notifier moves on.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from msgspec import Meta, Struct

from schemas.alert import AlertRecord
from schemas.events import Timestamp

NOTIFICATION_SCHEMA_VERSION: Final = 1
NOTIFY_DEADLETTER_SCHEMA_VERSION: Final = 1

#: Why a record was given up on: it is not an alert record (``undecodable``), the
#: endpoint answered a status that retrying cannot change (``rejected``: a 4xx other
#: than 408 and 429), or every attempt failed (``retries_exhausted``).
GiveUpReason = Literal["undecodable", "rejected", "retries_exhausted"]
Base64 = Annotated[str, Meta(extra_json_schema={"contentEncoding": "base64"})]


class Notification(Struct, frozen=True, kw_only=True):
    schema_version: int = NOTIFICATION_SCHEMA_VERSION
    #: ``<dedup_key>:<sequence>``: one transition of one episode.
    idempotency_key: str
    #: The configured destination's name.
    destination: str
    #: True when this alert opens the episode for this destination (the first
    #: transition it is shown of it); openings are what the daily capacity counts.
    opening: bool
    #: The day (``YYYY-MM-DD`` in the notifier's time zone) whose capacity an opening
    #: used; None for the episode's later transitions, which the capacity does not count.
    capacity_day: str | None
    #: The customer's page, from the configured link template (None without one).
    link: str | None
    #: The alert's reasons in words, in the alert's order.
    reasons_text: list[str]
    alert: AlertRecord


class NotifyDeadLetter(Struct, frozen=True, kw_only=True):
    schema_version: int = NOTIFY_DEADLETTER_SCHEMA_VERSION
    reason: GiveUpReason
    #: What happened last, e.g. ``HTTP 400: <start of the response>`` or ``timeout``.
    detail: str
    #: None for an undecodable record (it belongs to no destination).
    destination: str | None
    idempotency_key: str | None
    attempts: int
    topic: str
    partition: int
    offset: int
    key_b64: Base64 | None
    value_b64: Base64
    failed_at: Timestamp
