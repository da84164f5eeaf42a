"""One destination: each alert's role, the ranking window, and delivery in lanes.

For every alert read, ``offer`` decides at once (no await, so decisions follow the
read order): deliver it (an opening, or a follow-up of an episode the destination
was told of), hold it in the ranking window (an opening of a capped destination),
or skip it. Deliveries run in ``lanes`` per destination, an episode always in the
same lane, so its transitions reach the endpoint in sequence order while slow
episodes do not hold up others.

Invariants:
- every alert offered holds its ``Ticket`` until it is finished here (delivered,
  dead-lettered, withheld or skipped), so its offset is committed only after that;
- an opening's ledger entry is written (and acknowledged) before the opening is
  sent (``Job.durable``), so a restart never counts an opening twice
  (notifier/ledger.py).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from notifier import metrics
from notifier.capacity import Candidate, Window, day_of, rank
from notifier.config import Config, Destination
from notifier.delivery import Attempt, deliver
from notifier.filters import Role, role
from notifier.formats import Request, build, idempotency_key
from notifier.ledger import Ledger, StateRecord, known
from schemas.alert import AlertRecord
from schemas.notify import GiveUpReason, NotifyDeadLetter

log = logging.getLogger("churnwatch.notify")

#: Idempotency keys finished recently, per destination: a repeat of the alert read
#: again (at-least-once input) is dropped rather than posted twice.
RECENT_KEYS: Final = 100_000


class Ticket:
    """One record read: finished when every destination released it."""

    __slots__ = ("_holds", "_on_finish", "offset", "partition")

    def __init__(self, partition: object, offset: int, on_finish: Callable[[Ticket], None]) -> None:
        self.partition = partition
        self.offset = offset
        self._holds = 1  # the reader's own, released once every destination was offered it
        self._on_finish = on_finish

    def hold(self) -> None:
        self._holds += 1

    def release(self) -> None:
        self._holds -= 1
        if self._holds == 0:
            self._on_finish(self)


@dataclass(frozen=True)
class Source:
    """Where an alert was read, for its dead letter."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class Ports(Protocol):
    """What a destination needs from the Kafka side; both retry until acknowledged."""

    def write_state(self, records: list[StateRecord]) -> Awaitable[None]: ...

    def dead_letter(self, letter: NotifyDeadLetter) -> Awaitable[None]: ...


@dataclass
class Job:
    alert: AlertRecord
    source: Source
    ticket: Ticket
    opening: bool
    day: str | None
    #: The ledger write the opening waits for (None: a follow-up).
    durable: asyncio.Future[None] | None = None


Held = tuple[Source, Ticket]


class DestinationWorker:
    def __init__(
        self,
        destination: Destination,
        config: Config,
        ledger: Ledger,
        ports: Ports,
        post: Callable[[str, Request, float], Awaitable[Attempt]],
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.destination = destination
        self.config = config
        self.ledger = ledger
        self.ports = ports
        self._post = post
        self._wall = wall
        self._rng = rng or random.Random()
        capped = destination.daily_capacity is not None
        self.window: Window[Held] | None = Window(config.hold, monotonic) if capped else None
        self._opened = asyncio.Event()
        self.lanes: list[asyncio.Queue[Job]] = [
            asyncio.Queue() for _ in range(destination.lanes or config.delivery.lanes)
        ]
        self._recent: OrderedDict[str, None] = OrderedDict()
        #: Jobs queued or being delivered.
        self.queued = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Future[None]] = set()
        if capped:
            metrics.CAPACITY.labels(destination.name).set(destination.daily_capacity or 0)

    # -- deciding (synchronous) ------------------------------------------------------------

    def offer(self, alert: AlertRecord, source: Source, ticket: Ticket) -> None:
        """Decide what ``alert`` is for this destination; holds ``ticket`` while it is
        not finished."""
        name, filters = self.destination.name, self.destination.filters
        seen = known(self.ledger.entry(name, alert.dedup_key), alert.sequence)
        if seen is not None:
            if seen.is_opening:  # read again after a restart: the same opening, not counted
                self._enqueue(Job(alert, source, ticket, True, seen.day), hold=True)
            elif seen.follows and role(filters, alert, told=True) is Role.FOLLOW_UP:
                self._enqueue(Job(alert, source, ticket, False, None), hold=True)
            else:
                self._count("skipped")
            return
        window = self.window
        if window is not None and alert.dedup_key in window:
            ticket.hold()
            window.add(alert, (source, ticket))
            return
        if role(filters, alert, told=False) is not Role.OPENING:
            self._count("skipped")
            return
        ticket.hold()
        if window is None:
            self._admit([Candidate(alert.dedup_key, [(alert, (source, ticket))])], counted=False)
            return
        opens = window.closes_at is None
        window.add(alert, (source, ticket))
        metrics.HELD.labels(name).set(len(window))
        if opens:
            self._opened.set()

    def close_window(self) -> None:
        """Rank what the window held and admit the best into today's capacity."""
        assert self.window is not None and self.destination.daily_capacity is not None
        name = self.destination.name
        candidates = self.window.take()
        metrics.HELD.labels(name).set(0)
        today = day_of(self._wall(), self.config.timezone)
        room = self.destination.daily_capacity - self.ledger.used(name, today)
        admitted, withheld = rank(candidates, room)
        self._admit(admitted, counted=True, day=today)
        for candidate in withheld:
            for _, (_, ticket) in candidate.alerts:
                self._count("withheld")
                ticket.release()
        used = self.ledger.used(name, today)
        metrics.CAPACITY_USED.labels(name).set(used)
        if withheld:
            log.info(
                "%s: ranked %d episodes, admitted %d, withheld %d (capacity %d/day, %d used on %s)",
                name,
                len(candidates),
                len(admitted),
                len(withheld),
                self.destination.daily_capacity,
                used,
                today,
            )

    def _admit(
        self, admitted: list[Candidate[Held]], *, counted: bool, day: str | None = None
    ) -> None:
        """Record the admitted episodes in the ledger, then queue their alerts, which
        wait for that record to be acknowledged. Tickets are held already."""
        day = day or day_of(self._wall(), self.config.timezone)
        name, filters = self.destination.name, self.destination.filters
        records: list[StateRecord] = []
        jobs: list[Job] = []
        for candidate in admitted:
            held = sorted(candidate.alerts, key=lambda pair: pair[0].sequence)
            # The opening is the earliest held alert that may open the episode (an
            # older one re-sent by a worker may arrive late and be filtered out).
            first = next(a for a, _ in held if role(filters, a, told=False) is Role.OPENING)
            records.append(
                self.ledger.admit(name, candidate.dedup_key, first.sequence, day, counted=counted)
            )
            for alert, (source, ticket) in held:
                if alert.sequence == first.sequence:
                    jobs.append(Job(alert, source, ticket, True, day))
                elif alert.sequence > first.sequence and role(filters, alert, told=True) is (
                    Role.FOLLOW_UP
                ):
                    jobs.append(Job(alert, source, ticket, False, None))
                else:
                    self._count("skipped")
                    ticket.release()
        if not records:
            return
        durable = self._spawn(self.ports.write_state(records))
        for job in jobs:
            job.durable = durable
            self._enqueue(job, hold=False)

    def _enqueue(self, job: Job, *, hold: bool) -> None:
        if hold:
            job.ticket.hold()
        lane = zlib.crc32(job.alert.dedup_key.encode()) % len(self.lanes)
        self.queued += 1
        self.lanes[lane].put_nowait(job)

    def _count(self, outcome: str) -> None:
        metrics.ALERTS.labels(self.destination.name, outcome).inc()

    # -- delivering (tasks) ----------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._lane(queue)) for queue in self.lanes]
        if self.window is not None:
            self._tasks.append(asyncio.create_task(self._windows()))

    def _spawn(self, write: Awaitable[None]) -> asyncio.Future[None]:
        """A state write in the background, kept until it is done."""
        task = asyncio.ensure_future(write)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def stop(self, grace: float = 5.0) -> None:
        """Cancel the deliveries; state writes under way get ``grace`` seconds first (an
        opening waits for its write, so one cut short sent nothing: its record is not
        committed, and the next start ranks it again)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._background:
            await asyncio.wait(self._background, timeout=grace)
        for write in list(self._background):
            write.cancel()

    def idle(self) -> bool:
        """Nothing queued, being delivered or held."""
        return self.queued == 0 and (self.window is None or len(self.window) == 0)

    async def _windows(self) -> None:
        assert self.window is not None
        while True:
            await self._opened.wait()
            self._opened.clear()
            await asyncio.sleep(self.window.remaining())
            if self.window.due():
                self.close_window()
            elif self.window.closes_at is not None:  # not due yet: look again
                self._opened.set()

    async def _lane(self, queue: asyncio.Queue[Job]) -> None:
        while True:
            job = await queue.get()
            try:
                await self._run(job)
            finally:
                self.queued -= 1

    async def _run(self, job: Job) -> None:
        key = idempotency_key(job.alert)
        if key in self._recent:
            self._count("duplicate")
            job.ticket.release()
            return
        if job.durable is not None:
            await job.durable
        destination = self.destination
        request = build(
            destination, job.alert, opening=job.opening, day=job.day, currency=self.config.currency
        )
        timeout = self.config.delivery.timeout

        async def send(req: Request) -> Attempt:
            return await self._post(destination.url, req, timeout)

        def counted(attempt: Attempt) -> None:
            metrics.ATTEMPTS.labels(destination.name, attempt.kind).inc()
            if attempt.kind != "ok":
                log.info("%s: %s: %s", destination.name, key, attempt.detail)

        outcome = await deliver(send, request, self.config.delivery, self._rng, on_attempt=counted)
        if outcome.delivered:
            self._count("delivered")
        else:
            assert outcome.reason is not None
            log.warning("%s: %s given up: %s", destination.name, key, outcome.detail)
            await self.ports.dead_letter(
                dead_letter(job, destination.name, outcome.reason, outcome.detail, outcome.attempts)
            )
            self._count("dead_lettered")
        self._remember(key)
        if job.alert.status == "resolved":
            closed = self.ledger.close(destination.name, job.alert.dedup_key)
            if closed is not None:
                # Not awaited: a lost close only keeps the entry longer (ledger.py).
                self._spawn(self.ports.write_state([closed]))
        job.ticket.release()

    def _remember(self, key: str) -> None:
        self._recent[key] = None
        if len(self._recent) > RECENT_KEYS:
            self._recent.popitem(last=False)


def dead_letter(
    job: Job, destination: str | None, reason: GiveUpReason, detail: str, attempts: int
) -> NotifyDeadLetter:
    return from_source(
        job.source, destination, reason, detail, attempts, idempotency_key(job.alert)
    )


def from_source(
    source: Source,
    destination: str | None,
    reason: GiveUpReason,
    detail: str,
    attempts: int,
    key: str | None,
) -> NotifyDeadLetter:
    return NotifyDeadLetter(
        reason=reason,
        detail=detail,
        destination=destination,
        idempotency_key=key,
        attempts=attempts,
        topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        key_b64=None if source.key is None else base64.b64encode(source.key).decode(),
        value_b64=base64.b64encode(source.value).decode(),
        failed_at=datetime.now(UTC),
    )
