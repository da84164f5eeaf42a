"""`churnwatch demo` runs end to end and stops by itself."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from streams.workers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_and_reports() -> None:
    command = [
        sys.executable, "-m", "streams.cli", "demo", "--duration", "25",
        "--customers", "300", "--days", "60", "--rate", "600", "--web-port", str(free_port()),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert re.search(r"metrics\s+http://127\.0\.0\.1:\d+/metrics", output)
    counts = [int(n.replace(",", "")) for n in re.findall(r"^events ([\d,]+) ", output, re.M)]
    assert counts and max(counts) > 1000, output[-3000:]
    assert "history streamed" in output
    assert "demo stopped" in output
