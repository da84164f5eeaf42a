"""A do-nothing Faust agent over churnwatch's input topics: the floor of the pipeline
benchmark (``bench/pipeline.py``).

Same Faust settings as the worker (``streams.app.faust_config``), same raw-bytes
topics, same ``take_events`` batching; the body only counts. What the churnwatch
worker costs beyond this is churnwatch's own work. Progress goes to the JSON file
named by ``BENCH_STATUS`` (count, first and last event times), written a few times
a second by a timer, never per event.

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
from streams.settings import Settings

settings = Settings.from_env()
app = faust.App(f"{settings.app_id}-floor", **faust_config(settings))
raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes}
inputs = app.topic(*topics.INPUT_TOPICS, key_serializer="raw", value_serializer="raw", **raw)
status: dict[str, float] = {"count": 0, "first": 0.0, "last": 0.0}


@app.agent(inputs, name="floor", concurrency=1)
async def floor(stream: Any) -> None:
    batches = cast(Stream[bytes], stream).take_events(
        settings.batch_max, within=settings.batch_within
    )
    async for events in batches:
        now = time.time()
        if not status["count"]:
            status["first"] = now
        status["count"] += len(events)
        status["last"] = now


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
