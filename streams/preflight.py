"""What a worker checks about its cluster before it joins the group.

A broker refuses a group member whose session timeout is outside its
``group.min.session.timeout.ms`` .. ``group.max.session.timeout.ms`` (Apache Kafka:
6 s .. 30 min by default) with InvalidSessionTimeout, and aiokafka only logs "Attempt to
join group failed due to fatal error": the worker then runs without partitions for
ever. Reading the broker's bounds first turns that into one clear error at start.

Best effort: a broker that does not answer DescribeConfigs for itself (Tansu, or a
managed cluster that denies it) is not checked, and the worker starts as before.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.security import ClientSecurity, client_kwargs
from streams.settings import PREFIX, Settings

_BOUNDS = ("group.min.session.timeout.ms", "group.max.session.timeout.ms")


async def session_bounds(
    bootstrap: str, security: ClientSecurity | None = None, timeout: float = 10.0
) -> tuple[int, int] | None:
    """(min, max) session timeout in ms of one broker of the cluster, None if unknown."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000),
        **client_kwargs(security),
    )  # fmt: skip
    try:
        await asyncio.wait_for(admin.start(), timeout)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
        node = cluster["brokers"][0]["node_id"]
        resource = ConfigResource(ConfigResourceType.BROKER, str(node))
        [response] = await asyncio.wait_for(admin.describe_configs([resource]), timeout)
        [(error, _, _, _, entries)] = response.resources
        if error:
            return None
        values = {entry[0]: entry[1] for entry in entries}
        low, high = (values.get(name) for name in _BOUNDS)
        return (int(low), int(high)) if low and high else None
    except Exception:  # not answered: nothing to check against
        return None
    finally:
        await admin.close()


def session_timeout_problem(settings: Settings, bounds: tuple[int, int] | None) -> str | None:
    """Why the broker will refuse this worker's session timeout, or None."""
    if bounds is None:
        return None
    low, high = bounds
    ms = round(settings.session_timeout * 1000)
    if low <= ms <= high:
        return None
    return (
        f"{PREFIX}SESSION_TIMEOUT={settings.session_timeout:g} (s) is outside the broker's "
        f"group.min.session.timeout.ms .. group.max.session.timeout.ms ({low} .. {high} ms): "
        "the broker would refuse the worker's group membership"
    )
