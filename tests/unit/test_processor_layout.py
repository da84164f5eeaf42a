"""The processor's layout holds: no Faust in the processor or the domain, the domain
importing none of the layers above it, every Faust internal in agents/delivery.py,
modules and functions of a readable size."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESSOR = sorted((ROOT / "processor").glob("*.py"))
RETENTION = sorted((ROOT / "retention").glob("*.py"))
SHELL = [ROOT / "agents" / "customers.py", ROOT / "agents" / "delivery.py"]
RESTORE = ROOT / "streams" / "restore.py"
KAFKA = ("faust", "aiokafka", "mode", "kafka", "confluent_kafka")
#: What the domain (retention/) never imports: the layers over it and their services.
ABOVE_DOMAIN = ("processor", "streams", "agents", "bench", "prometheus_client", "redis")
#: Faust's and aiokafka's internals the agent relies on (agents/delivery.py).
INTERNALS = ("_current_event", "_committed_offset", "_commit_offsets", "perform_seek")
#: Faust's recovery internals the batched restore relies on (streams/restore.py).
RECOVERY_INTERNALS = ("_build_offsets", "active_offsets", "active_highwaters", "tp_to_table")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", PROCESSOR + RETENTION, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_kafka_client_imported(path: Path) -> None:
    assert not _imports(path) & set(KAFKA)


@pytest.mark.parametrize("path", RETENTION, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_domain_imports_no_layer_above_it(path: Path) -> None:
    assert not _imports(path) & set(ABOVE_DOMAIN)


def test_the_processor_runs_without_faust() -> None:
    code = "import sys, processor.batch, processor.testing; print('faust' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_faust_internals_only_in_the_delivery_module() -> None:
    for path in [*PROCESSOR, *(ROOT / "agents").glob("*.py")]:
        if path.name == "delivery.py":
            continue
        text = path.read_text()
        assert not [name for name in INTERNALS if name in text], path


def test_faust_recovery_internals_only_in_the_restore_module() -> None:
    for path in [*PROCESSOR, *(ROOT / "agents").glob("*.py"), *(ROOT / "streams").glob("*.py")]:
        if path == RESTORE:
            continue
        text = path.read_text()
        assert not [name for name in RECOVERY_INTERNALS if name in text], path
    assert "faust-streaming 0.15.3" in RESTORE.read_text()


@pytest.mark.parametrize(
    "path", [*PROCESSOR, *SHELL, RESTORE], ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_modules_and_functions_stay_small(path: Path) -> None:
    text = path.read_text()
    assert text.count("\n") <= 400
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            assert node.end_lineno - node.lineno < 60, f"{path.name}: {node.name}"
