"""An upgrade needs no replay of history (issue 17): the new worker recovers the
changelog an earlier release wrote and carries on with the results it would have had.

The fixture, tests/fixtures/upgrade/ (table.jsonl.gz: the table, every key and raw
value; meta.json: how it was made and what its release computed next), was written by
release 21bf571 (processor code as of bb5640e) from a generated history of 300
customers (tests/upgrade_fixture.py, HISTORY): the changelog's compacted contents
after the events dated before the cut. Here the code checked out recovers it, reads
the rest of the same history and a final tick, and must end with the same customers,
partition figures and alerts (compared decoded, field by field: a new encoding of
the same figures passes; a changed figure does not; fields added since the fixture's
release, ``upgrade_fixture.LATER_FIELDS``, are not among its results and are checked
below on their own).

Regenerate the fixture ONLY when deliberately breaking compatibility with the
changelogs of deployed workers (then update RELEASE below), from a clean tree:

    PYTHONPATH=. .venv/bin/python -m tests.upgrade_fixture make
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from processor.partition import decode_partition
from retention.state import decode_state
from streams.inputs import Record
from streams.partitions import OUTBOX, is_customer_key, is_partition_key
from tests import upgrade_fixture as fixture

#: The release that wrote the fixture, as this docstring names it.
RELEASE = "21bf571"

History = tuple[list[Record], list[Record], list[Record]]


@pytest.fixture(scope="module")
def meta() -> dict[str, object]:
    return fixture.load_meta()


@pytest.fixture(scope="module")
def table() -> dict[bytes, bytes]:
    return fixture.load_table()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    """The history the fixture was written from, generated again: the whole log, the
    part its worker read, the part read after the upgrade."""
    return fixture.histories(Path(tmp_path_factory.mktemp("upgrade")))


def recover(history: History, table: dict[bytes, bytes]) -> dict[str, object]:
    log, first, second = history
    run, resent = fixture.recovered(log, first, second, table)
    return fixture.results(run, resent)


def test_the_fixture_is_the_one_described(meta: dict[str, object]) -> None:
    assert meta["release"] == RELEASE, "regenerated: name its release in the docstring"
    assert meta["history"] == fixture.HISTORY


def test_the_history_is_generated_as_it_was(meta: dict[str, object], history: History) -> None:
    """Otherwise the recovery below reads other input than the fixture's worker did."""
    _, first, second = history
    assert meta["events"] == {"first": len(first), "second": len(second)}


def test_every_record_decodes(meta: dict[str, object], table: dict[bytes, bytes]) -> None:
    assert fixture.kinds(table) == meta["table"]
    assert set(fixture.KINDS) <= set(fixture.kinds(table))
    for key, raw in table.items():
        if is_customer_key(key):
            assert decode_state(raw).customer_id == key.decode()
        elif is_partition_key(key):
            assert decode_partition(raw).partition == int(key.rsplit(b"/", 1)[1])


def test_a_new_worker_recovers_the_changelog_and_carries_on(
    meta: dict[str, object], history: History, table: dict[bytes, bytes]
) -> None:
    assert recover(history, table) == meta["results"]


def _spend_more(table: dict[bytes, bytes]) -> None:
    key = next(k for k in sorted(table) if is_customer_key(k) and decode_state(table[k]).spend)
    state = decode_state(table[key])
    table[key] = msgspec.msgpack.encode(msgspec.structs.replace(state, spend=state.spend + 1))


def _drop_customer(table: dict[bytes, bytes]) -> None:
    del table[next(k for k in sorted(table) if is_customer_key(k))]


def _drop_outbox(table: dict[bytes, bytes]) -> None:
    del table[next(k for k in sorted(table) if k.startswith(OUTBOX))]


@pytest.mark.parametrize("damage", [_spend_more, _drop_customer, _drop_outbox])
def test_a_damaged_changelog_gives_other_results(
    meta: dict[str, object],
    history: History,
    table: dict[bytes, bytes],
    damage: Callable[[dict[bytes, bytes]], None],
) -> None:
    """The comparison can fail: one micro-unit more spend in one customer record, a
    customer record lost, the outbox lost."""
    damaged = dict(table)
    damage(damaged)
    assert recover(history, damaged) != meta["results"]


def test_fields_added_since_start_at_the_upgrade(
    history: History, table: dict[bytes, bytes]
) -> None:
    """The recovered partition keeps no segment or plan books (its customers' past is
    in none), and counts each period's cost to serve from the upgrade on: the periods
    opened after it have the cost to serve of a run that read everything."""
    log, first, second = history
    run, _ = fixture.recovered(log, first, second, table)
    fresh = fixture.Run(log, fixture.as_of())
    fresh.feed(log, [fixture.HISTORY["batch"]], fixture.rng())
    key = next(k for k in table if is_partition_key(k))
    upgraded, full = decode_partition(run.table[key]), decode_partition(fresh.table[key])
    assert upgraded.segments is None and upgraded.plans is None
    assert full.segments is not None and full.segments.books
    cut = fixture.parse_time(fixture.HISTORY["cut"])
    after = {p.start: p.figures.cost_to_serve for p in full.periods.closed if p.start > cut}
    got = {p.start: p.figures.cost_to_serve for p in upgraded.periods.closed if p.start > cut}
    assert len(after) >= 3 and all(after.values()) and got == after
