"""Faust's Kafka consumer with five changes: the agent's input comes as one message
per fetched record batch of a topic partition; each message is handed to the
streams inline when nothing has to wait; a seek takes effect for what the fetch loop still
holds; a seek before the start of a log goes to its start instead of crashing the
worker; and a commit the broker refused is not taken as done.

Faust's fetch loop hands every message over through ``Service.wait_first(callback,
suspend_flow.wait())``: four asyncio tasks (the hand-off, the flow event, the
service's stopped and crashed events) and an ``asyncio.wait`` per message, so that a
rebalance can abandon a hand-off that blocks. Measured here, that machinery is most
of what a do-nothing Faust agent costs per event (see README, Performance). The
hand-off almost never blocks: it takes the flow-control lock, checks the producer
buffer, decodes nothing (the topics are raw bytes) and puts the event on a queue
with room. So it is first run inline, to its first suspension: when it finishes
there, as it nearly always does, the message was delivered exactly as Faust would
have, without a task. When it does suspend (flow stopped, a full queue, a full
producer buffer), the rest of it runs under Faust's own ``wait_first``, which a
rebalance can interrupt as before. A ``sleep(0)`` after each inline hand-off lets
the agent take the event before the next one, as the tasks did.

A seek did not reliably take effect. aiokafka drops what it had fetched for the
partition, but Faust's fetch loop goes on handing over the batch it already holds,
moves its read offset past the sought one, marks the offsets it jumped over as
acknowledged (a "gap"), and then drops the records read again below that read offset
("DROPPED MESSAGE ROFF"). The agent seeks back to re-read what it must apply next
(processor/positions.py), so such a seek lost records in chaos runs. Here, after a seek
on a topic partition, the fetch loop hands over nothing of it from a fetch begun
before the seek (Faust fetches on its consumer thread, so a fetch can be under way
while the agent seeks; the partition is then sought again), and the first record of
a fetch begun after it tells where the log really resumes (``landed``): the sought
offset, or the next one the log holds.

Faust creates a Message, an Event, an acknowledgement and several awaits per
record; for a do-nothing agent that is most of its cost (the floor in
bench/pipeline.py). For the topics named in ``batched_topics`` (the customer
agent's input), ``getmany`` hands over each fetched run of a topic partition's
records, up to ``batch_records`` of them, as one ``RecordBatch``: a Faust message
whose offset is its last record's and whose ``records`` are the records
(``processor.ports.Record``). Acknowledging it acknowledges every offset from its
first record to its last (``ack``), so Faust's commits, flow control and
rebalances work on it as on any message. Other topics (the tables' changelogs)
are handed over record by record, as before.

Faust internals: this module subclasses Faust's aiokafka driver and overrides its
private methods (``_drain_messages``, ``_commit_offsets``, ``_getmany``, and
``getmany`` after ``faust.transport.consumer.Consumer.getmany``; it reads
``_committed_offset``, ``_read_offset``, ``_n_acked``, ``_buffered_partitions``,
``_wait_next_records``, ``_add_gap``). Written against
faust-streaming 0.15.3 and aiokafka 0.14, as agents/delivery.py is, the only other
module that touches them: re-read both against a new version.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Coroutine, Generator, Iterable, Mapping
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message
from faust.types.tuples import ConsumerMessage
from mode.services import WaitResults

from processor.ports import Record

#: Most records of one topic partition handed over as one message.
BATCH_RECORDS = 100


def batches_per_take(batch_max: int) -> int:
    """How many record batches a ``take_events`` takes for at most ``batch_max``
    records (rounded up to whole record batches)."""
    return max(1, -(-batch_max // BATCH_RECORDS))


class RecordBatch(ConsumerMessage):
    """Records of one topic partition from one fetch, handed to the streams as one
    message: its offset is the last record's, ``records`` the records in order."""

    __slots__ = ("records",)

    records: list[Record]


class _Resume:
    """Awaitable that drives a coroutine on from the suspension where ``send`` left it,
    forwarding results, errors and cancellation, as awaiting it would have."""

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        pending = self.pending
        while True:
            try:
                value = yield pending
            except BaseException as exc:  # cancellation included: the coroutine decides
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                pending = coro.send(value)
            except StopIteration as stop:
                return stop.value


class InlineConsumer(aiokafka_driver.Consumer):
    """The aiokafka driver's consumer, handing messages over inline when it can, with
    seeks that take effect at once."""

    #: Fetches started (``_getmany``), and the number of the last one completed, whose
    #: records the fetch loop is handing over. A record of fetch n was fetched after
    #: every seek made while fewer than n had started. Faust runs aiokafka's fetch on
    #: its consumer thread, while the agent seeks from the main one: counted at their
    #: completion, a fetch under way when the seek was made counted as after it, so
    #: its records, which continue the old position, were taken for where the log
    #: resumes (a SIGKILL chaos pass lost 582 purchases: seek to 5786, "landed" at
    #: 6368, 5786..6367 read past as absent from the log).
    _fetches: int = 0
    _fetched: int = 0

    #: Topics whose records are handed over as record batches (set by the app).
    batched_topics: frozenset[str] = frozenset()
    #: Most records in one record batch: Faust's per-message cost, paid once for them.
    batch_records: int = BATCH_RECORDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Per topic partition sought by ``seek``: the offset, and ``_fetches`` then.
        self._sought: dict[TP, tuple[int, int]] = {}
        #: Per topic partition, the last seek that took effect: (the offset sought,
        #: the offset of the first record fetched after it).
        self.landed: dict[TP, tuple[int, int]] = {}
        #: Topic partitions of which a fetch begun before their seek brought records:
        #: that fetch may have moved aiokafka's position on, so they are sought again.
        self._seek_again: set[TP] = set()
        self.batched_topics = frozenset(getattr(self.app, "batched_topics", ()))

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        self._sought[partition] = (offset, self._fetches)
        self.landed.pop(partition, None)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        self._forget(self.assignment())  # Faust's own seek supersedes the agent's
        return await super().seek_to_committed()

    async def _commit_offsets(
        self, offsets: Mapping[TP, int], start_new_transaction: bool = True
    ) -> bool:
        """Faust's commit, except that a commit the broker refused is not taken as done.

        Faust records the offsets as committed whether or not the commit went
        through (a commit refused because the group was rebalancing returns False).
        Believing a partition committed to its end, nothing committed it again when
        no newer input came: a SIGKILL chaos run ended with one partition's whole
        log (68 cancellations) uncommitted and the group's lag stuck for 600 s. A
        refused commit now leaves the partition with no committed offset known, so
        the agent's settle timer commits it again (``CustomerBatch.settled``), and
        Faust's next commit is not held back by the offsets it had acknowledged.
        """
        did_commit = await super()._commit_offsets(offsets, start_new_transaction)
        if not did_commit:
            for tp in offsets:
                self._committed_offset.pop(tp, None)
        return bool(did_commit)

    def ack(self, message: Message) -> bool:
        """Faust's acknowledgement; a record batch's acknowledges every offset from its
        first record to its last (offsets the log does not hold between them too),
        each as Faust acknowledges one message (once, and only above the committed
        offset), and only then: marked at the fetch, as a gap, they would count as
        done before the batch was."""
        first_time = not message.acked
        done = bool(super().ack(message))
        if not (first_time and isinstance(message, RecordBatch)):
            return done
        if not self.app.topics.acks_enabled_for(message.topic):
            return done
        tp = message.tp
        committed = self._committed_offset[tp]
        index = self._acked_index[tp]
        within = [
            o
            for o in range(message.records[0].offset, message.offset)
            if o not in index and (committed is None or o > committed)
        ]
        if within:
            self._acked[tp].extend(within)
            index.update(within)
        return done or bool(within)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._forget(revoked)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        # A new assignment resets positions (to the committed offsets): a seek made
        # before it, even after the revocation, no longer says where reading resumes.
        self._forget(assigned)
        await super().on_partitions_assigned(assigned, generation_id)

    def _forget(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self._sought.pop(tp, None)
            self.landed.pop(tp, None)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        self._fetches += 1
        number = self._fetches
        records = await super()._getmany(active_partitions, timeout)
        self._fetched = number
        return records

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """Faust's ``getmany`` (faust-streaming 0.15), except that the records of a
        topic in ``batched_topics`` come as record batches, one topic partition's
        fetched run at a time; the others, record by record in Faust's round-robin."""
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            try:
                await self.perform_seek()
            except Exception as ex:
                self.log.warning(f"exception performing seek when flow not active {ex}")
            return
        singles: dict[TP, Any] = {}
        for tp, fetched in records.items():
            if not self._deliverable(tp, generation_id, active_partitions):
                continue
            if tp.topic not in self.batched_topics:
                singles[tp] = fetched
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            size = self.batch_records
            for start in range(0, len(fetched), size):
                if not self._deliverable(tp, generation_id, active_partitions):
                    return
                yield tp, self._to_batch(tp, fetched[start : start + size], generation_id)
        for tp, record in self.scheduler.iterate(singles):
            if not self._deliverable(tp, generation_id, active_partitions):
                break
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            yield tp, self._to_message(tp, record)

    def _deliverable(self, tp: TP, generation_id: int, active: Any) -> bool:
        """Faust's checks before handing a fetched record over: the flow is on, no
        rebalance began since the fetch, and the partition is active (or buffered)."""
        return (
            self.flow_active
            and self.app.consumer_generation_id == generation_id
            and (active is None or tp in active or tp in self._buffered_partitions)
        )

    def _to_batch(self, tp: TP, fetched: list[Any], generation_id: int) -> RecordBatch:
        topic, partition = tp
        records = [
            Record(
                topic,
                partition,
                r.offset,
                r.key,
                r.value,
                None if r.timestamp is None else r.timestamp / 1000.0,
            )
            for r in fetched
        ]
        last = fetched[-1]
        batch = RecordBatch(
            topic,
            partition,
            last.offset,
            cast(float, records[-1].timestamp),
            last.timestamp_type,
            last.headers,
            None,
            b"",
            None,
            0,
            sum(r.serialized_value_size or 0 for r in fetched),
            tp,
            generation_id=generation_id,
        )
        batch.records = records
        return batch

    def _stale(self, tp: TP, message: Message, fetch: int) -> bool:
        """Whether ``message``, of fetch number ``fetch``, may have been fetched before
        a seek on its partition (its fetch began before the seek); the first record
        of a fetch begun after one records where it landed."""
        sought = self._sought.get(tp)
        if sought is None:
            return False
        offset, at = sought
        if fetch <= at:
            # Fetched before the seek, or while it was being made, from either
            # position: not handed over, and the partition is sought again, since
            # aiokafka counts what it fetched as consumed.
            self._seek_again.add(tp)
            return True
        del self._sought[tp]
        self.landed[tp] = (offset, _first_offset(message))
        return False

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's fetch loop (``faust.transport.consumer.Consumer._drain_messages``,
        faust-streaming 0.15) with one change: records of a partition fetched before
        a seek on it are not handed over, do not move its read offset and do not
        mark a gap. A record whose hand-off a seek overtook was handed over already;
        the agent, which checks every offset against its state, leaves it.
        """
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offsets = self._read_offset
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                ait: AsyncIterator[tuple[TP, Message]] = self.getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        since_yield += 1
                        if since_yield > 100:
                            await asyncio.sleep(0)
                            since_yield = 0
                        fetch = self._fetched
                        if self._stale(tp, message, fetch):
                            continue
                        r_offset = read_offsets[tp]
                        if isinstance(message, RecordBatch) and not _unread(message, r_offset):
                            self.log.dev("DROPPED RECORD BATCH ROFF %r", message.offset)
                            continue
                        offset = message.offset
                        if r_offset is None or offset >= r_offset:
                            # Offsets jumped over before the message (a record batch's
                            # own are acknowledged with it, ``ack``).
                            first = _first_offset(message)
                            gap = first - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, first)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                            if self._stale(tp, message, fetch):
                                continue  # sought during the hand-off
                            read_offsets[tp] = offset
                        else:
                            self.log.dev("DROPPED MESSAGE ROFF %r", offset)
                    await self._seek_stale_again()
                    self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _seek_stale_again(self) -> None:
        """Seek again, before the next fetch begins, each partition of which a fetch
        begun before its seek brought records, to the offset it was sought to."""
        again, self._seek_again = self._seek_again, set()
        for tp in again:
            sought = self._sought.get(tp)
            if sought is not None:
                try:
                    await self.seek(tp, sought[0])
                except Exception as exc:  # revoked meanwhile: its new owner reads it
                    self.log.warning(f"could not seek {tp} again to {sought[0]}: {exc!r}")

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if len(coros) != 2 or timeout is not None or not self._is_hand_off(*coros):
            return await super().wait_first(*coros, timeout=timeout)
        hand_off, flow_stopped = coros
        if self.suspend_flow.is_set() or self.should_stop:
            return await super().wait_first(hand_off, flow_stopped)
        try:
            pending = hand_off.send(None)
        except StopIteration as stop:
            flow_stopped.close()
            await asyncio.sleep(0)
            return WaitResults([hand_off], [stop.value], False)
        except BaseException:
            flow_stopped.close()
            raise
        return await super().wait_first(_Resume(hand_off, pending), flow_stopped)

    async def seek_wait(self, partitions: Mapping[TP, int | None]) -> None:
        """Faust's table recovery seeks the changelog to where it last read, and maps
        -1 (nothing read) to 0, but can ask for less (its offsets start from the
        earliest offset minus one; a SIGKILL chaos run got one below -1). aiokafka
        raises ValueError for a negative offset, which ended recovery and the
        worker. It can also ask for None (no offset known: the same ValueError, in
        another SIGKILL run). Before the start of the log, or nowhere, is its start."""
        await super().seek_wait(
            {tp: 0 if offset is None or offset < 0 else offset for tp, offset in partitions.items()}
        )

    def _is_hand_off(self, hand_off: Any, flow_stopped: Any) -> bool:
        """Whether this is the fetch loop's call: a message's hand-off raced against
        ``self.suspend_flow.wait()``, neither started yet."""
        return (
            inspect.iscoroutine(hand_off)
            and inspect.iscoroutine(flow_stopped)
            and inspect.getcoroutinestate(hand_off) == inspect.CORO_CREATED
            and inspect.getcoroutinestate(flow_stopped) == inspect.CORO_CREATED
            and flow_stopped.cr_frame is not None
            and flow_stopped.cr_frame.f_locals.get("self") is self.suspend_flow
        )


def _first_offset(message: Message) -> int:
    return message.records[0].offset if isinstance(message, RecordBatch) else message.offset


def _unread(batch: RecordBatch, r_offset: int | None) -> bool:
    """Keep the records of ``batch`` Faust would hand over (at or past its read offset,
    as for single messages); whether any are left."""
    if r_offset is not None and batch.records[0].offset < r_offset:
        batch.records = [r for r in batch.records if r.offset >= r_offset]
    return bool(batch.records)


class InlineTransport(aiokafka_driver.Transport):
    Consumer = InlineConsumer
