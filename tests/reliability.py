"""What the reliability tests check after a disturbed run, and the figures they keep.

``check_outcome`` compares what the workers computed with the independent oracle
(``tests/oracle.py``) and checks the outputs that are at-least-once by design:
dead letters and alerts may be re-sent after a crash, identically, and never lost.

With ``CHURNWATCH_RELIABILITY_OUT`` set, each test appends its closing figures as
one JSON line; ``python -m tests.reliability FILE`` prints them as a table
(``make reliability`` does both).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processor.partition import PartitionState
from retention.alerts import dedup_key
from retention.state import CustomerState
from retention.timeutil import Micros, parse_time
from tests.fleet import Event
from tests.oracle import expected, facts_of


@dataclass
class Outcome:
    history: Path
    as_of: Micros
    customers: dict[str, CustomerState]
    partitions: list[PartitionState]
    alerts: list[Any]  # ConsumerRecords of churnwatch.alerts
    deadletters: list[Any]  # ConsumerRecords of churnwatch.deadletter
    log: list[Event]
    seconds: float
    name: str = ""
    reference_alerts: list[dict[str, Any]] | None = None  # of an undisturbed run
    figures: dict[str, Any] = field(default_factory=dict)


def totals(partitions: list[PartitionState]) -> dict[str, int]:
    names = ("consumed", "valid", "deadletter", "duplicates", "late", "pending")
    return {name: sum(getattr(p, name) for p in partitions) for name in names}


def check_outcome(outcome: Outcome) -> None:
    """Raise AssertionError on the first difference from the oracle."""
    truth = expected(outcome.history, outcome.as_of)
    counts = totals(outcome.partitions)
    figures = outcome.figures
    figures.update(counts)
    figures["events_published"] = truth.counts["consumed"]
    figures["seconds"] = round(outcome.seconds, 1)
    figures["kills"] = sum(e.action == "kill" for e in outcome.log)
    figures["restarts_and_scales"] = sum(e.action != "kill" for e in outcome.log)

    # Every message counted exactly once, whatever was redelivered; none left waiting.
    assert counts["pending"] == 0, counts
    assert counts["consumed"] == counts["valid"] + counts["deadletter"] + counts["duplicates"]
    for name in ("consumed", "valid", "deadletter", "duplicates"):
        assert counts[name] == truth.counts[name], (name, counts, truth.counts)

    # Customer state: every documented fact equals the batch recomputation.
    got = {cid: facts_of(state) for cid, state in outcome.customers.items()}
    mismatched = sorted(cid for cid in got.keys() | truth.customers.keys()
                        if got.get(cid) != truth.customers.get(cid))  # fmt: skip
    figures["customers"] = len(got)
    figures["customer_mismatches"] = len(mismatched)
    assert not mismatched, [(c, got.get(c), truth.customers.get(c)) for c in mismatched[:3]]

    # Period figures and cohorts, summed over partitions as the report does.
    mismatches = truth.compare_periods(outcome.partitions)
    figures["periods"] = len(truth.periods)
    figures["period_mismatches"] = len(mismatches)
    assert not mismatches, mismatches[:5]

    # Dead letters: at least once, each rejected message with its reason.
    letters: dict[tuple[str, int, int], str] = {}
    for record in outcome.deadletters:
        letter = json.loads(record.value)
        letters[letter["topic"], letter["partition"], letter["offset"]] = letter["reason"]
    assert len(letters) == counts["deadletter"]
    reasons = Counter(letters.values())
    figures["deadletter_by_reason"] = dict(sorted(reasons.items()))
    figures["deadletter_resent"] = len(outcome.deadletters) - len(letters)
    assert reasons == truth.rejected_by_reason, (reasons, truth.rejected_by_reason)

    check_alerts(outcome)


def check_alerts(outcome: Outcome) -> None:
    """Alerts are at least once: a crash may re-send one, never lose or change one.

    Copies of one alert may differ in ``observed_at`` and ``source``, which say when
    and while processing which message it was raised: raised again after a crash, an
    alert found by the due-time index comes with whatever message the re-read batch
    ended on. Everything the alert says must be the same."""
    copies: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for record in outcome.alerts:
        alert = json.loads(record.value)
        alert.pop("observed_at")
        copies[alert["dedup_key"], alert["sequence"]].append(alert)
    changed = [
        key for key, found in copies.items() if len({_comparable(alert) for alert in found}) > 1
    ]
    assert not changed, [copies[k] for k in changed[:2]]
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (_, _), found in copies.items():
        by_customer[found[0]["customer_id"]].append(found[0])
    lost = []
    for customer_id, state in outcome.customers.items():
        alerts = sorted(by_customer.pop(customer_id, []), key=lambda a: a["sequence"])
        mark = state.risk
        sequence = 0 if mark is None else mark.sequence
        if [a["sequence"] for a in alerts] != list(range(1, sequence + 1)):
            lost.append((customer_id, [a["sequence"] for a in alerts], sequence))
            continue
        if alerts:
            assert mark is not None and mark.episode is not None
            last = alerts[-1]
            assert last["status"] == mark.status, (customer_id, last, mark)
            assert last["dedup_key"] == dedup_key(customer_id, mark.episode)
            assert parse_time(last["starts_at"]) == mark.episode
    assert not by_customer, f"alerts for unknown customers: {sorted(by_customer)[:5]}"
    figures = outcome.figures
    if outcome.reference_alerts is not None:
        want = {_comparable(a) for a in outcome.reference_alerts}
        got = {_comparable(found[0]) for found in copies.values()}
        figures["alert_mismatches"] = len(want ^ got)
        if got != want:
            # Lost on the way (the state raised it) or never raised (the state differs)?
            missing = []
            for text in sorted(want - got)[:5]:
                alert = json.loads(text)
                state = outcome.customers.get(alert["customer_id"])
                mark = None if state is None else state.risk
                missing.append((alert["alert_id"], alert["status"], alert["at"], mark))
            raise AssertionError(
                f"{len(got - want)} alerts not in the reference, {len(want - got)} missing; "
                f"extra: {sorted(got - want)[:2]}; missing (id, status, at, worker's mark): "
                f"{missing}"
            )
    figures["alerts_distinct"] = len(copies)
    figures["alerts_resent"] = len(outcome.alerts) - len(copies)
    figures["alert_sequence_gaps"] = len(lost)
    assert not lost, lost[:5]


def _comparable(alert: dict[str, Any]) -> str:
    """An alert apart from when it was observed and which message carried it (the
    partition layout and offsets differ between runs; the alert itself must not)."""
    kept = {k: v for k, v in alert.items() if k not in {"observed_at", "source"}}
    return json.dumps(kept, sort_keys=True)


def record_figures(outcome: Outcome) -> None:
    target = os.environ.get("CHURNWATCH_RELIABILITY_OUT")
    line = {"test": outcome.name, **outcome.figures}
    line["log"] = [vars(event) for event in outcome.log]
    print(json.dumps(line))
    if target:
        with open(target, "a") as out:
            out.write(json.dumps(line) + "\n")


def append(line: dict[str, Any]) -> None:
    """For tests other than the chaos runs (fuzz, recovery, soak) to add their figures."""
    print(json.dumps(line))
    target = os.environ.get("CHURNWATCH_RELIABILITY_OUT")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps(line) + "\n")


def main(path: str) -> None:
    lines = [json.loads(s) for s in Path(path).read_text().splitlines() if s.strip()]
    if not lines:
        sys.exit(f"no figures in {path}: did the reliability tests run?")
    for line in lines:
        name = line.pop("test")
        line.pop("log", None)
        print(f"\n{name}")
        for key, value in line.items():
            print(f"  {key:<24} {value}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/reliability.jsonl")
