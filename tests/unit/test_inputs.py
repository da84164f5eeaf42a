"""Reading event files: routing by type, CDNOW rows, and never dropping a bad line."""

from __future__ import annotations

from pathlib import Path

import pytest

from retention.timeutil import parse_time
from streams import topics
from streams.inputs import cdnow_event, read_events, route


def test_routes_by_type_with_customer_key() -> None:
    record = route(
        b'{"type":"feedback","event_id":"e","customer_id":"c7","occurred_at":"2024-01-01T00:00:00Z"}'
    )
    assert (record.topic, record.key, record.routable) == (topics.FEEDBACK, b"c7", True)
    assert record.occurred_at == parse_time("2024-01-01T00:00:00Z")


@pytest.mark.parametrize(
    "line",
    [b"garbage", b'{"type":"refund","customer_id":"c1"}', b"\xff\xfe", b'{"customer_id":"c1"}'],
)
def test_unroutable_lines_are_kept_for_the_dead_letter_topic(line: bytes) -> None:
    record = route(line)
    assert record.topic == topics.PURCHASES and not record.routable and record.value == line


def test_cdnow_rows_become_purchases_with_line_numbers_as_ids(tmp_path: Path) -> None:
    path = tmp_path / "cdnow.txt"
    path.write_text(
        " customer_id  date number_of_cds dollar_value\n"
        " 00001 19970101  1   11.77\n 00001 19970101  1   11.77\n\n 00002 19970112  2   12.00\n"
    )
    records = list(read_events(path, "cdnow"))
    assert [r.key for r in records] == [b"00001", b"00001", b"00002"]
    assert len({r.value for r in records}) == 3  # identical rows stay distinct purchases
    assert records[2].occurred_at == parse_time("1997-01-12T00:00:00Z")


def test_cdnow_rejects_a_malformed_row() -> None:
    with pytest.raises(ValueError, match="line 3"):
        cdnow_event(3, " 00001 1997-01-01 1 11.77 extra\n")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_events(tmp_path / "nope.jsonl", "jsonl")
