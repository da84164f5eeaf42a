"""Which messages of a partition to process now: a batch a crash may have cut off
is redone whole, and nothing is applied past a gap in a topic's offsets.

Kept per worker, reset at each rebalance (``reset``): messages held for a redo,
topic partitions to read again from an offset (``seeks``, which the agent carries
out), and the gaps being read again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from processor.partition import PartitionState
from processor.ports import TP, Offsets

log = logging.getLogger(__name__)

#: How long a partition's redo is sought back to its start, in one rebalance, before
#: it is given up on (``Positions.select``). Input Faust had queued before the
#: seek took effect drains in well under a second (in a scale chaos run, five seeks
#: back within 0.2 s, then Faust's own seek, then the batch read again).
SEEK_BACK_SECONDS = 30.0

#: How often reading a topic partition again from a gap in its offsets is asked
#: while the gap stays open (``Positions.contiguous``), and how long that goes
#: on before the agent reads past the gap anyway, with a warning: a seek that never
#: took effect must not stall the partition for good.
GAP_SEEK_EVERY = 1.0
GAP_SECONDS = 120.0

#: How long a gap may stay open with nothing of its topic partition read before it
#: is sought again without an arrival (``Positions.idle_gaps``, from the agent's
#: timer). Longer than GAP_SEEK_EVERY: input already handed over but still queued
#: for the agent must not be read a second time for nothing.
GAP_IDLE_SECONDS = 5.0

#: Batches' worth of newer messages a partition holds while a redo waits for its
#: batch (four made batches of 4,800 messages, and a worker expelled mid-rebalance).
HOLD_BATCHES = 1


class Gap(NamedTuple):
    """Offsets of a topic partition read past without being applied."""

    missing: int  # the next offset to apply
    seen: int  # the furthest offset read since
    first: float  # when it was first read past (monotonic seconds)
    asked: float | None  # when reading again from ``missing`` was last asked
    read: float  # when a message of its topic partition was last read past it
    idle_asks: int = 0  # times sought again with nothing read (``idle_gaps``)

    def past(self, offset: int, now: float) -> Gap:
        return self._replace(seen=max(self.seen, offset), read=now)


class Positions:
    """Read positions of the partitions a worker owns."""

    def __init__(self, offsets: Offsets, batch_max: int) -> None:
        self.offsets = offsets
        #: Per partition, messages of a batch being redone, until all are read again.
        self.held: dict[int, list[Any]] = {}
        #: Topic partitions to read again from an offset, and per partition when
        #: that was first asked since the last rebalance.
        self.seeks: dict[TP, int] = {}
        self.sought_back: dict[int, float] = {}
        #: Per topic partition, an offset missing before what was read (``contiguous``).
        self.gaps: dict[TP, Gap] = {}
        #: Most messages held for a redo (``bounded``).
        self.hold_max = HOLD_BATCHES * batch_max
        #: When the last rebalance completed and the consumer was last sought to the
        #: state's offsets (monotonic seconds): diagnostics for a redo not read again.
        self.unfenced_at: float | None = None
        self.sought_at: float | None = None

    def reset(self) -> None:
        """After a rebalance: every partition is read again from its committed (or
        the state's) offset."""
        self.held.clear()
        self.seeks.clear()
        self.sought_back.clear()
        self.gaps.clear()

    def select(
        self,
        pstate: PartitionState,
        group: list[Any],
        written: dict[str, int] | None,
        redeliver: Callable[[Any], None],
    ) -> list[Any] | None:
        """The messages to process now, or None (nothing to do yet).

        Messages at or before the partition record's ``previous`` offsets belong to
        batches whose effects are all stored (their customers precede this record
        in the changelog): nothing to do but send their dead letters again
        (``redeliver``). Those between ``previous`` and ``offsets`` are the last
        batch, whose customers a crash may have cut off: redone, they must be applied
        together, as they were, with the waiting events that batch released, or a
        customer could meet its events in another order than the first time. So they
        are held until every one of them has been read again. ``written``: the
        offsets of the last record this worker wrote for the partition.
        """
        partition = pstate.partition
        held = self.held.pop(partition, None)
        if held:
            group = held + group
        offsets = pstate.offsets
        previous = pstate.previous
        out: list[Any] = []
        read: dict[str, int] = {}
        beyond: set[str] = set()  # topics read past the last batch
        for message in group:
            topic = message.topic
            offset = message.offset
            if offset <= offsets.get(topic, -1):
                if offset <= previous.get(topic, -1):
                    redeliver(message)
                    continue
                if offset > read.get(topic, -1):
                    read[topic] = offset
            else:
                beyond.add(topic)
            out.append(message)
        # A record this worker wrote itself had its customers written too (its table
        # holds them); one recovered from the changelog may not have: redo its batch
        # before anything else, even if what comes first is new input of other topics.
        if written != offsets and not self._redone(pstate, group, out, read, beyond, written):
            return None
        return self.contiguous(pstate, out) or None

    def _redone(
        self,
        pstate: PartitionState,
        group: list[Any],
        out: list[Any],
        read: dict[str, int],
        beyond: set[str],
        written: dict[str, int] | None,
    ) -> bool:
        """Whether ``out`` may be processed with the last batch not all read again
        (it was, or it is given up on); if not, what to hold and read again is set."""
        partition = pstate.partition
        offsets = pstate.offsets
        previous = pstate.previous
        missing = [
            topic
            for topic, last in offsets.items()
            if last > previous.get(topic, -1) and read.get(topic, -1) < last
        ]
        if missing and not beyond.intersection(missing):
            self.held[partition] = self.bounded(partition, offsets, out)
            return False
        passed = sorted(beyond.intersection(missing))
        now = time.monotonic()
        if passed and now - self.sought_back.setdefault(partition, now) < SEEK_BACK_SECONDS:
            # Read past the batch without reading it again: right after a
            # rebalance, input Faust fetched while recovering tables, from where
            # this worker's consumer last stood on the partition, can reach the
            # agent before Faust's seek (85 purchases lost in a scale chaos run
            # when this was applied). Apply none of it: read those topics again
            # from the batch's start, and keep holding the rest. What Faust had
            # queued already comes first, so this may repeat a few times.
            for topic in passed:
                self.seeks[TP(topic, partition)] = previous.get(topic, -1) + 1
            self.held[partition] = [m for m in out if m.topic not in passed]
            log.warning(
                "partition %d: %s read past the last batch (%s) before it was read "
                "again (read %s); reading again from its start",
                partition, ", ".join(passed),
                {t: (previous.get(t, -1), offsets[t]) for t in passed}, _ranges(group),
            )  # fmt: skip
            return False
        if missing:
            # Sought back for SEEK_BACK_SECONDS and still read past: holding on
            # would stall the partition for good; go on with what was read.
            log.warning(
                "partition %d: the last batch of %s was not read again before newer "
                "input; processing without redoing it (batch %s; read %s; written "
                "by this worker %s; %s s after the rebalance, %s s after the seek)",
                partition, ", ".join(sorted(missing)),
                {t: (previous.get(t, -1), offsets[t]) for t in missing},
                _ranges(group), written,
                _since(self.unfenced_at, now), _since(self.sought_at, now),
            )  # fmt: skip
        return True

    def bounded(self, partition: int, offsets: dict[str, int], held: list[Any]) -> list[Any]:
        """``held`` cut down to ``hold_max`` messages, the rest read again later.

        While a redo waits for its batch to be read again, other input keeps coming;
        held without bound it became one batch of 18,600 messages in a scale chaos
        run, whose processing kept the worker from the rebalance under way: it was
        expelled from the group and its writes landed after the partition's new owner
        had recovered it, so the state lost 4,308 waiting events. The redo's own
        messages (at or before the record's offsets) are all kept; of newer input,
        each topic keeps what came first, up to the bound, and is sought back to the
        first message it dropped.
        """
        if len(held) <= self.hold_max:
            return held
        kept: list[Any] = []
        dropped: dict[str, int] = {}
        for message in held:
            topic = message.topic
            redone = message.offset <= offsets.get(topic, -1)
            if redone or (topic not in dropped and len(kept) < self.hold_max):
                kept.append(message)
            elif topic not in dropped:
                dropped[topic] = message.offset
        for topic, offset in dropped.items():
            self.seeks[TP(topic, partition)] = offset
        log.info(
            "partition %d: holding %d messages for a redo, %d dropped to be read again",
            partition, len(kept), len(held) - len(kept),
        )  # fmt: skip
        return kept

    def contiguous(self, pstate: PartitionState, group: list[Any]) -> list[Any]:
        """``group`` without, per topic, anything after a gap in its offsets; the
        topic is read again from the first missing offset (``seeks``).

        The partition record holds the last offset applied per topic, so a message
        further on than the next one means records that never reached the agent:
        Faust counts as read what its stream skips during a rebalance and any jump
        in a fetch, and what a stale fetch brought in can come ahead of a seek.
        Applied, the gap's records would later look like redeliveries and never be
        counted (one purchase lost in a scale chaos run: purchases[3] read 8597,
        then 8599). A topic the state has never seen starts at offset 0, as
        ``resume_from_state`` seeks it: taking its first message read for its start
        lost the first 47 signups of a partition in a SIGKILL chaos run.

        Offsets the log does not hold (transaction markers, records deleted by
        retention) are read past once the consumer shows it: the first record it
        fetched after seeking to the gap lies beyond it (``InlineConsumer.landed``).
        Reading past on weaker evidence lost records in chaos runs: once the agent
        came back past the gap without the missing record (1,629 purchases; a seek
        had not taken effect, or another had moved the consumer), and once after a
        fixed 30 s. A gap nothing closes is still read past after GAP_SECONDS, with
        an error: a seek that never takes effect must not stall the partition for
        good.
        """
        partition = pstate.partition
        offsets = pstate.offsets
        following: dict[str, int] = {}
        cut: set[str] = set()
        out: list[Any] = []
        now = time.monotonic()
        for message in group:
            topic = message.topic
            offset = message.offset
            tp = TP(topic, partition)
            if topic in cut:
                self.gaps[tp] = self.gaps[tp].past(offset, now)
                continue
            expected = following.get(topic)
            if expected is None:
                expected = offsets.get(topic, -1) + 1
            if offset > expected:
                expected = self._past_absent(tp, expected, offset)
            if offset > expected and self._held_back(tp, expected, offset, now):
                cut.add(topic)
                continue
            following[topic] = max(expected, offset + 1)
            out.append(message)
        for topic in cut:
            self._ask_again(TP(topic, partition), now)
        for topic in following.keys() - cut:
            self.gaps.pop(TP(topic, partition), None)
        return out

    def _past_absent(self, tp: TP, expected: int, offset: int) -> int:
        """The next offset to expect: where the log resumes if the consumer showed
        that ``expected`` is not in it, else ``expected``.

        ``offset`` is being read, so the log holds it: a landing beyond it is stale
        (the position was moved again after the seek, as a rebalance resets it to
        the committed offset) and proves nothing; the gap stays open and is sought
        again (tests/agent/test_offset_gaps.py has the chaos run it lost 3,049
        records in)."""
        resumes = self._log_resumes(tp, expected)
        if resumes is None:
            return expected
        if resumes > offset:
            log.warning(
                "%s[%d]: the consumer's landing at %d, after seeking to %d, lies beyond "
                "offset %d, which it read: not taken as a gap in the log",
                tp.topic, tp.partition, resumes, expected, offset,
            )  # fmt: skip
            self.offsets.forget_landing(tp)
            return expected
        log.warning(
            "%s[%d]: offsets %d..%d are not in the log; going on from %d",
            tp.topic, tp.partition, expected, resumes - 1, resumes,
        )  # fmt: skip
        self.gaps.pop(tp, None)
        return resumes

    def _held_back(self, tp: TP, expected: int, offset: int, now: float) -> bool:
        """``offset`` was read while ``expected`` is the next to apply: whether the
        topic waits for the gap to be read again (else it is read past, at last)."""
        gap = self.gaps.get(tp)
        if gap is None or gap.missing != expected:
            self.gaps[tp] = Gap(expected, offset, now, None, now)
            return True
        if now - gap.first >= GAP_SECONDS:
            del self.gaps[tp]
            log.error(
                "%s[%d]: offset %d not read again in %.0f s of seeking back; "
                "going on from %d",
                tp.topic, tp.partition, expected, GAP_SECONDS, offset,
            )  # fmt: skip
            return False
        self.gaps[tp] = gap.past(offset, now)
        return True

    def _ask_again(self, tp: TP, now: float) -> None:
        """Read ``tp`` again from its gap, at most every GAP_SEEK_EVERY seconds."""
        gap = self.gaps[tp]
        if gap.asked is None or now - gap.asked >= GAP_SEEK_EVERY:
            if gap.asked is None:
                log.warning(
                    "%s[%d]: read offset %d while %d is the next to apply; "
                    "reading again from %d",
                    tp.topic, tp.partition, gap.seen, gap.missing, gap.missing,
                )  # fmt: skip
            self.seeks[tp] = gap.missing
            self.gaps[tp] = gap._replace(asked=now)

    def idle_gaps(self, now: float) -> int:
        """Ask again to read each open gap of which nothing was read for
        GAP_IDLE_SECONDS (since the last ask or arrival); returns how many.

        ``contiguous`` asks again only when a message of the topic partition comes
        in. When the consumer has read the whole log past the gap and the seek back
        to it was lost (a SIGKILL chaos run: feedback[0] read 3567 while 2000 was
        next, sought to 2000 once, then nothing; the state stayed at 2000 of 7273
        for good), nothing comes in, and nothing asked again: so the agent's timer
        asks here, until the gap is read or a rebalance resets it.
        """
        asked = 0
        for tp, gap in list(self.gaps.items()):
            last = max(gap.read, gap.asked or gap.first)
            if now - last < GAP_IDLE_SECONDS:
                continue
            gap = gap._replace(asked=now, idle_asks=gap.idle_asks + 1)
            self.gaps[tp] = gap
            self.seeks[tp] = gap.missing
            asked += 1
            log.warning(
                "%s[%d]: offset %d still not read again %.0f s after it was first "
                "missed (read up to %d, nothing since %.0f s); seeking to it again (%d)",
                tp.topic, tp.partition, gap.missing, now - gap.first, gap.seen,
                now - gap.read, gap.idle_asks,
            )  # fmt: skip
        return asked

    def _log_resumes(self, tp: TP, missing: int) -> int | None:
        """Where the log resumes after ``missing``, if the consumer sought ``tp`` to
        ``missing`` and fetched a later record first; None if it has not shown that."""
        landed = self.offsets.landed(tp)
        if landed is None or landed[0] != missing or landed[1] <= missing:
            return None
        return int(landed[1])


def _ranges(group: Sequence[Any]) -> dict[str, tuple[int, int]]:
    """Per topic, the lowest and highest offset in ``group``."""
    ranges: dict[str, tuple[int, int]] = {}
    for message in group:
        low, high = ranges.get(message.topic, (message.offset, message.offset))
        ranges[message.topic] = (min(low, message.offset), max(high, message.offset))
    return ranges


def _since(moment: float | None, now: float) -> str:
    return "-" if moment is None else f"{now - moment:.2f}"
