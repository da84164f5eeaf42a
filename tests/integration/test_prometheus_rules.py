"""The recording rules, checked and unit-tested by a real promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: `make tools` installs it (Debian package prometheus)"
    return path


def test_rules_are_valid() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(DEPLOY / "rules.yml")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_compute_ratios_across_partitions_once() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", str(DEPLOY / "tests" / "rules_test.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
