"""``churnwatch notify``: run the notifier until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import start_http_server

from notifier.config import Config
from notifier.runner import Notifier
from streams.security import ClientSecurity


def run_notifier(
    config: Config, bootstrap: str, security: ClientSecurity, level: str, replication: int = 1
) -> None:
    # The notifier's own decisions (withheld openings, given-up deliveries) at INFO;
    # aiokafka's and aiohttp's chatter only at the configured level.
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("churnwatch.notify").setLevel(logging.INFO)
    if config.metrics_port is not None:
        start_http_server(config.metrics_port)
    asyncio.run(_main(config, bootstrap, security, replication))


async def _main(config: Config, bootstrap: str, security: ClientSecurity, replication: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await Notifier(config, bootstrap, security, replication).run(stop)
