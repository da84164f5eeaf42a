"""Reference Faust agents over churnwatch's input topics, for the pipeline benchmark
(``bench/pipeline.py``):

- ``BENCH_AGENT=floor`` (the default): a do-nothing agent, the floor. Same Faust
  settings as the worker (``streams.app.faust_config``), same raw-bytes topics, same
  ``take_events`` batching; the body only counts. What the churnwatch worker costs
  beyond this is churnwatch's own work.
- ``BENCH_AGENT=inline``: the same do-nothing agent on churnwatch's consumer
  (``streams/consumer.py``), which hands the input over as record batches of up to
  BATCH_RECORDS records, each handed over without Faust's per-message tasks, in
  batches of as many records as the worker's: what Faust's per-message machinery
  costs, and churnwatch's consumer.
- ``BENCH_AGENT=writes``: the inline do-nothing agent plus churnwatch's table writes
  and nothing else: per batch, one write per touched customer, of a state-sized value
  (``BENCH_STATE_BYTES``, default 1,200 B, the size of a generated customer's state),
  to a table configured as churnwatch's, in the stream's context, with the worker's
  producer buffer. What churnwatch's recoverable state costs before any domain work.
- ``BENCH_AGENT=naive``: the obvious Faust program, one event at a time and one
  table write per event (the event stored under its customer key), on Faust's
  producer defaults (the worker's consumer and start-up settings otherwise): what
  a straightforward stateful agent costs.

Progress goes to the JSON file named by ``BENCH_STATUS`` (count, first and last
event times), written a few times a second by a timer, never per event.

It runs as the worker does (``streams/worker.py``): no terminal spinner, whose log
handler would set the root logger to DEBUG and build log records for every event,
and the tuning applied once the worker has started.

    BENCH_STATUS=/tmp/floor.json python -m bench.floor
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, cast

import faust
from faust.streams import Stream

from agents.delivery import handling
from processor.ports import records_of
from streams import topics
from streams.app import QUIET_LOGGERS, faust_config, producer_buffer_size
from streams.consumer import InlineTransport, batches_per_take
from streams.settings import Settings

settings = Settings.from_env()
MODE = os.environ.get("BENCH_AGENT", "floor")
MODES = ("floor", "inline", "writes", "naive")
if MODE not in MODES:
    raise SystemExit(f"BENCH_AGENT must be one of {', '.join(MODES)}, not {MODE!r}")
config = faust_config(settings)
if MODE == "naive":
    # Faust's own producer defaults (no linger, 16 KB batches), as a first program has.
    for name in ("producer_linger", "producer_max_batch_size", "producer_max_request_size"):
        del config[name]
config["web_enabled"] = False
app = faust.App(f"{settings.app_id}-{MODE}", **config)
TAKE = settings.batch_max
if MODE in ("inline", "writes"):
    app.transport = InlineTransport(app.conf.broker_consumer, app)
    cast(Any, app).batched_topics = frozenset(topics.INPUT_TOPICS)
    TAKE = batches_per_take(settings.batch_max)  # as the worker takes them
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
        batches = cast(Stream[bytes], stream).take_events(TAKE, within=settings.batch_within)
        async for events in batches:
            _counted(sum(len(records_of(event.message)) for event in events))

elif MODE == "writes":
    state = b"s" * int(os.environ.get("BENCH_STATE_BYTES", "1200"))
    states = app.Table(
        "writes-states",
        partitions=settings.partitions,
        extra_topic_configs={"cleanup.policy": "compact"},
        **raw,
    )
    # As the worker's table: the values are already bytes (streams/app.py).
    cast(Any, states).key_serializer = cast(Any, states).value_serializer = "raw"

    @app.agent(inputs, name="writes", concurrency=1)
    async def writes(stream: Any) -> None:
        batches = cast(Stream[bytes], stream).take_events(TAKE, within=settings.batch_within)
        async for events in batches:
            by_partition: dict[int, tuple[Any, set[bytes]]] = {}
            read = 0
            for event in events:
                records = records_of(event.message)
                read += len(records)
                _, keys = by_partition.setdefault(event.message.partition, (event, set()))
                keys.update(r.key for r in records if r.key is not None)
            for context, keys in by_partition.values():
                # One partition's events share a changelog partition, as in the worker.
                with handling(context):
                    for key in keys:
                        states[key] = state
            _counted(read)

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


class FloorWorker(faust.Worker):
    """As ``streams.worker.ChurnwatchWorker``: tuned once started (Faust's worker takes
    over the app's ``on_startup_finished``, so it cannot be set on the app)."""

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        # Below WARNING, Faust and aiokafka build several log records per event, which
        # would make the floor slower than it is.
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        if MODE == "writes":
            app.producer.buffer.max_messages = producer_buffer_size(settings)


@app.timer(0.1)
async def write_status() -> None:
    path = os.environ.get("BENCH_STATUS")
    if path:
        _write(path)  # a few hundred bytes, ten times a second


if __name__ == "__main__":
    worker = FloorWorker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()
