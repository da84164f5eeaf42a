"""``churnwatch redis-rebuild``: the serving view written again from the tables.

Redis holds nothing that the customers table does not: this reads the table's
changelog to its end (the newest record per customer), turns each state into its
view and writes them through the same versioned upsert the workers use. It is safe
while workers run: a view older than the one in Redis is skipped, a newer one wins.
``flush`` first deletes every key under the prefix (a view from a lost Redis, or
customers that no longer exist in the tables).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from retention.alerts import Lifecycle
from retention.model import load_model
from retention.risk import load_risk_config
from retention.serving import customer_view
from streams.redis_view import RedisView
from streams.replay import collect
from streams.security import client_security
from streams.settings import Settings

BATCH = 500


@dataclass
class RebuildResult:
    customers: int = 0
    written: int = 0
    stale: int = 0
    deleted: int = 0


async def rebuild(
    settings: Settings, flush: bool = False, progress: Callable[[int, int], None] | None = None
) -> RebuildResult:
    model = load_model(settings.model) if settings.model else None
    lifecycle = Lifecycle(load_risk_config(settings.risk or None), model, settings.window)
    customers, _ = await collect(
        settings.bootstrap, settings.app_id, security=client_security(settings)
    )
    view = RedisView(settings.redis_url, settings.redis_prefix)
    result = RebuildResult(customers=len(customers))
    try:
        if flush:
            async for key in view.client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000):
                result.deleted += await view.client.delete(key)
        states = list(customers.values())
        for start in range(0, len(states), BATCH):
            views = [customer_view(state, lifecycle) for state in states[start : start + BATCH]]
            written, stale = await view.upsert(views)
            result.written += written
            result.stale += stale
            if progress is not None:
                progress(start + len(views), len(states))
    finally:
        await view.close()
    return result
