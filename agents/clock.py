"""The live clock: wall-clock ticks into every partition this worker owns.

Lapses and period roll-overs happen when time passes, not when an event arrives,
and Faust tables may only be written while handling a stream event. So time is
turned into events: each worker ticks the clock-topic partitions it owns, and the
customer agent does the due work when it handles the tick. Replays switch this
off (``CHURNWATCH_CLOCK=off``) and send their own final tick instead.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from schemas.events import ClockTick
from streams.app import ChurnwatchApp
from streams.partitions import assigned_partitions

_JSON = msgspec.json.Encoder()


def tick(moment: datetime, source: str) -> bytes:
    return _JSON.encode(ClockTick(time=moment, source=source))


def install(app: ChurnwatchApp) -> None:
    settings = app.settings
    if settings.clock != "live":
        return

    @app.timer(settings.clock_interval, name="clock")
    async def clock() -> None:
        value = tick(datetime.now(UTC), "live")
        for partition in assigned_partitions(app):
            await app.clock_topic.send(value=value, partition=partition)
