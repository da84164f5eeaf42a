"""The two webhook bodies: a Slack-compatible incoming-webhook message, for people,
and a generic JSON notification (``schemas/notify.py``), signed, for programs.

Both carry the same headers: ``Idempotency-Key: <dedup_key>:<sequence>`` (one
transition of one episode; the same on every retry and after a restart, so a
receiver that stores it drops repeats) and, for the JSON format,
``X-Churnwatch-Signature: sha256=<hex>``, HMAC-SHA256 of the exact body bytes
with the destination's secret, as GitHub signs its webhooks.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import msgspec

from notifier.config import Destination
from notifier.words import money, reasons_text
from schemas.alert import AlertRecord
from schemas.notify import Notification

SIGNATURE_HEADER: Final = "X-Churnwatch-Signature"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
_ENCODER = msgspec.json.Encoder()

_TITLES: Final = {
    "firing": "At risk",
    "escalated": "Risk escalated",
    "resolved": "Back on track",
    "churned": "Churned",
}
_EMOJI: Final = {
    "firing": ":rotating_light:",
    "escalated": ":arrow_double_up:",
    "resolved": ":white_check_mark:",
    "churned": ":x:",
}


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str]


def idempotency_key(alert: AlertRecord) -> str:
    return f"{alert.dedup_key}:{alert.sequence}"


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` (constant-time comparison)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def link(template: str | None, alert: AlertRecord) -> str | None:
    """The template filled in, each value percent-escaped (an id may hold ``/``)."""
    if template is None:
        return None
    values = {
        "customer_id": alert.customer_id,
        "dedup_key": alert.dedup_key,
        "segment": alert.segment or "none",
        "tier": alert.tier,
    }
    return template.format(**{k: quote(v, safe="") for k, v in values.items()})


def _slack_escape(text: str) -> str:
    """Slack's mrkdwn control characters (``&``, ``<``, ``>``) as its entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(alert: AlertRecord, url: str | None, currency: str) -> dict[str, Any]:
    """An incoming-webhook payload: ``text`` (notifications, and clients without
    blocks) and blocks with the customer, tier, value at risk and reasons."""
    customer = _slack_escape(alert.customer_id)
    named = f"<{url}|{customer}>" if url else customer
    title = _TITLES.get(alert.status, alert.status)
    at_risk = money(alert.value_at_risk, currency)
    headline = (
        f"{_EMOJI.get(alert.status, '')} *{title}*: customer *{named}* is *{alert.tier}* risk "
        f"(score {alert.risk_score:.2f}), value at risk *{at_risk}*"
    )
    reasons = reasons_text(alert.reasons)
    why = "\n".join(f"• {_slack_escape(text)}" for text in reasons) or "• no reason given"
    context = (
        f"segment {_slack_escape(alert.segment or 'none')} · CLV {money(alert.clv, currency)} · "
        f"episode since {alert.starts_at.date().isoformat()} · "
        f"alert {_slack_escape(idempotency_key(alert))}"
    )
    return {
        "text": (f"{title}: customer {alert.customer_id} ({alert.tier}), value at risk {at_risk}"),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": headline}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Why*\n{why}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def build(
    destination: Destination,
    alert: AlertRecord,
    *,
    opening: bool,
    day: str | None,
    currency: str = "",
) -> Request:
    """The request for one alert to one destination."""
    url = link(destination.link_template, alert)
    headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: idempotency_key(alert)}
    if destination.format == "slack":
        body = _ENCODER.encode(slack_message(alert, url, currency))
        return Request(body, headers)
    notification = Notification(
        idempotency_key=idempotency_key(alert),
        destination=destination.name,
        opening=opening,
        capacity_day=day if opening else None,
        link=url,
        reasons_text=reasons_text(alert.reasons),
        alert=alert,
    )
    body = _ENCODER.encode(notification)
    assert destination.secret is not None  # config: the JSON format requires one
    headers[SIGNATURE_HEADER] = sign(destination.secret, body)
    return Request(body, headers)
