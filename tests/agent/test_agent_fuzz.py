"""The customer agent fed a generated mixture of valid events and garbage.

Each example runs a fresh app under Faust's test context (no broker) and sends a
hypothesis-generated sequence on every consumed topic, clock included: valid events
of a few customers, exact re-sends (duplicates), and garbage (random bytes, mutated
events, wrong or missing keys, tombstones, oversize values, extreme numbers, deep
nesting, control characters, timestamps without offset or out of range, events from
the future, bad ticks). Then:

- the agent is still running and has processed every message;
- every rejected message, and only those, has a dead letter with its reason, topic,
  partition, offset, key and original bytes;
- the partition counters add up: consumed = valid + dead-lettered + duplicates
  (dead-lettered ticks aside: ticks are not input events), and the rejection metric
  agrees, reason by reason;
- the customers' state equals that of a run fed the valid messages alone;
- no log record written meanwhile carries a control or format character.

Which garbage is rejected, and why, is decided per message by the decoder (tested on
its own in ``tests/unit/test_fuzz_decoder.py``) and the one rule the agent adds: an
event more than a day ahead of the wall clock is ``future_time``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from faust.types import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.partition import PartitionState, decode_partition
from retention.apply import money
from retention.partition import MONEY_BUDGET
from retention.state import CustomerState, decode_state
from streams import topics
from streams.app import ChurnwatchApp, create_app
from streams.partitions import is_customer_key, partition_state_key
from streams.settings import Settings
from tests.reasons import reason_for

PARTITIONS = 2
CUSTOMERS = [f"c{n}" for n in range(6)]
WAIT = 20.0  # seconds for the agent to process one example's messages


@dataclass(frozen=True)
class Sent:
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None


@dataclass
class Run:
    """A fresh app with the customer agent under test, and what it produced."""

    app: ChurnwatchApp
    ctx: Any
    dead: dict[tuple[str, int, int], dict[str, Any]] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    async def send(self, item: Sent) -> int:
        offset = self.offsets.get((item.topic, item.partition), -1) + 1
        self.offsets[item.topic, item.partition] = offset
        message = Message(
            topic=item.topic,
            partition=item.partition,
            offset=offset,
            timestamp=time.time(),
            timestamp_type=0,
            headers=None,
            key=item.key,
            value=item.value,
            checksum=b"",
            serialized_key_size=len(item.key or b""),
            serialized_value_size=len(item.value or b""),
            generation_id=self.app.consumer_generation_id,
        )
        channel = self.ctx.stream().channel
        await channel.put(await channel.decode(message))
        return offset

    def partition(self, number: int) -> PartitionState:
        raw = self.app.customers.get(partition_state_key(number))
        return PartitionState(partition=number) if raw is None else decode_partition(raw)

    async def drain(self) -> None:
        """Wait until the agent has recorded the last offset of every partition sent to."""
        deadline = time.monotonic() + WAIT
        while True:
            crash = getattr(self.ctx, "crash_reason", None)
            assert crash is None, f"the customer agent crashed: {crash!r}"
            done = all(
                self.partition(p).offsets.get(topic, -1) >= last
                for (topic, p), last in self.offsets.items()
            )
            if done:
                return
            assert time.monotonic() < deadline, "the customer agent stopped processing"
            await asyncio.sleep(0.01)

    def customers(self) -> dict[str, CustomerState]:
        return {
            key.decode(): decode_state(value)
            for key, value in self.app.customers.items()
            if is_customer_key(key)
        }

    def counter(self, name: str, **labels: str) -> float:
        value = self.app.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@asynccontextmanager
async def running_agent() -> AsyncIterator[Run]:
    app = create_app(Settings(store="memory://", clock="off", batch_within=0.01, batch_max=50))
    app.finalize()
    app.flow_control.resume()
    async with app.agents["customers"].test_context() as ctx:
        run = Run(app=app, ctx=ctx)

        def dead_letter(*, key: bytes | None, value: bytes, partition: int) -> None:
            record = msgspec.json.decode(value)
            assert partition == record["partition"]
            assert key == (
                None if record["key_b64"] is None else base64.b64decode(record["key_b64"])
            )
            where = (record["topic"], record["partition"], record["offset"])
            run.dead[where] = record

        # This app's own topic objects: nothing shared is patched.
        setattr(app.deadletter_topic, "send_soon", dead_letter)  # noqa: B010
        setattr(app.alerts_topic, "send_soon", lambda **_: None)  # noqa: B010
        yield run


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def feed(items: list[Sent]) -> tuple[Run, list[int]]:
    logs = Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(logs)
    root.setLevel(logging.INFO)
    try:
        async with running_agent() as run:
            offsets = [await run.send(item) for item in items]
            await run.drain()
    finally:
        root.removeHandler(logs)
        root.setLevel(level)
    # Event fields are untrusted: none may reach a log line (and so a terminal) raw.
    for message in logs.messages:
        assert not any(
            unicodedata.category(c) in ("Cc", "Cf") and c not in "\n\t" for c in message
        ), message
    return run, offsets


# --- the mixture -----------------------------------------------------------------

INPUTS = list(topics.INPUT_TOPICS)
EPOCH_2024 = datetime(2024, 1, 1, tzinfo=UTC)


def partition_of(customer: str) -> int:
    return CUSTOMERS.index(customer) % PARTITIONS if customer in CUSTOMERS else 0


def body(
    kind: str, event_id: str, customer: str, when: datetime, /, **fields: Any
) -> dict[str, Any]:
    extras: dict[str, dict[str, Any]] = {
        "signup": {"segment": "smb", "monthly_fee": 20},
        "purchase": {"amount": 12.5},
        "cancellation": {"reason_code": "price"},
        "feedback": {"kind": "nps", "score": 6},
    }
    extra = extras[kind]
    return {
        "type": kind,
        "event_id": event_id,
        "customer_id": customer,
        "occurred_at": when.isoformat(),
        **extra,
        **fields,
    }


FEEDBACK: list[dict[str, Any]] = [
    {"kind": "nps", "score": 9},
    {"kind": "nps", "score": 2},
    {"kind": "csat", "score": 1},
    {"kind": "support", "outcome": "bad"},
]


#: Event ids come from a small pool, so some events repeat with other payloads.
EVENT_IDS = 41
KINDS = list(topics.INPUT_TOPICS.values())


def minutes() -> st.SearchStrategy[int]:
    return st.integers(0, 200 * 24 * 60)


@st.composite
def valid_events(draw: st.DrawFn, pool: list[tuple[str, int]] | None = None) -> Sent:
    """A valid event. With ``pool``, the event id's type and time: which of two copies
    of one event id that differ in type or ``occurred_at`` is applied depends on
    arrival, which batching decides (README, Event contracts), so a mixture keeps
    them per id; copies of one topic that differ in anything else are told apart by
    offset, and the first wins in any batching."""
    number = draw(st.integers(0, EVENT_IDS - 1))
    if pool is None:
        kind, minute = draw(st.sampled_from(KINDS)), draw(minutes())
    else:
        kind, minute = pool[number]
    customer = draw(st.sampled_from(CUSTOMERS))
    when = EPOCH_2024 + timedelta(minutes=minute)
    fields: dict[str, Any] = {}
    if kind == "purchase":
        fields["amount"] = draw(st.integers(0, 100_000)) / 100
    elif kind == "feedback":
        fields = draw(st.sampled_from(FEEDBACK))
    event_id = f"e{number}"
    value = json.dumps(body(kind, event_id, customer, when, **fields)).encode()
    topic = topics.TOPIC_FOR_TYPE[kind]
    return Sent(topic, partition_of(customer), customer.encode(), value)


def template(kind: str = "purchase", /, **fields: Any) -> dict[str, Any]:
    return body(kind, "g", "c0", EPOCH_2024, **fields)


def raw(value: bytes, topic: str = topics.PURCHASES, key: bytes | None = b"c0") -> Sent:
    return Sent(topic, 0, key, value)


def with_token(name: str, token: str) -> bytes:
    return json.dumps(template()).encode()[:-1] + f', "{name}": {token}}}'.encode()


FIXED_GARBAGE = [
    raw(b""),
    Sent(topics.PURCHASES, 0, b"c0", None),  # a tombstone
    Sent(topics.SIGNUPS, 1, None, json.dumps(template("signup")).encode()),  # keyless
    raw(json.dumps(template()).encode(), key=b"c1"),  # key is not the customer id
    raw(json.dumps(template(pad="x" * 70_000)).encode()),  # too large
    raw(b"\xff\xfe" + json.dumps(template()).encode()),  # not UTF-8
    raw(with_token("amount", "1e400")),
    raw(with_token("amount", "NaN")),
    raw(with_token("amount", "-Infinity")),
    raw(with_token("amount", "1" + "0" * 400)),
    raw(with_token("cost_to_serve", "[" * 20_000 + "]" * 20_000)),
    raw(b'{"a":' * 2_000 + b"1" + b"}" * 2_000),  # too deep
    raw(b"[" * 30_000),
    raw(json.dumps(template(occurred_at="2024-01-01T00:00:00")).encode()),  # no offset
    raw(
        json.dumps(
            template(occurred_at=(datetime.now(UTC) + timedelta(days=30)).isoformat())
        ).encode()
    ),
    raw(json.dumps(template(occurred_at="0001-01-01T00:00:00+05:00")).encode()),
    raw(json.dumps(template(occurred_at="9999-12-31T23:59:59-23:59")).encode()),
    raw(json.dumps(template(customer_id="c0\x1b[2J")).encode(), key=b"c0\x1b[2J"),
    raw(json.dumps(template(customer_id="\x00partition/0")).encode(), key=b"\x00partition/0"),
    raw(json.dumps(template(customer_id="\u202ec0")).encode(), key="\u202ec0".encode()),
    raw(json.dumps(template(customer_id="x" * 129)).encode(), key=b"x" * 129),
    raw(b'{"event_id": "\\ud800", "customer_id": "c0"}'),
    raw(json.dumps(template(type="refund")).encode()),
    raw(json.dumps(template("feedback", kind="csat", score=9)).encode(), topics.FEEDBACK),
    raw(json.dumps(template(amount=True)).encode()),
    raw(b"[]"),
    raw(b"null"),
    raw(b'{"time": "9999-12-31T00:00:00Z"}', topics.CLOCK, None),
    raw(b'{"time": "2024-01-01T00:00:00"}', topics.CLOCK, None),
    raw(b"\x00\x01\x02", topics.CLOCK, None),
    raw(b"", topics.CLOCK, None),
]


@st.composite
def garbage(draw: st.DrawFn) -> Sent:
    topic = draw(st.sampled_from(list(topics.CONSUMED_TOPICS)))
    key = draw(st.one_of(st.none(), st.sampled_from([c.encode() for c in CUSTOMERS])))
    choice = draw(st.integers(0, 3))
    if choice == 0:
        value = draw(st.binary(max_size=64))
    elif choice == 1:
        value = json.dumps(
            draw(st.recursive(st.none() | st.integers() | st.text(), st.lists))
        ).encode()
    elif choice == 2:  # a valid event, damaged
        damaged = bytearray(draw(valid_events()).value or b"")
        for at in draw(st.lists(st.integers(0, len(damaged) - 1), min_size=1, max_size=3)):
            damaged[at] = draw(st.integers(0, 255))
        value = bytes(damaged)
    else:  # a valid event dated in the future
        ahead = datetime.now(UTC) + timedelta(days=draw(st.integers(2, 3000)))
        value = json.dumps(template(occurred_at=ahead.isoformat())).encode()
        topic, key = topics.PURCHASES, b"c0"
    return Sent(topic, draw(st.integers(0, PARTITIONS - 1)), key, value)


@st.composite
def mixtures(draw: st.DrawFn) -> list[Sent]:
    pool = draw(
        st.lists(
            st.tuples(st.sampled_from(KINDS), minutes()), min_size=EVENT_IDS, max_size=EVENT_IDS
        )
    )
    items: list[Sent] = draw(st.lists(valid_events(pool), min_size=5, max_size=40))
    for _ in range(draw(st.integers(0, 8))):  # exact re-sends of earlier messages
        items.append(draw(st.sampled_from(items)))
    items += draw(st.lists(garbage(), min_size=1, max_size=20))
    items += draw(st.lists(st.sampled_from(FIXED_GARBAGE), max_size=6, unique=True))
    ticks = draw(st.lists(st.integers(0, 200), max_size=3))
    items += [
        Sent(
            topics.CLOCK,
            p,
            None,
            b'{"time": "%s"}' % (EPOCH_2024 + timedelta(days=day)).isoformat().encode(),
        )
        for day in ticks
        for p in range(PARTITIONS)
    ]
    return draw(st.permutations(items))


def expected_reason(item: Sent, now: datetime) -> str | None:
    """The reason ``item`` must be dead-lettered for, or None if it must be applied."""
    return reason_for(item.topic, item.key, item.value, now)


def without_risk(states: dict[str, CustomerState]) -> dict[str, CustomerState]:
    # Risk is reassessed at batch ends, and batches form differently in the two
    # runs; everything else is a function of the events applied and the watermark.
    return {key: msgspec.structs.replace(state, risk=None) for key, state in states.items()}


async def check(items: list[Sent]) -> None:
    started = datetime.now(UTC)
    mixed, offsets = await feed(items)
    reasons = [expected_reason(item, started) for item in items]

    # Every rejected message, and nothing else, was dead-lettered, with its bytes.
    expected = {
        (item.topic, item.partition, offset): (item, reason)
        for item, offset, reason in zip(items, offsets, reasons, strict=True)
        if reason is not None
    }
    assert set(mixed.dead) == set(expected)
    for where, (item, reason) in expected.items():
        record = mixed.dead[where]
        assert record["reason"] == reason, (item, record)
        assert record["detail"] and record["detail"].isprintable(), record
        assert base64.b64decode(record["value_b64"]) == (item.value or b"")
        assert record["size"] == len(item.value or b"")
        assert record["key_b64"] == (
            None if item.key is None else base64.b64encode(item.key).decode()
        )

    # The counters add up, per partition and over all.
    parts = [mixed.partition(p) for p in range(PARTITIONS)]
    for p, part in enumerate(parts):
        sent = [it for it in items if it.partition == p]
        inputs = [it for it in sent if it.topic != topics.CLOCK]
        dead_ticks = sum(1 for t, pp, _ in mixed.dead if pp == p and t == topics.CLOCK)
        assert part.consumed == len(inputs)
        assert part.consumed == part.valid + (part.deadletter - dead_ticks) + part.duplicates
        assert part.ticks + dead_ticks == len(sent) - len(inputs)
    rejected = Counter(reason for reason in reasons if reason is not None)
    assert sum(part.deadletter for part in parts) == sum(rejected.values())
    for reason, count in rejected.items():
        assert mixed.counter("churnwatch_events_rejected_total", reason=reason) == count

    # Garbage changed no customer: the state equals that of the valid messages alone.
    valid = [item for item, reason in zip(items, reasons, strict=True) if reason is None]
    alone, _ = await feed(valid)
    assert without_risk(mixed.customers()) == without_risk(alone.customers())
    assert [(p.valid, p.duplicates) for p in parts] == [
        (alone.partition(p).valid, alone.partition(p).duplicates) for p in range(PARTITIONS)
    ]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(items=mixtures())
def test_garbage_is_dead_lettered_and_never_stops_the_agent(items: list[Sent]) -> None:
    asyncio.run(check(items))


def test_every_fixed_kind_of_garbage_at_once() -> None:
    """The hand-picked garbage, all of it, between valid events: each reason appears."""
    good = [
        Sent(
            topics.PURCHASES,
            0,
            b"c0",
            json.dumps(body("purchase", f"p{n}", "c0", EPOCH_2024 + timedelta(days=n))).encode(),
        )
        for n in range(5)
    ]
    items = [item for pair in zip(good, FIXED_GARBAGE, strict=False) for item in pair]
    items += FIXED_GARBAGE[len(good) :]
    asyncio.run(check(items))
    now = datetime.now(UTC)
    assert {expected_reason(item, now) for item in FIXED_GARBAGE} >= {
        "not_an_object",
        "key_mismatch",
        "too_large",
        "not_utf8",
        "invalid_field",
        "malformed_json",
        "too_deep",
        "wrong_type",
        "future_time",
    }


def test_the_largest_valid_amounts_do_not_crash_the_agent() -> None:
    """Money sums are exact 64-bit integers of micro-units: once a partition's money
    would pass MONEY_BUDGET, further money-bearing events are dead-lettered with
    ``amount_overflow``, and the agent goes on."""
    items = [
        Sent(
            topics.PURCHASES,
            0,
            f"big{n}".encode(),
            json.dumps(body("purchase", f"b{n}", f"big{n}", EPOCH_2024, amount=1e12)).encode(),
        )
        for n in range(20)
    ]
    mixed, _ = asyncio.run(feed(items))
    fit = MONEY_BUDGET // money(1e12)
    part = mixed.partition(0)
    assert (part.consumed, part.valid, part.deadletter) == (20, fit, 20 - fit)
    assert {record["reason"] for record in mixed.dead.values()} == {"amount_overflow"}
    assert sum(state.spend for state in mixed.customers().values()) == fit * money(1e12)


def test_an_alert_whose_source_is_a_rejected_deeply_nested_message() -> None:
    """Found by the hypothesis test above: a lapse alert raised at the end of a batch
    names the batch's last message as its source; when that message was rejected for
    nesting too deep, reading its event id crashed the agent (RecursionError)."""
    signup = json.dumps(body("signup", "e0", "c0", EPOCH_2024)).encode()
    deep = (
        b'{"type": "purchase", "event_id": "g", "customer_id": "c0", '
        b'"occurred_at": "2024-01-01T00:00:00+00:00", "amount": 12.5, "cost_to_serve": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}"
    )
    tick = json.dumps({"time": (EPOCH_2024 + timedelta(days=53)).isoformat()}).encode()
    items = [
        Sent(topics.SIGNUPS, 0, b"c0", signup),
        Sent(topics.CLOCK, 0, None, tick),
        Sent(topics.PURCHASES, 0, b"c0", deep),
    ]
    asyncio.run(check(items))
