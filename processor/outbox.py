"""The outbox: alerts (and forwards) kept in the table until the broker has them.

Alerts go to another topic, so nothing orders them with the changelog: a worker
killed after a customer's new state was stored but before the alert it raised was
would lose the alert for good (the redelivered event is a duplicate for that state
and raises nothing). So a batch's alerts are also stored in the table, in outbox
records of the partition written before the partition record, and each deleted by a
later batch once the broker has acknowledged all of its alerts. A worker that takes a
partition over sends the partition's outbox again (at least once; a repeat is byte
for byte the same record, which consumers de-duplicate on ``(dedup_key, sequence)``).
Forwards to other partitions (processor/routing.py) and dead letters
(processor/intake.py) are kept and sent the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import msgspec

from processor.intake import Letter
from processor.partition import PartitionState
from processor.ports import Sender
from processor.routing import Router
from retention.alerts import Alert
from retention.timeutil import from_micros
from schemas.alert import AlertReason, AlertRecord, AlertSource
from streams import routing, topics
from streams.partitions import (
    DEADLETTER_OUTBOX,
    OUTBOX,
    deadletter_outbox_key,
    deadletter_target,
    outbox_key,
    outbox_prefix,
)

_JSON = msgspec.json.Encoder()
# Keys may be None: a dead letter keeps its message's key, which a bad record may lack.
_DECODER = msgspec.msgpack.Decoder(list[tuple[bytes | None, bytes]])
_ENCODER = msgspec.msgpack.Encoder()
#: Alerts per outbox record: about 0.5 MB, well under the producer's request size.
OUTBOX_CHUNK = 1000

#: An outbox record: its table key, and the (key, value) records it holds.
Record = tuple[bytes, list[tuple[bytes | None, bytes]]]
#: Records sent and not known delivered: their send futures, the outbox record's key.
Sent = tuple[list[Any], bytes]


def encode(chunk: list[tuple[bytes | None, bytes]]) -> bytes:
    return _ENCODER.encode(chunk)


def records(
    partition: int,
    alerts: Iterable[tuple[Alert, Any]],
    first: int,
    forwards: list[tuple[bytes, bytes]],
    letters: Sequence[Letter] = (),
) -> list[Record]:
    """A batch's outbox records: one per OUTBOX_CHUNK alerts (a tick can raise tens
    of thousands at once, more than one changelog record may hold), then its
    forwards, the ``first``-th of the partition's on, then its dead letters."""
    built = [alert_record(alert, source) for alert, source in alerts]
    out: list[Record] = [
        (
            outbox_key(partition, built[i][0]),
            [(key, value) for _, key, value in built[i : i + OUTBOX_CHUNK]],
        )
        for i in range(0, len(built), OUTBOX_CHUNK)
    ]
    out.extend(cast(list[Record], list(routing.forward_outboxes(partition, first, forwards))))
    out.extend(letter_records(partition, letters))
    return out


def letter_records(partition: int, letters: Sequence[Letter]) -> list[Record]:
    """Dead letters in outbox records: per dead-letter partition, OUTBOX_CHUNK at
    most in each, keyed by the first one's topic and offset."""
    by_target: dict[int, list[Letter]] = {}
    for letter in letters:
        by_target.setdefault(letter[0], []).append(letter)
    out: list[Record] = []
    for target, found in by_target.items():
        for i in range(0, len(found), OUTBOX_CHUNK):
            chunk = found[i : i + OUTBOX_CHUNK]
            _, topic, offset, _, _ = chunk[0]
            key = deadletter_outbox_key(partition, target, topic, offset)
            out.append((key, [(k, v) for _, _, _, k, v in chunk]))
    return out


class Outbox:
    """The outbox records of each partition owned, sent and not known delivered."""

    def __init__(self, alerts: Sender, router: Router | None, deadletters: Sender) -> None:
        self.alerts = alerts
        self.router = router
        self.deadletters = deadletters
        #: Per partition, outbox records whose records were sent: (their send futures,
        #: the record's key). A batch of the partition deletes those acknowledged.
        self.unacked: dict[int, list[Sent]] = {}

    def delivered(self, partition: int) -> tuple[list[Sent], list[bytes]]:
        """The partition's outbox records still on their way, and those whose
        records the broker has all acknowledged (deleted by the commit plan)."""
        unacked: list[Sent] = []
        delivered: list[bytes] = []
        for futures, stored in self.unacked.get(partition, []):
            if all(_acked(future) for future in futures):
                delivered.append(stored)
            else:
                unacked.append((futures, stored))
        return unacked, delivered

    def list_in(self, pstate: PartitionState, unacked: list[Sent], batch: list[Record]) -> None:
        """List in the partition record the outbox records not known delivered and
        this batch's (a crash before the deletion of the delivered ones leaves a
        record that is not listed, but all of its alerts were delivered)."""
        pstate.outbox = [stored for _, stored in unacked] + [stored for stored, _ in batch]

    def send(self, partition: int, unacked: list[Sent], batch: list[Record]) -> None:
        """Send this batch's outbox records (once they are stored)."""
        for stored, chunk in batch:
            send = self._sender(partition, stored)
            unacked.append(([send(key, value) for key, value in chunk], stored))
        self.unacked[partition] = unacked

    def _sender(self, partition: int, stored: bytes) -> Callable[[bytes | None, bytes], Any]:
        """How to send the records of the outbox record ``stored`` of ``partition``."""
        if stored.startswith(DEADLETTER_OUTBOX):
            letters, target = self.deadletters, deadletter_target(stored)
            return lambda key, value: letters.send_soon(key=key, value=value, partition=target)
        if not routing.is_forward_outbox(stored):
            alerts = self.alerts
            return lambda key, value: alerts.send_soon(key=key, value=value, partition=partition)
        if self.router is None:  # cannot happen: only a router forwards
            raise RuntimeError(f"forwards in {stored!r} and no router to send them")
        router = self.router
        return lambda key, value: router.send(cast(bytes, key), value)  # forwards have keys

    def drop(self, owned: Collection[int]) -> None:
        """Partitions no longer owned: their new owners send their outbox again."""
        for partition in set(self.unacked) - set(owned):
            del self.unacked[partition]

    def resend(
        self,
        table: MutableMapping[bytes, bytes],
        new: Iterable[int],
        listed: Callable[[int], list[bytes] | None],
    ) -> int:
        """Send again the outbox of each partition in ``new``, whose records the
        previous owner may not have delivered; ``listed``: a partition's outbox keys
        as its record lists them. Returns how many were sent.

        A record written before that list existed makes this one pass over the
        table's keys."""
        found: dict[int, list[tuple[bytes, bytes]]] = {partition: [] for partition in new}
        unlisted: dict[bytes, int] = {}
        for partition in found:
            keys = listed(partition)
            if keys is None:
                unlisted[outbox_prefix(partition)] = partition
                continue
            for stored in keys:
                raw = table.get(stored)
                if raw is not None:
                    found[partition].append((stored, raw))
        if unlisted:
            for stored, raw in table.items():
                if stored.startswith(OUTBOX):
                    owner = unlisted.get(stored[: stored.index(b"/", len(OUTBOX)) + 1])
                    if owner is not None:
                        found[owner].append((stored, raw))
        resent = 0
        for partition, entries in found.items():
            self.unacked[partition] = []
            for stored, raw in sorted(entries):
                chunk = _DECODER.decode(raw)
                send = self._sender(partition, stored)
                sent = [send(key, value) for key, value in chunk]
                self.unacked[partition].append((sent, stored))
                resent += len(chunk)
        return resent


def alert_record(alert: Alert, source: Any) -> tuple[str, bytes, bytes]:
    """The id, and the key and value of the record on the alerts topic."""
    event_id = None
    if source.topic != topics.CLOCK and source.value:
        event_id = _event_id(source.value)
    record = AlertRecord(
        alert_id=f"{alert.dedup_key}-{alert.sequence}",
        dedup_key=alert.dedup_key,
        sequence=alert.sequence,
        status=alert.status,
        customer_id=alert.customer_id,
        tier=alert.tier,
        risk_score=alert.risk_score,
        reasons=[
            AlertReason(code=r.code, value=r.value, threshold=r.threshold) for r in alert.reasons
        ],
        value_at_risk=alert.value_at_risk,
        clv=alert.clv,
        segment=alert.segment,
        starts_at=from_micros(alert.starts_at),
        at=from_micros(alert.at),
        observed_at=datetime.now(UTC),
        source=AlertSource(
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
            event_id=event_id,
        ),
    )
    return record.alert_id, alert.customer_id.encode(), _JSON.encode(record)


class _EventId(msgspec.Struct):
    event_id: str | None = None


_EVENT_ID = msgspec.json.Decoder(_EventId)


def _event_id(value: bytes) -> str | None:
    # The source of an alert found by the due-time index is the batch's last message,
    # which may be one the decoder rejected: nested too deep for msgspec, for one.
    try:
        return _EVENT_ID.decode(value).event_id
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None


def _acked(future: Any) -> bool:
    """Whether the broker acknowledged a sent record (None: sent by a test double)."""
    return future is None or (
        future.done() and not future.cancelled() and future.exception() is None
    )
