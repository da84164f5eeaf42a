"""The Redis sink: a task that writes the customer agent's states to the serving view.

The agent only hands states over (``RedisSink.offer``); all Redis I/O happens here,
so a slow or absent Redis never holds up event processing (streams/redis_sink.py).
"""

from __future__ import annotations

from streams.app import ChurnwatchApp


def install(app: ChurnwatchApp) -> None:
    sink = app.redis_sink
    if sink is None:
        return

    @app.task
    async def redis_sink() -> None:
        await sink.run()
