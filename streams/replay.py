"""Replaying an event history through real workers on a real broker.

Events go through Kafka and the same worker processes as in production; results
are read back from the ``customers`` table's changelog topic (the last record per
key), not recomputed from the input. Steps: start a broker (unless one is given),
create topics, publish the file (in event-time order unless asked to keep the
file's order, as a history happened), start workers with the live clock off, wait
until the workers have committed every input offset, send one final clock tick at
``as_of`` to every partition, wait for that too and for the state to show every
record applied, then collect.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import msgspec
from aiokafka import AIOKafkaProducer

from processor.partition import PartitionState, decode_partition
from retention.state import CustomerState, decode_state
from retention.timeutil import DAY, SECOND, Micros, from_micros, to_micros
from schemas.decode import EventDecoder, Rejected
from schemas.events import ClockTick
from streams import topics
from streams.embedded import Broker, describe, embedded_broker
from streams.inputs import Format, Record, read_events
from streams.kafka_admin import (
    create_topics,
    end_offsets,
    read_all,
    read_latest_by_key,
    wait_for_zero_lag,
)
from streams.partitions import is_customer_key, is_partition_key
from streams.produce import PublishStats, publish
from streams.security import ClientSecurity, client_kwargs, client_security, without_security
from streams.settings import Settings
from streams.workers import WorkerProcess, free_port, local_settings

Stage = Callable[[str], None]
Order = Literal["time", "file"]


def _event_time(record: Record) -> int:
    # Records whose time cannot be read sort first; the worker dead-letters them.
    return -1 if record.occurred_at is None else record.occurred_at


#: The worker dead-letters an event more than this far ahead of its wall clock
#: (``future_time``, ``MAX_FUTURE`` in processor/intake.py, which streams does not import).
_MAX_FUTURE = DAY


def first_tick(records: list[Record], as_of: Micros, max_event_bytes: int) -> Micros | None:
    """The earliest event time, before ``as_of``, of a record the worker accepts;
    None when it accepts none.

    Only accepted events count: a time read from a record the worker dead-letters
    (year 1, a missing field) would either be a tick the worker dead-letters too,
    counted in the replay's dead letters as if it were bad input, or open periods
    long before any event the state holds.
    """
    decoder = EventDecoder(max_event_bytes)
    future = round(time.time() * SECOND) + _MAX_FUTURE
    dated = [r for r in records if r.occurred_at is not None and r.occurred_at < as_of]
    # Earliest first, so that usually only the first record or few are decoded.
    for record in sorted(dated, key=_event_time):
        event = decoder.decode(topics.INPUT_TOPICS[record.topic], record.key, record.value)
        if isinstance(event, Rejected):
            continue
        moment = to_micros(event.occurred_at)
        if moment < as_of and moment <= future and _tick_accepted(decoder, moment):
            return moment
    return None


def _tick_value(moment: Micros) -> bytes:
    return msgspec.json.encode(ClockTick(time=from_micros(moment), source="replay"))


def _tick_accepted(decoder: EventDecoder, moment: Micros) -> bool:
    """Whether the worker's validation takes a replay tick at ``moment``."""
    try:
        value = _tick_value(moment)
    except OverflowError:  # before year 1 or after 9999: not even a datetime
        return False
    return isinstance(decoder.decode_tick(value), ClockTick)


@dataclass
class ReplayResult:
    as_of: Micros
    customers: dict[str, CustomerState]
    partitions: list[PartitionState]
    published: PublishStats
    processing_seconds: float
    settings: Settings
    timings: dict[str, float] = field(default_factory=dict)
    #: Every record on churnwatch.alerts, decoded, in (partition, offset) order.
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def events(self) -> dict[str, int]:
        """Input events, summed over the partition records. After the final tick
        nothing waits, so consumed = valid + deadletter + duplicates (late is part of
        valid): ticks are not counted as consumed, so the replay must never send one
        that the worker dead-letters (see ``first_tick``). ``forwarded``: those read on
        a partition other than their key's (streams/routing.py), counted at home."""
        totals = {"consumed": 0, "valid": 0, "deadletter": 0, "duplicates": 0, "late": 0}
        totals["forwarded"] = 0
        for state in self.partitions:
            for name in totals:
                totals[name] += getattr(state, name)
        return totals

    @property
    def rate(self) -> float:
        """Input events per second, from the first worker ready to all input committed."""
        consumed = self.events["consumed"]
        return consumed / self.processing_seconds if self.processing_seconds > 0 else 0.0


@contextlib.contextmanager
def running_workers(settings: Settings, count: int, workdir: Path) -> Iterator[list[WorkerProcess]]:
    workers = [
        WorkerProcess(
            settings.replace(web_port=free_port(), datadir=str(workdir / f"worker-{n}")),
            workdir / f"worker-{n}.log",
        )
        for n in range(count)
    ]
    try:
        for worker in workers:
            worker.start()
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def wait_settled(procs: list[WorkerProcess], partitions: int, timeout: float = 120.0) -> None:
    """Wait until the workers own every partition exactly once, have recovered their
    tables, and stay so for a second: input published before then would be handed
    over mid-stream, which is correct but makes replays slower and less repeatable."""
    for proc in procs:
        proc.wait_ready(timeout=timeout)
    deadline = time.monotonic() + timeout
    stable_since: float | None = None
    while time.monotonic() < deadline:
        healths = [proc.health() or {} for proc in procs]
        owned = sorted(p for h in healths for p in h.get("partitions", []))
        settled = owned == list(range(partitions)) and all(h.get("status") == "ok" for h in healths)
        if settled:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= 1.0:
                return
        else:
            stable_since = None
        time.sleep(0.2)
    raise TimeoutError(f"workers did not settle on {partitions} partitions in {timeout:.0f}s")


async def send_ticks(
    bootstrap: str, partitions: int, moment: Micros, security: ClientSecurity | None = None
) -> None:
    """One clock tick at ``moment`` to every partition of the clock topic.

    Raises ``ValueError`` for a time the worker would dead-letter: a replay's own
    ticks are never bad input."""
    if not _tick_accepted(EventDecoder(), moment):
        raise ValueError(f"no clock tick at {moment} µs since 1970: outside the supported range")
    value = _tick_value(moment)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **client_kwargs(security))
    await producer.start()
    try:
        for partition in range(partitions):
            await producer.send_and_wait(topics.CLOCK, value, partition=partition)
    finally:
        await producer.stop()


async def tick_and_wait(
    bootstrap: str,
    app_id: str,
    partitions: int,
    moment: Micros,
    timeout: float = 120.0,
    security: ClientSecurity | None = None,
) -> None:
    """A clock tick at ``moment`` to every partition, then wait until the group
    ``app_id`` has committed it: the periods and lapses due by then are done."""
    await send_ticks(bootstrap, partitions, moment, security)
    await wait_for_zero_lag(bootstrap, app_id, [topics.CLOCK], timeout=timeout, security=security)
    await wait_applied(bootstrap, app_id, timeout=timeout, security=security)


async def wait_applied(
    bootstrap: str, app_id: str, timeout: float = 120.0, security: ClientSecurity | None = None
) -> None:
    """Wait until the partition records in the changelog show every record of every
    consumed topic applied to the state.

    Committed offsets alone do not say so: after a rebalance the committed offset
    can be ahead of the state (Faust acknowledges what a worker read but left for
    the partition's owner, see processor/batch.py) while the owner reads those
    records again. Raises ``TimeoutError`` naming what is still behind.
    """
    ends = await end_offsets(bootstrap, topics.CONSUMED_TOPICS, security=security)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: list[PartitionState] | None = None
    while True:
        states = await collect(bootstrap, app_id, customers=False, security=security)
        applied = {(t, s.partition): offset for s in states for t, offset in s.offsets.items()}
        behind = sorted(
            f"{tp.topic}[{tp.partition}] at {applied.get((tp.topic, tp.partition), -1) + 1}"
            f" of {end}"
            for tp, end in ends.items()
            if applied.get((tp.topic, tp.partition), -1) + 1 < end
        )
        # Caught up, and no record changed since the last look: a batch writes its
        # partition record first, so the customers it updated are in by now too.
        if not behind and states == last:
            return
        last = states
        if loop.time() > deadline:
            raise TimeoutError(f"state not caught up after {timeout:.0f}s: {', '.join(behind)}")
        await asyncio.sleep(0.5)


@overload
async def collect(
    bootstrap: str, app_id: str, *, security: ClientSecurity | None = None
) -> tuple[dict[str, CustomerState], list[PartitionState]]: ...


@overload
async def collect(
    bootstrap: str,
    app_id: str,
    *,
    customers: Literal[False],
    security: ClientSecurity | None = None,
) -> list[PartitionState]: ...


async def collect(
    bootstrap: str,
    app_id: str,
    *,
    customers: bool = True,
    security: ClientSecurity | None = None,
) -> tuple[dict[str, CustomerState], list[PartitionState]] | list[PartitionState]:
    """The latest customers and partition records in the table's changelog; with
    ``customers=False`` the partition records alone (no customer state decoded)."""
    latest = await read_latest_by_key(bootstrap, topics.changelog_topic(app_id), security=security)
    states: dict[str, CustomerState] = {}
    partitions: list[PartitionState] = []
    for key, value in latest.items():
        if value is None:
            continue
        if is_partition_key(key):
            partitions.append(decode_partition(value))
        elif customers and is_customer_key(key):
            state = decode_state(value)
            states[state.customer_id] = state
    partitions.sort(key=lambda p: p.partition)
    return (states, partitions) if customers else partitions


def replay(
    path: Path,
    as_of: Micros,
    *,
    fmt: Format = "jsonl",
    order: Order = "time",
    partitions: int = 4,
    workers: int = 1,
    broker_url: str | Broker | None = None,
    embedded: str = "tansu",
    base: Settings | None = None,
    workdir: Path | None = None,
    stage: Stage = lambda _: None,
    progress: Callable[[str, int], None] | None = None,
    timeout: float = 1800.0,
    # How the records get to the broker: ``publish``'s signature (tests publish with
    # other clients, and their partitioners, to show it makes no difference).
    publisher: Callable[..., Coroutine[Any, Any, PublishStats]] = publish,
) -> ReplayResult:
    base = base or Settings.from_env()
    # The final tick, at as_of + lateness, must be one the worker accepts; say so
    # before starting anything rather than after publishing the whole file.
    if not _tick_accepted(EventDecoder(), as_of + base.lateness):
        raise ValueError(f"as_of {from_micros(as_of).isoformat()} is outside the supported range")
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="churnwatch-")))
        # A URL is any (dedicated, empty) Kafka; a Broker object one churnwatch started,
        # here or by the caller, whose work-arounds (quirks) its workers then get.
        target: Broker | str
        if broker_url is None:
            target = embedded_broker(
                embedded, log_path=workdir / "broker.log", datadir=workdir / "kafka"
            )
            stage(f"starting the {describe(target)} broker")
            stack.enter_context(target)
        else:
            target = broker_url
        if not isinstance(target, str):
            # Embedded brokers listen in plaintext only: security from the environment
            # is for the external cluster, for these clients and the workers alike.
            base = without_security(base)
        settings = local_settings(base, target, partitions, workdir)
        bootstrap = settings.bootstrap
        security = client_security(settings)
        timings: dict[str, float] = {}
        stage(f"creating topics ({partitions} partitions)")
        asyncio.run(
            create_topics(
                bootstrap, dict.fromkeys(topics.ALL_TOPICS, partitions), security=security
            )
        )
        stage("reading events")
        records = list(read_events(path, fmt))
        if order == "time":
            records.sort(key=_event_time)
        # A first tick at the earliest event time, read before any event, opens the
        # periods every event falls in: which topic a worker happens to read first
        # must not decide where a partition's first period starts.
        first = first_tick(records, as_of, settings.max_event_bytes)
        if first is not None:
            asyncio.run(send_ticks(bootstrap, partitions, first, security))
        # The whole input is in the log before any worker reads: a topic is then read
        # to its end only when it is, which is what lets event-time alignment apply
        # every customer's events in order (processor/alignment.py), so a replay's
        # alerts depend on the input alone, not on how fast it was published.
        stage("publishing events")
        published = asyncio.run(
            publisher(
                bootstrap,
                records,
                before=as_of,
                progress=None if progress is None else (lambda n: progress("published", n)),
                security=security,
            )
        )
        timings["publish"] = published.seconds
        stage(f"starting {workers} worker(s)")
        started = time.perf_counter()
        procs = stack.enter_context(running_workers(settings, workers, workdir))
        procs[0].wait_ready()
        began = time.perf_counter()
        timings["first_worker_ready"] = began - started
        wait_settled(procs, partitions)
        timings["workers_ready"] = time.perf_counter() - started
        stage("waiting for the workers to process every event")

        def on_lag(lag: int) -> None:
            for proc in procs:
                if not proc.alive():
                    raise RuntimeError(f"a worker died during the replay:\n{proc.log_tail()}")
            if progress is not None:
                progress("lag", lag)

        asyncio.run(
            wait_for_zero_lag(
                bootstrap,
                settings.app_id,
                list(topics.INPUT_TOPICS),
                timeout=timeout,
                on_progress=on_lag,
                security=security,
            )
        )
        processing = time.perf_counter() - began
        timings["processing"] = processing
        # At as_of + lateness: closes every period that ends at or before as_of
        # (nothing at or after as_of was published).
        stage("sending the final clock tick")
        asyncio.run(
            tick_and_wait(
                bootstrap,
                settings.app_id,
                partitions,
                as_of + settings.lateness,
                security=security,
            )
        )
        stage("collecting state from the changelog")
        customers, parts = asyncio.run(collect(bootstrap, settings.app_id, security=security))
        records = asyncio.run(read_all(bootstrap, topics.ALERTS, security=security))
        alerts = [msgspec.json.decode(r.value) for r in records if r.value]
        return ReplayResult(
            as_of=as_of,
            customers=customers,
            partitions=parts,
            published=published,
            processing_seconds=processing,
            settings=settings,
            timings=timings,
            alerts=alerts,
        )
    raise AssertionError("unreachable")  # pragma: no cover
