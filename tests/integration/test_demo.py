"""`churnwatch demo` runs end to end, serves its API while running, and stops by itself."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.redis_view import RedisView
from streams.workers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.tansu_smoke]


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return msgspec.json.decode(response.read())


def redis_view(url: str, customer_id: str) -> Any:
    async def read() -> Any:
        view = RedisView(url)
        try:
            return await view.get(customer_id)
        finally:
            await view.close()

    return asyncio.run(read())


def test_demo_runs_serves_and_reports() -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "streams.cli", "demo", "--duration", "30",
        "--customers", "300", "--days", "60", "--rate", "1000", "--web-port", str(port),
    ]  # fmt: skip
    demo = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines: list[str] = []
    caught_up = threading.Event()

    def read() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            if "worker caught up" in line:
                caught_up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert caught_up.wait(90), "".join(lines)[-3000:]
        output = "".join(lines)
        base = f"http://127.0.0.1:{port}"
        redis_url = re.search(r"redis\s+(redis://\S+)", output)
        assert redis_url, output
        time.sleep(2)  # the Redis sink writes within a fraction of a second
        queue = get(f"{base}/at-risk?limit=100")
        values = [c["value_at_risk"] for c in queue["customers"]]
        assert values and values == sorted(values, reverse=True)
        for customer in queue["customers"][:5]:
            for _ in range(5):  # the live clock may move a view between two reads
                table = get(f"{base}/customers/{customer['customer_id']}")
                assert table.pop("source") == "table"
                if table == redis_view(redis_url.group(1), customer["customer_id"]):
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"table and Redis disagree on {customer['customer_id']}")
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            families = {f.name for f in text_string_to_metric_families(response.read().decode())}
        assert {"churnwatch_events_consumed", "churnwatch_customers_by_tier"} <= families
        demo.wait(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
    reader.join(5)
    output = "".join(lines)
    assert demo.returncode == 0, output[-3000:]
    counts = [int(n.replace(",", "")) for n in re.findall(r"^events ([\d,]+) ", output, re.M)]
    assert counts and max(counts) > 1000, output[-3000:]
    assert "history streamed" in output
    assert "demo stopped" in output
