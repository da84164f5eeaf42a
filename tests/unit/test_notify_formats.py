"""What the notifier sends: Slack messages, signed JSON bodies, reasons in words,
links, and the retry schedule."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.config import Delivery, Destination
from notifier.delivery import Attempt, attempt, backoff, classify, deliver, redact
from notifier.formats import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    build,
    link,
    sign,
    slack_message,
    verify,
)
from notifier.words import money, reason_text, reasons_text
from schemas.alert import AlertReason
from schemas.notify import Notification
from tests.notify_support import episodes, record

ALERT = record(episodes(seed=3, customers=1)[0][0])
SLACK = Destination(name="s", format="slack", url="https://hooks/x", link_template=None)
JSON = Destination(
    name="j",
    format="json",
    url="https://crm/x",
    secret=b"k",
    link_template="https://cw/ui/customers/{customer_id}?tier={tier}",
)


def test_the_json_body_is_signed_with_hmac_sha256_of_its_bytes() -> None:
    request = build(JSON, ALERT, opening=True, day="2026-12-04")
    expected = hmac.new(b"k", request.body, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert verify(b"k", request.body, request.headers[SIGNATURE_HEADER])
    assert not verify(b"other", request.body, request.headers[SIGNATURE_HEADER])
    assert not verify(b"k", request.body + b" ", request.headers[SIGNATURE_HEADER])
    assert not verify(b"k", request.body, None)
    body = msgspec.json.decode(request.body, type=Notification)
    key = f"{ALERT.dedup_key}:{ALERT.sequence}"
    assert body.idempotency_key == key == request.headers[IDEMPOTENCY_HEADER]
    assert body.alert == ALERT and body.opening and body.capacity_day == "2026-12-04"
    assert body.reasons_text == reasons_text(ALERT.reasons)
    assert body.link == f"https://cw/ui/customers/{ALERT.customer_id}?tier={ALERT.tier}"


def test_a_follow_up_names_no_capacity_day() -> None:
    body = msgspec.json.decode(build(JSON, ALERT, opening=False, day="x").body, type=Notification)
    assert not body.opening and body.capacity_day is None


@given(st.binary(), st.binary(min_size=1))
def test_a_signature_verifies_only_its_own_body(body: bytes, secret: bytes) -> None:
    assert verify(secret, body, sign(secret, body))
    assert not verify(secret, body + b"x", sign(secret, body))


def test_the_slack_message_shows_customer_tier_value_reasons_and_link() -> None:
    alert = msgspec.structs.replace(ALERT, customer_id="a<b>&c", value_at_risk=12345.6)
    message = slack_message(alert, link(JSON.link_template, alert), "USD")
    headline = message["blocks"][0]["text"]["text"]
    assert "https://cw/ui/customers/a%3Cb%3E%26c?tier=" in headline
    assert "|a&lt;b&gt;&amp;c>" in headline  # mrkdwn control characters escaped
    assert f"*{alert.tier}*" in headline and "USD 12,345.60" in headline
    assert "a<b>&c" in message["text"] and "USD 12,345.60" in message["text"]
    why = message["blocks"][1]["text"]["text"]
    for text in reasons_text(alert.reasons):
        assert text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in why
    request = build(SLACK, alert, opening=True, day="d")
    assert SIGNATURE_HEADER not in request.headers
    assert json.loads(request.body)["blocks"][0]["type"] == "section"


def test_reasons_read_as_words() -> None:
    def say(code: str, value: float, threshold: float) -> str:
        return reason_text(AlertReason(code=code, value=value, threshold=threshold))

    assert say("overdue", 3.2, 2.0) == (
        "no activity for 3.2 times their usual interval between visits (alert from 2 times)"
    )
    assert say("frequency_drop", 0.25, 0.5).startswith("buying 25% as often as they used to")
    assert say("detractor", 3, 6) == "latest NPS score 3 of 10, a detractor (6 or less)"
    assert say("bad_support", 1, 1) == "1 bad or unresolved support contact recently"
    assert say("bad_support", 2, 1) == "2 bad or unresolved support contacts recently"
    assert say("cancelled", 1, 1) == "cancelled their subscription"
    assert say("lapsed", 95, 90).startswith("no activity for 95 days")
    # A code from a newer worker is shown, not dropped.
    assert say("new_signal", 0.5, 1) == "new_signal: 0.5 (threshold 1)"
    assert money(-1234.5) == "-1,234.50" and money(3, "EUR") == "EUR 3.00"


POLICY = Delivery(timeout=1.0, max_attempts=6, backoff_initial=0.5, backoff_max=4.0)


@given(st.integers(1, 40), st.integers(0, 2**32))
def test_backoff_doubles_up_to_the_cap_with_bounded_jitter(attempt: int, seed: int) -> None:
    wait = backoff(attempt, POLICY, random.Random(seed))
    nominal = min(POLICY.backoff_max, POLICY.backoff_initial * 2 ** (attempt - 1))
    assert nominal / 2 <= wait <= nominal


def test_backoff_jitters() -> None:
    rng = random.Random(7)
    assert len({round(backoff(3, POLICY, rng), 9) for _ in range(20)}) > 1


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, "ok"),
        (204, "ok"),
        (301, "reject"),
        (400, "reject"),
        (404, "reject"),
        (408, "retry"),
        (425, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
    ],
)
def test_statuses_are_classified(status: int, kind: str) -> None:
    assert classify(status) == kind


def _run(answers: list[Attempt], policy: Delivery = POLICY) -> tuple[object, list[float], int]:
    waits: list[float] = []
    calls = 0

    async def send(_: object) -> Attempt:
        nonlocal calls
        calls += 1
        return answers[min(calls - 1, len(answers) - 1)]

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    request = build(SLACK, ALERT, opening=True, day="d")
    outcome = asyncio.run(deliver(send, request, policy, random.Random(1), sleep))
    return outcome, waits, calls


def test_delivery_retries_then_succeeds() -> None:
    retry, ok = Attempt("retry", "HTTP 500"), Attempt("ok", "HTTP 200")
    outcome, waits, calls = _run([retry, retry, ok])
    assert outcome.delivered and outcome.attempts == 3 == calls  # type: ignore[attr-defined]
    assert len(waits) == 2 and 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 1.0


def test_delivery_gives_up_after_max_attempts_and_at_once_when_rejected() -> None:
    outcome, waits, calls = _run([Attempt("retry", "timeout after 1 s")])
    assert not outcome.delivered and outcome.reason == "retries_exhausted"  # type: ignore[attr-defined]
    assert calls == POLICY.max_attempts and len(waits) == POLICY.max_attempts - 1
    assert max(waits) <= POLICY.backoff_max
    outcome, waits, calls = _run([Attempt("reject", "HTTP 400: bad")])
    assert outcome.reason == "rejected" and calls == 1 and waits == []  # type: ignore[attr-defined]


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    slow_down, ok = Attempt("retry", "HTTP 429", retry_after=3.0), Attempt("ok", "HTTP 200")
    _, waits, _ = _run([slow_down, ok])
    assert waits == [3.0]
    _, waits, _ = _run([Attempt("retry", "HTTP 429", retry_after=600.0), ok])
    assert waits == [POLICY.backoff_max]


@pytest.mark.parametrize("port", [9, 99999])  # refused; a URL aiohttp says is invalid
def test_a_connection_error_never_repeats_the_webhook_token(port: int) -> None:
    url = f"http://127.0.0.1:{port}/services/T000/B000/SECRET-TOKEN"

    async def run() -> Attempt:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            return await attempt(session, url, build(SLACK, ALERT, opening=True, day="d"), 2.0)

    result = asyncio.run(run())
    assert result.kind == "retry" and result.detail.startswith("connection: ")
    assert "SECRET-TOKEN" not in result.detail and redact(url) == f"http://127.0.0.1:{port}/..."
