"""The notifier's Prometheus metrics (``metrics_port`` in the configuration).

Every alert read ends, for each destination, in exactly one outcome of
``churnwatch_notify_alerts_total``: ``delivered``, ``dead_lettered``, ``withheld``
(an opening the day's capacity had no room for: the customer stays in the at-risk
queue) or ``skipped`` (filtered out, or a transition of an episode the destination
was not told of). A redelivery after a restart counts again.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

ALERTS: Final = Counter(
    "churnwatch_notify_alerts",
    "Alerts read, per destination and what became of them",
    ["destination", "outcome"],
)
ATTEMPTS: Final = Counter(
    "churnwatch_notify_attempts",
    "HTTP attempts per destination and result (ok, retry, reject)",
    ["destination", "result"],
)
CAPACITY_USED: Final = Gauge(
    "churnwatch_notify_capacity_used",
    "Openings admitted today (in the configured time zone) per capped destination",
    ["destination"],
)
CAPACITY: Final = Gauge(
    "churnwatch_notify_capacity", "Daily capacity per capped destination", ["destination"]
)
HELD: Final = Gauge(
    "churnwatch_notify_held", "Episodes held in the ranking window", ["destination"]
)
UNDECODABLE: Final = Counter(
    "churnwatch_notify_undecodable", "Records on the alerts topic that are not alert records"
)
IN_FLIGHT: Final = Gauge("churnwatch_notify_in_flight", "Records read and not yet finished")
