"""Stopping the child processes churnwatch supervises (broker, workers)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_process_group(
    process: subprocess.Popen[bytes] | None, timeout: float, *, kill: bool = False
) -> None:
    """SIGTERM (or SIGKILL) the process group, escalate to SIGKILL after ``timeout``.

    Children are started with ``start_new_session=True`` so the whole group goes,
    including anything they spawned.
    """
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
