"""HTTP views on the worker's web port.

``/segments`` lists per-segment figures against acceptable churn (streams/segment_view.py).
``/customers/{id}`` answers from the table of the worker that owns the customer's
partition (a request to another worker is forwarded there by Faust's router), and
from the Redis view when the owner cannot be reached. ``/at-risk`` reads the Redis
queues. Both answer JSON, with 400 for bad parameters and 404 for unknown ids;
``/health`` and ``/metrics`` are for operators and Prometheus.

The port has no authentication (README, Threat model: put it behind a proxy), but
whoever reaches it must not be able to make the worker do much work or fail with a
500: a middleware refuses long URLs (414) and request bodies (413, no endpoint takes
one) before any view runs, and answers every error, aiohttp's own 404 and 405
included, as the same JSON object. Requests beyond aiohttp's parser limits (8190
bytes per request or header line, 128 headers) are refused by aiohttp itself (400).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohttp import web
from faust.exceptions import NotReady, SameNode
from faust.web import Request, Response, View
from faust.web.exceptions import ServiceUnavailable
from prometheus_client import generate_latest

import retention.compiled as compiled
from retention.risk import TIERS
from retention.serving import customer_view
from retention.state import decode_state
from streams import topics
from streams.partitions import assigned_partitions, partition_states
from streams.redis_view import MAX_LIMIT, view_json
from streams.segment_view import segments_view

if TYPE_CHECKING:
    from streams.app import ChurnwatchApp

log = logging.getLogger(__name__)
# aiohttp refuses a charset inside content_type; Prometheus reads this as 0.0.4 text.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"
#: Customer ids and segments are at most this long (the event schema's limit).
MAX_ID: Final = 128
_ROUTED_HEADER: Final = "X-Churnwatch-Routed"
#: Which worker answered (its advertised URL), on /customers responses.
WORKER_HEADER: Final = "X-Churnwatch-Worker"
_SEGMENT = re.compile(r"^[\w.\- ]{1,64}$")
#: Longest raw (percent-encoded) path and query string accepted: a 128-character id
#: of 4-byte characters is 1536 bytes encoded; the API's queries need < 100 bytes.
MAX_PATH: Final = 2048
MAX_QUERY: Final = 1024
_HANDLER = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


@web.middleware
async def guard(request: web.Request, handler: _HANDLER) -> web.StreamResponse:
    """Size limits first, then the view; every error comes back as JSON."""
    path, _, query = request.raw_path.partition("?")
    if len(path) > MAX_PATH or len(query) > MAX_QUERY:
        return _error(414, f"URI too long (path at most {MAX_PATH}, query {MAX_QUERY} bytes)")
    if request.body_exists:  # chunked, or a Content-Length above 0
        return _error(413, "request bodies are not accepted")
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception:
        # %r: the path is client input and must not reach a terminal unescaped.
        log.exception("error serving %s %r", request.method, request.path[:200])
        return _error(500, "internal error")


def install_views(app: ChurnwatchApp) -> None:
    def error(view: View, status: int, message: str, **extra: Any) -> Response:
        return view.json({"error": message, "status": status, **extra}, status=status)

    # The aiohttp application exists from the first view on and is frozen when the
    # server starts, which is after the app is built: middlewares can still be added.
    web_app = getattr(app.web, "web_app", None)
    if isinstance(web_app, web.Application):
        web_app.middlewares.append(guard)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(
                generate_latest(app.metrics.registry), content_type=METRICS_CONTENT_TYPE
            )

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            partitions = assigned_partitions(app)
            recovery = app.tables.recovery  # type: ignore[attr-defined]
            recovering = bool(app.in_recovery) or not recovery.completed.is_set()
            status = "rebalancing" if app.rebalancing else "recovering" if recovering else "ok"
            try:
                assigned = len(app.consumer.assignment())
            except Exception:
                assigned = 0
            body: dict[str, Any] = {
                "status": status,
                "app_id": app.conf.id,
                "partitions": partitions,
                "recovering": recovering,
                "broker": {"url": app.settings.broker, "assigned_topic_partitions": assigned},
                "routing": _routing(app),
                "state_flush": {
                    "interval_s": app.settings.batch_within,
                    "max_records": app.settings.batch_max,
                },
                # The domain modules running compiled (retention/compiled.py), if any.
                "compiled": compiled.in_use(),
            }
            sink = app.redis_sink
            if app.redis_view is None or sink is None:
                body["redis"] = {"configured": False}
            else:
                up = await app.redis_view.ping()
                body["redis"] = {
                    "configured": True,
                    "up": up,
                    "buffered": len(sink.buffer),
                    "resync_pending": sink.resync_needed,
                }
                if not up and status == "ok":
                    body["status"] = "degraded"
            return self.json(body, status=200 if body["status"] != "rebalancing" else 503)

    @app.page("/customers/{customer_id}")
    class Customer(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            if not customer_id or len(customer_id) > MAX_ID:
                return error(self, 400, f"customer id must be 1 to {MAX_ID} characters")
            if not customer_id.isprintable():
                # No event with such an id is ever accepted (schemas/events.py).
                return error(self, 400, "customer id must not contain control characters")
            key = customer_id.encode()
            if _ROUTED_HEADER not in request.headers:
                try:
                    return await _route(app, self, request, key)
                except SameNode:
                    pass
                except (
                    ServiceUnavailable,
                    NotReady,  # no producer yet: the owner cannot be known
                    KeyError,
                    aiohttp.ClientError,
                    OSError,
                ) as exc:
                    log.info("routing /customers/%r failed (%r); using Redis", customer_id, exc)
                    return await _from_redis(app, self, customer_id)
            raw = app.customers.get(key)
            if raw is None:
                return error(self, 404, "unknown customer", customer_id=customer_id)
            view = view_json(customer_view(decode_state(raw), app.lifecycle))
            headers = {WORKER_HEADER: str(app.conf.canonical_url)}
            return self.json({**view, "source": "table"}, headers=headers)

    @app.page("/segments")
    class Segments(View):
        """Per-segment figures of this worker's partitions against acceptable churn
        (streams/segment_view.py)."""

        async def get(self, request: Request) -> Response:
            if request.query:
                return error(self, 400, "/segments takes no parameters")
            states = partition_states(app, app.customers)
            targets = app.risk.segment_churn_targets
            return self.json(segments_view(states, targets, app.settings.period))

    @app.page("/at-risk")
    class AtRisk(View):
        async def get(self, request: Request) -> Response:
            query = request.query
            unknown = set(query) - {"tier", "limit", "segment"}
            if unknown:
                return error(self, 400, f"unknown parameter(s): {', '.join(sorted(unknown))}")
            if len(query) != len(set(query)):
                return error(self, 400, "each parameter may be given once")
            tier = query.get("tier") or None
            if tier is not None and tier not in TIERS:
                return error(self, 400, f"tier must be one of {', '.join(TIERS)}")
            try:
                limit = int(query.get("limit", "50"))
            except ValueError:
                limit = -1
            if not 1 <= limit <= MAX_LIMIT:
                return error(self, 400, f"limit must be an integer from 1 to {MAX_LIMIT}")
            segment = query.get("segment") or None
            if segment is not None and not _SEGMENT.match(segment):
                return error(self, 400, "segment must be 1-64 letters, digits, ' ', '.', '_', '-'")
            if app.redis_view is None:
                return error(self, 503, "no Redis serving view configured (CHURNWATCH_REDIS_URL)")
            try:
                customers = await app.redis_view.queue(tier, limit, segment)
            except Exception as exc:  # Redis down: say so, do not fail the worker
                return error(self, 503, f"Redis unavailable: {type(exc).__name__}")
            return self.json(
                {"tier": tier, "segment": segment, "count": len(customers), "customers": customers}
            )


def _routing(app: ChurnwatchApp) -> dict[str, int]:
    """Misrouted input on the partitions this worker owns, exact and recovered with
    their state: events read here whose key hashes to another partition (forwarded
    there), and forwarded events read here."""
    try:
        states = partition_states(app, app.customers)
    except Exception:  # the table is not readable yet (starting up)
        states = []
    return {
        "misrouted": sum(state.forwarded for state in states),
        "received": sum(state.received for state in states),
    }


async def _route(app: ChurnwatchApp, view: View, request: Request, key: bytes) -> Response:
    """Forward to the owner of the key's partition; SameNode if that is us."""
    dest = app.router.key_store(topics.CUSTOMERS_TABLE, key)
    host, port = dest.host, dest.port
    canonical = app.conf.canonical_url
    if (host, port) == (canonical.host, canonical.port):
        raise SameNode()
    routed = request.url.with_host(host or "localhost").with_port(port)
    headers = {_ROUTED_HEADER: "1"}
    async with app.http_client.get(routed, headers=headers) as response:
        worker = response.headers.get(WORKER_HEADER)
        return view.text(
            await response.text(),
            content_type=response.content_type,
            status=response.status,
            headers={WORKER_HEADER: worker} if worker else None,
        )


async def _from_redis(app: ChurnwatchApp, view: View, customer_id: str) -> Response:
    if app.redis_view is None:
        return view.json(
            {
                "error": "the customer's worker cannot be reached and no Redis view is configured",
                "status": 503,
            },
            status=503,
        )
    try:
        found = await app.redis_view.get(customer_id)
    except Exception as exc:
        return view.json(
            {"error": f"Redis unavailable: {type(exc).__name__}", "status": 503}, status=503
        )
    if found is None:
        return view.json(
            {"error": "unknown customer", "status": 404, "customer_id": customer_id}, status=404
        )
    return view.json({**found, "source": "redis"})
