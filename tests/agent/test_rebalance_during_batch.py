"""A batch during which a rebalance began writes nothing: its input is read again.

A scale chaos run: one batch released 12,814 waiting events and took 3 s, the
group's session timeout; a rebalance began meanwhile, the worker was dropped from
the group, and the partition's new owner recovered it before the batch's writes
landed. The new owner went on from the older partition record while the customers
had the newer one's effects: 7,464 events stayed counted as waiting for good.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from processor.partition import decode_partition
from retention.timeutil import parse_time
from tests.agent.test_crash_points import Changelog, logged_run
from tests.inprocess import Run, generated_history

AS_OF = parse_time("2025-07-01T00:00:00Z")
BATCH = 400


def test_a_batch_a_rebalance_began_during_writes_nothing_and_is_read_again(
    tmp_path: object,
) -> None:
    from pathlib import Path

    history = generated_history(Path(str(tmp_path)), 120, 150, 23, AS_OF)
    history.sort(key=lambda r: r.occurred_at or -1)
    reference = Run(history, AS_OF)
    reference.feed(history, [BATCH], random.Random(0))

    run = logged_run(history)
    messages = [run.message(r.topic, r.key, r.value) for r in history]
    batches = [messages[at : at + BATCH] for at in range(0, len(messages), BATCH)]
    cut = len(batches) // 2
    for batch in batches[:cut]:
        run.batch.process(batch)
    table = Changelog.recovered(run.table.log)
    writes, alerts = len(run.table.log), len(run.alerts_sent.values)

    # The consumer's thread counts a rebalance begun once the batch has started.
    counts: Iterator[int] = iter([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    run.consumer.rebalances = lambda: next(counts)  # type: ignore[method-assign]
    run.batch.process(batches[cut])
    assert len(run.table.log) == writes, "a batch a rebalance began during wrote"
    assert len(run.alerts_sent.values) == alerts
    assert dict(run.table) == dict(table)

    # Once the rebalance is over the input is read again from the state's offsets.
    run.consumer.rebalances = lambda: 1  # type: ignore[method-assign]
    for batch in batches[cut:]:
        run.batch.process(batch)
    run.feed([], [1], random.Random(0))
    assert run.customers() == reference.customers()
    got = decode_partition(run.table[b"\x00partition/0"])
    want = decode_partition(reference.table[b"\x00partition/0"])
    for name in ("consumed", "valid", "duplicates", "deadletter", "pending"):
        assert getattr(got, name) == getattr(want, name), name
    assert run.alerts() == reference.alerts()
