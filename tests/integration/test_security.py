"""Secured clusters: a worker and ``replay --broker`` over SASL_SSL with SCRAM-SHA-512
against the local Apache Kafka, whose CA and certificates are made here (trustme);
a wrong password or an untrusted certificate ends a command quickly, naming why.

The listener also requires client certificates (mutual TLS), so every passing run
uses ``CHURNWATCH_SSL_CERTFILE``/``SSL_KEYFILE`` too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives import serialization

from retention.timeutil import parse_time
from streams import topics
from streams.inputs import read_events
from streams.kafka_admin import create_topics, wait_for_zero_lag
from streams.kafka_local import LocalKafka, SecureListener, check_installed
from streams.processes import stop_process_group
from streams.produce import publish
from streams.replay import collect, wait_applied
from streams.security import client_kwargs, client_security
from streams.settings import Settings, to_env
from streams.workers import WorkerProcess, local_settings
from tests.notify_support import Receiver, encode, episodes, serve
from tests.oracle import customers, events_from, expected, facts_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]
USER, PASSWORD = "alice", "s3cret-pw"
END = "2025-07-01T00:00:00Z"
#: A refused login or certificate must end a command within this many seconds
#: (Python and Faust imports included), never leave it retrying.
FAIL_WITHIN = 30.0


@dataclass(frozen=True)
class Pki:
    keystore: Path  # the broker's PKCS#8 key and certificate chain
    cafile: Path  # the CA that signed the broker's and the client's certificates
    other_cafile: Path  # a CA that signed nothing here
    certfile: Path
    keyfile: Path


def _pkcs8(key_pem: bytes) -> bytes:
    """Kafka's PEM key store reads PKCS#8 only; trustme writes the traditional form."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("churnwatch-client")
    paths = Pki(*(folder / name for name in ("broker.pem", "ca.pem", "other-ca.pem",
                                              "client.pem", "client.key")))  # fmt: skip
    chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
    paths.keystore.write_bytes(_pkcs8(server.private_key_pem.bytes()) + chain)
    ca.cert_pem.write_to_path(str(paths.cafile))
    other.cert_pem.write_to_path(str(paths.other_cafile))
    client.cert_chain_pems[0].write_to_path(str(paths.certfile))
    client.private_key_pem.write_to_path(str(paths.keyfile))
    return paths


def secure_kafka(pki: Pki, workdir: Path) -> LocalKafka:
    try:
        check_installed()
    except Exception as exc:  # no Java or no jars: say so rather than fail obscurely
        pytest.skip(f"Apache Kafka not available: {exc}")
    listener = SecureListener(pki.keystore, {USER: PASSWORD}, client_ca=pki.cafile)
    workdir.mkdir(parents=True, exist_ok=True)
    return LocalKafka(log_path=workdir / "kafka.log", datadir=workdir / "kafka", secure=listener)


@pytest.fixture(scope="module")
def kafka(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """Shared by the worker test (its own topics) and the refusals (which create none)."""
    with secure_kafka(pki, tmp_path_factory.mktemp("secure")) as started:
        yield started


def secured(kafka: LocalKafka, pki: Pki, **changes: object) -> Settings:
    assert kafka.secure is not None
    settings = Settings(
        broker=f"kafka://127.0.0.1:{kafka.secure.port}",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=USER,
        sasl_password=PASSWORD,
        ssl_cafile=str(pki.cafile),
        ssl_certfile=str(pki.certfile),
        ssl_keyfile=str(pki.keyfile),
    )
    return settings.replace(**changes)


def security_env(settings: Settings) -> dict[str, str]:
    """The process environment with ``settings``' CHURNWATCH_* security variables."""
    names = ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD",
             "SSL_CAFILE", "SSL_CERTFILE", "SSL_KEYFILE")  # fmt: skip
    env = to_env(settings)
    return {**os.environ, **{f"CHURNWATCH_{n}": env[f"CHURNWATCH_{n}"] for n in names}}


def event_lines() -> list[bytes]:
    lines = []
    for n in range(40):
        when = f"2024-02-{1 + n % 28:02d}T10:00:00Z"
        body = {"type": "purchase", "event_id": f"p{n}", "customer_id": f"c{n % 8}",
                "occurred_at": when, "amount": 2.5 + n}  # fmt: skip
        lines.append(json.dumps(body).encode())
    for n in range(8):
        body = {"type": "signup", "event_id": f"s{n}", "customer_id": f"c{n}",
                "occurred_at": "2024-01-01T00:00:00Z", "segment": "smb"}  # fmt: skip
        lines.append(json.dumps(body).encode())
    return lines


def test_worker_over_sasl_ssl_scram_sha_512(kafka: LocalKafka, pki: Pki, tmp_path: Path) -> None:
    """Faust's consumer, producer (changelog) and topic checks, and churnwatch's own
    clients, all through the SASL_SSL listener: the state equals the oracle's."""
    base = secured(kafka, pki)
    settings = local_settings(base, base.broker, 2, tmp_path)
    security = client_security(settings)
    bootstrap = settings.bootstrap
    assert bootstrap != kafka.bootstrap  # the secured listener, not the plaintext one
    asyncio.run(create_topics(bootstrap, dict.fromkeys(topics.ALL_TOPICS, 2), security=security))
    lines = event_lines()
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        started = time.monotonic()
        assert worker.wait_ready(timeout=90)["partitions"] == [0, 1]
        print(f"launch to ready over SASL_SSL: {time.monotonic() - started:.1f}s")
        stats = asyncio.run(publish(bootstrap, read_events(path, "jsonl"), security=security))
        assert stats.published == len(lines)
        inputs = list(topics.INPUT_TOPICS)
        asyncio.run(
            wait_for_zero_lag(bootstrap, settings.app_id, inputs, timeout=60, security=security)
        )
        asyncio.run(wait_applied(bootstrap, settings.app_id, timeout=60, security=security))
        states, parts = asyncio.run(collect(bootstrap, settings.app_id, security=security))
    finally:
        worker.stop()
    assert worker.process is not None and worker.process.returncode == 0, worker.log_tail()
    truth = customers(events_from(lines))
    assert {cid: facts_of(state) for cid, state in states.items()} == truth
    assert sum(p.consumed for p in parts) == len(lines)


def test_replay_on_a_secured_broker(pki: Pki, tmp_path: Path) -> None:
    """``churnwatch replay --broker`` with the security in CHURNWATCH_* variables: its
    own clients and the worker it starts use them; results equal the oracle's."""
    history = tmp_path / "history.jsonl"
    generate = [sys.executable, "-m", "streams.cli", "generate", "--out", str(history),
                "--customers", "50", "--days", "60", "--seed", "4", "--end", END]  # fmt: skip
    done = subprocess.run(generate, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out, report_path = tmp_path / "customers.jsonl", tmp_path / "report.json"
    with secure_kafka(pki, tmp_path / "broker") as kafka:
        settings = secured(kafka, pki)
        command = [sys.executable, "-m", "streams.cli", "replay", str(history),
                   "--broker", settings.broker, "--as-of", END, "--partitions", "2",
                   "--customers", str(out), "--report", str(report_path)]  # fmt: skip
        started = time.monotonic()
        done = subprocess.run(
            command, env=security_env(settings), capture_output=True, text=True, timeout=600
        )
        print(f"secured replay: {time.monotonic() - started:.1f}s")
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    truth = expected(history, parse_time(END))
    got = {line["customer_id"]: line for line in map(json.loads, out.read_text().splitlines())}
    assert got.keys() == truth.customers.keys()
    for cid, facts in truth.customers.items():
        assert got[cid]["purchases"] == facts["purchases"], cid
        assert round(got[cid]["total_spend"] * 1_000_000) == facts["spend"], cid
        assert got[cid]["subscribed"] == facts["subscribed"], cid
    report = json.loads(report_path.read_text())
    for name in ("consumed", "valid", "deadletter", "duplicates"):
        assert report["events"][name] == truth.counts[name], name
    assert len(report["periods"]) == len(truth.periods) >= 1
    for got_period, want in zip(report["periods"], (p.line() for p in truth.periods), strict=True):
        assert {name: got_period[name] for name in want} == want
    assert report["cohorts"] == truth.cohorts


#: What is wrong: (the settings changes that make it so, words the error must contain).
REFUSALS: dict[str, tuple[Callable[[Pki], dict[str, str]], str]] = {
    "wrong password": (
        lambda _: {"sasl_password": "not-the-password"},
        "SASL authentication failed",
    ),
    "untrusted certificate": (
        lambda pki: {"ssl_cafile": str(pki.other_cafile)},
        "TLS certificate verification failed",
    ),
    "no client certificate": (
        lambda _: {"ssl_certfile": "", "ssl_keyfile": ""},
        "does it require a client certificate",
    ),
}


@pytest.mark.parametrize("command", ["replay", "worker", "notify"])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_access_fails_fast_naming_the_cause(
    kafka: LocalKafka, pki: Pki, tmp_path: Path, case: str, command: str
) -> None:
    changes, cause = REFUSALS[case]
    settings = secured(kafka, pki, **changes(pki))
    args = [sys.executable, "-m", "streams.cli", command]
    if command == "replay":
        history = tmp_path / "events.jsonl"
        history.write_bytes(b"\n".join(event_lines()) + b"\n")
        args += [str(history), "--broker", settings.broker, "--as-of", END]
    if command == "notify":
        args += ["--config", str(_notify_config(tmp_path, "http://127.0.0.1:9/hook", "alerts"))]
    env = {**security_env(settings), "CHURNWATCH_BROKER": settings.broker,
           "CHURNWATCH_DATADIR": str(tmp_path / "data")}  # fmt: skip
    started = time.monotonic()
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=FAIL_WITHIN)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"{command} still running after {FAIL_WITHIN:g}s: {expired.stderr!r}")
    elapsed = time.monotonic() - started
    print(f"{command}, {case}: exit {done.returncode} after {elapsed:.1f}s")
    assert done.returncode != 0
    assert cause in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


def _notify_config(folder: Path, url: str, topic: str) -> Path:
    path = folder / "notify.json"
    destination = {"name": "crm", "format": "json", "url": url, "secret": "k"}
    path.write_text(json.dumps({"source": {"topic": topic, "group_id": f"{topic}-notifier",
                                           "dead_letter_topic": f"{topic}.dead",
                                           "state_topic": f"{topic}.state"},
                                "destinations": [destination]}))  # fmt: skip
    return path


def _spawn_notify(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "notify", "--config", str(config)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


async def test_the_notifier_over_sasl_ssl(kafka: LocalKafka, pki: Pki, tmp_path: Path) -> None:
    """``churnwatch notify`` reads alerts, and writes its state, through the SASL_SSL
    listener with the CHURNWATCH_* security settings, as the workers do."""
    settings = secured(kafka, pki)
    security = client_security(settings)
    topic = "secured.alerts"
    await create_topics(settings.bootstrap, {topic: 2}, security=security)
    alerts = [alert for history in episodes(seed=2, customers=4) for alert in history]
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, **client_kwargs(security))
    await producer.start()
    try:
        for alert in alerts:
            key, value = encode(alert)
            await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()
    receiver = Receiver()
    runner, base = await serve(receiver)
    config = _notify_config(tmp_path, f"{base}/crm", topic)
    env = {**security_env(settings), "CHURNWATCH_BROKER": settings.broker}
    log = tmp_path / "notify.log"
    process = _spawn_notify(config, env, log)
    wanted = {f"{a.dedup_key}:{a.sequence}" for a in alerts}
    try:
        deadline = time.monotonic() + 90
        while set(receiver.view("crm")) != wanted:
            assert process.poll() is None, log.read_bytes()[-3000:]
            assert time.monotonic() < deadline, f"delivered {len(receiver.view('crm'))}"
            await asyncio.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0, log.read_bytes()[-3000:]
    finally:
        stop_process_group(process, timeout=10, kill=True)
        await runner.cleanup()
