"""Worker processes started by the demo, ``replay`` and the tests.

Each worker is a real ``churnwatch worker`` process configured through the
environment, exactly as in production, so that what replays and integration tests
measure is what users run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

from streams.processes import stop_process_group
from streams.settings import Settings, to_env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Started(Protocol):
    @property
    def url(self) -> str: ...

    quirks: str


def local_settings(
    base: Settings, broker: _Started | str, partitions: int, workdir: Path
) -> Settings:
    """Settings for workers the demo, replays and tests start on a dedicated broker:
    a fresh consumer group and table, no live clock (the caller drives time), fast
    commits and a short session timeout so that start-up takes seconds.

    ``broker`` is a started broker of ``streams.embedded`` (its ``quirks``, the
    work-arounds its workers need, come along) or the URL of any other Kafka."""
    url, quirks = (broker, "") if isinstance(broker, str) else (broker.url, broker.quirks)
    return base.replace(
        broker=url,
        app_id=f"{base.app_id}-{int(time.time() * 1000)}",
        partitions=partitions,
        clock="off",
        commit_interval=min(base.commit_interval, 0.5),
        session_timeout=min(base.session_timeout, 3.0),
        datadir=str(workdir / "data"),
        web_host="127.0.0.1",
        web_port=free_port(),
        broker_quirks=base.broker_quirks or quirks,
    )


class WorkerProcess:
    """One ``churnwatch worker`` subprocess with its own web port and data dir."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def start(self) -> None:
        env = {**os.environ, **to_env(self.settings)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        Path(self.settings.datadir).mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def get_json(self, path: str, timeout: float = 2.0) -> Any:
        with urllib.request.urlopen(self.base_url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def get_text(self, path: str, timeout: float = 2.0) -> str:
        with urllib.request.urlopen(self.base_url + path, timeout=timeout) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for family in text_string_to_metric_families(self.get_text("/metrics")):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def health(self) -> dict[str, Any] | None:
        try:
            body = self.get_json("/health")
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the worker serves /health with partitions assigned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"worker exited with code {self.process and self.process.returncode}:\n"
                    + self.log_tail()
                )
            health = self.health()
            if health and health.get("partitions"):
                return health
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0, kill: bool = False) -> None:
        stop_process_group(self.process, timeout, kill=kill)
        if self._log is not None:
            self._log.close()
            self._log = None
