"""Reference Faust agents over churnwatch's input topics, for the pipeline benchmark
(``bench/pipeline.py``):

- ``BENCH_AGENT=floor`` (the default): a do-nothing agent, the floor. Same Faust
  settings as the worker (``streams.app.faust_config``), same raw-bytes topics, same
  ``take_events`` batching; the body only counts. What the churnwatch worker costs
  beyond this is churnwatch's own work.
- ``BENCH_AGENT=inline``: the same do-nothing agent on churnwatch's consumer
  (``streams/consumer.py``), which hands messages over without Faust's per-message
  tasks: what that part of Faust's machinery costs.
- ``BENCH_AGENT=naive``: the obvious Faust program, one event at a time and one
  table write per event (the event stored under its customer key), on Faust's
  producer defaults (the worker's consumer and start-up settings otherwise): what
  a straightforward stateful agent costs.

Progress goes to the JSON file named by ``BENCH_STATUS`` (count, first and last
event times), written a few times a second by a timer, never per event.

    BENCH_STATUS=/tmp/floor.json python -m bench.floor worker -l warn --without-web
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, cast

import faust
from faust.streams import Stream

from streams import topics
from streams.app import QUIET_LOGGERS, faust_config
from streams.consumer import InlineTransport
from streams.settings import Settings

settings = Settings.from_env()
MODE = os.environ.get("BENCH_AGENT", "floor")
if MODE not in ("floor", "inline", "naive"):
    raise SystemExit(f"BENCH_AGENT must be floor, inline or naive, not {MODE!r}")
config = faust_config(settings)
if MODE == "naive":
    # Faust's own producer defaults (no linger, 16 KB batches), as a first program has.
    for name in ("producer_linger", "producer_max_batch_size", "producer_max_request_size"):
        del config[name]
app = faust.App(f"{settings.app_id}-{MODE}", **config)
if MODE == "inline":
    app.transport = InlineTransport(app.conf.broker_consumer, app)
raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes}
inputs = app.topic(*topics.INPUT_TOPICS, key_serializer="raw", value_serializer="raw", **raw)
status: dict[str, float] = {"count": 0, "first": 0.0, "last": 0.0}


def _counted(n: int) -> None:
    now = time.time()
    if not status["count"]:
        status["first"] = now
    status["count"] += n
    status["last"] = now


if MODE in ("floor", "inline"):

    @app.agent(inputs, name="floor", concurrency=1)
    async def floor(stream: Any) -> None:
        batches = cast(Stream[bytes], stream).take_events(
            settings.batch_max, within=settings.batch_within
        )
        async for events in batches:
            _counted(len(events))

else:
    latest = app.Table("naive-latest", partitions=settings.partitions, **raw)

    @app.agent(inputs, name="naive", concurrency=1)
    async def naive(stream: Any) -> None:
        async for event in cast(Stream[bytes], stream).events():
            latest[event.key] = event.value
            _counted(1)


def _write(path: str) -> None:
    with open(path + ".tmp", "w") as out:
        json.dump(status, out)
    os.replace(path + ".tmp", path)


async def _after_start() -> None:
    # As the worker does (streams/app.py): below WARNING, Faust and aiokafka build
    # several log records per event, which would make the floor slower than it is.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


app.on_startup_finished = _after_start


@app.timer(0.1)
async def write_status() -> None:
    path = os.environ.get("BENCH_STATUS")
    if path:
        _write(path)  # a few hundred bytes, ten times a second


if __name__ == "__main__":
    app.main()
