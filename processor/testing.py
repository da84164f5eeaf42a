"""The processor in memory: a dict for the table, lists for the topics it sends to,
and a consumer's offsets given by the test, no Faust, no broker.

``parts`` builds a ``Parts`` with the real decoder, lifecycle and metrics; ``message``
and ``Received`` are what Faust hands the agent. tests/inprocess.py runs a whole
input through ``CustomerBatch`` this way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from processor.ports import TP, Parts
from retention.alerts import Lifecycle
from retention.risk import load_risk_config
from schemas.decode import EventDecoder
from streams.metrics import PipelineMetrics
from streams.settings import Settings


class Sender:
    """A topic: keeps what is sent, in order; every record is delivered at once."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.records: list[tuple[bytes | None, bytes, int]] = []

    def send_soon(
        self, *, key: bytes | None = None, value: bytes = b"", partition: int = 0
    ) -> None:
        self.values.append(value)
        self.records.append((key, value, partition))


class Offsets:
    """A consumer's offsets as the test says: end offsets from ``highwater``, seeks
    that landed (``landings``), committed offsets (``commits``), the partitions owned
    (``owned``). No consumer runs: nothing is checked for being writable, and routing
    stays off unless a router is made active."""

    def __init__(self, highwater: Callable[[TP], int | None] = lambda tp: None) -> None:
        self._highwater = highwater
        self.landings: dict[Any, tuple[int, int]] = {}
        self.commits: dict[Any, int] = {}
        self.owned: list[int] = []
        #: Rebalances begun (``rebalances``); a test moves it on.
        self.rebalance_count = 0

    def writable(self) -> None:
        return None

    def active(self) -> bool:
        return False

    def highwater(self, tp: TP) -> int | None:
        return self._highwater(tp)

    def landed(self, tp: TP) -> tuple[int, int] | None:
        return self.landings.get(tp)

    def forget_landing(self, tp: TP) -> None:
        self.landings.pop(tp, None)

    def committed(self, tp: TP) -> int | None:
        return self.commits.get(tp)

    def assigned(self) -> list[int]:
        return list(self.owned)

    def rebalances(self) -> int:
        return self.rebalance_count


def parts(settings: Settings, offsets: Offsets, table: dict[bytes, bytes] | None = None) -> Parts:
    """A processor's parts in memory, with the real decoder, lifecycle and metrics."""
    return Parts(
        settings=settings,
        table={} if table is None else table,
        decoder=EventDecoder(settings.max_event_bytes),
        metrics=PipelineMetrics(lambda: [], lambda: []),
        lifecycle=Lifecycle(load_risk_config(None), None, settings.window),
        alerts=Sender(),
        deadletters=Sender(),
        offsets=offsets,
    )


@dataclass
class Message:
    """A Kafka record as the processor reads it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: float | None = None


class Received:
    """What Faust hands the agent: an event whose ``message`` is the Kafka record."""

    def __init__(self, message: Any) -> None:
        self.message = message
