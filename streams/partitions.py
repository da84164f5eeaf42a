"""Where a worker keeps the record of each input partition it owns.

The partition record lives in the customers table itself, under a key no
customer id can take (ids never contain control characters): records of one
changelog partition are stored in the order they were sent, which is what the
customer agent relies on for counting exactly under at-least-once delivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from retention.partition import PartitionFigures, decode_figures
from streams import topics

if TYPE_CHECKING:  # the processor imports these keys without importing Faust
    import faust


def partition_state_key(partition: int) -> bytes:
    return b"\x00partition/%d" % partition


def due_bucket_key(partition: int, day: int) -> bytes:
    """Customers of ``partition`` due for re-assessment on UTC ``day`` (processor/due.py)."""
    return b"\x00due/%d/%d" % (partition, day)


def pending_bucket_key(partition: int, day: int) -> bytes:
    """Events of ``partition`` on UTC ``day`` waiting for the aligned time (processor/
    alignment.py)."""
    return b"\x00pending/%d/%d" % (partition, day)


#: Key prefix of alerts sent and not yet known to be acknowledged (processor/outbox.py).
OUTBOX = b"\x00outbox/"


def outbox_prefix(partition: int) -> bytes:
    return OUTBOX + b"%d/" % partition


def outbox_key(partition: int, alert_id: str) -> bytes:
    """An alert of ``partition`` until the broker acknowledged it (processor/outbox.py)."""
    return outbox_prefix(partition) + alert_id.encode()


#: Outbox records of dead letters (processor/outbox.py).
DEADLETTER_OUTBOX = b"\x00deadletters/"


def deadletter_outbox_key(partition: int, target: int, topic: str, offset: int) -> bytes:
    """Dead letters of ``partition``, for the dead-letter topic's partition ``target``,
    from the one of ``topic`` at ``offset`` on, until the broker acknowledged them
    (a batch redone makes the same key)."""
    return DEADLETTER_OUTBOX + b"%d/%d/%s/%020d" % (partition, target, topic.encode(), offset)


def deadletter_target(key: bytes) -> int:
    """The dead-letter topic's partition of a ``deadletter_outbox_key``."""
    return int(key[len(DEADLETTER_OUTBOX) :].split(b"/")[1])


def is_customer_key(key: bytes) -> bool:
    return not key.startswith(b"\x00")


def is_partition_key(key: bytes) -> bool:
    return key.startswith(b"\x00partition/")


def assigned_partitions(app: faust.App) -> list[int]:
    """Input partitions this worker actively owns (standby replicas excluded)."""
    try:
        actives = app.assignor.assigned_actives()
    except Exception:  # before the first assignment
        return []
    return sorted(tp.partition for tp in actives if tp.topic == topics.CLOCK)


def partition_states(app: faust.App, table: Any) -> list[PartitionFigures]:
    """The figures of the partitions this worker owns (for metrics and the web view:
    the processor's bookkeeping in the same records is not read)."""
    states = []
    for partition in assigned_partitions(app):
        raw = table.get(partition_state_key(partition))
        if raw is not None:
            states.append(decode_figures(raw))
    return states
