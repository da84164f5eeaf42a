"""A local single-node Apache Kafka (KRaft) for tests, benchmarks and replays.

It runs the real broker from the Maven artifacts ``org.apache.kafka:kafka_2.13`` at
one pinned version (``KAFKA_VERSION``, the one ``docker-compose.yml`` ships too),
fetched once by ``make kafka`` with ``mvn dependency:copy-dependencies`` into
``.cache/kafka-<version>/lib`` (git ignores it; ``CHURNWATCH_KAFKA_LIBS`` points
elsewhere). ``log4j-slf4j-impl`` is among them: Kafka 4.x logs through slf4j 1.7,
and without that binding its logs vanish instead of reaching ``server.log``.

One process is broker and controller at once, on free loopback ports with its own
data directory, formatted by ``kafka.tools.StorageTool`` before the start. It is
ready when it answers a Metadata request, its heap is capped, and a watchdog shell
(as for Tansu, ``streams.broker``) stops it when this process dies in any way.

Optionally it also listens with SASL_SSL (``SecureListener``): PLAIN and SCRAM users
and a PEM key store the caller provides, for tests of secured clusters. The key in
it must be PKCS#8 ("BEGIN PRIVATE KEY", or "BEGIN ENCRYPTED PRIVATE KEY" with its
``key_password``): Kafka's PEM reader parses no other form, and a traditional
"BEGIN EC/RSA PRIVATE KEY" (what ``trustme`` writes) stops the broker at start with
"algid parse error". An unencrypted key needs no ``ssl.key.password`` (Kafka 4.1).
"""

from __future__ import annotations

import atexit
import base64
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Self

from streams.broker import (
    WATCHDOG,
    BrokerError,
    SupervisedBroker,
    free_port,
    port_freed_within,
)
from streams.processes import stop_process_group, wait_group_gone

#: The Apache Kafka release churnwatch is tested against (docker-compose.yml too).
KAFKA_VERSION = "4.1.1"
HEAP = "-Xmx384m"
_ROOT = Path(__file__).resolve().parents[1]
POM = _ROOT / "deploy" / "kafka" / "pom.xml"


def kafka_libs() -> Path:
    """Folder of the broker's jars (``CHURNWATCH_KAFKA_LIBS`` overrides the cache)."""
    override = os.environ.get("CHURNWATCH_KAFKA_LIBS")
    if override:
        return Path(override)
    return _ROOT / ".cache" / f"kafka-{KAFKA_VERSION}" / "lib"


def java_binary() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is not None and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise BrokerError(
            "Apache Kafka needs Java 17 or newer, and no `java` is on PATH: "
            "install it (make tools installs Debian's default-jre-headless) or set JAVA_HOME"
        )
    return found


def check_installed() -> tuple[str, Path]:
    """(java, libs) or ``BrokerError`` saying what is missing and how to get it."""
    java = java_binary()
    libs = kafka_libs()
    if not (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        raise BrokerError(
            f"the Apache Kafka {KAFKA_VERSION} jars are not in {libs}: run `make kafka` "
            f"(mvn dependency:copy-dependencies on {POM.relative_to(_ROOT)}), "
            "or set CHURNWATCH_KAFKA_LIBS to a folder that holds them"
        )
    return java, libs


@dataclass(frozen=True)
class SecureListener:
    """A SASL_SSL listener: PEM key store (key + certificate chain) and its users.

    ``users`` are created for PLAIN and for both SCRAM mechanisms. With ``client_ca``
    (PEM) every client must also present a certificate that CA signed (mutual TLS)."""

    keystore_pem: Path
    users: dict[str, str]
    port: int = field(default_factory=lambda: free_port("127.0.0.1"))
    key_password: str | None = None
    client_ca: Path | None = None

    def check(self) -> None:
        """``BrokerError`` for what would stop the broker or garble its config."""
        text = self.keystore_pem.read_text(errors="replace")
        kind = "ENCRYPTED PRIVATE KEY" if self.key_password else "PRIVATE KEY"
        if f"-----BEGIN {kind}-----" not in text or "-----BEGIN CERTIFICATE-----" not in text:
            raise BrokerError(
                f"{self.keystore_pem}: a PEM key store needs a PKCS#8 key "
                f"('BEGIN {kind}') and its certificate chain"
            )
        # The names and passwords go into JAAS quotes and --add-scram's [k=v,...] form.
        unsafe = set('"\\,[]= \t\n')
        if any(unsafe & set(item) for pair in self.users.items() for item in pair):
            raise BrokerError(
                "SASL user names and passwords here must not contain quotes, "
                "backslashes, commas, brackets, '=' or whitespace"
            )


def _server_properties(
    port: int, controller: int, data: Path, secure: SecureListener | None
) -> str:
    listeners = [f"PLAINTEXT://127.0.0.1:{port}", f"CONTROLLER://127.0.0.1:{controller}"]
    advertised = [f"PLAINTEXT://127.0.0.1:{port}"]
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        f"log.dirs={data}",
        "num.partitions=1",
        # As in docker-compose.yml and most managed clusters: a topic churnwatch did not
        # create is an error, never silently made with a default partition count.
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=2",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "share.coordinator.state.topic.num.partitions=1",
        "group.initial.rebalance.delay.ms=0",
        # Tests and replays run workers with session timeouts of 3 s for quick fail-over;
        # Kafka refuses a member below this bound (InvalidSessionTimeout, default 6 s).
        "group.min.session.timeout.ms=1000",
        # Small enough for a test machine, still a real compacting cleaner.
        "log.cleaner.dedupe.buffer.size=2097152",
        "log.cleaner.threads=1",
        "num.network.threads=2",
        "num.io.threads=2",
        "background.threads=2",
        "num.recovery.threads.per.data.dir=1",
    ]
    if secure is not None:
        listeners.append(f"SASL_SSL://127.0.0.1:{secure.port}")
        advertised.append(f"SASL_SSL://127.0.0.1:{secure.port}")
        plain_users = " ".join(f'user_{u}="{p}"' for u, p in secure.users.items())
        lines += [
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            "listener.name.sasl_ssl.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.ssl.keystore.type=PEM",
            f"listener.name.sasl_ssl.ssl.keystore.location={secure.keystore_pem}",
        ]
        if secure.key_password is not None:
            lines.append(f"listener.name.sasl_ssl.ssl.key.password={secure.key_password}")
        if secure.client_ca is None:
            lines.append("listener.name.sasl_ssl.ssl.client.auth=none")
        else:
            lines += [
                "listener.name.sasl_ssl.ssl.client.auth=required",
                "listener.name.sasl_ssl.ssl.truststore.type=PEM",
                f"listener.name.sasl_ssl.ssl.truststore.location={secure.client_ca}",
            ]
    lines[0:0] = [
        f"listeners={','.join(listeners)}",
        f"advertised.listeners={','.join(advertised)}",
    ]
    return "\n".join(lines) + "\n"


def _cluster_id() -> str:
    """22 characters of base64url: a random 16-byte UUID, as Kafka's own tool makes."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class LocalKafka(SupervisedBroker):
    """One supervised Apache Kafka process; usable as a context manager.

    ``datadir`` None: a temporary folder, removed on ``stop``. A given one is kept; it
    is formatted only when still empty. ``keep``: the data will be used again (a
    restart on the same datadir), so ``stop`` is a controlled shutdown (2-3 s here);
    otherwise nothing on disk matters after ``stop`` and it kills the broker at once."""

    kind = "kafka"
    name = "kafka"
    answers = "Metadata"
    poll_seconds = 0.2
    quirks = ""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | None = None,
        datadir: Path | None = None,
        secure: SecureListener | None = None,
        keep: bool = False,
    ) -> None:
        if host != "127.0.0.1":
            raise BrokerError("the local Apache Kafka listens on 127.0.0.1 only")
        self.host = host
        self.port = port or free_port(host)
        self.controller_port = free_port(host)
        self.log_path = log_path
        self.secure = secure
        self.keep = keep
        self._own_datadir = datadir is None
        self.datadir = datadir or Path(tempfile.mkdtemp(prefix="churnwatch-kafka-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_seconds: float | None = None
        self._log: IO[bytes] | None = None

    def _java(self, java: str, libs: Path, *args: str) -> list[str]:
        logs = self.datadir / "logs"
        return [java, HEAP, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true", f"-Dkafka.logs.dir={logs}",
                f"-Dlog4j2.configurationFile={self._log4j()}",
                "-cp", f"{libs}/*", *args]  # fmt: skip

    def _log4j(self) -> Path:
        path = self.datadir / "log4j2.properties"
        target = self.log_path or (self.datadir / "server.log")
        path.write_text(
            "status = error\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {target}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            "logger.kafka.name = kafka\nlogger.kafka.level = INFO\n"
            "logger.req.name = kafka.request.logger\nlogger.req.level = WARN\n"
            "logger.cleaner.name = kafka.log.LogCleaner\nlogger.cleaner.level = WARN\n"
            "logger.state.name = state.change.logger\nlogger.state.level = WARN\n"
        )
        return path

    def _format(self, java: str, libs: Path, config: Path) -> None:
        logs = self.datadir / "log"
        if (logs / "meta.properties").exists():
            return
        command = self._java(
            java, libs, "kafka.tools.StorageTool", "format",
            f"--cluster-id={_cluster_id()}", "-c", str(config), "--ignore-formatted",
        )  # fmt: skip
        for user, password in (self.secure.users if self.secure else {}).items():
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                command += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        done = subprocess.run(command, capture_output=True, timeout=120, check=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise BrokerError(f"kafka storage format failed ({done.returncode}):\n{output}")

    def start(self, timeout: float = 60.0) -> Self:
        """Format (when new), spawn, and return once it answers Metadata requests."""
        if self.process is not None:
            raise BrokerError(f"kafka on {self.bootstrap} already started")
        java, libs = check_installed()
        if self.secure is not None:
            self.secure.check()
        self.datadir.mkdir(parents=True, exist_ok=True)
        config = self.datadir / "server.properties"
        config.write_text(
            _server_properties(self.port, self.controller_port, self.datadir / "log", self.secure)
        )
        started = time.monotonic()
        self._format(java, libs, config)
        stdout_path = self.datadir / "stdout.log"
        self._log = stdout_path.open("ab")
        self.process = subprocess.Popen(
            ["/bin/sh", "-c", WATCHDOG, "kafka-watchdog",
             *self._java(java, libs, "kafka.Kafka", str(config))],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        self._await_ready(self.process, started, timeout)
        return self

    def _tail(self, lines: int = 30) -> str:
        if self._log is not None:
            self._log.flush()
        texts = []
        for path in (self.datadir / "stdout.log", self.log_path or self.datadir / "server.log"):
            try:
                texts += path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
        return "\n".join(texts[-lines:]) or "(log empty)"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (a controlled shutdown) when ``keep``, else SIGKILL; SIGKILL after
        ``timeout`` in any case; safe to repeat."""
        process, self.process = self.process, None
        atexit.unregister(self.stop)
        if process is not None and process.stdin is not None:
            process.stdin.close()
        stop_process_group(process, timeout, kill=not self.keep)
        if process is not None:
            wait_group_gone(process.pid, timeout)
            port_freed_within(self.host, self.port, 5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_datadir:
            shutil.rmtree(self.datadir, ignore_errors=True)
