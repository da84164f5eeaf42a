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
            body: dict[str, Any] = {
                "status": "ok" if app.rebalancing is False else "rebalancing",
                "app_id": app.conf.id,
                "partitions": partitions,
            }
            return self.json(body)
