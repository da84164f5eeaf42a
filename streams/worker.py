"""Running a worker process from settings, outside Faust's own command line."""

from __future__ import annotations

import faust

from streams.app import ChurnwatchApp, after_start, create_app
from streams.settings import Settings


class ChurnwatchWorker(faust.Worker):
    """Faust's worker, plus churnwatch's tuning once the app has started.

    The worker takes over the app's ``on_startup_finished`` callback when it starts,
    so the tuning set there by ``create_app`` would never run under it.
    """

    app: ChurnwatchApp

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        await after_start(self.app)


def run_worker(settings: Settings) -> None:
    """Block running one worker until SIGTERM/SIGINT, then shut down cleanly."""
    app = create_app(settings)
    worker = ChurnwatchWorker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        redirect_stdouts=False,
    )
    # Faust's terminal spinner turns the root logger to DEBUG so that it can spin on
    # every record, which costs several log records per event: never use it.
    worker.spinner = None
    worker.execute_from_commandline()
