"""Alert records and a webhook receiver for the notifier's tests.

Alerts are made as the worker makes them: domain ``Alert`` values (retention/
alerts.py) encoded by the worker's own outbox encoder (processor/outbox.py), so
the notifier is tested against the bytes it will read in production.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import msgspec
from aiohttp import web

from processor.outbox import alert_record
from retention.alerts import Alert, dedup_key
from retention.risk import Reason
from retention.timeutil import DAY, HOUR, parse_time
from schemas.alert import AlertRecord
from streams import topics

_CLOCK = SimpleNamespace(topic=topics.CLOCK, partition=0, offset=0, value=b"")
_REASONS = [
    Reason("overdue", 3.4, 2.0),
    Reason("frequency_drop", 0.25, 0.5),
    Reason("detractor", 3, 6),
    Reason("low_csat", 1, 2),
    Reason("bad_support", 2, 1),
    Reason("lapsed", 95, 90),
]
DECODER = msgspec.json.Decoder(AlertRecord)


def episodes(seed: int, customers: int, start: str = "2026-01-05T00:00:00Z") -> list[list[Alert]]:
    """Per customer, their alerts in sequence order: one or two episodes each, a
    firing then maybe an escalation, then resolved, churned or still open."""
    rng = random.Random(seed)
    base = parse_time(start)
    out = []
    for number in range(customers):
        customer = f"c{number:04d}"
        segment = rng.choice(["enterprise", "self-serve", None])
        at = base + rng.randrange(0, 30 * DAY)
        sequence = 0
        alerts: list[Alert] = []
        count = rng.choice([1, 1, 2])
        for number_of in range(count):
            episode = at
            key = dedup_key(customer, episode)
            value = round(rng.uniform(50, 20_000), 2)
            # A customer's next episode opens only after the last one was resolved.
            ends = [["resolved"], ["escalated", "resolved"], ["churned", "resolved"]]
            if number_of == count - 1:
                ends += [[], ["escalated"], ["escalated", "churned"]]
            path = ["firing", *rng.choice(ends)]
            for status in path:
                sequence += 1
                tier = {"firing": "high", "escalated": "critical"}.get(status, "medium")
                if status == "churned":
                    tier = "critical"
                alerts.append(
                    Alert(
                        status=status,  # type: ignore[arg-type]
                        customer_id=customer,
                        tier=tier,  # type: ignore[arg-type]
                        risk_score=round(rng.uniform(0.7, 1.0), 6),
                        reasons=rng.sample(_REASONS, rng.randint(1, 3)),
                        value_at_risk=value,
                        clv=round(value * 1.6, 2),
                        segment=segment,
                        starts_at=episode,
                        at=at,
                        sequence=sequence,
                        dedup_key=key,
                    )
                )
                at += rng.randrange(HOUR, 20 * DAY)
                value = round(value * rng.uniform(0.8, 1.5), 2)
            at += 31 * DAY  # past the cooldown before the next episode
        out.append(alerts)
    return out


def encode(alert: Alert) -> tuple[bytes, bytes]:
    """The key and value the worker publishes on churnwatch.alerts for ``alert``."""
    _, key, value = alert_record(alert, _CLOCK)
    return key, value


def record(alert: Alert) -> AlertRecord:
    return DECODER.decode(encode(alert)[1])


@dataclass
class Received:
    key: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Receiver:
    """A webhook server that fails, times out and recovers, deterministically by
    request count and idempotency key; records every request it processed."""

    #: Keys answered 400 every time (the notifier must give up on them at once).
    rejected: set[str] = field(default_factory=set)
    #: Keys answered 503 every time (given up after every attempt).
    down: set[str] = field(default_factory=set)
    #: Keys whose first attempt is processed, then answered after the client's timeout.
    slow: set[str] = field(default_factory=set)
    #: Keys whose first two attempts are answered 500.
    flaky: set[str] = field(default_factory=set)
    #: Requests numbered in this range (per path) are all answered 500: an outage.
    outage: range = range(0)
    #: Paths the per-key faults above apply to (the outage applies to every path).
    faulty: frozenset[str] = frozenset({"all"})
    delay: float = 3.0
    processed: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    attempts: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{path}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        key = request.headers.get("Idempotency-Key", "")
        number = self.requests[path]
        self.requests[path] += 1
        self.attempts[(path, key)] += 1
        tries = self.attempts[(path, key)]
        if number in self.outage:
            return web.Response(status=500, text="outage")
        faulty = path in self.faulty
        if faulty and key in self.rejected:
            return web.Response(status=400, text="no such customer here")
        if faulty and key in self.down:
            return web.Response(status=503, text="down")
        if faulty and key in self.flaky and tries <= 2:
            return web.Response(status=500, text="flaky")
        self.processed[path].append(Received(key, body, dict(request.headers)))
        if faulty and key in self.slow and tries == 1:
            await asyncio.sleep(self.delay)  # processed, but answered too late
        return web.Response(text="ok")

    def view(self, path: str) -> dict[str, list[Received]]:
        """The de-duplicated view: per idempotency key, every copy processed."""
        grouped: dict[str, list[Received]] = defaultdict(list)
        for item in self.processed[path]:
            grouped[item.key].append(item)
        return dict(grouped)


async def serve(receiver: Receiver) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(receiver.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def split(values: list[Any], parts: int) -> list[list[Any]]:
    return [values[i::parts] for i in range(parts)]
