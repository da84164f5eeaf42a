"""The ``churnwatch`` command line (the entry point; nothing imports it)."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from retention.summary import customer_summary
from retention.timeutil import from_micros, parse_time
from streams import topics
from streams.inputs import Format, read_events
from streams.replay import Order
from streams.settings import Settings, SettingsError

if TYPE_CHECKING:
    from retention.model import Model
    from retention.risk import RiskConfig
    from streams.security import ClientSecurity

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

EmbeddedOpt = Annotated[
    str,
    typer.Option(
        "--embedded",
        envvar="CHURNWATCH_EMBEDDED",
        help="Broker to start: tansu (in memory, no Java) or kafka (Apache Kafka; make kafka)",
    ),
]


RiskOpt = Annotated[
    Path | None, typer.Option("--risk", help="Risk configuration (default: calibrated)")
]
FormatOpt = Annotated[str, typer.Option("--format", help="auto, jsonl or cdnow")]


def _settings(**overrides: object) -> Settings:
    try:
        return Settings.from_env(None, **overrides)
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None


def _kafka_security(settings: Settings, broker: str | None = None) -> ClientSecurity:
    """The TLS and SASL of ``settings`` (on ``broker`` if given) for the clients, after
    one bounded connect and login: a refused password or an untrusted certificate
    ends the command within seconds naming the cause, where aiokafka would only log
    it and raise a bare "Unable to bootstrap" (streams/security.py)."""
    from streams.security import KafkaAccessError, check_access, client_security

    try:
        target = settings if broker is None else settings.replace(broker=broker)
        security = client_security(target)
        if security.protocol != "PLAINTEXT":
            asyncio.run(check_access(target.bootstrap, security))
    except SettingsError as exc:
        console.print(f"[red]configuration error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except KafkaAccessError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    return security


def _paths(**paths: Path | None) -> dict[str, str | None]:
    """Path options as settings overrides (None: keep the environment's value)."""
    return {name: None if path is None else str(path) for name, path in paths.items()}


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
    from streams.preflight import session_bounds, session_timeout_problem
    from streams.worker import run_worker

    settings = _settings(broker=broker, web_port=web_port, partitions=partitions)
    security = _kafka_security(settings)
    bounds = asyncio.run(session_bounds(settings.bootstrap, security))
    problem = session_timeout_problem(settings, bounds)
    if problem is not None:
        console.print(f"[red]configuration error:[/] {escape(problem)}")
        raise typer.Exit(2)
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
    security = _kafka_security(settings)
    asyncio.run(
        create_topics(
            settings.bootstrap,
            dict.fromkeys(topics.ALL_TOPICS, settings.partitions),
            security=security,
        )
    )
    with _progress() as bar:
        task = bar.add_task("publishing", total=None)
        stats = asyncio.run(
            publish(
                settings.bootstrap,
                read_events(file, _format(fmt)),
                rate=rate,
                progress=lambda n: bar.update(task, completed=n),
                security=security,
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
    embedded: EmbeddedOpt = "tansu",
    model: Annotated[
        Path | None,
        typer.Option("--model", help="BG/NBD parameters from `churnwatch fit` for the workers"),
    ] = None,
    risk: RiskOpt = None,
    alerts_out: Annotated[
        Path | None, typer.Option("--alerts", help="Write every alert emitted (JSON Lines)")
    ] = None,
) -> None:
    """Replay a history through the broker and workers; write per-customer results."""
    from retention.alerts import Lifecycle
    from streams.replay import replay as run_replay
    from streams.risk_view import risk_fields

    cut = _time(as_of, "--as-of")
    base = _settings(**_paths(model=model, risk=risk))
    if broker is not None:  # embedded brokers are plaintext: replay() drops the security
        _kafka_security(base, broker)
    lifecycle = Lifecycle(*_risk_setup(base), base.window)
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
            embedded=_embedded(embedded),
            base=base,
            stage=lambda text: bar.console.print(f"[dim]» {text}[/]"),
            progress=progress,
        )
    window = result.settings.window
    if customers_out is not None:
        customers_out.parent.mkdir(parents=True, exist_ok=True)
        with customers_out.open("w") as handle:
            for customer_id in sorted(result.customers):
                state = result.customers[customer_id]
                line = customer_summary(state, cut, window)
                line.update(risk_fields(state, cut, lifecycle))
                handle.write(json.dumps(line, separators=(",", ":")) + "\n")
    if alerts_out is not None:
        alerts_out.parent.mkdir(parents=True, exist_ok=True)
        with alerts_out.open("w") as handle:
            for alert in result.alerts:
                handle.write(json.dumps(alert, separators=(",", ":")) + "\n")
        console.print(f"wrote {len(result.alerts):,} alerts to {alerts_out}")
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
        "alerts": f"{len(result.alerts):,}",
    }
    for key, value in rows.items():
        table.add_row(key, value)
    Console().print(table)
    if customers_out is not None:
        console.print(f"wrote {len(result.customers):,} customers to {customers_out}")


@app.command()
def fit(
    file: Annotated[Path, typer.Argument(help="Events file", exists=True, dir_okay=False)],
    as_of: Annotated[str, typer.Option("--as-of", help="End of the history to fit, RFC 3339")],
    out: Annotated[Path, typer.Option("--out", help="Write the model parameters (JSON) here")],
    fmt: FormatOpt = "auto",
) -> None:
    """Fit BG/NBD and Gamma-Gamma to the purchases before --as-of; write the parameters."""
    import time

    from retention.fit import FitError
    from retention.model import ModelError, dump_model
    from streams.fitting import detect_format, fit_file

    cut = _time(as_of, "--as-of")
    file_format = detect_format(file) if fmt == "auto" else _format(fmt)
    started = time.perf_counter()
    try:
        with _progress() as bar:
            task = bar.add_task("reading", total=None)
            model = fit_file(
                file,
                file_format,
                cut,
                settings=_settings(),
                progress=lambda n: bar.update(task, completed=n),
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(dump_model(model))
    except (FitError, ModelError, ValueError, OSError) as exc:
        console.print(f"[red]fit failed:[/] {exc}")
        raise typer.Exit(2) from None
    seconds = time.perf_counter() - started
    table = Table(title=f"model as of {model.as_of} ({file_format})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    bg, gg = model.bgnbd, model.gamma_gamma
    rows = {
        "BG/NBD r, alpha, a, b": f"{bg.r:.6g}, {bg.alpha:.6g}, {bg.a:.6g}, {bg.b:.6g}",
        "Gamma-Gamma p, q, v": (
            f"{gg.p:.6g}, {gg.q:.6g}, {gg.v:.6g}" if gg else f"none ({model.gamma_gamma_error})"
        ),
        "customers": f"{model.customers:,}",
        "repeat customers": f"{model.repeat_customers:,}",
        "events (rejected)": f"{model.events:,} ({model.rejected_events:,})",
        "log-likelihood": "-" if model.log_likelihood is None else f"{model.log_likelihood:,.2f}",
        "seconds": f"{seconds:.1f}",
    }
    for key, value in rows.items():
        table.add_row(key, value)
    Console().print(table)
    console.print(f"wrote {out}")


def _risk_setup(settings: Settings) -> tuple[RiskConfig, Model | None]:
    """The risk configuration and model the workers will load, checked up front."""
    from retention.model import ModelError, load_model
    from retention.risk import RiskConfigError, load_risk_config

    try:
        model = load_model(settings.model) if settings.model else None
        config = load_risk_config(settings.risk or None)
    except (ModelError, RiskConfigError) as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    return config, model


@app.command()
def calibrate(
    file: Annotated[Path, typer.Argument(help="Events file", exists=True, dir_okay=False)],
    as_of: Annotated[str, typer.Option("--as-of", help="Cut-off: features before, outcome after")],
    out: Annotated[Path, typer.Option("--out", help="Write the risk configuration (JSON) here")],
    fit_features: Annotated[
        str,
        typer.Option(
            "--fit",
            help="Comma-separated weights to fit (intercept, recency, frequency, spend, "
            "expected, frequency_drop, spend_drop, experiences, detractor, low_csat); "
            "the others keep their --base values",
        ),
    ] = "intercept,recency,frequency,spend,expected",
    base_config: Annotated[
        Path | None, typer.Option("--base", help="Start from this configuration")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="BG/NBD parameters: also fit the with-model weights"),
    ] = None,
    fmt: FormatOpt = "auto",
) -> None:
    """Fit the risk score's weights: outcome = no purchase in horizon_days after --as-of."""
    from retention.calibrate import CalibrationError
    from retention.risk import RiskConfig, dump_risk_config
    from streams.calibration import calibrate_file
    from streams.fitting import detect_format

    cut = _time(as_of, "--as-of")
    settings = _settings()
    loaded_model = None
    if model is not None:
        from retention.model import ModelError, load_model

        try:
            loaded_model = load_model(model)
        except ModelError as exc:
            console.print(f"[red]configuration error:[/] {exc}")
            raise typer.Exit(2) from None
    base = RiskConfig()
    if base_config is not None:
        base = _risk_setup(settings.replace(risk=str(base_config)))[0]
    file_format = detect_format(file) if fmt == "auto" else _format(fmt)
    names = [n.strip() for n in fit_features.split(",") if n.strip()]
    try:
        with _progress() as bar:
            task = bar.add_task("reading", total=None)
            config = calibrate_file(
                file,
                file_format,
                cut,
                base,
                names,
                loaded_model,
                settings,
                progress=lambda n: bar.update(task, completed=n),
            )
    except (CalibrationError, ValueError, OSError) as exc:
        console.print(f"[red]calibration failed:[/] {exc}")
        raise typer.Exit(2) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(dump_risk_config(config))
    table = Table(title=f"risk weights fitted on {file.name} as of {from_micros(cut).isoformat()}")
    table.add_column("weight")
    table.add_column("plain", justify="right")
    table.add_column("with model", justify="right")
    for name in ("intercept", *type(config.plain).__struct_fields__[1:]):
        table.add_row(
            name, f"{getattr(config.plain, name):+.4f}", f"{getattr(config.with_model, name):+.4f}"
        )
    Console().print(table)
    for step in config.provenance.get("steps", [])[-2:]:
        console.print(
            f"{step['weights']}: {step['customers']:,} customers, "
            f"{step['positives']:,} without a purchase in {step['horizon_days']:g} days, "
            f"ROC AUC {step['roc_auc']:.4f} (in sample)"
        )
    console.print(f"wrote {out}")


@app.command()
def backtest(
    file: Annotated[Path, typer.Argument(help="Events file", exists=True, dir_okay=False)],
    calibration_end: Annotated[
        str, typer.Option("--calibration-end", help="Scores are taken at this time (RFC 3339)")
    ],
    holdout_end: Annotated[
        str, typer.Option("--holdout-end", help="Outcome: no purchase before this time")
    ],
    model: Annotated[
        Path | None,
        typer.Option("--model", help="BG/NBD parameters (default: fitted on the calibration)"),
    ] = None,
    risk: RiskOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the results (JSON)")] = None,
    fmt: FormatOpt = "auto",
    partitions: Annotated[int, typer.Option(help="Partitions per topic")] = 4,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 1,
    embedded: EmbeddedOpt = "tansu",
) -> None:
    """Replay the calibration period through the pipeline; score against the holdout."""
    import msgspec

    from streams.backtest import backtest as run_backtest
    from streams.fitting import detect_format

    start, end = _time(calibration_end, "--calibration-end"), _time(holdout_end, "--holdout-end")
    settings = _settings(**_paths(model=model, risk=risk))
    _risk_setup(settings)
    file_format = detect_format(file) if fmt == "auto" else _format(fmt)
    try:
        result = run_backtest(
            file,
            file_format,
            start,
            end,
            model_path=model,
            risk_path=risk,
            partitions=partitions,
            workers=workers,
            embedded=_embedded(embedded),
            base=settings,
            stage=lambda text: console.print(f"[dim]» {text}[/]"),
        )
    except ValueError as exc:
        console.print(f"[red]backtest failed:[/] {exc}")
        raise typer.Exit(2) from None
    data = msgspec.to_builtins(result)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
    _print_backtest(data)
    if out is not None:
        console.print(f"wrote {out}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _print_backtest(data: dict[str, Any]) -> None:
    title = (
        f"backtest: scores at {data['calibration_end']}, no purchase until "
        f"{data['holdout_end']} ({data['churners']:,} of {data['customers']:,} customers)"
    )
    table = Table(title=title)
    table.add_column("ranking")
    table.add_column("ROC AUC", justify="right")
    table.add_column("precision, top 10%", justify="right")
    risk, model = data["risk_score"], data["model"]
    label = "risk score" if model["fitted"] else "risk score (model-free)"
    table.add_row(label, _pct(risk["roc_auc"]), _pct(risk["precision_top_10pct"]))
    table.add_row("value at risk", "", _pct(risk["precision_top_10pct_by_value_at_risk"]))
    names = {
        "recency_days": "days since last purchase",
        "bgnbd_expected_purchases": "BG/NBD expected purchases",
    }
    for key, figures in data["baselines"].items():
        table.add_row(
            names.get(key, key), _pct(figures["roc_auc"]), _pct(figures["precision_top_10pct"])
        )
    Console().print(table)
    if not model["fitted"]:
        from streams.backtest import fallback_line

        console.print(f"[yellow]{escape(fallback_line(model['reason']))}[/]")
    tiers = Table(title="tiers")
    for column in ("tier", "customers", "precision", "recall", "precision >=", "recall >="):
        tiers.add_column(column, justify="right")
    for tier, figures in risk["tiers"].items():
        above = figures["at_or_above"]
        tiers.add_row(
            tier,
            f"{figures['customers']:,}",
            _pct(figures["precision"]),
            _pct(figures["recall"]),
            _pct(above["precision"]),
            _pct(above["recall"]),
        )
    Console().print(tiers)


@app.command("redis-rebuild")
def redis_rebuild(
    broker: BrokerOpt = None,
    redis_url: Annotated[
        str | None,
        typer.Option("--redis-url", envvar="CHURNWATCH_REDIS_URL", help="redis://host:port/db"),
    ] = None,
    app_id: Annotated[
        str | None, typer.Option("--app-id", help="The workers' app id (names the changelog)")
    ] = None,
    flush: Annotated[
        bool, typer.Option("--flush", help="Delete the view's keys first (a clean copy)")
    ] = False,
) -> None:
    """Write the Redis serving view again from the customers table's changelog."""
    import asyncio

    from streams.rebuild import rebuild

    settings = _settings(broker=broker, redis_url=redis_url, app_id=app_id)
    if not settings.redis_url:
        console.print("[red]no Redis:[/] pass --redis-url or set CHURNWATCH_REDIS_URL")
        raise typer.Exit(2)
    _kafka_security(settings)
    with _progress() as bar:
        task = bar.add_task("views", total=None)
        result = asyncio.run(
            rebuild(
                settings, flush, lambda done, total: bar.update(task, completed=done, total=total)
            )
        )
    console.print(
        f"{result.customers:,} customers: {result.written:,} views written, "
        f"{result.stale:,} already current"
        + (f", {result.deleted:,} keys deleted" if flush else "")
    )


@app.command()
def notify(
    config: Annotated[Path, typer.Option("--config", help="Notifier configuration, YAML or JSON")],
    broker: BrokerOpt = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only validate the configuration, then exit")
    ] = False,
) -> None:
    """Post alert transitions to webhooks (Slack, signed JSON), with a daily capacity.

    Its own consumer group on churnwatch.alerts; Kafka connection and security from
    the CHURNWATCH_* settings, as every command (README, "Notifying success teams").
    """
    from notifier.config import ConfigError, as_dict, load

    try:
        loaded = load(config)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if check:
        console.print_json(json.dumps(as_dict(loaded)))
        return
    from notifier.main import run_notifier

    settings = _settings(broker=broker)
    security = _kafka_security(settings)
    run_notifier(loaded, settings.bootstrap, security, settings.log_level, settings.replication)


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
    redis: Annotated[
        bool,
        typer.Option(
            "--redis/--no-redis",
            help="Serve the at-risk queue from an embedded Redis (or CHURNWATCH_REDIS_URL)",
        ),
    ] = True,
    embedded: EmbeddedOpt = "tansu",
) -> None:
    """Run everything locally: embedded broker and Redis, a worker, a live event stream."""
    from streams.demo import DemoPlan, run_demo
    from streams.security import without_security

    plan = DemoPlan(duration=duration, customers=customers, days=days, rate=rate, seed=seed)
    # The embedded broker is plaintext: CHURNWATCH_ security is for external clusters.
    settings = without_security(_settings(web_port=web_port))
    run_demo(settings, plan, console, redis=redis, embedded=_embedded(embedded))


def _embedded(kind: str) -> str:
    """The ``--embedded`` choice, checked; a missing Java or jar fails at start with
    what is missing (streams/kafka_local.py)."""
    from streams.broker import BrokerError
    from streams.embedded import check_kind

    try:
        checked = check_kind(kind)
        if checked == "kafka":
            from streams.kafka_local import check_installed

            check_installed()
    except BrokerError as exc:
        console.print(f"[red]--embedded {kind}:[/] {exc}")
        raise typer.Exit(2) from None
    return checked


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
