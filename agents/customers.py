"""The customer agent: a thin shell that runs the processor (processor/) on Faust.

It consumes the four input topics, the clock topic and the repartition topic as one
stream of raw bytes, in batches (``take_events``), hands each batch to
``CustomerBatch`` (processor/batch.py), and seeks back what the processor asks to
read again. Around it: at a revocation, apply nothing more and wait for this
worker's writes to land; once a rebalance completes, send again the outbox of the
partitions taken over and seek each to where its recovered state says effects may
be missing; every PROGRESS_SECONDS, announce read progress to the other partitions;
every GAP_CHECK_SECONDS, seek again to gaps nothing was read of lately; every
SETTLE_SECONDS, commit input partitions applied to their end. Every access to
Faust's internals is in agents/delivery.py.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from faust.streams import Stream
from faust.types import StreamT

from agents import delivery
from processor.batch import CustomerBatch
from processor.routing import Router
from streams import topics
from streams.app import ChurnwatchApp
from streams.partitions import assigned_partitions

log = logging.getLogger(__name__)

#: How often committed offsets behind a state that covers a whole partition are
#: moved up to it (``CustomerBatch.settled``).
SETTLE_SECONDS = 5.0

#: How often open gaps in a topic partition's offsets that nothing was read of lately
#: are checked for and sought again (``CustomerBatch.idle_gaps``).
GAP_CHECK_SECONDS = 1.0

#: How often each partition's read progress is announced to the others, if it changed
#: (``CustomerBatch.announce``; a batch announces it too).
PROGRESS_SECONDS = 0.5


def install(app: ChurnwatchApp) -> None:
    settings = app.settings
    repartition = app.topic(
        topics.REPARTITION,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    parts = delivery.parts(app)
    batch = CustomerBatch(parts, Router(settings, cast(Any, repartition), parts.offsets))

    async def _flush_on_revoke(sender: Any, *args: Any, signal: Any = None, **kw: Any) -> None:
        batch.fence()
        if not await delivery.flush_writes(app):
            log.warning(
                "writes still unacknowledged %.0fs into a revocation: the new owners of "
                "this worker's partitions may recover them late",
                delivery.REVOKE_FLUSH_SECONDS,
            )

    app.on_partitions_revoked.connect(cast(Any, _flush_on_revoke))

    async def _resume(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        batch.unfence()
        resent = batch.take_over(assigned_partitions(app))
        if resent:
            log.warning("sent %d alerts again from the outboxes of partitions taken over", resent)
        delivery.seek_after_faust(app, batch.sought)

    app.on_rebalance_complete.connect(cast(Any, _resume))

    @app.timer(PROGRESS_SECONDS, name="announce-progress")
    async def announce_progress() -> None:
        batch.announce()

    @app.timer(SETTLE_SECONDS, name="settle-commits")
    async def settle_commits() -> None:
        settled = batch.settled()
        if settled:
            log.info("committing %d input partitions applied to their end", len(settled))
            await delivery.commit(app, settled)

    @app.timer(GAP_CHECK_SECONDS, name="reread-idle-gaps")
    async def reread_idle_gaps() -> None:
        if batch.idle_gaps():
            await delivery.seek_back(app, batch)

    @app.agent(app.inputs, name="customers", concurrency=1)
    async def customers(stream: StreamT[bytes]) -> None:
        batches = cast(Stream[bytes], stream).take_events(
            delivery.take_count(app, stream), within=settings.batch_within
        )
        async for events in batches:
            batch.process(events)
            if batch.seeks:
                await delivery.seek_back(app, batch)
