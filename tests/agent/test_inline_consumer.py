"""The worker's consumer hands a message over inline when nothing waits, and exactly
as Faust does otherwise (streams/consumer.py).

Faust's fetch loop calls ``consumer.wait_first(callback(message),
consumer.suspend_flow.wait())`` per message; these tests make that same call with
hand-offs that finish at once, wait, fail, or are overtaken by a rebalance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

from streams.app import create_app
from streams.consumer import InlineConsumer
from streams.settings import Settings


@pytest.fixture
async def consumer() -> InlineConsumer:
    # Built inside the test's running loop, as the worker builds it inside its own.
    app = create_app(Settings(store="memory://", clock="off", log_level="warn"))
    made = app.consumer  # built, not started: no broker needed
    assert isinstance(made, InlineConsumer)
    return made


async def test_a_hand_off_that_does_not_wait_runs_in_the_fetch_loop_task(
    consumer: InlineConsumer,
) -> None:
    ran_in: list[asyncio.Task[Any] | None] = []

    async def hand_off() -> str:
        ran_in.append(asyncio.current_task())
        return "delivered"

    tasks_before = len(asyncio.all_tasks())
    result = await consumer.wait_first(hand_off(), consumer.suspend_flow.wait())
    assert ran_in == [asyncio.current_task()]  # no task of its own
    assert result.results == ["delivered"] and not result.stopped
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_hand_off_that_waits_is_finished_under_fausts_wait_first(
    consumer: InlineConsumer,
) -> None:
    room = asyncio.Event()
    steps: list[str] = []

    async def hand_off() -> str:
        steps.append("started")
        await room.wait()  # a full queue
        steps.append("finished")
        return "delivered"

    waiting = asyncio.ensure_future(consumer.wait_first(hand_off(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert steps == ["started"] and not waiting.done()
    room.set()
    result = await asyncio.wait_for(waiting, 1)
    assert steps == ["started", "finished"]
    assert "delivered" in result.results


async def test_a_rebalance_abandons_a_hand_off_that_waits(consumer: InlineConsumer) -> None:
    seen: list[str] = []

    async def hand_off() -> None:
        try:
            await asyncio.Event().wait()  # flow control stopped: never resumes here
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    waiting = asyncio.ensure_future(consumer.wait_first(hand_off(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()  # what a rebalance does
    result = await asyncio.wait_for(waiting, 1)
    await asyncio.sleep(0)
    assert seen == ["cancelled"]
    assert len(result.results) == 1  # the flow event won, the hand-off did not finish


async def test_with_the_flow_suspended_the_hand_off_runs_as_faust_runs_it(
    consumer: InlineConsumer,
) -> None:
    ran_in: list[asyncio.Task[Any] | None] = []

    async def hand_off() -> None:
        ran_in.append(asyncio.current_task())

    consumer.suspend_flow.set()
    await consumer.wait_first(hand_off(), consumer.suspend_flow.wait())
    assert ran_in and ran_in[0] is not asyncio.current_task()


async def test_a_hand_off_that_fails_raises_in_the_fetch_loop(consumer: InlineConsumer) -> None:
    async def hand_off() -> None:
        raise ValueError("bad message")

    with pytest.raises(ValueError, match="bad message"):
        await consumer.wait_first(hand_off(), consumer.suspend_flow.wait())


async def test_other_calls_of_wait_first_are_left_to_faust(consumer: InlineConsumer) -> None:
    ran_in: list[asyncio.Task[Any] | None] = []
    other = asyncio.Event()

    async def work() -> None:
        ran_in.append(asyncio.current_task())

    await consumer.wait_first(work(), other.wait())
    assert ran_in and ran_in[0] is not asyncio.current_task()


async def test_table_recovery_seeking_before_a_log_starts_reads_it_from_its_start(
    consumer: InlineConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust's recovery once asked for an offset below -1; aiokafka raised ValueError and
    the worker died (a SIGKILL chaos run)."""
    asked: list[dict[TP, int]] = []

    async def seek_wait(self: Any, partitions: dict[TP, int]) -> None:
        asked.append(dict(partitions))

    monkeypatch.setattr(aiokafka_driver.Consumer, "seek_wait", seek_wait)
    changelog = TP("churnwatch-customers-changelog", 0)
    unknown = TP("churnwatch-customers-changelog", 2)
    other = TP("churnwatch-customers-changelog", 1)
    await consumer.seek_wait({changelog: -2, unknown: None, other: 57})
    assert asked == [{changelog: 0, unknown: 0, other: 57}]


class _Fetches:
    """Stands in for Kafka behind the fetch loop: each ``getmany`` is one fetch of
    the next listed batch of (topic partition, offset), counted as the consumer's
    own ``_getmany`` counts them (begun, then done); ``during`` runs while the
    first fetch is under way, as the main thread can while Faust's consumer thread
    fetches. The loop stops when the batches run out."""

    def __init__(
        self,
        consumer: InlineConsumer,
        batches: list[list[tuple[TP, int]]],
        during: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.consumer = consumer
        self.batches = batches
        self.during = during
        self.fetcher = SimpleNamespace(_stopped=asyncio.Event())

    async def fetch(self, active_partitions: Any, timeout: float) -> dict[TP, Any]:
        """Faust's ``_getmany``, under the consumer's own, which counts the fetches."""
        if self.during is not None:
            during, self.during = self.during, None
            await during()
        return {}

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        if not self.batches:
            self.fetcher._stopped.set()
            return
        batch = self.batches.pop(0)
        await self.consumer._getmany(None, timeout)  # Faust's part: self._fetch
        for tp, offset in batch:
            yield tp, SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset)


PURCHASES = TP("purchases", 0)
SIGNUPS = TP("signups", 0)


def _drive(
    consumer: InlineConsumer,
    monkeypatch: pytest.MonkeyPatch,
    batches: list[list[tuple[TP, int]]],
    on_delivery: Callable[[Any], Awaitable[None]] | None = None,
    during: Callable[[], Awaitable[None]] | None = None,
) -> tuple[_Fetches, list[tuple[TP, int]]]:
    delivered: list[tuple[TP, int]] = []
    fetches = _Fetches(consumer, batches, during)

    async def callback(message: Any) -> None:
        delivered.append((TP(message.topic, message.partition), message.offset))
        if on_delivery is not None:
            await on_delivery(message)

    async def _seek(partition: TP, offset: int) -> None:
        pass  # aiokafka's part: its own buffer and position

    monkeypatch.setattr(consumer, "getmany", fetches.getmany)
    monkeypatch.setattr(aiokafka_driver.Consumer, "_getmany", lambda self, *a: fetches.fetch(*a))
    monkeypatch.setattr(consumer, "callback", callback)
    monkeypatch.setattr(consumer, "_seek", _seek)
    return fetches, delivered


async def test_records_fetched_before_a_seek_are_not_handed_over(
    consumer: InlineConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent seeks purchases back to 5 on reading 7; the rest of that fetch (8, 9)
    is not handed over, nor does it move the read offset or mark 6..9 acknowledged;
    the next fetch, from 5, is handed over whole. Faust's loop delivered 8 and 9 and
    then dropped 5..9 below its read offset."""

    async def seek_back(message: Any) -> None:
        if message.topic == "purchases" and message.offset == 7 and not consumer.landed:
            await consumer.seek(PURCHASES, 5)

    stale = [(PURCHASES, 6), (PURCHASES, 7), (SIGNUPS, 3), (PURCHASES, 8), (PURCHASES, 9)]
    fresh = [(PURCHASES, o) for o in range(5, 11)]
    fetches, delivered = _drive(consumer, monkeypatch, [stale, fresh], seek_back)
    await consumer._drain_messages(fetches.fetcher)
    assert delivered == [(PURCHASES, 6), (PURCHASES, 7), (SIGNUPS, 3), *fresh]
    assert consumer.landed == {PURCHASES: (5, 5)}
    assert not consumer._gap.get(PURCHASES)
    assert consumer._read_offset[PURCHASES] == 10


async def test_a_seek_landing_past_the_sought_offset_shows_where_the_log_resumes(
    consumer: InlineConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records deleted by retention, transaction markers: the first record fetched
    after seeking to 5 is 8, so the log holds nothing at 5..7."""
    fetches, delivered = _drive(consumer, monkeypatch, [[(PURCHASES, 8), (PURCHASES, 9)]])
    await consumer.seek(PURCHASES, 5)
    await consumer._drain_messages(fetches.fetcher)
    assert delivered == [(PURCHASES, 8), (PURCHASES, 9)]
    assert consumer.landed == {PURCHASES: (5, 8)}


async def test_a_fetch_under_way_during_a_seek_is_no_landing_and_is_sought_again(
    consumer: InlineConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGKILL chaos pass: Faust's consumer thread was fetching on from 6368 when
    the agent sought purchases back to 5786; counted at its end, that fetch counted
    as after the seek, its first record was taken for where the log resumes, and
    5786..6367 (582 purchases) were read past as absent. Now its records are not
    handed over, say nothing of a landing, and the partition is sought to 5786
    again before the next fetch, which is handed over whole."""
    sought: list[tuple[TP, int]] = []
    real_seek = consumer.seek

    async def seek(partition: TP, offset: int) -> None:
        sought.append((partition, offset))
        await real_seek(partition, offset)

    async def agent_seeks_back() -> None:
        await consumer.seek(PURCHASES, 5786)

    monkeypatch.setattr(consumer, "seek", seek)
    on_old_position = [(PURCHASES, 6368), (PURCHASES, 6369), (SIGNUPS, 3)]
    again = [(PURCHASES, o) for o in range(5786, 5790)]
    fetches, delivered = _drive(
        consumer, monkeypatch, [on_old_position, again], during=agent_seeks_back
    )
    await consumer._drain_messages(fetches.fetcher)
    assert delivered == [(SIGNUPS, 3), *again]
    assert sought == [(PURCHASES, 5786), (PURCHASES, 5786)]
    assert consumer.landed == {PURCHASES: (5786, 5786)}
    assert consumer._read_offset[PURCHASES] == 5789


async def test_fausts_own_seek_or_a_revocation_cancels_a_pending_seek(
    consumer: InlineConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After Faust seeks to the committed offsets, or the partition goes, what is
    fetched is no longer measured against the agent's seek."""

    async def committed(self: Any) -> dict[TP, int]:
        return {}

    monkeypatch.setattr(aiokafka_driver.Consumer, "seek_to_committed", committed)
    monkeypatch.setattr(consumer, "assignment", lambda: {PURCHASES})
    fetches, delivered = _drive(consumer, monkeypatch, [[(PURCHASES, 9)]])
    await consumer.seek(PURCHASES, 5)
    await consumer.seek(SIGNUPS, 2)
    await consumer.seek_to_committed()
    assert set(consumer._sought) == {SIGNUPS}
    await consumer._drain_messages(fetches.fetcher)
    assert delivered == [(PURCHASES, 9)] and consumer.landed == {}


@pytest.mark.parametrize("accepted", [True, False])
async def test_a_commit_the_broker_refused_is_not_taken_as_done(
    consumer: InlineConsumer, monkeypatch: pytest.MonkeyPatch, accepted: bool
) -> None:
    """Faust recorded refused commits as done; with no newer input, nothing committed
    the partition again (a SIGKILL chaos run: lag stuck at 68 for 600 s)."""
    cancellations = TP("customer.cancellations", 3)

    async def flush() -> None:
        pass

    async def commit(offsets: Any) -> bool:
        return accepted  # False: "the group has already rebalanced"

    monkeypatch.setattr(consumer, "assignment", lambda: {cancellations})
    monkeypatch.setattr(consumer.app.producer, "flush", flush)
    monkeypatch.setattr(consumer, "_commit", commit)
    consumer._committed_offset[cancellations] = 40
    assert await consumer._commit_offsets({cancellations: 68}) is accepted
    assert consumer._committed_offset.get(cancellations) == (68 if accepted else None)
