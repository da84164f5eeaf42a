"""The synthetic history: deterministic, valid where it should be, defective where asked."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from itertools import pairwise
from statistics import mean

from schemas import EventDecoder, Rejected
from streams import topics
from streams.generator import GeneratorStats, generate
from streams.inputs import route

END = datetime(2026, 1, 1, tzinfo=UTC)


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    first = list(generate(200, 120, seed=3, end=END))
    assert first == list(generate(200, 120, seed=3, end=END))
    assert first != list(generate(200, 120, seed=4, end=END))


def test_clean_history_is_entirely_valid_and_unique() -> None:
    decoder = EventDecoder()
    stats = GeneratorStats()
    lines = list(generate(300, 200, seed=1, end=END, defects=False, stats=stats))
    ids = set()
    for line in lines:
        record = route(line)
        assert record.routable
        kind = json.loads(line)["type"]
        event = decoder.decode(kind, record.key, line)
        assert not isinstance(event, Rejected), (event, line)
        assert END.timestamp() - 200 * 86400 <= event.occurred_at.timestamp() < END.timestamp()
        ids.add(event.event_id)
    assert len(ids) == len(lines) == stats.lines
    assert stats.duplicates == stats.disordered == sum(stats.malformed.values()) == 0
    assert set(stats.events) == {"signup", "purchase", "cancellation", "feedback"}


def test_defects_are_injected_and_rejected_by_the_decoder() -> None:
    decoder = EventDecoder()
    stats = GeneratorStats()
    lines = list(generate(3000, 365, seed=2, end=END, stats=stats))
    assert stats.lines == len(lines)
    events = sum(stats.events.values())
    assert 0.005 < stats.duplicates / events < 0.02
    assert 0.01 < stats.disordered / events < 0.03
    malformed = sum(stats.malformed.values())
    assert 0.002 < malformed / events < 0.01
    assert len(stats.malformed) >= 6
    rejected = 0
    seen: set[bytes] = set()
    repeats = 0
    for line in lines:
        record = route(line)
        repeats += line in seen
        seen.add(line)
        kind = topics.INPUT_TOPICS[record.topic]
        rejected += isinstance(decoder.decode(kind, record.key, line), Rejected)
    assert rejected == malformed
    assert repeats >= stats.duplicates


def test_churners_slow_down_before_they_leave() -> None:
    """Customers who cancel buy less often near the end of their life than at the start."""
    purchases: dict[str, list[float]] = defaultdict(list)
    cancelled: set[str] = set()
    for line in generate(3000, 720, seed=5, end=END, defects=False):
        body = json.loads(line)
        when = datetime.fromisoformat(body["occurred_at"]).timestamp()
        if body["type"] == "purchase":
            purchases[body["customer_id"]].append(when)
        elif body["type"] == "cancellation":
            cancelled.add(body["customer_id"])
    early, late = [], []
    for customer in cancelled:
        times = sorted(purchases[customer])
        if len(times) >= 6:
            gaps = [b - a for a, b in pairwise(times)]
            early.append(mean(gaps[:2]))
            late.append(mean(gaps[-2:]))
    assert len(early) > 30
    assert mean(late) > 1.3 * mean(early)
