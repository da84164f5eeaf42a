"""Run the anchors (``bench/anchors/quix_aggregate.py`` on Quix Streams, and the Maven
project ``bench/anchors/kafka-streams`` on Kafka Streams) against a broker that already
holds the input, each as a subprocess that prints one JSON line, and return
``bench.pipeline.Run`` figures measured the same way as churnwatch's: events per second
from the first event processed to the last, start-up from launch to the first event.

The Kafka Streams anchor is built once with ``mvn -q -B package`` (``target/anchor.jar``
and its runtime jars in ``target/lib``; rebuilt only when the pom or a source is newer).
The first build fetches from Maven Central; later ones need no network.

Alone, on a local Apache Kafka loaded as ``bench/pipeline.py`` loads it:

    python -m bench.anchors.runner [--events N] [--customers 5000] [--days 365]
        [--only quix|kafka-streams] [--cdnow PATH] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.processes import stop_process_group

if TYPE_CHECKING:
    from bench.pipeline import Run

ROOT = Path(__file__).resolve().parents[2]
KAFKA_STREAMS = Path(__file__).resolve().parent / "kafka-streams"
JAR = KAFKA_STREAMS / "target" / "anchor.jar"
LIBS = KAFKA_STREAMS / "target" / "lib"
#: The anchor JVM's options (``ANCHOR_JAVA_OPTS`` overrides): a heap cap, as the broker has.
JAVA_OPTS = "-Xmx512m"
TIMEOUT = 900.0

#: Seconds the last Maven build of this process took (None: the jar was up to date).
build_seconds: float | None = None


class AnchorError(RuntimeError):
    """An anchor cannot be built or run; the message says why and what to do."""


def _input_topics() -> list[str]:
    from streams.topics import INPUT_TOPICS

    return list(INPUT_TOPICS)


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise AnchorError(
            "the Kafka Streams anchor needs Java 17 or newer and no `java` is on PATH: "
            "install it (make tools installs default-jre-headless) or set JAVA_HOME"
        )
    return found


def _stale() -> bool:
    if not JAR.is_file() or not LIBS.is_dir() or not any(LIBS.glob("kafka-streams-*.jar")):
        return True
    built = JAR.stat().st_mtime
    sources = [KAFKA_STREAMS / "pom.xml", *(KAFKA_STREAMS / "src").rglob("*")]
    return any(path.is_file() and path.stat().st_mtime > built for path in sources)


def build_kafka_streams(force: bool = False) -> float | None:
    """Build the Kafka Streams anchor if it is missing or older than its sources; the
    seconds the build took, or None when there was nothing to do."""
    global build_seconds
    if not force and not _stale():
        return None
    mvn = shutil.which("mvn")
    if mvn is None:
        raise AnchorError(
            "the Kafka Streams anchor is built with Maven and no `mvn` is on PATH: install "
            f"it (apt-get install maven), or build {KAFKA_STREAMS} elsewhere with "
            "`mvn -q -B package` and copy its target/ here"
        )
    _java()
    print(
        f"building the Kafka Streams anchor: mvn -q -B package in {KAFKA_STREAMS}", file=sys.stderr
    )
    started = time.monotonic()
    done = subprocess.run(
        [mvn, "-q", "-B", "package"], cwd=KAFKA_STREAMS, capture_output=True, text=True
    )
    if done.returncode != 0 or _stale():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise AnchorError(
            f"`mvn -q -B package` failed in {KAFKA_STREAMS} (exit {done.returncode}; the "
            f"first build fetches from Maven Central):\n{tail}"
        )
    build_seconds = time.monotonic() - started
    print(f"  built in {build_seconds:.1f}s", file=sys.stderr)
    return build_seconds


def _check_quix() -> None:
    if importlib.util.find_spec("quixstreams") is None:
        raise AnchorError(
            "the Quix Streams anchor needs quixstreams, not installed in this environment: "
            f"{sys.executable} -m pip install -e '.[bench]' (or 'quixstreams>=3,<4')"
        )


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def launch(
    name: str, command: Sequence[str], log: Path, timeout: float = TIMEOUT
) -> dict[str, Any]:
    """Run an anchor (``--launched-at`` appended) and return the JSON line it prints;
    its stderr goes to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as errors:
        launched = time.time()
        process = subprocess.Popen(
            [*command, "--launched-at", f"{launched:.6f}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,
        )
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process_group(process, 30)
            raise AnchorError(
                f"the {name} anchor did not finish in {timeout:.0f}s; {log}:\n{_log_tail(log)}"
            ) from None
        except BaseException:
            stop_process_group(process, 30)
            raise
    if process.returncode != 0:
        raise AnchorError(
            f"the {name} anchor exited with {process.returncode}; {log}:\n{_log_tail(log)}"
        )
    for line in reversed(out.decode(errors="replace").splitlines()):
        with contextlib.suppress(ValueError):
            figures = json.loads(line)
            if isinstance(figures, dict) and "events" in figures:
                return figures
    raise AnchorError(f"the {name} anchor printed no figures; {log}:\n{_log_tail(log)}")


def _run(name: str, figures: dict[str, Any]) -> Run:
    # Lazily, as bench.pipeline imports this module; and under `python -m bench.pipeline`
    # its Run is __main__'s (importing bench.pipeline would load the module a second time).
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) == "bench.pipeline":
        Run = main.Run  # type: ignore[union-attr]
    else:
        from bench.pipeline import Run
    return Run(
        name,
        int(figures["events"]),
        float(figures["seconds"]),
        float(figures["startup"]),
        rss=float(figures.get("rss", 0)),
        customers=int(figures.get("customers", 0)),
    )


def quix_figures(bootstrap: str, total: int, workdir: Path, timeout: float = TIMEOUT) -> dict:
    _check_quix()
    state = Path(tempfile.mkdtemp(prefix="quix-", dir=_mkdir(workdir)))
    command = [
        sys.executable, "-m", "bench.anchors.quix_aggregate", "--bootstrap", bootstrap,
        "--events", str(total), "--state-dir", str(state), "--topics", ",".join(_input_topics()),
    ]  # fmt: skip
    return launch("Quix Streams", command, workdir / "quix-anchor.log", timeout)


def kafka_streams_figures(
    bootstrap: str, total: int, workdir: Path, timeout: float = TIMEOUT
) -> dict:
    build_kafka_streams()
    state = Path(tempfile.mkdtemp(prefix="kafka-streams-", dir=_mkdir(workdir)))
    java_opts = os.environ.get("ANCHOR_JAVA_OPTS", JAVA_OPTS).split()
    command = [
        _java(), *java_opts, "-cp", f"{JAR}{os.pathsep}{LIBS}/*", "churnwatch.anchor.Aggregate",
        "--bootstrap", bootstrap, "--events", str(total), "--state-dir", str(state),
        "--topics", ",".join(_input_topics()),
    ]  # fmt: skip
    return launch("Kafka Streams", command, workdir / "kafka-streams-anchor.log", timeout)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def quix_run(bootstrap: str, total: int, workdir: Path, label: str = "") -> Run:
    """The Quix Streams anchor over the ``total`` events already on the broker."""
    return _run(f"Quix Streams: naive aggregate{label}", quix_figures(bootstrap, total, workdir))


def kafka_streams_run(bootstrap: str, total: int, workdir: Path, label: str = "") -> Run:
    """The Kafka Streams anchor over the ``total`` events already on the broker."""
    figures = kafka_streams_figures(bootstrap, total, workdir)
    return _run(f"Kafka Streams: naive aggregate{label}", figures)


def anchor_runs(
    bootstrap: str, total: int, workdir: Path, label: str = "", strict: bool = False
) -> list[Run]:
    """Both anchors, Quix Streams then Kafka Streams. Unless ``strict``, an anchor that
    cannot be built or run (no quixstreams, Java or Maven; a failed run) is left out with
    its reason on stderr, so that the rest of the bench still reports."""
    runs = []
    for run in (quix_run, kafka_streams_run):
        try:
            runs.append(run(bootstrap, total, workdir, label))
        except AnchorError as error:
            if strict:
                raise
            print(f"  anchor skipped: {error}", file=sys.stderr)
    return runs


def main() -> None:
    from bench.pipeline import END, loaded_broker
    from retention.timeutil import from_micros, parse_time
    from streams.generator import write_history
    from streams.inputs import read_events

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--customers", type=int, help="of the generated history (default 5000, as the bench)"
    )
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument(
        "--events",
        type=int,
        default=0,
        help="publish only the first N (a history of N/15 customers unless --customers)",
    )
    parser.add_argument("--only", choices=("quix", "kafka-streams"))
    parser.add_argument("--cdnow", type=Path, help="CDNOW_master.txt instead of a history")
    parser.add_argument("--workdir", type=Path, help="keep logs and state here")
    args = parser.parse_args()
    if args.only != "kafka-streams":
        _check_quix()
    if args.only != "quix":
        build_kafka_streams()
    end = parse_time(END)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="churnwatch-anchors-"))
        )
        if args.cdnow:
            records = sorted(read_events(args.cdnow, "cdnow"), key=lambda r: r.occurred_at or 0)
        else:
            history = _mkdir(workdir) / "history.jsonl"
            customers = args.customers or (max(10, args.events // 15) if args.events else 5000)
            write_history(history, customers, args.days, 1, from_micros(end))
            records = sorted(
                (r for r in read_events(history, "jsonl") if r.occurred_at and r.occurred_at < end),
                key=lambda r: r.occurred_at or 0,
            )
        if args.events:
            records = records[: args.events]
        print(f"input: {len(records):,} events", file=sys.stderr)
        results: list[tuple[Run, float]] = []
        with loaded_broker(workdir, records, "kafka") as (broker, total):
            anchors = {
                "quix": (quix_figures, "Quix Streams"),
                "kafka-streams": (kafka_streams_figures, "Kafka Streams"),
            }
            for key, (figures_of, name) in anchors.items():
                if args.only in (None, key):
                    figures = figures_of(broker.bootstrap, total, workdir)
                    results.append((_run(f"{name}: naive aggregate", figures), figures["close"]))
    print(
        f"\n{'run':<40}{'events/s':>12}{'start-up s':>12}{'close s':>9}"
        f"{'customers':>11}{'RSS MB':>8}"
    )
    for run, close in results:
        print(
            f"{run.name:<40}{run.rate:>12,.0f}{run.startup or 0:>12.1f}{close:>9.1f}"
            f"{run.customers:>11,}{run.rss / 2**20:>8.0f}"
        )
    if build_seconds is not None:
        print(f"Maven build of the Kafka Streams anchor: {build_seconds:.1f}s")


if __name__ == "__main__":
    main()
