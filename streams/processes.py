"""Stopping the child processes churnwatch supervises (broker, workers)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time


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


def wait_group_gone(group: int, timeout: float) -> None:
    """Wait until no process of ``group`` is left, SIGKILL what remains after ``timeout``.

    A supervising shell exits at the SIGTERM at once; the program it ran (a JVM doing a
    controlled shutdown) may still be writing its data directory for a while after."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        except PermissionError:  # pragma: no cover - a reused group id of another user
            return
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            deadline = time.monotonic() + 5
        time.sleep(0.05)
