"""The worker process applies churnwatch's tuning once the app has started.

faust.Worker takes over the app's ``on_startup_finished`` callback when it starts,
which silently dropped the tuning ``create_app`` put there: every worker ran with
Faust's producer buffer of 100 messages, so once a batch's changelog writes filled
it the stream stopped before every message until the buffer drained.
"""

from __future__ import annotations

import logging

from streams.app import QUIET_LOGGERS, create_app, producer_buffer_size
from streams.settings import Settings
from streams.worker import ChurnwatchWorker


async def test_the_worker_applies_the_tuning_once_started() -> None:
    settings = Settings(store="memory://", clock="off", batch_max=700, log_level="warn")
    app = create_app(settings)
    worker = ChurnwatchWorker(app, quiet=True, redirect_stdouts=False, loglevel="WARNING")
    worker.spinner = None
    list(worker.on_init_dependencies())  # what starting the worker does first
    assert app.on_startup_finished == worker.on_startup_finished
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    before = app.producer.buffer.max_messages

    await app.on_startup_finished()  # called by the app once it has started

    assert before == 100  # Faust's default: why the tuning matters
    assert app.producer.buffer.max_messages == producer_buffer_size(settings) == 1400
    assert all(logging.getLogger(n).level == logging.WARNING for n in QUIET_LOGGERS)
