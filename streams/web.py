"""HTTP views on the worker's web port: ``/metrics`` and ``/health``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View
from prometheus_client import generate_latest

from streams.partitions import assigned_partitions

if TYPE_CHECKING:
    from streams.app import ChurnwatchApp

# aiohttp refuses a charset inside content_type; Prometheus reads this as 0.0.4 text.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"


def install_views(app: ChurnwatchApp) -> None:
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
            body: dict[str, Any] = {
                "status": status,
                "app_id": app.conf.id,
                "partitions": partitions,
                "recovering": recovering,
            }
            return self.json(body)
