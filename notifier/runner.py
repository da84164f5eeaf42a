"""The notifier's Kafka side: its own consumer group on ``churnwatch.alerts``, the
state and dead-letter topics, and the offset commits.

At least once, and never slowing the workers: the notifier is only another
consumer group of the alerts topic, with auto-commit off. A record's offset is
committed only when the record is finished for every destination (notifier/
offsets.py), so a SIGKILL at any instant loses nothing: a restart reads again from
the first unfinished record, and a receiver sees at most repeats, each under the
same ``Idempotency-Key``. A dead endpoint holds up only its own records' commits;
after ``max_attempts`` their alerts go to the dead-letter topic and the commits
move on.

Run one notifier per configuration: the daily capacity is counted in one process
(notifier/ledger.py). A second one in the same group would take some partitions
and count its own capacity; the notifier logs a warning when it is not assigned
every partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from notifier import metrics
from notifier.capacity import day_of
from notifier.config import Config
from notifier.delivery import Attempt, attempt
from notifier.destination import DestinationWorker, Source, Ticket, from_source
from notifier.formats import Request
from notifier.ledger import Ledger, StateRecord
from notifier.offsets import Offsets
from schemas.alert import AlertRecord
from schemas.notify import NotifyDeadLetter
from streams.kafka_admin import PartitionCountError, create_topics, read_latest_by_key
from streams.security import ClientSecurity, client_kwargs

log = logging.getLogger("churnwatch.notify")

COMMIT_INTERVAL: Final = 1.0
#: Seconds a stopping notifier waits for deliveries under way before it commits
#: what is finished and exits (the rest is read again at the next start).
SHUTDOWN_GRACE: Final = 10.0
#: Seconds between deletions of expired ledger entries by a long-running notifier.
EXPIRY_INTERVAL: Final = 3600.0
_DECODER = msgspec.json.Decoder(AlertRecord)
_ENCODER = msgspec.json.Encoder()


class KafkaPorts:
    """Writes to the state and dead-letter topics, retried until acknowledged: a
    record is finished only once what it left behind is durable."""

    def __init__(self, producer: AIOKafkaProducer, config: Config) -> None:
        self.producer = producer
        self.config = config

    async def write_state(self, records: list[StateRecord]) -> None:
        await self._send(self.config.state_topic, records)

    async def dead_letter(self, letter: NotifyDeadLetter) -> None:
        key = None if letter.idempotency_key is None else letter.idempotency_key.encode()
        await self._send(self.config.dead_letter_topic, [(key, _ENCODER.encode(letter))])

    async def _send(self, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        wanted = list(records)
        delay = 0.5
        while True:
            try:
                sent = [await self.producer.send(topic, key=k, value=v) for k, v in wanted]
                await asyncio.gather(*sent)
                return
            except KafkaError as exc:
                log.warning("writing to %s failed, retrying in %.1f s: %r", topic, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.notifier.commit()
        self.notifier.offsets.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.notifier.assigned(assigned)


class Notifier:
    def __init__(
        self, config: Config, bootstrap: str, security: ClientSecurity, replication: int = 1
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.security = security
        #: Replication factor of the state and dead-letter topics, if this creates them.
        self.replication = replication
        self._background: set[asyncio.Future[None]] = set()
        self.ledger = Ledger()
        self.offsets: Offsets[TopicPartition] = Offsets()
        #: Per partition, how many times it was assigned: a ticket of an earlier
        #: assignment must not finish an offset read again in a later one.
        self._epoch: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.workers: list[DestinationWorker] = []
        #: Set whenever a record finishes (waits for room or for a drain watch it).
        self._finished = asyncio.Event()

    # -- start and stop --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        config = self.config
        await self._prepare_topics()
        self.ledger.load(
            await read_latest_by_key(self.bootstrap, config.state_topic, security=self.security)
        )
        log.info("ledger: %d episodes told", len(self.ledger))
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", **client_kwargs(self.security)
        )
        await producer.start()
        session = aiohttp.ClientSession()
        try:
            ports = KafkaPorts(producer, config)
            await self._expire(ports)

            async def post(url: str, request: Request, timeout: float) -> Attempt:
                return await attempt(session, url, request, timeout)

            self.workers = [
                DestinationWorker(d, config, self.ledger, ports, post) for d in config.destinations
            ]
            for worker in self.workers:
                worker.start()
            await self._consume(ports, stop)
        finally:
            for worker in self.workers:
                await worker.stop()
            await session.close()
            await producer.stop()

    async def _prepare_topics(self) -> None:
        config = self.config
        wanted = {config.dead_letter_topic: 1, config.state_topic: 1}
        compact = {config.state_topic: {"cleanup.policy": "compact"}}
        for topic, count in wanted.items():
            # One made by an operator with another partition count serves as well.
            with contextlib.suppress(PartitionCountError):
                await create_topics(
                    self.bootstrap,
                    {topic: count},
                    config=compact,
                    replication=self.replication,
                    security=self.security,
                )

    async def _consume(self, ports: KafkaPorts, stop: asyncio.Event) -> None:
        config = self.config
        consumer = self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=config.group_id,
            enable_auto_commit=False,
            auto_offset_reset=config.start,
            **client_kwargs(self.security),
        )
        consumer.subscribe([config.topic], listener=_Rebalance(self))
        await consumer.start()
        committer = asyncio.create_task(self._commit_every(COMMIT_INTERVAL, ports))
        try:
            while not stop.is_set():
                self._throttle(consumer)
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                for tp, records in batches.items():
                    for record in records:
                        if stop.is_set():
                            break  # read again at the next start: nothing was decided
                        self._take(tp, record, ports)
            await self._drain()
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            await self.commit()
            await consumer.stop()

    def _throttle(self, consumer: AIOKafkaConsumer) -> None:
        """Pause fetching while ``max_in_flight`` records are unfinished (a dead
        endpoint retrying), resume below it. The loop keeps polling meanwhile, so the
        consumer stays in its group (``max_poll_interval_ms``) however long it waits."""
        full = self.offsets.pending() >= self.config.max_in_flight
        owned = consumer.assignment()
        if full:
            consumer.pause(*owned)
        else:
            consumer.resume(*(consumer.paused() & owned))

    async def _progress(self, timeout: float) -> None:
        """Until a record finishes, or ``timeout`` seconds."""
        self._finished.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._finished.wait(), timeout)

    async def _drain(self) -> None:
        """Give deliveries under way ``SHUTDOWN_GRACE`` seconds to finish. Openings held
        in a ranking window are left: they are read and ranked again at the next start."""
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while not all(w.queued == 0 for w in self.workers) and time.monotonic() < deadline:
            await self._progress(0.1)

    # -- records ---------------------------------------------------------------------------

    def _take(self, tp: TopicPartition, record: Any, ports: KafkaPorts) -> None:
        self.offsets.read(tp, record.offset)
        epoch = self._epoch.get(tp, 0)

        def finished(ticket: Ticket) -> None:
            if self._epoch.get(tp, 0) == epoch:
                self.offsets.finish(tp, ticket.offset)
            self._finished.set()
            metrics.IN_FLIGHT.set(self.offsets.pending())

        ticket = Ticket(tp, record.offset, finished)
        source = Source(tp.topic, tp.partition, record.offset, record.key, record.value or b"")
        metrics.IN_FLIGHT.set(self.offsets.pending())
        try:
            alert = _DECODER.decode(source.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            metrics.UNDECODABLE.inc()
            log.warning("%s[%d]@%d is not an alert record: %s", *source_at(source), exc)
            letter = from_source(source, None, "undecodable", str(exc)[:300], 0, None)
            ticket.hold()
            task = asyncio.ensure_future(ports.dead_letter(letter))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            task.add_done_callback(lambda _: ticket.release())
        else:
            for worker in self.workers:
                worker.offer(alert, source, ticket)
        ticket.release()

    # -- offsets ---------------------------------------------------------------------------

    def assigned(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._epoch[tp] = self._epoch.get(tp, 0) + 1
        consumer = self.consumer
        every = consumer.partitions_for_topic(self.config.topic) if consumer else None
        if every and len(partitions) < len(every):
            log.warning(
                "assigned %d of the %d partitions of %s: is another notifier running in "
                "group %s? Each counts its own daily capacity.",
                len(partitions),
                len(every),
                self.config.topic,
                self.config.group_id,
            )

    async def _commit_every(self, interval: float, ports: KafkaPorts) -> None:
        last_expiry = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            await self.commit()
            if time.monotonic() - last_expiry > EXPIRY_INTERVAL:
                last_expiry = time.monotonic()
                await self._expire(ports)

    async def _expire(self, ports: KafkaPorts) -> None:
        """Delete ledger entries past their keeping time (notifier/ledger.py)."""
        expired = self.ledger.expire(day_of(datetime.now(UTC), self.config.timezone))
        if expired:
            await ports.write_state(expired)

    async def commit(self) -> None:
        """Commit, for each partition assigned, the first record not finished."""
        consumer = self.consumer
        if consumer is None:
            return
        owned = consumer.assignment()
        due = {
            tp: offset
            for tp, offset in self.offsets.committable().items()
            if tp in owned and self._committed.get(tp) != offset
        }
        if not due:
            return
        try:
            await consumer.commit(due)
        except KafkaError as exc:  # a rebalance under way: the next commit catches up
            log.warning("commit failed: %r", exc)
            return
        self._committed.update(due)


def source_at(source: Source) -> tuple[str, int, int]:
    return source.topic, source.partition, source.offset
