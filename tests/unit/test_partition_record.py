"""The partition record is the domain's figures (retention/partition.py) and the
processor's delivery bookkeeping (processor/partition.py), stored as one msgpack map
byte for byte as when they were one struct: an older release's changelog decodes, and
a record written again is the bytes it was."""

from __future__ import annotations

import msgspec
import pytest

from processor.partition import PartitionState, decode_partition, encode_partition
from retention.partition import PartitionFigures, PeerProgress, decode_figures
from streams.partitions import is_partition_key
from tests import upgrade_fixture as fixture


@pytest.fixture(scope="module")
def records() -> list[bytes]:
    """The partition records of the upgrade fixture (release 21bf571: one struct)."""
    found = [raw for key, raw in fixture.load_table().items() if is_partition_key(key)]
    assert found
    return found


def _less_later_fields(value: object) -> object:
    """A raw msgpack map less the fields added since the fixture's release (the
    per-segment book, a period's cost to serve), keeping the order of the rest."""
    later = {"segments", "plans", "cost_to_serve"}
    if isinstance(value, dict):
        return [(k, _less_later_fields(v)) for k, v in value.items() if k not in later]
    if isinstance(value, list):
        return [_less_later_fields(v) for v in value]
    return value


def test_an_older_releases_record_is_written_again_as_it_was(records: list[bytes]) -> None:
    """Byte for byte but for the fields added since (at their defaults: no segment
    book, no cost to serve yet), each in the order it had."""
    for raw in records:
        again = encode_partition(decode_partition(raw))
        assert decode_partition(again) == decode_partition(raw)
        assert _less_later_fields(msgspec.msgpack.decode(again)) == _less_later_fields(
            msgspec.msgpack.decode(raw)
        )
        assert not {"segments", "plans"} & set(msgspec.msgpack.decode(again))  # None: left out


def test_the_figures_read_out_of_a_stored_record(records: list[bytes]) -> None:
    for raw in records:
        state = decode_partition(raw)
        figures = decode_figures(raw)
        assert type(figures) is PartitionFigures
        for name in PartitionFigures.__struct_fields__:
            assert getattr(figures, name) == getattr(state, name), name


def test_bookkeeping_is_not_among_the_figures() -> None:
    bookkeeping = set(PartitionState.__struct_fields__) - set(PartitionFigures.__struct_fields__)
    assert bookkeeping == {"offsets", "previous", "released", "outbox", "routed"}


def test_a_new_partition_keeps_segments_and_an_old_record_does_not(records: list[bytes]) -> None:
    from processor.partition import Partitions

    new = Partitions({}).load(0)
    assert new.segments is not None and new.plans is not None
    for raw in records:
        assert decode_partition(raw).segments is None and decode_partition(raw).plans is None


def test_a_full_record_round_trips() -> None:
    state = PartitionState(
        partition=3,
        consumed=7,
        offsets={"t": 9},
        previous={"t": 4},
        released=(1, 2, "t", 5),
        outbox=[b"\x00outbox/3/a"],
        routed={"t/0": 2},
    )
    state.peers[1] = PeerProgress(frontiers={"t": 10}, idle=("u",))
    raw = encode_partition(state)
    assert decode_partition(raw) == state
    assert list(msgspec.msgpack.decode(raw))[:3] == ["partition", "watermark", "clock"]
    assert decode_figures(raw).consumed == 7
