"""Posting one request to one webhook: timeouts, retries with exponential backoff
and jitter, and the verdict when it cannot be delivered.

- 2xx: delivered.
- 408, 425, 429 and 5xx, timeouts and connection errors: retried, up to
  ``max_attempts`` attempts in all; the wait before attempt n+1 is
  ``backoff_initial * 2^(n-1)``, capped at ``backoff_max``, with "equal jitter"
  (half fixed, half uniform random): never less than half the nominal wait, so a
  struggling endpoint is given room, yet many notifiers restarted together do not
  retry in lockstep. A ``Retry-After`` (seconds) raises the wait to what the
  endpoint asked, still capped at ``backoff_max``.
- any other status (4xx, and 3xx: redirects are not followed, a webhook that
  moved is a configuration to fix): rejected at once, retrying cannot help.

The caller writes what was not delivered to the dead-letter topic with the verdict.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

import aiohttp

from notifier.config import Delivery
from notifier.formats import Request

RETRIED_STATUSES: Final = frozenset({408, 425, 429})
#: Characters of a refusing response's body kept in the dead letter's detail.
DETAIL_CHARS: Final = 300

Kind = Literal["ok", "retry", "reject"]


@dataclass(frozen=True)
class Attempt:
    kind: Kind
    #: What happened: ``HTTP 503: ...``, ``timeout after 10 s``, ``connection: ...``.
    detail: str
    #: Seconds the endpoint asked to wait (``Retry-After``), if it did.
    retry_after: float | None = None


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    attempts: int
    detail: str
    #: Why it was given up on (None when delivered).
    reason: Literal["rejected", "retries_exhausted"] | None = None


def backoff(attempt: int, policy: Delivery, rng: random.Random) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based) before the next."""
    nominal = min(policy.backoff_max, policy.backoff_initial * 2.0 ** (attempt - 1))
    return nominal / 2 + rng.uniform(0, nominal / 2)


def classify(status: int) -> Kind:
    if 200 <= status < 300:
        return "ok"
    if status in RETRIED_STATUSES or status >= 500:
        return "retry"
    return "reject"


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds; an HTTP date (rare for webhooks) is not honoured."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


async def attempt(
    session: aiohttp.ClientSession, url: str, request: Request, timeout: float
) -> Attempt:
    """One POST, bounded by ``timeout`` seconds in all (connect, send, answer)."""
    try:
        async with session.post(
            url,
            data=request.body,
            headers=request.headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            text = await response.text(errors="replace")
            kind = classify(response.status)
            detail = f"HTTP {response.status}" + (f": {text[:DETAIL_CHARS]}" if text else "")
            return Attempt(kind, detail, _retry_after(response.headers.get("Retry-After")))
    except TimeoutError:
        return Attempt("retry", f"timeout after {timeout:g} s")
    except aiohttp.ClientError as exc:
        # A webhook URL's path may hold its token (Slack's does): never repeat it.
        text = str(exc).replace(url, redact(url))
        return Attempt("retry", f"connection: {type(exc).__name__}: {text}"[:DETAIL_CHARS])


def redact(url: str) -> str:
    """``url`` without its path and query, which may hold a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/..."


Sender = Callable[[Request], Awaitable[Attempt]]


async def deliver(
    send: Sender,
    request: Request,
    policy: Delivery,
    rng: random.Random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> Outcome:
    """Send until delivered, rejected, or ``max_attempts`` attempts failed."""
    last = Attempt("retry", "not attempted")
    for number in range(1, policy.max_attempts + 1):
        last = await send(request)
        if on_attempt is not None:
            on_attempt(last)
        if last.kind == "ok":
            return Outcome(True, number, last.detail)
        if last.kind == "reject":
            return Outcome(False, number, last.detail, "rejected")
        if number < policy.max_attempts:
            wait = backoff(number, policy, rng)
            if last.retry_after is not None:
                wait = max(wait, min(last.retry_after, policy.backoff_max))
            await sleep(wait)
    return Outcome(False, policy.max_attempts, last.detail, "retries_exhausted")
