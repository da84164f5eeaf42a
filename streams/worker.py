"""Running a worker process from settings, outside Faust's own command line."""

from __future__ import annotations

import faust

from streams.app import create_app
from streams.settings import Settings


def run_worker(settings: Settings) -> None:
    """Block running one worker until SIGTERM/SIGINT, then shut down cleanly."""
    app = create_app(settings)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        redirect_stdouts=False,
    )
    # Faust's terminal spinner turns the root logger to DEBUG so that it can spin on
    # every record, which costs several log records per event: never use it.
    worker.spinner = None
    worker.execute_from_commandline()
