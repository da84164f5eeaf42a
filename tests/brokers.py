"""Which broker the integration tests run on: ``CHURNWATCH_TEST_BROKER=kafka|tansu``.

Apache Kafka (the local single-node broker of ``streams.kafka_local``) by default:
it is what users run. Tests marked ``tansu_smoke`` also run on the embedded Tansu,
whatever the switch says, so the demo's default broker keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path

from streams.embedded import Broker, check_kind, embedded_broker

#: The broker kind of this test session.
KIND = check_kind(os.environ.get("CHURNWATCH_TEST_BROKER", "kafka"))


def new_broker(workdir: Path, name: str = "broker", kind: str | None = None) -> Broker:
    """A broker of the session's kind (or ``kind``), not started; its log and (Kafka)
    data live under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    return embedded_broker(
        kind or KIND, log_path=workdir / f"{name}.log", datadir=workdir / f"{name}-data"
    )


def pid_exists(pid: int) -> bool:
    """Whether a process of this id is alive (a reaped child's id is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def group_alive(group: int) -> bool:
    """Whether any process of this process group is left."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
