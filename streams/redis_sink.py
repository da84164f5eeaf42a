"""Keeps the Redis serving view up to date without ever holding up the stream.

The customer agent hands over each customer state it wrote (``offer``: a dict
assignment, no I/O). A writer task turns the newest state of each customer into a
``CustomerView`` and writes batches through the versioned upsert. If Redis is slow
or down, states wait in a buffer of at most ``capacity`` customers (one entry per
customer however many updates it gets, so an outage costs memory per customer
touched, not per event). When the buffer is full, further customers are dropped
and counted, and once Redis answers again the writer rewrites every customer this
worker holds from its table (a resync): the view always catches up, exactly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Final

import redis.asyncio as aioredis

from retention.alerts import Lifecycle
from retention.serving import customer_view
from retention.state import CustomerState, decode_state
from streams.metrics import PipelineMetrics
from streams.redis_view import RedisView

log = logging.getLogger(__name__)
BATCH: Final = 500
RETRY_MIN: Final = 0.25
RETRY_MAX: Final = 5.0
#: Table keys starting with this byte are partition records and due buckets.
INTERNAL_PREFIX: Final = b"\x00"
TableReader = Callable[[], Iterable[tuple[bytes, bytes]]]


class RedisSink:
    def __init__(
        self,
        view: RedisView,
        lifecycle: Lifecycle,
        metrics: PipelineMetrics,
        capacity: int,
        table_items: TableReader,
    ) -> None:
        self.view = view
        self.lifecycle = lifecycle
        self.metrics = metrics
        metrics.export_redis()  # a worker with a sink, and only it, reports on Redis
        self.capacity = capacity
        self.table_items = table_items
        self.buffer: dict[str, CustomerState] = {}
        self.resync_needed = False
        self.up = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def offer(self, state: CustomerState) -> None:
        """Queue the newest state of a customer (called by the agent, per batch)."""
        key = state.customer_id
        current = self.buffer.get(key)
        if current is None:
            if len(self.buffer) >= self.capacity:
                self.metrics.redis_overflows.inc()
                self.resync_needed = True
                return
        elif current.version > state.version:
            return
        self.buffer[key] = state
        self.metrics.redis_buffered.set(len(self.buffer))
        self._idle.clear()
        self._wake.set()

    @property
    def settled(self) -> bool:
        """Nothing buffered and no resync owed: Redis shows what was offered."""
        return not self.buffer and not self.resync_needed

    async def wait_settled(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        delay = RETRY_MIN
        while True:
            if self.settled:
                self._idle.set()
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 5.0)
                except TimeoutError:
                    self._set_up(await self.view.ping())
                continue
            try:
                if self.resync_needed:
                    await self._resync()
                else:
                    await self._flush()
            except (aioredis.RedisError, OSError) as exc:
                if self.up:
                    log.warning("Redis unavailable (%s); buffering views", exc)
                self._set_up(False)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
                continue
            delay = RETRY_MIN
            self._set_up(True)
            await asyncio.sleep(0)  # let the stream run between batches

    def _set_up(self, up: bool) -> None:
        if up and not self.up:
            log.info("Redis serving view up")
        self.up = up
        self.metrics.redis_up.set(1 if up else 0)

    async def _flush(self) -> None:
        keys = list(self.buffer)[:BATCH]
        taken = {key: self.buffer.pop(key) for key in keys}
        views = [customer_view(state, self.lifecycle) for state in taken.values()]
        try:
            written, stale = await self.view.upsert(views)
        except BaseException:
            for key, state in taken.items():  # back in, unless a newer one arrived
                current = self.buffer.get(key)
                if current is None or current.version < state.version:
                    self.buffer[key] = state
            self.metrics.redis_writes["failed"].inc(len(taken))
            raise
        finally:
            self.metrics.redis_buffered.set(len(self.buffer))
        self.metrics.redis_writes["written"].inc(written)
        self.metrics.redis_writes["stale"].inc(stale)

    async def _resync(self) -> None:
        """Rewrite every customer of the local table (versions keep newer views)."""
        log.warning("Redis view buffer overflowed: rewriting this worker's customers")
        self.resync_needed = False
        try:
            # One synchronous pass: the agent cannot change the table meanwhile.
            raws = [v for k, v in self.table_items() if not k.startswith(INTERNAL_PREFIX)]
            for start in range(0, len(raws), BATCH):
                views = [
                    customer_view(decode_state(raw), self.lifecycle)
                    for raw in raws[start : start + BATCH]
                ]
                written, stale = await self.view.upsert(views)
                self.metrics.redis_writes["written"].inc(written)
                self.metrics.redis_writes["stale"].inc(stale)
                await asyncio.sleep(0)
        except BaseException:
            self.resync_needed = True
            raise
        self.metrics.redis_resyncs.inc()
