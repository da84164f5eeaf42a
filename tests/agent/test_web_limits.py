"""The HTTP API under bad requests: JSON errors with 4xx codes, never a 500.

The worker's aiohttp application is served by aiohttp's test server, without a
broker: the app is built but not started, so ``/customers/{id}`` cannot find the
owner of a partition and answers from the (absent) Redis view, which exercises the
same validation, routing fallback and error paths as a running worker. Log records
written while serving are checked for control characters: request input must reach
an operator's terminal escaped.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.app import create_app
from streams.settings import Settings
from streams.web import MAX_ID, MAX_PATH, MAX_QUERY

ROUTED = {"X-Churnwatch-Routed": "1"}  # answer from this worker's table, do not forward


@asynccontextmanager
async def api() -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(Settings(store="memory://", clock="off"))
    app.finalize()
    app.web.init_server()
    async with TestClient(TestServer(app.web.web_app)) as client:  # type: ignore[attr-defined]
        yield client


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured_logs() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("streams")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def terminal_safe(text: str) -> bool:
    """No control or format character (ESC, NUL, bidi overrides...) but newline and tab."""
    return not any(unicodedata.category(c) in ("Cc", "Cf") and c not in "\n\t" for c in text)


async def json_error(response: ClientResponse, *statuses: int) -> dict[str, Any]:
    assert response.status in statuses, (response.status, await response.text())
    assert response.content_type == "application/json"
    body = await response.json()
    assert isinstance(body, dict) and body["status"] == response.status and body["error"]
    return body


async def test_long_urls_are_refused_with_414() -> None:
    async with api() as client:
        for path in (
            "/customers/" + "x" * MAX_PATH,
            "/at-risk?segment=" + "x" * MAX_QUERY,
            "/no/such/path/" + "y" * MAX_PATH,
        ):
            async with client.get(path) as response:
                await json_error(response, 414)
        # At the limits the request goes through to the view, which judges the id.
        async with client.get("/customers/" + "x" * (MAX_PATH - len("/customers/"))) as response:
            await json_error(response, 400)
        query = "limit=" + "0" * (MAX_QUERY - len("limit=") - 1) + "5"
        async with client.get("/at-risk?" + query) as response:
            await json_error(response, 503)  # valid parameters; no Redis configured


async def test_request_bodies_are_refused_with_413() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * 1000

    async with api() as client:
        for method in ("GET", "POST", "PUT"):
            async with client.request(method, "/at-risk", data=b"{}" * 600_000) as response:
                await json_error(response, 413)
        async with client.post("/customers/c1", data=chunks()) as response:
            await json_error(response, 413)
        async with client.get("/at-risk", headers={"Content-Length": "0"}) as response:
            await json_error(response, 503)  # an empty body is no body


async def test_unknown_paths_and_methods_answer_json() -> None:
    async with api() as client:
        async with client.get("/nope") as response:
            await json_error(response, 404)
        async with client.get("/customers/") as response:
            await json_error(response, 404)
        async with client.delete("/customers/c1") as response:
            await json_error(response, 405)
        async with client.request("PATCH", "/at-risk") as response:
            await json_error(response, 405)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("limit=0", 400),
        ("limit=1001", 400),
        ("limit=1e3", 400),
        ("limit=-1", 400),
        ("limit=%ff", 400),
        ("limit=" + "9" * 900, 400),
        ("limit=5&limit=6", 400),
        ("tier=high&tier=low", 400),
        ("tier=%1b%5b31m", 400),
        ("segment=%00", 400),
        ("segment=" + "s" * 65, 400),
        ("bogus=1", 400),
        ("limit=5&tier=high&segment=smb", 503),
    ],
)
async def test_bad_at_risk_parameters_get_400(query: str, status: int) -> None:
    async with api() as client, client.get("/at-risk?" + query) as response:
        await json_error(response, status)


ids = st.one_of(
    st.text(max_size=10),
    st.text(st.characters(codec=None), min_size=1, max_size=140),
    st.text(
        alphabet=st.sampled_from("\x00\x1b\x7f\x85\u202e\u2028\ufeff\ud800a/%?#.é\U0001f600 "),
        max_size=8,
    ),
    st.integers(min_value=MAX_ID - 2, max_value=MAX_ID + 2).map(lambda n: "\U0001f600" * n),
)


async def serve_ids(customer_ids: list[str]) -> list[logging.LogRecord]:
    with captured_logs() as logs:
        async with api() as client:
            for customer_id in customer_ids:
                path = "/customers/" + quote(customer_id.encode("utf-8", "surrogatepass"), safe="")
                for headers in (None, ROUTED):
                    async with client.get(path, headers=headers) as response:
                        body = await json_error(response, 400, 404, 414, 503)
                    if response.status == 404 and "customer_id" in body:
                        # The id is echoed only inside JSON, and only when printable.
                        assert body["customer_id"].isprintable()
                        assert 1 <= len(body["customer_id"]) <= MAX_ID
    return logs.records


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(customer_ids=st.lists(ids, min_size=10, max_size=10))
def test_any_customer_id_gets_a_json_answer_and_safe_logs(customer_ids: list[str]) -> None:
    for record in asyncio.run(serve_ids(customer_ids)):
        assert terminal_safe(record.getMessage()), record.getMessage()


def test_an_id_with_odd_printable_characters_is_logged_quoted() -> None:
    records = asyncio.run(serve_ids(["a'b\"c\\d é"]))
    messages = [r.getMessage() for r in records if r.name == "streams.web"]
    assert messages and all(repr("a'b\"c\\d é") in m for m in messages), messages


queries = st.dictionaries(
    st.sampled_from(["tier", "limit", "segment", "x", ""]) | st.text(max_size=5),
    st.text(max_size=30) | st.integers().map(str),
    max_size=4,
)


async def serve_queries(params: list[dict[str, str]]) -> None:
    async with api() as client:
        for query in params:
            encoded = urlencode(
                {
                    k.encode("utf-8", "surrogatepass"): v.encode("utf-8", "surrogatepass")
                    for k, v in query.items()
                }
            )
            async with client.get("/at-risk?" + encoded) as response:
                await json_error(response, 400, 414, 503)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=st.lists(queries, min_size=10, max_size=10))
def test_any_at_risk_query_gets_a_json_answer(params: list[dict[str, str]]) -> None:
    asyncio.run(serve_queries(params))
