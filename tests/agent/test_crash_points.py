"""A worker killed between any two of a batch's table writes loses nothing.

A batch writes its table records in a fixed order (see processor/commit.py): the
outbox and newly waiting events, the partition record, the customers, then the
emptied buckets. SIGKILL can cut that sequence anywhere; the next owner recovers
the changelog up to the cut and reads the input again from the offsets the
partition record gives. These tests cut a run's changelog at chosen points, resume
from what was kept, and hold the end state to an undisturbed run of the same input.

The cuts that matter most are right after the partition record of a batch that
emptied a bucket of waiting events or of due customers: the record must not forget
the bucket's day before the bucket's work reached the customers it changed
(tests/integration/test_chaos.py lost signups and lapse alerts that way).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.batch import CustomerBatch
from processor.partition import PartitionState, decode_partition, resume_offsets
from retention.timeutil import parse_time
from streams import topics
from streams.inputs import Record
from streams.partitions import DEADLETTER_OUTBOX, partition_state_key
from tests.agent.test_alignment import read_in_chunks
from tests.agent.test_offset_gaps import Consumer
from tests.inprocess import Received, Run, Sent, generated_history

AS_OF = parse_time("2025-07-01T00:00:00Z")
BATCH = 100
STATE = partition_state_key(0)


class Changelog(dict[bytes, bytes]):
    """The table as a dict that also keeps every write in order, as its changelog."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[bytes, bytes | None]] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.log.append((key, value))
        super().__setitem__(key, value)

    def __delitem__(self, key: bytes) -> None:
        self.log.append((key, None))
        super().__delitem__(key)

    def pop(self, key: bytes, *default: Any) -> Any:
        if key in self:
            self.log.append((key, None))
        return super().pop(key, *default)

    @classmethod
    def recovered(cls, log: list[tuple[bytes, bytes | None]]) -> Changelog:
        """The table a new owner recovers from the changelog ``log``."""
        table = cls()
        for key, value in log:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        return table


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    return generated_history(tmp_path_factory.mktemp("crash"), 120, 150, 23, AS_OF)


def logged_run(history: list[Record]) -> Run:
    run = Run(history, AS_OF)
    run.table = Changelog()
    run.parts.table = run.table
    run.batch = CustomerBatch(run.parts)
    return run


@pytest.fixture(scope="module")
def reference(history: list[Record]) -> Run:
    run = Run(history, AS_OF)
    run.feed(sorted(history, key=lambda r: r.occurred_at or -1), [1], random.Random(0))
    return run


class Undisturbed:
    """The input read in topic chunks (events wait for alignment), in batches, with
    each batch's span of the changelog."""

    def __init__(self, history: list[Record], seed: int) -> None:
        rng = random.Random(seed)
        self.run = run = logged_run(history)
        self.messages = [
            run.message(r.topic, r.key, r.value) for r in read_in_chunks(history, 60, rng)
        ]
        self.spans: list[tuple[int, int]] = []
        self.sent: list[int] = []  # alerts sent once each batch was done
        for at in range(0, len(self.messages), BATCH):
            start = len(run.table.log)
            run.batch.process(self.messages[at : at + BATCH])
            self.spans.append((start, len(run.table.log)))
            self.sent.append(len(run.alerts_sent.values))

    def sent_before(self, cut: int) -> list[bytes]:
        """The alerts that left before the cut: a batch sends its alerts after its
        writes, so those of the batches done by then."""
        done = [n for (_, end), n in zip(self.spans, self.sent, strict=True) if end <= cut]
        return self.run.alerts_sent.values[: done[-1] if done else 0]

    def state_write(self, batch: int) -> int:
        start, end = self.spans[batch]
        log = self.run.table.log
        return next(i for i in range(start, end) if log[i][0] == STATE)

    def forgets(self, batch: int, field: str) -> bool:
        """Whether ``batch`` took a day out of the partition record's ``field``."""
        log = self.run.table.log
        at = self.state_write(batch)
        before = next(
            (decode_partition(v) for k, v in reversed(log[:at]) if k == STATE and v), None
        )
        after = decode_partition(log[at][1] or b"")
        return before is not None and bool(set(getattr(before, field)) - set(getattr(after, field)))


def resume_after_crash(
    history: list[Record],
    disturbed: Undisturbed,
    cut: int,
    back: int = 0,
    batch: int = BATCH,
    first: str | None = None,
) -> Run:
    """A new owner recovers the changelog up to ``cut`` and reads the input again, from
    ``back`` messages before the offsets the partition record gives (the committed
    offsets may lag behind the state), in batches of ``batch``, the topic ``first``
    read to its end before the others (a consumer reads its topics at its own pace)."""
    old = disturbed.run
    run = Run(history, AS_OF)
    run.table = Changelog.recovered(old.table.log[:cut])
    run.parts.table = run.table
    run.parts.alerts = Sent()
    run.batch = CustomerBatch(run.parts)
    resent = run.batch.take_over([0])
    raw = run.table.get(STATE)
    resume = {} if raw is None else resume_offsets(decode_partition(raw))
    again: list[Received] = [
        m for m in disturbed.messages if m.message.offset >= resume.get(m.message.topic, 0) - back
    ]
    if first is not None:
        again = [m for m in again if m.message.topic == first] + [
            m for m in again if m.message.topic != first
        ]
    run.offsets = old.offsets.copy()
    for at in range(0, len(again), batch):
        run.batch.process(again[at : at + batch])
    run.feed([], [1], random.Random(0))  # the final tick
    run.resent = resent  # type: ignore[attr-defined]
    return run


def check(run: Run, disturbed: Undisturbed, cut: int, reference: Run) -> None:
    state: PartitionState = decode_partition(run.table[STATE])
    expected = decode_partition(reference.table[STATE])
    figures = ("consumed", "valid", "duplicates", "deadletter", "pending")
    assert {f: getattr(state, f) for f in figures} == {f: getattr(expected, f) for f in figures}, (
        f"cut at write {cut}"
    )
    got, want = run.customers(), reference.customers()
    missing = sorted(k for k in want if got.get(k) != want[k])
    assert not missing, (cut, missing[:3], [(got.get(k), want[k]) for k in missing[:1]])
    # Alerts: everything sent before the cut (those after it never left) and after the
    # restart, with the outbox sent again, says what the undisturbed run said.
    kept = {_ident(v) for v in disturbed.sent_before(cut)} | {
        _ident(v) for v in run.alerts_sent.values
    }
    assert kept >= set(reference.alerts()), sorted(set(reference.alerts()) - kept)[:3]


def _ident(value: bytes) -> tuple[Any, ...]:
    a = json.loads(value)
    return (a["customer_id"], a["sequence"], a["status"], a["tier"], a["at"])


@pytest.mark.parametrize("field", ["pending_days", "due_days"])
def test_a_crash_right_after_the_partition_record_loses_no_days_work(
    history: list[Record], reference: Run, field: str
) -> None:
    """Cut right after the partition record of batches that emptied a bucket: the
    customers the bucket's events or due times changed are not stored yet."""
    disturbed = Undisturbed(history, seed=3)
    batches = [b for b in range(len(disturbed.spans)) if disturbed.forgets(b, field)]
    assert batches, f"the read order never emptied a bucket of {field}"
    for batch in batches[:4]:
        cut = disturbed.state_write(batch) + 1
        check(resume_after_crash(history, disturbed, cut), disturbed, cut, reference)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**16),
    where=st.floats(0.0, 1.0),
    back=st.sampled_from([0, 50, 2000]),
    batch=st.sampled_from([13, BATCH, 300]),
    first=st.sampled_from([None, topics.FEEDBACK, topics.PURCHASES]),
)
def test_a_crash_between_any_two_writes_loses_nothing(
    history: list[Record],
    reference: Run,
    seed: int,
    where: float,
    back: int,
    batch: int,
    first: str | None,
) -> None:
    """Cut anywhere; the input read again from where the state says or from earlier
    (committed offsets lag behind the state by seconds), in other batches than the
    first time, maybe one topic to its end first: a redone batch must still apply
    every event, in the same order."""
    disturbed = Undisturbed(history, seed)
    cut = round(where * len(disturbed.run.table.log))
    run = resume_after_crash(history, disturbed, cut, back, batch, first)
    check(run, disturbed, cut, reference)


def test_a_redo_holds_a_bounded_number_of_messages(history: list[Record], reference: Run) -> None:
    """While a redo waits for its batch to be read again, newer input of the other
    topics is held only up to a bound; the rest is read again once the redo is done.
    Unbounded, a scale chaos run held 18,600 messages and processed them as one batch,
    long enough to be expelled from the group mid-rebalance."""
    disturbed = Undisturbed(history, 5)
    log = disturbed.run.table.log
    # A batch without purchases, all of them still to come: their flood is what the
    # redo would hold.
    cut = next(
        at + 1
        for at in map(disturbed.state_write, range(len(disturbed.spans)))
        if topics.PURCHASES not in decode_partition(log[at][1] or b"").offsets
    )
    run = Run(history, AS_OF)
    run.table = Changelog.recovered(disturbed.run.table.log[:cut])
    run.parts.table = run.table
    run.parts.alerts = Sent()
    run.batch = CustomerBatch(run.parts)
    run.batch.take_over([0])
    run.batch.positions.hold_max = 30
    record = decode_partition(run.table[STATE])
    redo = _redo_topics(record)
    resume = resume_offsets(record)
    again = [m for m in disturbed.messages if m.message.offset >= resume.get(m.message.topic, 0)]
    # Every other topic is read to its end before the redo's own.
    again.sort(key=lambda m: m.message.topic in redo)
    consumer = Consumer(again, set(), set())
    run.offsets = disturbed.run.offsets.copy()
    most = 0
    while batch := consumer.next_batch(BATCH):
        run.batch.process(batch)
        most = max(most, len(run.batch.positions.held.get(0, [])))
        seeks, run.batch.positions.seeks = run.batch.positions.seeks, {}
        for tp, offset in seeks.items():
            consumer.seek(tp.topic, offset)
    run.feed([], [1], random.Random(0))  # the final tick
    assert most <= 30 + BATCH
    assert redo and consumer.sought
    check(run, disturbed, cut, reference)


def _redo_topics(record: PartitionState) -> set[str]:
    """The topics of the batch a record was written for."""
    return {t for t, last in record.offsets.items() if last > record.previous.get(t, -1)}


class InFlight(Sent):
    """A topic whose records never reach the broker: each send's future stays
    pending, as in a producer buffer that a SIGKILL empties."""

    class Pending:
        def done(self) -> bool:
            return False

    def send_soon(self, *, key: bytes | None = None, value: bytes = b"", partition: int = 0) -> Any:
        super().send_soon(key=key, value=value, partition=partition)
        return self.Pending()


def _letters(sender: Sent) -> set[tuple[str, int, int]]:
    found = set()
    for value in sender.values:
        letter = json.loads(value)
        found.add((letter["topic"], letter["partition"], letter["offset"]))
    return found


def test_dead_letters_lost_in_flight_are_sent_again_by_the_new_owner(
    history: list[Record], reference: Run
) -> None:
    """A SIGKILL chaos run lost 3 of 496 dead letters (purchases[1] 5115, 5836, 6214):
    sent straight from the read, they were still in the producer buffer when the
    worker died, while the state counting them was stored and the input committed,
    so the new owner never read those messages again. Kept in the outbox, they are
    sent again by whoever takes the partition over, though nothing is read again."""
    old = logged_run(history)
    old.parts.deadletters = InFlight()
    old.batch = CustomerBatch(old.parts)
    messages = [
        old.message(r.topic, r.key, r.value) for r in read_in_chunks(history, 60, random.Random(5))
    ]
    for at in range(0, len(messages), BATCH):
        old.batch.process(messages[at : at + BATCH])
    # Sent (the test's topic keeps what is sent), none delivered; as many as the
    # undisturbed run counted, which read the input in another order.
    expected = _letters(old.deadletters_sent)
    assert len(expected) == decode_partition(reference.table[STATE]).deadletter >= 5
    new = Run(history, AS_OF)
    new.table = Changelog.recovered(old.table.log)
    new.parts.table = new.table
    new.batch = CustomerBatch(new.parts)
    new.batch.take_over([0])  # the input is committed to its end: nothing read again
    assert _letters(new.deadletters_sent) == expected
    state = decode_partition(new.table[STATE])
    assert state.deadletter == len(expected)


def test_dead_letters_delivered_leave_the_outbox(history: list[Record]) -> None:
    """Once the broker has a batch's dead letters, a later batch deletes their outbox
    record: the table does not grow with them."""
    run = logged_run(history)
    messages = [
        run.message(r.topic, r.key, r.value) for r in read_in_chunks(history, 60, random.Random(5))
    ]
    for at in range(0, len(messages), BATCH):
        run.batch.process(messages[at : at + BATCH])
    written = [k for k, v in run.table.log if k.startswith(DEADLETTER_OUTBOX) and v]
    assert written, "no dead letter went through the outbox"
    assert len([k for k in run.table if k.startswith(DEADLETTER_OUTBOX)]) <= 1
