"""Fixtures for tests against a real Kafka-protocol broker (embedded Tansu)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator

import pytest

from streams.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One broker for the session: Tansu starts in milliseconds, but sharing it keeps
    tests honest about using their own topics and consumer groups."""
    log_path = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log_path) as started:
        yield started


_counter = itertools.count()


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names unique within the session, so tests sharing ``broker`` never collide."""
    test = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:60]

    def make(suffix: str = "t") -> str:
        return f"{test}.{suffix}.{next(_counter)}"

    return make
