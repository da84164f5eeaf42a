"""The soak's samples and its verdict: does memory settle, does the worker keep up?

Two kinds of lag are sampled, and only one of them says whether a worker keeps up:

- the **backlog**: records published that the worker has not yet consumed (the
  producer's count less the worker's ``churnwatch_events_consumed_total``). A worker
  that cannot keep up has a backlog that grows; this is what the keeping-up bounds
  are on.
- the **committed lag**: records in the consumed topics past the group's committed
  offsets. It also carries how far commits trail processing: a commit waits for the
  producer's flush of the changelog and alert records, and on a busy machine Faust's
  commit timer overlaps itself (its "Timer commit is overlapping" warnings). In one
  CI run, with the integration tier busy on the same two cores, the committed lag of
  the last quarter went [477, 1728, 353, 894, 797, 651, 2760] while the worker consumed
  everything as it was published and caught up 2.4 s after the stream ended. So the
  committed lag has a looser bound (30 s of input by default), and a worker whose
  commits stop altogether still fails: its committed lag passes that bound, or it
  does not reach zero within the drain time after the stream ends.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Sample:
    t: float  # seconds since publishing started
    rss_mb: float
    lag: int  # records in the consumed topics the worker's group has not committed
    events: int  # input messages the worker consumed (clock ticks not counted)
    published: int
    alerts: int = 0
    due_assessments: int = 0  # customers re-assessed because time passed (lapses)
    deadletter: int = 0
    duplicates: int = 0
    late: int = 0
    customers: int = 0
    watermark: str | None = None  # the slowest partition's event time

    @property
    def backlog(self) -> int:
        """Records published that the worker has not consumed yet."""
        return max(0, self.published - self.events)


@dataclass(frozen=True)
class Bounds:
    max_rss_growth_mb: float  # after warm-up, above the RSS at its end
    max_backlog: int  # largest backlog allowed in the last quarter of the run
    max_backlog_slope: float  # messages per minute, after warm-up
    max_lag: int  # largest committed lag allowed in the last quarter of the run


@dataclass
class Summary:
    warmup_end: float
    rss_at_warmup_mb: float
    rss_max_after_warmup_mb: float
    rss_growth_mb: float
    rss_slope_mb_per_min: float
    backlog_slope_per_min: float
    backlog_max_last_quarter: int
    lag_slope_per_min: float
    lag_max_last_quarter: int
    events: int
    events_per_s: float
    failures: list[str] = field(default_factory=list)


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute (0 for fewer than 2)."""
    if len(points) < 2 or len({t for t, _ in points}) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    return statistics.linear_regression(xs, ys).slope * 60.0


def summarize(samples: list[Sample], duration: float, warmup: float, bounds: Bounds) -> Summary:
    """Figures after warm-up and the bounds they break.

    Growth is the highest RSS after warm-up less the RSS at its end: one spike counts,
    which errs towards failing. The worker falls behind when the last quarter of the
    run sees a backlog over ``max_backlog`` or the post-warm-up trend of the backlog
    exceeds ``max_backlog_slope``; its commits trail too far when the committed lag
    of the last quarter passes ``max_lag``.
    """
    run = sorted(samples, key=lambda s: s.t)
    if not run:
        raise ValueError("no samples")
    before = [s for s in run if s.t <= warmup]
    base = before[-1] if before else run[0]
    after = [s for s in run if s.t >= base.t]
    last_quarter = [s for s in run if s.t >= duration * 0.75] or run[-1:]
    rss_max = max(s.rss_mb for s in after)
    end = run[-1]
    summary = Summary(
        warmup_end=base.t,
        rss_at_warmup_mb=base.rss_mb,
        rss_max_after_warmup_mb=rss_max,
        rss_growth_mb=round(rss_max - base.rss_mb, 2),
        rss_slope_mb_per_min=round(slope_per_minute([(s.t, s.rss_mb) for s in after]), 3),
        backlog_slope_per_min=round(slope_per_minute([(s.t, s.backlog) for s in after]), 1),
        backlog_max_last_quarter=max(s.backlog for s in last_quarter),
        lag_slope_per_min=round(slope_per_minute([(s.t, s.lag) for s in after]), 1),
        lag_max_last_quarter=max(s.lag for s in last_quarter),
        events=end.events,
        events_per_s=round(end.events / end.t, 1) if end.t > 0 else 0.0,
    )
    summary.failures += _failures(summary, bounds, base, len(after))
    return summary


def _failures(summary: Summary, bounds: Bounds, base: Sample, after: int) -> list[str]:
    failures = []
    if after < 3:
        failures.append(f"only {after} samples after warm-up: sample more often or run longer")
    if summary.rss_growth_mb > bounds.max_rss_growth_mb:
        failures.append(
            f"RSS grew {summary.rss_growth_mb:.1f} MB after warm-up (bound "
            f"{bounds.max_rss_growth_mb:g} MB): {base.rss_mb:.1f} MB at {base.t:.0f}s, "
            f"{summary.rss_max_after_warmup_mb:.1f} MB at most later; "
            f"slope {summary.rss_slope_mb_per_min:.2f} MB/min"
        )
    if summary.backlog_max_last_quarter > bounds.max_backlog:
        failures.append(
            f"the backlog reached {summary.backlog_max_last_quarter:,} in the last quarter of "
            f"the run (bound {bounds.max_backlog:,}): the worker is not keeping up"
        )
    if summary.backlog_slope_per_min > bounds.max_backlog_slope:
        failures.append(
            f"the backlog grew {summary.backlog_slope_per_min:,.0f} messages/min after warm-up "
            f"(bound {bounds.max_backlog_slope:,.0f}): the worker is falling behind"
        )
    if summary.lag_max_last_quarter > bounds.max_lag:
        failures.append(
            f"the committed lag reached {summary.lag_max_last_quarter:,} in the last quarter "
            f"of the run (bound {bounds.max_lag:,}): commits trail processing too far"
        )
    return failures
