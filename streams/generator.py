"""A realistic, deterministic synthetic event history.

The demo, the tests and the benchmarks need input that looks like a business:
customer segments with their own spend, customers with their own purchase rhythm,
subscriptions and cancellations, churners who slow down, spend less and complain
before they leave, and the defects real pipelines see (duplicates, disorder,
malformed records). The same arguments always give the same bytes, so a failure
seen once can be replayed.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

DAY_S = 86_400.0


@dataclass(frozen=True)
class GeneratorProfile:
    """Shares and rates of the synthetic business; defaults give a plausible mix."""

    churner_share: float = 0.30
    one_time_share: float = 0.15
    legacy_share: float = 0.03  # purchases but no signup event (an old import)
    subscriber_share: float = 0.40
    cancel_share: float = 0.60  # of churning subscribers, who cancel explicitly
    nps_every_days: float = 90.0
    csat_share: float = 0.25  # of purchases followed by a CSAT answer
    support_every_days: float = 120.0
    duplicate_share: float = 0.01
    disorder_share: float = 0.02
    max_disorder_s: float = 6 * 3600.0
    malformed_share: float = 0.005
    oversized_share: float = 0.02  # of malformed records
    #: Sub-segments per segment ("smb-3"): 0 (the default) keeps the three segments,
    #: and draws nothing more, so the output for a seed stays what it was.
    sub_segments: int = 0
    #: Share of customers who sign up a second time, 30-200 days later, in another
    #: segment and plan (their first signup still decides their segment); 0 by default.
    resignup_share: float = 0.0


SEGMENTS: dict[str, tuple[float, float, float]] = {
    # name: (weight, log-mean spend, log-sd spend)
    "consumer": (0.6, math.log(35.0), 0.6),
    "smb": (0.3, math.log(120.0), 0.7),
    "enterprise": (0.1, math.log(900.0), 0.8),
}
PLANS: dict[str, float] = {"free": 0.0, "basic": 19.0, "pro": 49.0, "business": 199.0}
CHANNELS = ("organic", "paid", "referral", "partner")
CANCEL_REASONS = ("price", "competitor", "no_need", "support", "other")
MALFORMED_KINDS = (
    "not_json",
    "truncated",
    "wrong_type",
    "missing_field",
    "negative_amount",
    "unknown_type",
    "no_offset",
    "non_utf8",
)


@dataclass
class GeneratorStats:
    events: Counter[str] = field(default_factory=Counter)
    customers: int = 0
    duplicates: int = 0
    disordered: int = 0
    malformed: Counter[str] = field(default_factory=Counter)

    @property
    def lines(self) -> int:
        return sum(self.events.values()) + self.duplicates + sum(self.malformed.values())

    def __str__(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.events.items()))
        bad = sum(self.malformed.values())
        return (
            f"{self.lines} lines, {self.customers} customers ({kinds}); "
            f"{self.duplicates} duplicates, {self.disordered} out of order, {bad} malformed"
        )


def _stamp(rng: random.Random, seconds: float) -> str:
    moment = datetime.fromtimestamp(round(seconds, 3), UTC)
    if rng.random() < 0.1:  # some producers send local time with an offset
        moment = moment.astimezone(timezone(timedelta(hours=2)))
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Customer:
    """Draws one customer's life: signup, purchases, feedback, maybe cancellation."""

    def __init__(self, index: int, seed: int, start: float, end: float, p: GeneratorProfile):
        self.rng = random.Random(f"{seed}:{index}")
        self.id = f"c{index:06d}"
        self.start, self.end, self.p = start, end, p
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.n = 0

    def emit(self, at: float, type_: str, **fields: Any) -> None:
        self.n += 1
        body = {
            "type": type_,
            "event_id": f"{self.id}-{self.n}",
            "customer_id": self.id,
            "occurred_at": _stamp(self.rng, at),
            **fields,
        }
        self.events.append((at, body))

    def live(self) -> list[tuple[float, dict[str, Any]]]:
        rng, p = self.rng, self.p
        names = list(SEGMENTS)
        segment = rng.choices(names, weights=[SEGMENTS[s][0] for s in names])[0]
        _, log_mean, log_sd = SEGMENTS[segment]
        if p.sub_segments:
            segment = f"{segment}-{rng.randrange(p.sub_segments)}"
        born = self.start + rng.random() * (self.end - self.start) * 0.9
        subscriber = rng.random() < p.subscriber_share
        plan = rng.choice(("basic", "pro", "business")) if subscriber else "free"
        churner = rng.random() < p.churner_share
        one_time = not churner and rng.random() < p.one_time_share
        if rng.random() >= p.legacy_share:
            self.emit(
                born,
                "signup",
                segment=segment,
                plan=plan,
                monthly_fee=PLANS[plan],
                channel=rng.choice(CHANNELS),
            )
            if p.resignup_share and rng.random() < p.resignup_share:
                again = rng.choice(("basic", "pro", "business"))
                self.emit(
                    born + rng.uniform(30, 200) * DAY_S,
                    "signup",
                    segment=rng.choice(names),
                    plan=again,
                    monthly_fee=PLANS[again],
                    channel=rng.choice(CHANNELS),
                )
        interval = min(60.0, max(2.0, rng.gammavariate(2.0, 9.0))) * DAY_S
        leave = born + rng.uniform(0.2, 0.9) * (self.end - born) if churner else math.inf
        slow_from = leave - 75 * DAY_S
        t = born + rng.uniform(0.0, 3.0) * DAY_S
        next_nps = born + rng.uniform(10, p.nps_every_days) * DAY_S
        next_support = born + rng.expovariate(1 / p.support_every_days) * DAY_S
        while t < min(self.end, leave):
            decline = max(0.0, min(1.0, (t - slow_from) / (leave - slow_from))) if churner else 0.0
            amount = rng.lognormvariate(log_mean, log_sd) * (1 - 0.5 * decline)
            self.emit(
                t,
                "purchase",
                amount=round(amount, 2),
                currency="USD",
                order_id=f"o-{self.id}-{self.n}",
                cost_to_serve=round(amount * rng.uniform(0.05, 0.3), 2),
            )
            if rng.random() < p.csat_share:
                low = rng.random() < 0.2 + 0.6 * decline
                score = rng.randint(1, 2) if low else rng.randint(4, 5)
                self.emit(t + rng.uniform(0.1, 2) * DAY_S, "feedback", kind="csat", score=score)
            while next_nps < t:
                unhappy = rng.random() < 0.1 + 0.8 * decline
                score = rng.randint(0, 6) if unhappy else rng.choice((7, 8, 9, 9, 10, 10))
                self.emit(next_nps, "feedback", kind="nps", score=score)
                next_nps += p.nps_every_days * DAY_S * rng.uniform(0.8, 1.2)
            while next_support < t:
                bad = rng.random() < 0.1 + 0.7 * decline
                outcome = rng.choice(("bad", "unresolved")) if bad else "resolved"
                self.emit(next_support, "feedback", kind="support", outcome=outcome)
                next_support += rng.expovariate(1 / p.support_every_days) * DAY_S
            if one_time:
                break
            t += rng.expovariate(1.0) * interval * (1 + 2.5 * decline)
        if churner and subscriber and leave < self.end and rng.random() < p.cancel_share:
            self.emit(
                leave,
                "cancellation",
                reason_code=rng.choice(CANCEL_REASONS),
                reason="generated",
                monthly_fee=PLANS[plan],
            )
        return [(at, body) for at, body in self.events if self.start <= at < self.end]


def _malformed(rng: random.Random, kind: str, at: float) -> bytes:
    customer = f"c{rng.randint(0, 999_999):06d}"
    base: dict[str, Any] = {
        "type": "purchase",
        "event_id": f"bad-{rng.getrandbits(48):x}",
        "customer_id": customer,
        "occurred_at": _stamp(rng, at),
        "amount": 10.0,
    }
    if kind == "oversized":
        return json.dumps({**base, "comment": "x" * 70_000}).encode()
    if kind == "not_json":
        return b"this is not an event"
    if kind == "truncated":
        return json.dumps(base).encode()[: rng.randint(5, 40)]
    if kind == "wrong_type":
        return json.dumps({**base, "amount": "12.50"}).encode()
    if kind == "missing_field":
        return json.dumps({k: v for k, v in base.items() if k != "event_id"}).encode()
    if kind == "negative_amount":
        return json.dumps({**base, "amount": -rng.uniform(1, 50)}).encode()
    if kind == "unknown_type":
        return json.dumps({**base, "type": "refund"}).encode()
    if kind == "no_offset":
        return json.dumps({**base, "occurred_at": base["occurred_at"][:19]}).encode()
    return b'{"type":"purchase","customer_id":"' + customer.encode() + b'","x":"\xff\xfe\xfa"}'


def generate(
    customers: int,
    days: int,
    seed: int,
    end: datetime,
    *,
    defects: bool = True,
    profile: GeneratorProfile | None = None,
    stats: GeneratorStats | None = None,
) -> Iterator[bytes]:
    """JSON Lines (without newlines) of ``customers``' events over ``days`` up to ``end``."""
    if end.tzinfo is None:
        raise ValueError("end must be timezone-aware")
    p = profile or GeneratorProfile()
    stats = stats if stats is not None else GeneratorStats()
    stop = end.timestamp()
    start = stop - days * DAY_S
    rng = random.Random(f"{seed}:defects")
    lines: list[tuple[float, int, bytes]] = []
    for index in range(customers):
        for at, body in _Customer(index, seed, start, stop, p).live():
            line = json.dumps(body, separators=(",", ":")).encode()
            stats.events[body["type"]] += 1
            emit_at = at
            if defects and rng.random() < p.disorder_share:
                emit_at += rng.uniform(0.0, p.max_disorder_s)
                stats.disordered += 1
            lines.append((emit_at, len(lines), line))
            if defects and rng.random() < p.duplicate_share:
                lines.append((emit_at + rng.uniform(1.0, 3600.0), len(lines), line))
                stats.duplicates += 1
            if defects and rng.random() < p.malformed_share:
                kind = rng.choice(MALFORMED_KINDS)
                if rng.random() < p.oversized_share:
                    kind = "oversized"
                lines.append((at, len(lines), _malformed(rng, kind, at)))
                stats.malformed[kind] += 1
    stats.customers = customers
    lines.sort()
    for _, _, line in lines:
        yield line


def write_history(
    path: Path,
    customers: int,
    days: int,
    seed: int,
    end: datetime,
    *,
    defects: bool = True,
    progress: Callable[[int], None] | None = None,
    profile: GeneratorProfile | None = None,
) -> GeneratorStats:
    stats = GeneratorStats()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for count, line in enumerate(
            generate(customers, days, seed, end, defects=defects, profile=profile, stats=stats),
            start=1,
        ):
            handle.write(line + b"\n")
            if progress is not None and count % 10_000 == 0:
                progress(count)
    if progress is not None:
        progress(stats.lines)
    return stats
