"""The daily capacity: at most N openings per destination per day, highest value at
risk first.

"Highest first" cannot be exact in a stream: the day's best candidate may arrive at
23:59, after the capacity was spent. Waiting for the day's end would make every
alert up to a day late, and admitting first come first served would let a morning of
small accounts crowd out the afternoon's large one. The notifier takes a middle way:
openings of a capped destination are **held for a short window** (``hold``, 30 s by
default) from the first one that arrives, then ranked by value at risk (highest
first; ties: earlier transition, then ``dedup_key``, so the order is total) and
admitted while the day's capacity lasts. The rest are **withheld**: counted in
``churnwatch_notify_alerts_total{outcome="withheld"}`` and logged; they stay in the
at-risk queue (``/at-risk``), and an escalation of such an episode competes again,
at its new value. So within a window the ranking is exact, and a backlog (a
notifier catching up after an outage, a worker replaying history) is read within
one window or a few and ranked as a whole (a window holds at most about
``max_in_flight`` records: fetching pauses while it is full, so a backlog larger
than that is ranked in turns of that size); live, where alerts trickle in, the
capacity goes to the best of each window in turn. The window only delays openings
of capped destinations; follow-ups and uncapped destinations are sent at once.

A day is a calendar day of the wall clock at ranking time in the configured time
zone: the capacity protects a team's working day, whatever event time the alerts
carry (a replay of last year's history must not page a year of days at once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar
from zoneinfo import ZoneInfo

from schemas.alert import AlertRecord

T = TypeVar("T")


def day_of(moment: datetime, zone: ZoneInfo) -> str:
    """The calendar day (``YYYY-MM-DD``) of an aware ``moment`` in ``zone``."""
    return moment.astimezone(zone).date().isoformat()


@dataclass
class Candidate(Generic[T]):
    """One episode's alerts held in a window, in arrival order, each with what the
    caller needs to finish it (``T``). The first one is the opening; the rest follow."""

    dedup_key: str
    alerts: list[tuple[AlertRecord, T]] = field(default_factory=list)

    @property
    def latest(self) -> AlertRecord:
        return max((alert for alert, _ in self.alerts), key=lambda a: a.sequence)

    @property
    def opening(self) -> AlertRecord:
        return self.alerts[0][0]

    def sort_key(self) -> tuple[float, object, str]:
        """Ranking order: the episode's newest value at risk (what a loss costs now),
        highest first; then the earlier opening transition; then the key."""
        return (-self.latest.value_at_risk, self.opening.at, self.dedup_key)


def rank(
    candidates: list[Candidate[T]], room: int
) -> tuple[list[Candidate[T]], list[Candidate[T]]]:
    """The candidates admitted into ``room`` places (highest value at risk first) and
    those withheld. The result does not depend on the candidates' order."""
    ordered = sorted(candidates, key=Candidate.sort_key)
    room = max(room, 0)
    return ordered[:room], ordered[room:]


class Window(Generic[T]):
    """Openings of one destination held until the window closes, grouped by episode.

    The window opens with its first candidate and closes ``hold`` seconds later
    (``now``: a monotonic clock in seconds); the next candidate opens the next one."""

    def __init__(self, hold: float, now: Callable[[], float]) -> None:
        self.hold = hold
        self._now = now
        self.closes_at: float | None = None
        self._entries: dict[str, Candidate[T]] = {}

    def __contains__(self, dedup_key: str) -> bool:
        return dedup_key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, alert: AlertRecord, item: T) -> None:
        """Hold ``alert``; an alert of an episode already held joins it (it is then
        delivered after the opening, or withheld with it)."""
        if self.closes_at is None:
            self.closes_at = self._now() + self.hold
        entry = self._entries.get(alert.dedup_key)
        if entry is None:
            entry = self._entries[alert.dedup_key] = Candidate(alert.dedup_key)
        entry.alerts.append((alert, item))

    def due(self) -> bool:
        """Open and past its closing time (an empty window is never due)."""
        return self.closes_at is not None and self._now() >= self.closes_at

    def remaining(self) -> float:
        """Seconds until the window closes (0 when closed or due)."""
        return 0.0 if self.closes_at is None else max(0.0, self.closes_at - self._now())

    def take(self) -> list[Candidate[T]]:
        """Everything held, the window closed."""
        taken = list(self._entries.values())
        self._entries = {}
        self.closes_at = None
        return taken
