"""A consumer group of real worker processes that tests kill, restart and rescale.

Chaos tests need what ``streams.replay`` hides: the workers themselves, to SIGKILL
one mid-stream and start another in its place. Every worker is a real
``churnwatch worker`` process, as in production; the broker sees an abrupt death
(no LeaveGroup), so the group only notices when the session times out.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

from streams import topics
from streams.kafka_admin import consumer_lag
from streams.settings import Settings
from streams.workers import WorkerProcess, free_port


@dataclass
class Event:
    at: float  # seconds since the fleet started
    action: str  # start | kill | stop
    worker: str
    lag: int  # input records not yet committed at the time


@dataclass
class Fleet:
    settings: Settings
    workdir: Path
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    log: list[Event] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _serial: int = 0

    def lag(self) -> int:
        lags = asyncio.run(
            consumer_lag(self.settings.bootstrap, self.settings.app_id, topics.INPUT_TOPICS)
        )
        return sum(lags.values())

    def _note(self, action: str, name: str) -> None:
        self.log.append(Event(time.monotonic() - self.started, action, name, self.lag()))

    def start(self) -> str:
        self._serial += 1
        name = f"worker-{self._serial}"
        worker = WorkerProcess(
            self.settings.replace(web_port=free_port(), datadir=str(self.workdir / name)),
            self.workdir / f"{name}.log",
        )
        worker.start()
        self.workers[name] = worker
        self._note("start", name)
        return name

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown, no commit, no flush of anything buffered."""
        self.workers.pop(name).stop(kill=True)
        self._note("kill", name)

    def stop(self, name: str) -> None:
        """SIGTERM: a graceful shutdown, as a scale-in does."""
        self.workers.pop(name).stop()
        self._note("stop", name)

    def scale(self, count: int) -> None:
        while len(self.workers) < count:
            self.start()
        while len(self.workers) > count:
            self.stop(sorted(self.workers)[0])

    def check_alive(self) -> None:
        for name, worker in self.workers.items():
            if not worker.alive():
                raise RuntimeError(f"{name} died:\n{worker.log_tail()}")

    def wait_progress(self, remaining: int, timeout: float) -> int:
        """Block until at most ``remaining`` input records are uncommitted."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            lag = self.lag()
            if lag <= remaining:
                return lag
            if time.monotonic() > deadline:
                raise TimeoutError(f"lag still {lag} > {remaining} after {timeout:.0f}s")
            time.sleep(0.5)

    def close(self) -> None:
        for name in list(self.workers):
            self.workers.pop(name).stop()

    def tails(self) -> str:
        return "\n".join(f"--- {n}\n{w.log_tail()}" for n, w in self.workers.items())
