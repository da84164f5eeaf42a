"""``/segments`` on the worker's HTTP API (the aiohttp application without a broker,
as tests/agent/test_web_limits.py serves it): JSON, no parameters taken."""

from __future__ import annotations

import asyncio

from tests.agent.test_web_limits import api


def test_segments_answers_json_and_refuses_parameters() -> None:
    async def main() -> None:
        async with api() as client:
            response = await client.get("/segments")
            assert response.status == 200
            body = await response.json()
            assert body["period"] == "month" and body["segments"] == body["plans"] == {}
            assert body["partitions"] == [] and body["partitions_without_segments"] == []
            refused = await client.get("/segments?segment=smb")
            assert refused.status == 400
            assert (await refused.json())["status"] == 400

    asyncio.run(main())
