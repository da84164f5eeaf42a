"""The serving view in Redis: at-risk queues and one hash per customer.

Layout (``<p>`` is the configured prefix, ``churnwatch`` by default):

- ``<p>:customer:<id>``: hash with ``view`` (the JSON of ``CustomerView``), ``ve`` and
  ``va`` (its version: events applied, assessment time), ``tier``, ``segment`` and
  ``var`` (value at risk). ``<id>`` is percent-escaped: customer ids come from
  untrusted events and never shape a key beyond their own slot.
- ``<p>:at-risk``: sorted set of customers at medium risk or above, not churned,
  scored by value at risk; ``<p>:at-risk:<tier>``: one per tier.

Every write goes through one Lua script that compares versions first, so writes
are idempotent and an older view (a redelivery, a worker that just lost the
partition, a rebuild racing a worker) never overwrites a newer one. Redis is a
derived view: ``churnwatch redis-rebuild`` writes it again from the tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis

from retention.risk import RANK, TIERS
from retention.serving import CustomerView

_JSON = msgspec.json.Encoder()
_UNSAFE = re.compile(rb"[^A-Za-z0-9_.\-]")
#: Customers read per round trip when filtering a queue by segment.
SCAN_CHUNK: Final = 200
MAX_LIMIT: Final = 1000

UPSERT: Final = """
local ve = tonumber(redis.call('HGET', KEYS[1], 've') or '-1')
local va = tonumber(redis.call('HGET', KEYS[1], 'va') or '-1')
local ne = tonumber(ARGV[1])
local na = tonumber(ARGV[2])
if ne < ve or (ne == ve and na <= va) then
  return 0
end
redis.call('HSET', KEYS[1], 've', ARGV[1], 'va', ARGV[2], 'view', ARGV[4],
           'tier', ARGV[5], 'var', ARGV[6], 'segment', ARGV[7])
for i = 2, 6 do
  redis.call('ZREM', KEYS[i], ARGV[3])
end
local tier = tonumber(ARGV[8])
if tier > 0 then
  redis.call('ZADD', KEYS[2 + tier], ARGV[6], ARGV[3])
  if ARGV[9] == '1' then
    redis.call('ZADD', KEYS[2], ARGV[6], ARGV[3])
  end
end
return 1
"""


def escape_id(customer_id: str) -> str:
    """Percent-escape everything but ``[A-Za-z0-9_.-]`` (UTF-8 bytes)."""
    return _UNSAFE.sub(lambda m: b"%%%02X" % m.group()[0], customer_id.encode()).decode()


class RedisView:
    """Reads and guarded writes of the serving view."""

    def __init__(self, url: str, prefix: str = "churnwatch", timeout: float = 2.0) -> None:
        self.url = url
        self.prefix = prefix
        self.client: Any = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._upsert = self.client.register_script(UPSERT)
        self.overall = f"{prefix}:at-risk"
        self.tiers: dict[str, str] = {tier: f"{prefix}:at-risk:{tier}" for tier in TIERS}

    def customer_key(self, customer_id: str) -> str:
        return f"{self.prefix}:customer:{escape_id(customer_id)}"

    def queue_key(self, tier: str | None) -> str:
        return self.overall if tier is None else self.tiers[tier]

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (aioredis.RedisError, OSError):
            return False

    async def upsert(self, views: Sequence[CustomerView]) -> tuple[int, int]:
        """Write ``views`` in one pipeline; returns (written, stale)."""
        if not views:
            return 0, 0
        pipe = self.client.pipeline(transaction=False)
        keys_tail = [self.overall, *(self.tiers[tier] for tier in TIERS)]
        for view in views:
            tier = view.queue_tier
            await self._upsert(
                keys=[self.customer_key(view.customer_id), *keys_tail],
                args=[
                    view.version[0],
                    view.version[1],
                    view.customer_id,
                    _JSON.encode(view),
                    view.tier or "",
                    f"{view.value_at_risk:.2f}",
                    view.segment or "",
                    0 if tier is None else RANK[tier] + 1,
                    "1" if view.at_risk else "0",
                ],
                client=pipe,
            )
        results = await pipe.execute()
        written = sum(1 for r in results if r == 1)
        return written, len(results) - written

    async def get(self, customer_id: str) -> dict[str, Any] | None:
        raw = await self.client.hget(self.customer_key(customer_id), "view")
        return None if raw is None else msgspec.json.decode(raw)

    async def queue(
        self, tier: str | None = None, limit: int = 50, segment: str | None = None
    ) -> list[dict[str, Any]]:
        """Customers by value at risk, highest first (ties by id, descending)."""
        key = self.queue_key(tier)
        out: list[dict[str, Any]] = []
        start = 0
        chunk = limit if segment is None else max(limit, SCAN_CHUNK)
        while len(out) < limit:
            members = await self.client.zrevrange(key, start, start + chunk - 1)
            if not members:
                break
            start += len(members)
            pipe = self.client.pipeline(transaction=False)
            for member in members:
                pipe.hget(self.customer_key(member.decode()), "view")
            for raw in await pipe.execute():
                if raw is None:
                    continue
                view = msgspec.json.decode(raw)
                if segment is None or view.get("segment") == segment:
                    out.append(view)
                    if len(out) == limit:
                        break
        return out

    async def all_views(self) -> dict[str, dict[str, Any]]:
        """Every customer view (tests and rebuild checks): id -> view."""
        views: dict[str, dict[str, Any]] = {}
        async for key in self.client.scan_iter(match=f"{self.prefix}:customer:*", count=1000):
            raw = await self.client.hget(key, "view")
            if raw is not None:
                view = msgspec.json.decode(raw)
                views[view["customer_id"]] = view
        return views

    async def queues(self) -> dict[str, list[tuple[str, float]]]:
        """Every queue as (member, score) lists, for comparisons."""
        out = {}
        for name in ("overall", *TIERS):
            key = self.overall if name == "overall" else self.tiers[name]
            entries = await self.client.zrange(key, 0, -1, withscores=True)
            out[name] = [(m.decode(), s) for m, s in entries]
        return out


def view_json(view: CustomerView) -> dict[str, Any]:
    """The view as the API returns it (the JSON stored in Redis, decoded)."""
    result: dict[str, Any] = msgspec.json.decode(_JSON.encode(view))
    return result


def expected_queues(views: Iterable[CustomerView]) -> dict[str, list[tuple[str, float]]]:
    """What ``RedisView.queues`` must return for these views (sorted like ZRANGE)."""
    out: dict[str, list[tuple[str, float]]] = {name: [] for name in ("overall", *TIERS)}
    for view in views:
        tier = view.queue_tier
        if tier is None:
            continue
        score = float(f"{view.value_at_risk:.2f}")
        out[tier].append((view.customer_id, score))
        if view.at_risk:
            out["overall"].append((view.customer_id, score))
    for entries in out.values():
        entries.sort(key=lambda e: (e[1], e[0].encode()))
    return out
