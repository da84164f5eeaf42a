"""Home partitions, the repartition topic's records, and alignment across partitions."""

from __future__ import annotations

import random
import zlib
from types import SimpleNamespace

import msgspec
import pytest
from aiokafka.partitioner import DefaultPartitioner

from processor.partition import PartitionState, decode_partition, encode_partition
from processor.routing import PROGRESS_EVERY, Router
from retention.partition import PeerProgress
from streams import topics
from streams.routing import (
    OUTBOX_BYTES,
    OUTBOX_CHUNK,
    Forward,
    Progress,
    decode_record,
    forward_outbox_key,
    forward_outboxes,
    forward_value,
    home_partition,
    is_forward_outbox,
    progress_value,
)
from streams.settings import Settings


def test_home_partition_is_aiokafkas_default_partitioner() -> None:
    rng = random.Random(7)
    keys = [f"c{n}".encode() for n in range(2000)]
    keys += [rng.randbytes(rng.randint(0, 40)) for _ in range(2000)]
    keys += ["klant-ü-€".encode(), b"\x00", b"\xff" * 128]
    for partitions in (1, 2, 3, 4, 7, 12, 64):
        every = list(range(partitions))
        for key in keys:
            assert home_partition(key, partitions) == DefaultPartitioner()(key, every, every)


def test_crc32_puts_most_keys_elsewhere() -> None:
    """What confluent-kafka's default partitioner does (a reason this exists at all)."""
    keys = [f"customer-{n}".encode() for n in range(1000)]
    elsewhere = sum(zlib.crc32(k) % 4 != home_partition(k, 4) for k in keys)
    assert 600 < elsewhere < 900


def message(**fields: object) -> SimpleNamespace:
    base: dict[str, object] = {
        "topic": topics.PURCHASES,
        "partition": 2,
        "offset": 41,
        "timestamp": 1_700_000_000.25,
        "key": b"c1",
        "value": b'{"type": "purchase"}',
    }
    return SimpleNamespace(**{**base, **fields})


def test_a_forward_round_trips_byte_for_byte() -> None:
    original = message(value=bytes(range(256)) * 3)
    record = decode_record(forward_value(original, 1_234))
    assert record == Forward(topics.PURCHASES, 2, 41, 1_700_000_000.25, 1_234, original.value)
    assert isinstance(record, Forward) and record.value == original.value
    assert decode_record(forward_value(message(timestamp=None), None)) == Forward(
        topics.PURCHASES, 2, 41, None, None, b'{"type": "purchase"}'
    )


def test_progress_round_trips() -> None:
    read = PeerProgress(
        frontiers={topics.PURCHASES: 10, topics.SIGNUPS: -5}, idle=(topics.FEEDBACK,)
    )
    assert decode_record(progress_value(3, read)) == Progress(3, read)


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"\x00",
        b'{"type": "purchase"}',
        msgspec.msgpack.encode(["forward", "customer.refunds", 0, 0, None, None, b"x"]),
        msgspec.msgpack.encode(["forward", topics.PURCHASES, 0]),
        msgspec.msgpack.encode(["progress", "zero", [{}, []]]),
        b"\xdc" + b"\xff" * 8,
    ],
)
def test_anything_else_is_not_a_record(value: bytes | None) -> None:
    assert decode_record(value) is None


def test_forward_outboxes_chunk_in_send_order() -> None:
    small = [(b"c%d" % n, b"v" * 10) for n in range(2 * OUTBOX_CHUNK + 5)]
    boxes = list(forward_outboxes(3, 70, small))
    assert [len(chunk) for _, chunk in boxes] == [OUTBOX_CHUNK, OUTBOX_CHUNK, 5]
    assert [stored for stored, _ in boxes] == [
        forward_outbox_key(3, 70),
        forward_outbox_key(3, 70 + OUTBOX_CHUNK),
        forward_outbox_key(3, 70 + 2 * OUTBOX_CHUNK),
    ]
    assert [entry for _, chunk in boxes for entry in chunk] == small
    big = [(b"c", b"x" * (OUTBOX_BYTES // 3))] * 7
    sizes = [len(chunk) for _, chunk in forward_outboxes(0, 0, big)]
    assert sum(sizes) == 7 and max(sizes) <= 3
    assert sorted([forward_outbox_key(0, 9), forward_outbox_key(0, 10)]) == [
        forward_outbox_key(0, 9),
        forward_outbox_key(0, 10),
    ]
    assert all(is_forward_outbox(stored) for stored, _ in boxes)
    assert not is_forward_outbox(b"\x00outbox/3/~forward-1")


INPUTS = tuple(topics.INPUT_TOPICS)


def at_frontiers(moment: int) -> dict[str, int]:
    return dict.fromkeys(INPUTS, moment)


def test_alignment_waits_for_every_peer() -> None:
    state = PartitionState(partition=0, frontiers=at_frontiers(1000))
    assert state.align(INPUTS, (), 100) == 900  # no peers: as before
    state = PartitionState(partition=0, frontiers=at_frontiers(1000))
    assert state.align(INPUTS, (), 100, peers=(1, 2)) is None  # nothing heard yet
    state.peers[1] = PeerProgress(frontiers=at_frontiers(500))
    assert state.align(INPUTS, (), 100, peers=(1, 2)) is None  # partition 2 unheard
    but_purchases = tuple(t for t in INPUTS if t != topics.PURCHASES)
    state.peers[2] = PeerProgress(frontiers={topics.SIGNUPS: 300}, idle=but_purchases)
    assert state.align(INPUTS, (), 100, peers=(1, 2)) is None  # 2's purchases: unknown
    state.peers[2] = PeerProgress(frontiers={topics.SIGNUPS: 300, topics.PURCHASES: 700})
    assert state.align(INPUTS, (), 100, peers=(1, 2)) is None  # 2 has unread topics unknown
    state.peers[2] = PeerProgress(frontiers={topics.PURCHASES: 700}, idle=but_purchases)
    assert state.align(INPUTS, (), 100, peers=(1, 2)) == 400  # peer 1 at 500, less slack
    state.peers[1] = PeerProgress(frontiers=at_frontiers(5000), idle=INPUTS)
    assert state.align(INPUTS, (), 100, peers=(1, 2)) == 600  # peer 2's purchases
    # Everything read everywhere: up to the latest event seen here, forwarded or not.
    state.peers[2] = PeerProgress(frontiers={topics.PURCHASES: 700}, idle=INPUTS)
    state.received_at(1500)
    assert state.align(INPUTS, INPUTS, 100, peers=(1, 2)) == 1500
    state.peers[2] = PeerProgress(frontiers={topics.PURCHASES: 700})
    assert state.align(INPUTS, INPUTS, 100, peers=(1, 2)) == 1500  # never moves back


def test_partition_records_keep_routing_state() -> None:
    state = PartitionState(partition=1, forwarded=3, received=2, routed={"t/0": 9})
    state.peers[0] = PeerProgress(frontiers={topics.CLOCK: 1}, idle=(topics.FEEDBACK,))
    state.received_at(42)
    assert decode_partition(encode_partition(state)) == state
    old = msgspec.msgpack.encode({"partition": 1, "consumed": 5})
    assert decode_partition(old) == PartitionState(partition=1, consumed=5)


class Captured:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes, int]] = []

    def send_soon(self, *, key: bytes | None, value: bytes, partition: int) -> None:
        self.sent.append((key, value, partition))


def router(partitions: int = 4) -> tuple[Router, Captured]:
    sent = Captured()
    return Router(Settings(partitions=partitions), sent, active=True), sent


def test_router_homes_and_forwards() -> None:
    route, sent = router()
    keys = [f"c{n}".encode() for n in range(100)]
    for key in keys:
        home = home_partition(key, 4)
        assert route.home(message(key=key, partition=home)) is None
        assert route.home(message(key=key, partition=(home + 1) % 4)) == home
        route.send(key, b"wrapped")
    assert [(k, p) for k, _, p in sent.sent] == [(k, home_partition(k, 4)) for k in keys]
    assert route.home(message(key=None, partition=9)) is None
    assert route.home(message(key=b"c0", value=None, partition=9)) is None
    huge = b"x" * (Settings().max_event_bytes + 1)
    assert route.home(message(key=b"c0", value=huge, partition=9)) is None
    assert route.peers(2) == (0, 1, 3)
    alone, _ = router(partitions=1)
    assert alone.peers(0) == ()


def test_progress_is_announced_when_it_changes() -> None:
    route, sent = router()
    state = PartitionState(partition=1, frontiers={topics.PURCHASES: 10, topics.CLOCK: 99})
    assert route.announce(1, state, (), now=0.0)
    assert [p for _, _, p in sent.sent] == [0, 2, 3]
    expected = Progress(1, PeerProgress(frontiers={topics.PURCHASES: 10}))
    assert [decode_record(v) for _, v, _ in sent.sent] == [expected] * 3
    assert not route.announce(1, state, (), now=1.0)  # unchanged
    state.frontiers[topics.PURCHASES] = 20
    assert not route.announce(1, state, (), now=PROGRESS_EVERY / 2)  # frontiers: not yet
    assert route.announce(1, state, (), now=PROGRESS_EVERY * 2)
    state.frontiers[topics.PURCHASES] = 30
    assert route.announce(1, state, (topics.FEEDBACK,), now=PROGRESS_EVERY * 2)  # idle: now
    route.forget([1])
    assert route.announce(1, state, (topics.FEEDBACK,), now=PROGRESS_EVERY * 2)
    assert len(sent.sent) == 4 * 3
