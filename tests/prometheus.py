"""Prometheus for tests: a real server started on a free port, queries, and what the
rule files say (their rules, the vector selectors of their PromQL, the runbook
anchors of docs/operations.md that their alerts point to)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from retention.risk_config import DEFAULTS_PATH
from streams.processes import stop_process_group
from streams.workers import free_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "prometheus"
RULES = DEPLOY / "rules.yml"
ALERTS = DEPLOY / "alerts.yml"
ALERTS_TEST = DEPLOY / "tests" / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"


#: Acceptable churn for two of the generator's segments (streams/generator.py):
#: the segment alert and the Segments dashboard read ``churnwatch_segment_churn_target``.
CHURN_TARGETS = {"enterprise": 0.02, "smb": 0.05}


def risk_with_targets(workdir: Path) -> str:
    """The calibrated risk defaults with ``CHURN_TARGETS``, written into ``workdir``:
    the path, for ``Settings.risk``."""
    risk = json.loads(DEFAULTS_PATH.read_text())
    risk["segment_churn_targets"] = CHURN_TARGETS
    path = workdir / "risk.json"
    path.write_text(json.dumps(risk))
    return str(path)


def prometheus_query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        result = json.loads(exc.read())
    return result


def prometheus_get(base: str, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}{path}", timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def start_prometheus(
    workdir: Path, target: str, rule_files: Sequence[Path] = (RULES,)
) -> tuple[subprocess.Popen[bytes], str]:
    """Debian's prometheus scraping ``target`` every second, ``rule_files`` loaded."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus not found: `make tools` installs it (Debian package prometheus)"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": "churnwatch", "static_configs": [{"targets": [target]}]}],
    }
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    # Three times in full-suite runs (never alone, never in 60 bare starts in a loop)
    # Prometheus was gone before it wrote a line of log or its TSDB directory. That is
    # before any of our configuration is read, so a start that dies that way is tried
    # again on a fresh port, and said in a warning; any other failure fails the test.
    failures: list[str] = []
    for attempt in range(1, 4):
        log_path = workdir / f"prometheus-{attempt}.log"
        port = free_port()
        with log_path.open("wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={path}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while process.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        if failures:
                            warnings.warn("; ".join(failures), stacklevel=2)
                        return process, base
            except OSError:
                pass
            if time.monotonic() > deadline:
                stop_process_group(process, timeout=10)
                raise TimeoutError(f"prometheus not ready on {base} after 30 s")
            time.sleep(0.2)
        text = log_path.read_text(errors="replace")
        failure = f"prometheus start {attempt} exited with {process.returncode}: {text[-2000:]!r}"
        if text.strip():
            raise RuntimeError(failure)
        failures.append(failure)
    raise RuntimeError("; ".join(failures))


def rules(path: Path) -> list[dict[str, Any]]:
    """Every rule of a rule file, recording and alerting, in file order."""
    document = yaml.safe_load(path.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def alerts(path: Path = ALERTS) -> list[dict[str, Any]]:
    return [rule for rule in rules(path) if "alert" in rule]


#: Strings, label matchers and ranges are taken whole, so nothing inside them is read
#: as a name; durations and numbers before names, so `1h` is not a metric `h`.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]|\d[\w.]*|[a-zA-Z_:][a-zA-Z0-9_:]*|\S')
_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool"})
#: Followed by a parenthesised list of label names, not of expressions.
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


def vector_selectors(expr: str) -> list[str]:
    """The vector selectors of a PromQL expression (``name`` or ``name{matchers}``), in
    order: the tokens that are neither functions, keywords, numbers nor label lists."""
    tokens = _TOKEN.findall(expr)
    found = []
    position = 0
    while position < len(tokens):
        token = tokens[position]
        following = tokens[position + 1] if position + 1 < len(tokens) else ""
        position += 1
        if token in _LABEL_LISTS:
            if following == "(":
                while position < len(tokens) and tokens[position] != ")":
                    position += 1
            continue
        if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", token) or token in _KEYWORDS:
            continue
        if following == "(" or following in ("by", "without"):  # a function, aggregation
            continue
        if following.startswith("{"):
            found.append(token + following)
            position += 1
        else:
            found.append(token)
    return found


def selector_name(selector: str) -> str:
    return selector.split("{", 1)[0]


def github_anchors(markdown: str) -> Iterator[str]:
    """The anchors GitHub gives the headings of a Markdown text: lower case, spaces as
    hyphens, punctuation other than hyphens and underscores dropped, a repeated one
    suffixed -1, -2 and so on. Headings inside fenced code are not headings."""
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        yield slug if count == 0 else f"{slug}-{count}"
