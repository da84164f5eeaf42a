"""A message read past a gap in its topic's offsets is not applied before the gap.

The partition record holds the last offset applied per topic. A consumer can hand the
agent a later message without the ones before it: Faust acknowledges what its stream
skips during a rebalance, and a stale fetch can come in ahead of a seek (a scale
chaos run read purchases[3] 8597, then 8599, and lost a purchase for good: read
later, 8598 looked like a redelivery). These tests drive the agent's batch logic
with a consumer that loses a message on the way, and hold the end state to a run
that lost nothing.
"""

from __future__ import annotations

import bisect
import logging
import random
from collections import defaultdict

import pytest
from faust.types import TP

import processor.positions
from processor.partition import decode_partition
from retention.timeutil import parse_time
from streams import topics
from streams.inputs import Record
from streams.partitions import partition_state_key
from tests.agent.test_alignment import read_in_chunks
from tests.inprocess import Received, Run, generated_history

AS_OF = parse_time("2025-07-01T00:00:00Z")
BATCH = 100
STATE = partition_state_key(0)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    records = generated_history(tmp_path_factory.mktemp("gaps"), 150, 150, 29, AS_OF)
    return read_in_chunks(records, 60, random.Random(3))


class Consumer:
    """One partition's topics read in the order of ``read_in_chunks``, with a position
    per topic that the agent's seeks move. Messages in ``lose`` are passed over the
    first time, as a stream that skips a message would; those in ``absent`` are not
    in the log at all (transaction markers, records deleted by retention). With
    ``seeks_work`` false, the agent's seeks never take effect."""

    def __init__(
        self,
        messages: list[Received],
        lose: set[tuple[str, int]],
        absent: set[tuple[str, int]],
        seeks_work: bool = True,
        stale_landing: bool = False,
        lost_seeks: int = 0,
    ) -> None:
        self.stale_landing = stale_landing
        self.lost_seeks = lost_seeks
        self.logs: dict[str, list[Received]] = defaultdict(list)
        for m in messages:
            if (m.message.topic, m.message.offset) not in absent:
                self.logs[m.message.topic].append(m)
        self.order = [m.message.topic for m in messages]
        self.position = dict.fromkeys(self.logs, 0)
        self.lose = set(lose)
        self.seeks_work = seeks_work
        self.sought: list[tuple[str, int]] = []
        self.landed: dict[TP, tuple[int, int]] = {}

    def next_batch(self, size: int) -> list[Received]:
        out: list[Received] = []
        while len(out) < size:
            topic = self._next_topic()
            if topic is None:
                break
            message = self.logs[topic][self.position[topic]]
            self.position[topic] += 1
            key = (topic, message.message.offset)
            if key in self.lose:
                self.lose.discard(key)
                continue
            out.append(message)
        return out

    def _next_topic(self) -> str | None:
        while self.order:
            topic = self.order.pop(0)
            if topic in self.logs and self.position[topic] < len(self.logs[topic]):
                return topic
        # The schedule is used up (seeks move positions back): whatever is left.
        return next((t for t, log in self.logs.items() if self.position[t] < len(log)), None)

    def seek(self, topic: str, offset: int) -> None:
        """Move the topic's position; as churnwatch's consumer does, tell where the
        log resumes (``landed``) once the first record after the seek is fetched,
        which here is at once."""
        self.sought.append((topic, offset))
        if self.lost_seeks:
            # Overtaken by a fetch under way: the position stays where it was.
            self.lost_seeks -= 1
            return
        if self.stale_landing:
            # A rebalance resets the position to the committed offset, beyond records
            # still on their way, and the first record fetched lies past both.
            self.stale_landing = False
            offsets = [m.message.offset for m in self.logs[topic]]
            self.landed[TP(topic, 0)] = (offset, offsets[self.position[topic] + 20])
            return
        if self.seeks_work:
            offsets = [m.message.offset for m in self.logs[topic]]
            self.position[topic] = bisect.bisect_left(offsets, offset)
            if self.position[topic] < len(offsets):
                self.landed[TP(topic, 0)] = (offset, offsets[self.position[topic]])


def drive(
    history: list[Record],
    lose: set[tuple[str, int]],
    absent: set[tuple[str, int]] = frozenset(),  # type: ignore[assignment]
    seeks_work: bool = True,
    landed: bool = True,
    stale_landing: bool = False,
    lost_seeks: int = 0,
    idle_timer: bool = False,
) -> tuple[Run, Consumer]:
    """Feed the agent's batch logic what ``Consumer`` reads, carrying out its seeks;
    with ``idle_timer``, once nothing is left to read, the agent's idle-gap timer
    runs (``CustomerBatch.idle_gaps``) and reading goes on if it asked for seeks."""
    run = Run(history, AS_OF)
    messages = [run.message(r.topic, r.key, r.value) for r in history]
    consumer = Consumer(messages, lose, set(absent), seeks_work, stale_landing, lost_seeks)
    run.consumer.landings = consumer.landed if landed else {}
    for _ in range(10 * len(messages)):
        batch = consumer.next_batch(BATCH)
        if batch:
            run.batch.process(batch)
        elif not (idle_timer and run.batch.idle_gaps()):
            break
        seeks, run.batch.positions.seeks = run.batch.positions.seeks, {}
        for tp, offset in seeks.items():
            consumer.seek(tp.topic, offset)
    run.feed([], [1], random.Random(0))  # the final tick
    return run, consumer


def figures(run: Run) -> dict[str, int]:
    state = decode_partition(run.table[STATE])
    return {f: getattr(state, f) for f in ("consumed", "valid", "duplicates", "pending")}


@pytest.fixture(scope="module")
def reference(history: list[Record]) -> Run:
    return drive(history, set())[0]


def _purchase(history: list[Record], nth: int) -> tuple[str, int]:
    """The ``nth`` purchase: its offset in the purchases topic."""
    assert sum(r.topic == topics.PURCHASES for r in history) > nth
    return topics.PURCHASES, nth


@pytest.mark.parametrize("nth", [0, 1, 250, 600])
def test_a_message_lost_on_the_way_is_read_again_before_anything_after_it(
    history: list[Record], reference: Run, nth: int, caplog: pytest.LogCaptureFixture
) -> None:
    lost = _purchase(history, nth)
    with caplog.at_level(logging.WARNING, logger="processor.positions"):
        run, consumer = drive(history, {lost})
    assert figures(run) == figures(reference)
    assert lost in consumer.sought
    assert not any("records skipped" in r.getMessage() for r in caplog.records)
    assert run.customers() == reference.customers()
    assert run.alerts() == reference.alerts()


def test_offsets_absent_from_the_log_are_read_past_once_a_seek_lands_beyond_them(
    history: list[Record], reference: Run, caplog: pytest.LogCaptureFixture
) -> None:
    """Records deleted by retention are never read: the agent reads the topic again
    from the gap, and once the consumer shows the log resumes past it, goes on."""
    absent = _purchase(history, 250)
    with caplog.at_level(logging.WARNING, logger="processor.positions"):
        run, consumer = drive(history, set(), {absent})
    assert consumer.sought == [absent]
    assert any("are not in the log" in r.getMessage() for r in caplog.records)
    got, want = figures(run), figures(reference)
    assert got["consumed"] == want["consumed"] - 1
    assert got["pending"] == 0


def test_a_gap_is_not_read_past_on_coming_back_past_it(
    history: list[Record], reference: Run
) -> None:
    """Coming back past the gap is no proof the log lacks it (a seek to a committed
    offset beyond it does the same): without the consumer's word the topic stays
    held until GAP_SECONDS."""
    absent = _purchase(history, 250)
    run, consumer = drive(history, set(), {absent}, landed=False)
    state = decode_partition(run.table[STATE])
    assert state.offsets[topics.PURCHASES] == absent[1] - 1
    assert consumer.sought and set(consumer.sought) == {absent}


def test_a_seek_landing_on_the_gap_is_no_proof_it_is_absent(
    history: list[Record], reference: Run
) -> None:
    """The consumer fetched the sought offset itself: whatever came past it is a
    stale read, and the topic waits for the gap's record."""
    lost = _purchase(history, 250)
    run, consumer = drive(history, {lost})
    assert consumer.landed[TP(topics.PURCHASES, 0)] == (lost[1], lost[1])
    assert figures(run) == figures(reference)


def test_a_seek_that_never_takes_effect_does_not_stall_the_partition(
    history: list[Record],
    reference: Run,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Reading again is asked every GAP_SEEK_EVERY; after GAP_SECONDS the agent goes
    on past the gap, with an error, rather than hold the topic for good (what it
    dropped waiting for the seek is lost then, which only a broken seek can cause)."""
    monkeypatch.setattr(processor.positions, "GAP_SECONDS", 0.0)
    lost = _purchase(history, 250)
    with caplog.at_level(logging.WARNING, logger="processor.positions"):
        run, consumer = drive(history, {lost}, seeks_work=False)
    assert consumer.sought == [lost]
    assert any("not read again" in r.getMessage() for r in caplog.records)
    state = decode_partition(run.table[STATE])
    purchases = sum(r.topic == topics.PURCHASES for r in history)
    assert state.offsets[topics.PURCHASES] == purchases - 1  # read on to the end
    assert figures(reference)["consumed"] - BATCH < state.consumed < figures(reference)["consumed"]


@pytest.mark.parametrize("lost_seeks", [1, 3])
def test_a_lost_seek_to_a_gap_is_asked_again_with_nothing_more_to_read(
    history: list[Record], reference: Run, monkeypatch: pytest.MonkeyPatch, lost_seeks: int
) -> None:
    """A SIGKILL chaos run: a worker read feedback[0] 3567 while 2000 was next, sought
    back to 2000 once, and the seek never took effect; the consumer had read the
    log to its end, so nothing more came in to ask again on, and the state stayed at
    2000 of 7273 until the test gave up. The agent's timer asks again for gaps
    nothing was read of lately; without it (the control), the state stays behind."""
    monkeypatch.setattr(processor.positions, "GAP_IDLE_SECONDS", 0.0)
    lost = _purchase(history, 250)
    stuck, _ = drive(history, {lost}, lost_seeks=lost_seeks)
    assert decode_partition(stuck.table[STATE]).offsets[topics.PURCHASES] == lost[1] - 1
    run, consumer = drive(history, {lost}, lost_seeks=lost_seeks, idle_timer=True)
    assert consumer.sought.count(lost) == lost_seeks + 1
    assert figures(run) == figures(reference)
    assert run.customers() == reference.customers()
    assert run.alerts() == reference.alerts()


def test_no_idle_ask_while_fenced_or_soon_after_an_arrival(
    history: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timer leaves a gap alone while its topic partition was read lately (what
    was handed over may still be queued for the agent) and during a rebalance."""
    lost = _purchase(history, 250)
    run, _ = drive(history, {lost}, lost_seeks=1)
    assert run.batch.idle_gaps() == 0  # just read: GAP_IDLE_SECONDS not over
    monkeypatch.setattr(processor.positions, "GAP_IDLE_SECONDS", 0.0)
    run.batch.fence()
    assert run.batch.idle_gaps() == 0 and not run.batch.seeks
    run.batch.unfence()
    assert run.batch.idle_gaps() == 1
    assert run.batch.seeks == {TP(topics.PURCHASES, 0): lost[1]}


def test_a_landing_beyond_records_still_read_is_no_proof_of_a_gap(
    history: list[Record], reference: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGKILL chaos run (record batches, a worker joining mid-rebalance): the agent
    read feedback[0] 2748 while 1000 was next and sought back to 1000; the consumer
    then reported the first record after the seek at 3049 (the position had been
    reset to the committed offset), while records 2749..3048, fetched before, were
    still reaching the agent. Taken as "1000..3048 are not in the log", 1,749
    records (and 1,300 of feedback[1]) were skipped for good. A log that resumes
    beyond a record the agent is reading contradicts what it reads: not trusted, the
    topic stays held and is sought again."""
    monkeypatch.setattr(processor.positions, "GAP_SEEK_EVERY", 0.0)
    lost = _purchase(history, 250)
    run, consumer = drive(history, {lost}, stale_landing=True)
    assert consumer.sought[:2] == [lost, lost]
    assert figures(run) == figures(reference)
    assert run.customers() == reference.customers()
    assert run.alerts() == reference.alerts()
