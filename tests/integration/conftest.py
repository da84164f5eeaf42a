"""Fixtures for tests against a real broker: Apache Kafka by default, Tansu with
``CHURNWATCH_TEST_BROKER=tansu`` (tests/brokers.py)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator

import pytest

from streams.embedded import Broker
from tests.brokers import new_broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the session; sharing it keeps tests honest about using their
    own topics and consumer groups."""
    with new_broker(tmp_path_factory.mktemp("broker")) as started:
        yield started


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The embedded Tansu, for the smoke set that keeps the demo's default working."""
    with new_broker(tmp_path_factory.mktemp("tansu"), kind="tansu") as started:
        yield started


_counter = itertools.count()


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names unique within the session, so tests sharing ``broker`` never collide."""
    test = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:60]

    def make(suffix: str = "t") -> str:
        return f"{test}.{suffix}.{next(_counter)}"

    return make
