"""Fitting the customer model to an event file, offline.

The per-customer summaries are made exactly as the worker makes customer state:
the same reader (``streams.inputs``), the same validation (``EventDecoder``), the
same fold (``retention.apply``, so duplicates are dropped by event id and
purchases count once per UTC day) and the same x, t_x and T
(``retention.summary``). A model fitted here therefore describes the numbers the
stream will feed it, not a reimplementation's idea of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from retention.fit import CustomerRow, fit_model
from retention.model import Model
from retention.summary import customer_summary
from retention.timeutil import Micros, iso
from streams.history import fold_file
from streams.inputs import Format
from streams.settings import Settings

Progress = Callable[[int], None]
_PROGRESS_EVERY = 10_000


@dataclass
class Summaries:
    """Per-customer rows and what happened to the file's events on the way."""

    rows: list[CustomerRow] = field(default_factory=list)
    events: int = 0  # valid events before as_of, folded into state
    rejected: int = 0  # failed validation, as the worker would dead-letter them
    duplicates: int = 0
    after_as_of: int = 0  # valid but at or after as_of: not observed yet


def detect_format(path: Path) -> Format:
    """``jsonl`` if the first non-blank line is a JSON object, else ``cdnow``."""
    with path.open("rb") as handle:
        for line in handle:
            text = line.strip()
            if text:
                return "jsonl" if text.startswith(b"{") else "cdnow"
    return "jsonl"


def read_summaries(
    path: Path,
    fmt: Format,
    as_of: Micros,
    *,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> Summaries:
    settings = settings or Settings()
    history = fold_file(path, fmt, as_of, settings, progress)
    states = history.states
    out = Summaries(
        events=history.events,
        rejected=history.rejected,
        duplicates=history.duplicates,
        after_as_of=history.after_as_of,
    )
    window = settings.window
    for customer_id in sorted(states):
        line = customer_summary(states[customer_id], as_of, window)
        if line["x"] is None:  # no purchase yet: not a BG/NBD customer
            continue
        spend = line["mean_repeat_spend"]
        out.rows.append(
            CustomerRow(
                x=line["x"],
                t_x=float(line["t_x"]),
                T=float(line["T"]),
                mean_repeat_spend=0.0 if spend is None else float(spend),
            )
        )
    return out


def summarise_file(
    path: Path,
    fmt: Format,
    as_of: Micros,
    *,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> list[CustomerRow]:
    """(x, t_x, T, mean_repeat_spend) per customer with a purchase before ``as_of``."""
    return read_summaries(path, fmt, as_of, settings=settings, progress=progress).rows


def fit_file(
    path: Path,
    fmt: Format,
    as_of: Micros,
    *,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> Model:
    """Fit BG/NBD (and Gamma-Gamma when spend allows) to the history before ``as_of``."""
    summaries = read_summaries(path, fmt, as_of, settings=settings, progress=progress)
    return fit_model(
        summaries.rows,
        iso(as_of),
        events=summaries.events,
        rejected_events=summaries.rejected,
    )
