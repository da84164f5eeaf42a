"""The ``churnwatch`` command line (the entry point; nothing imports it)."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from retention.summary import customer_summary
from retention.timeutil import from_micros, parse_time
from streams import topics
from streams.inputs import Format, read_events
from streams.replay import Order
from streams.settings import Settings, SettingsError

app = typer.Typer(
    help="churnwatch: real-time customer retention and churn risk on Kafka.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
console = Console(stderr=True, soft_wrap=True)

BrokerOpt = Annotated[
    str | None,
    typer.Option("--broker", envvar="CHURNWATCH_BROKER", help="Kafka URL, kafka://host:port"),
]


def _settings(**overrides: object) -> Settings:
    try:
        return Settings.from_env(None, **overrides)
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None


def _time(text: str, option: str) -> int:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@app.command()
def worker(
    broker: BrokerOpt = None,
    web_port: Annotated[int | None, typer.Option(help="HTTP port for /metrics, /health")] = None,
    partitions: Annotated[int | None, typer.Option(help="Partitions of every topic")] = None,
) -> None:
    """Run a worker against a Kafka cluster (settings from CHURNWATCH_* variables)."""
    from streams.worker import run_worker

    settings = _settings(broker=broker, web_port=web_port, partitions=partitions)
    run_worker(settings)


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="JSON Lines file to write")],
    customers: Annotated[int, typer.Option(help="Number of customers")] = 1000,
    days: Annotated[int, typer.Option(help="Days of history")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same file)")] = 1,
    end: Annotated[
        str | None, typer.Option(help="End of the history, RFC 3339 (default: now, UTC)")
    ] = None,
    clean: Annotated[
        bool, typer.Option("--clean", help="No duplicates, disorder or malformed records")
    ] = False,
) -> None:
    """Write a realistic synthetic event history (deterministic per seed)."""
    from streams.generator import write_history

    end_time = from_micros(_time(end, "--end")) if end else datetime.now(UTC).replace(microsecond=0)
    with _progress() as bar:
        task = bar.add_task("generating", total=None)
        stats = write_history(
            out,
            customers,
            days,
            seed,
            end_time,
            defects=not clean,
            progress=lambda n: bar.update(task, completed=n),
        )
    console.print(f"wrote {out}: {stats}")


@app.command()
def produce(
    file: Annotated[Path, typer.Argument(help="Events file", exists=True, dir_okay=False)],
    broker: BrokerOpt = None,
    rate: Annotated[float | None, typer.Option(help="Events per second (default: max)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or cdnow")] = "jsonl",
) -> None:
    """Publish a file of events to their topics, keyed by customer_id.

    Missing topics are created with CHURNWATCH_PARTITIONS partitions (a broker's
    auto-created defaults could break the one-partition-count rule).
    """
    from streams.kafka_admin import create_topics
    from streams.produce import publish

    settings = _settings(broker=broker)
    asyncio.run(
        create_topics(settings.bootstrap, dict.fromkeys(topics.ALL_TOPICS, settings.partitions))
    )
    with _progress() as bar:
        task = bar.add_task("publishing", total=None)
        stats = asyncio.run(
            publish(
                settings.bootstrap,
                read_events(file, _format(fmt)),
                rate=rate,
                progress=lambda n: bar.update(task, completed=n),
            )
        )
    console.print(
        f"published {stats.published} records in {stats.seconds:.1f}s ({stats.rate:,.0f}/s); "
        f"unroutable (sent to be dead-lettered): {stats.unroutable}; "
        + ", ".join(f"{t}: {n}" for t, n in sorted(stats.by_topic.items()))
    )


def _format(fmt: str) -> Format:
    if fmt not in ("jsonl", "cdnow"):
        raise typer.BadParameter("expected jsonl or cdnow", param_hint="--format")
    return "cdnow" if fmt == "cdnow" else "jsonl"


def _order(order: str) -> Order:
    if order not in ("time", "file"):
        raise typer.BadParameter("expected time or file", param_hint="--order")
    return "file" if order == "file" else "time"


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="Events file", exists=True, dir_okay=False)],
    as_of: Annotated[str, typer.Option("--as-of", help="Cut-off time, RFC 3339")],
    customers_out: Annotated[
        Path | None, typer.Option("--customers", help="Write one JSON line per customer here")
    ] = None,
    report_out: Annotated[
        Path | None, typer.Option("--report", help="Write period figures and cohorts (JSON)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or cdnow")] = "jsonl",
    order: Annotated[
        str, typer.Option(help="Publish in event-time order ('time') or as in the file ('file')")
    ] = "time",
    partitions: Annotated[int, typer.Option(help="Partitions per topic")] = 4,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 1,
    broker: Annotated[
        str | None,
        typer.Option(help="Use this (empty, dedicated) Kafka instead of the embedded broker"),
    ] = None,
) -> None:
    """Replay a history through the broker and workers; write per-customer results."""
    from streams.replay import replay as run_replay

    cut = _time(as_of, "--as-of")
    base = _settings()
    with _progress() as bar:
        published = bar.add_task("published", total=None)
        lag = bar.add_task("lag", total=None, visible=False)

        def progress(kind: str, n: int) -> None:
            if kind == "published":
                bar.update(published, completed=n)
            else:
                bar.update(lag, visible=True, description="remaining", completed=n)

        result = run_replay(
            file,
            cut,
            fmt=_format(fmt),
            order=_order(order),
            partitions=partitions,
            workers=workers,
            broker_url=broker,
            base=base,
            stage=lambda text: bar.console.print(f"[dim]» {text}[/]"),
            progress=progress,
        )
    window = result.settings.window
    if customers_out is not None:
        customers_out.parent.mkdir(parents=True, exist_ok=True)
        with customers_out.open("w") as handle:
            for customer_id in sorted(result.customers):
                line = customer_summary(result.customers[customer_id], cut, window)
                handle.write(json.dumps(line, separators=(",", ":")) + "\n")
    events = result.events
    if report_out is not None:
        from retention.calendar import Calendar
        from streams.report import build_report

        report = build_report(
            result.partitions,
            cut,
            len(result.customers),
            events,
            Calendar(result.settings.period),
        )
        report_out.parent.mkdir(parents=True, exist_ok=True)
        report_out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"wrote {len(report['periods'])} periods to {report_out}")
    table = Table(title=f"replay as of {from_micros(cut).isoformat()}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = {
        "customers": f"{len(result.customers):,}",
        **{f"events {k}": f"{v:,}" for k, v in events.items()},
        "published": f"{result.published.published:,} in {result.published.seconds:.1f}s",
        "skipped (at or after --as-of)": f"{result.published.skipped_as_of:,}",
        "processing": f"{result.processing_seconds:.1f}s",
        "throughput": f"{result.rate:,.0f} events/s",
    }
    for key, value in rows.items():
        table.add_row(key, value)
    Console().print(table)
    if customers_out is not None:
        console.print(f"wrote {len(result.customers):,} customers to {customers_out}")


@app.command()
def demo(
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: run until Ctrl-C)")
    ] = None,
    customers: Annotated[int, typer.Option(help="Customers in the generated history")] = 2000,
    days: Annotated[int, typer.Option(help="Days of history to stream")] = 120,
    rate: Annotated[float, typer.Option(help="Events per second to stream")] = 800.0,
    seed: Annotated[int, typer.Option(help="Random seed")] = 7,
    web_port: Annotated[int, typer.Option(help="Worker HTTP port")] = 6066,
) -> None:
    """Run everything locally: embedded broker, a worker, and a live event stream."""
    from streams.demo import DemoPlan, run_demo

    plan = DemoPlan(duration=duration, customers=customers, days=days, rate=rate, seed=seed)
    run_demo(_settings(web_port=web_port), plan, console)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
