"""One destination end to end in memory: roles, the ranking window, the ledger
written before an opening is sent, the order of an episode's transitions, dead
letters, and a restart that decides the same."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from notifier.config import Config, Delivery, Destination, Filters
from notifier.delivery import Attempt
from notifier.destination import DestinationWorker, Source, Ticket
from notifier.formats import IDEMPOTENCY_HEADER, Request
from notifier.ledger import Ledger, StateRecord
from schemas.alert import AlertRecord
from schemas.notify import NotifyDeadLetter
from tests.notify_support import episodes, record

HISTORIES = [[record(a) for a in h] for h in episodes(seed=11, customers=30)]
DAY = datetime(2026, 12, 4, 12, tzinfo=UTC)


class Ports:
    def __init__(self) -> None:
        self.state: list[StateRecord] = []
        self.dead: list[NotifyDeadLetter] = []

    async def write_state(self, records: list[StateRecord]) -> None:
        await asyncio.sleep(0)  # acknowledged later than it was asked for
        self.state.extend(records)

    async def dead_letter(self, letter: NotifyDeadLetter) -> None:
        self.dead.append(letter)


class Endpoint:
    """Records what was posted; refuses the keys in ``refuse``; checks that every
    opening's ledger entry was written before the opening arrived."""

    def __init__(self, ports: Ports, refuse: frozenset[str] = frozenset()) -> None:
        self.ports = ports
        self.refuse = refuse
        self.posted: list[str] = []

    async def __call__(self, url: str, request: Request, timeout: float) -> Attempt:
        key = request.headers[IDEMPOTENCY_HEADER]
        dedup_key = key.rsplit(":", 1)[0]
        assert any(dedup_key.encode() in k for k, _ in self.ports.state), "sent before durable"
        if key in self.refuse:
            return Attempt("reject", "HTTP 400")
        self.posted.append(key)
        return Attempt("ok", "HTTP 200")


def _worker(
    capacity: int | None,
    ledger: Ledger,
    ports: Ports,
    post: Callable[..., Awaitable[Attempt]],
    filters: Filters | None = None,
) -> DestinationWorker:
    destination = Destination(
        name="team",
        format="slack",
        url="https://h/",
        daily_capacity=capacity,
        filters=filters or Filters(),
    )
    config = Config(
        destinations=(destination,), hold=0.0, delivery=Delivery(max_attempts=1, lanes=3)
    )
    return DestinationWorker(destination, config, ledger, ports, post, wall=lambda: DAY)


def _offer(worker: DestinationWorker, alerts: list[AlertRecord]) -> list[Ticket]:
    finished: list[Ticket] = []
    tickets = []
    for offset, alert in enumerate(alerts):
        ticket = Ticket(0, offset, finished.append)
        worker.offer(alert, Source("t", 0, offset, None, b"{}"), ticket)
        ticket.release()
        tickets.append(ticket)
    return finished


async def _settle(worker: DestinationWorker) -> None:
    for _ in range(200):
        await asyncio.sleep(0)
        if worker.idle():
            return
    raise AssertionError("the destination did not settle")


def _reloaded(ports: Ports) -> Ledger:
    latest = {key: value for key, value in ports.state}
    ledger = Ledger()
    ledger.load(latest)
    return ledger


async def test_the_window_admits_the_most_valuable_and_a_restart_counts_nothing_again() -> None:
    ports, ledger = Ports(), Ledger()
    endpoint = Endpoint(ports)
    worker = _worker(3, ledger, ports, endpoint)
    worker.start()
    alerts = [a for history in HISTORIES for a in history]
    finished = _offer(worker, alerts)
    worker.close_window()
    await _settle(worker)
    await worker.stop()
    assert len(finished) == len(alerts)  # every record released: delivered, withheld or skipped
    # Ranked by each episode's newest value at risk (all of it was held in the window).
    newest: dict[str, AlertRecord] = {}
    for alert in alerts:
        if alert.dedup_key not in newest or alert.sequence > newest[alert.dedup_key].sequence:
            newest[alert.dedup_key] = alert
    best = sorted(newest.values(), key=lambda a: -a.value_at_risk)[:3]
    told = {k.rsplit(":", 1)[0] for k in endpoint.posted}
    assert told == {a.dedup_key for a in best}
    assert ledger.used("team", "2026-12-04") == 3
    # Each told episode's transitions arrive in sequence order, all of them.
    for episode in told:
        sent = [int(k.rsplit(":", 1)[1]) for k in endpoint.posted if k.startswith(episode)]
        assert sent == sorted(a.sequence for a in alerts if a.dedup_key == episode)
    # A restart reads everything again: the same openings go again, nothing new is counted.
    again = _reloaded(ports)
    second = Endpoint(ports)
    restarted = _worker(3, again, ports, second)
    restarted.start()
    _offer(restarted, alerts)
    restarted.close_window()
    await _settle(restarted)
    await restarted.stop()
    assert sorted(second.posted) == sorted(endpoint.posted)
    assert again.used("team", "2026-12-04") == 3


async def test_an_uncapped_destination_sends_at_once_and_dead_letters_a_refusal() -> None:
    ports, ledger = Ports(), Ledger()
    alerts = HISTORIES[0] + HISTORIES[1]
    refused = f"{alerts[0].dedup_key}:{alerts[0].sequence}"
    endpoint = Endpoint(ports, refuse=frozenset({refused}))
    worker = _worker(None, ledger, ports, endpoint)
    worker.start()
    finished = _offer(worker, alerts + alerts[:2])  # a repeat of two records read again
    await _settle(worker)
    await worker.stop()
    assert len(finished) == len(alerts) + 2
    keys = [f"{a.dedup_key}:{a.sequence}" for a in alerts]
    assert sorted(endpoint.posted) == sorted(k for k in keys if k != refused)
    assert [(d.idempotency_key, d.reason, d.destination) for d in ports.dead] == [
        (refused, "rejected", "team")
    ]


def _history(*statuses: str) -> list[AlertRecord]:
    return next(h for h in HISTORIES if tuple(a.status for a in h) == statuses)


async def test_filters_choose_episodes_and_an_untold_one_does_not_resolve() -> None:
    ports, ledger = Ports(), Ledger()
    endpoint = Endpoint(ports)
    high = Filters(tiers=frozenset({"high", "critical"}))
    worker = _worker(None, ledger, ports, endpoint, high)
    worker.start()
    # An episode whose firing was filtered out (medium) is opened by its escalation
    # (critical), and then hears its resolution (medium: a follow-up needs no tier).
    firing, escalated, resolved = _history("firing", "escalated", "resolved", "firing")[:3]
    low = msgspec.structs.replace(firing, tier="medium")
    # One never opened for the team: its resolution is not sent either.
    quiet, quiet_end = _history("firing", "resolved")[:2]
    _offer(
        worker, [low, escalated, resolved, msgspec.structs.replace(quiet, tier="low"), quiet_end]
    )
    await _settle(worker)
    await worker.stop()
    key = escalated.dedup_key
    assert endpoint.posted == [f"{key}:{escalated.sequence}", f"{key}:{resolved.sequence}"]
    entry = ledger.entry("team", key)
    assert entry is not None and entry.opening == escalated.sequence and entry.closed


@pytest.mark.parametrize("capacity", [1, 2])
async def test_withheld_openings_are_released_not_sent(capacity: int) -> None:
    ports, ledger = Ports(), Ledger()
    endpoint = Endpoint(ports)
    worker = _worker(capacity, ledger, ports, endpoint, Filters(statuses=frozenset({"firing"})))
    worker.start()
    firings = [h[0] for h in HISTORIES]
    labels = {"destination": "team", "outcome": "withheld"}
    before = REGISTRY.get_sample_value("churnwatch_notify_alerts_total", labels) or 0.0
    finished = _offer(worker, firings)
    worker.close_window()
    await _settle(worker)
    await worker.stop()
    assert len(finished) == len(firings) and len(endpoint.posted) == capacity
    # The rest are counted, one per alert withheld.
    after = REGISTRY.get_sample_value("churnwatch_notify_alerts_total", labels)
    assert after == before + len(firings) - capacity


def _deliver_all(capacity: int | None, alerts: list[AlertRecord]) -> tuple[list[str], int]:
    """Posted keys (in order) and records finished, for alerts offered in this order."""

    async def run() -> tuple[list[str], int]:
        ports, ledger = Ports(), Ledger()
        endpoint = Endpoint(ports)
        worker = _worker(capacity, ledger, ports, endpoint)
        worker.start()
        finished = _offer(worker, alerts)
        if worker.window is not None:
            worker.close_window()
        await _settle(worker)
        await worker.stop()
        return endpoint.posted, len(finished)

    return asyncio.run(run())


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, len(HISTORIES) - 1), min_size=1, max_size=12, unique=True),
    st.lists(st.integers(0, 200), max_size=10),
    st.sampled_from([None, 1, 3]),
    st.randoms(use_true_random=False),
)
def test_repeats_and_the_interleaving_of_customers_change_nothing(
    customers: list[int], repeats: list[int], capacity: int | None, rng: random.Random
) -> None:
    histories = [HISTORIES[i] for i in customers]
    plain = [a for h in histories for a in h]
    # Customers interleaved at random (each one's alerts keep their order, as on one
    # partition), some records read twice right after themselves (a worker's re-send).
    lanes = [list(h) for h in histories]
    mixed: list[AlertRecord] = []
    while any(lanes):
        lane = rng.choice([x for x in lanes if x])
        alert = lane.pop(0)
        mixed.append(alert)
        if repeats and len(mixed) % (repeats[0] % 5 + 1) == 0:
            mixed.append(alert)
    first, done_first = _deliver_all(capacity, plain)
    second, done_second = _deliver_all(capacity, mixed)
    assert done_first == len(plain) and done_second == len(mixed)  # every record finished
    assert sorted(first) == sorted(second)  # the same transitions, each posted once
    assert len(second) == len(set(second))
    if capacity is None:
        assert sorted(second) == sorted(f"{a.dedup_key}:{a.sequence}" for a in plain)
