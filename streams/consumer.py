"""Faust's Kafka consumer with two changes: each message is handed to the streams
inline when nothing has to wait, and a seek before the start of a log goes to its
start instead of crashing the worker.

Faust's fetch loop hands every message over through ``Service.wait_first(callback,
suspend_flow.wait())``: four asyncio tasks (the hand-off, the flow event, the
service's stopped and crashed events) and an ``asyncio.wait`` per message, so that a
rebalance can abandon a hand-off that blocks. Measured here, that machinery is most
of what a do-nothing Faust agent costs per event (see README, Performance). The
hand-off almost never blocks: it takes the flow-control lock, checks the producer
buffer, decodes nothing (the topics are raw bytes) and puts the event on a queue
with room. So it is first run inline, to its first suspension: when it finishes
there, as it nearly always does, the message was delivered exactly as Faust would
have, without a task. When it does suspend (flow stopped, a full queue, a full
producer buffer), the rest of it runs under Faust's own ``wait_first``, which a
rebalance can interrupt as before. A ``sleep(0)`` after each inline hand-off lets
the agent take the event before the next one, as the tasks did.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine, Generator, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from mode.services import WaitResults


class _Resume:
    """Awaitable that drives a coroutine on from the suspension where ``send`` left it,
    forwarding results, errors and cancellation, as awaiting it would have."""

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        pending = self.pending
        while True:
            try:
                value = yield pending
            except BaseException as exc:  # cancellation included: the coroutine decides
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                pending = coro.send(value)
            except StopIteration as stop:
                return stop.value


class InlineConsumer(aiokafka_driver.Consumer):
    """The aiokafka driver's consumer, handing messages over inline when it can."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if len(coros) != 2 or timeout is not None or not self._is_hand_off(*coros):
            return await super().wait_first(*coros, timeout=timeout)
        hand_off, flow_stopped = coros
        if self.suspend_flow.is_set() or self.should_stop:
            return await super().wait_first(hand_off, flow_stopped)
        try:
            pending = hand_off.send(None)
        except StopIteration as stop:
            flow_stopped.close()
            await asyncio.sleep(0)
            return WaitResults([hand_off], [stop.value], False)
        except BaseException:
            flow_stopped.close()
            raise
        return await super().wait_first(_Resume(hand_off, pending), flow_stopped)

    async def seek_wait(self, partitions: Mapping[TP, int | None]) -> None:
        """Faust's table recovery seeks the changelog to where it last read, and maps
        -1 (nothing read) to 0, but can ask for less (its offsets start from the
        earliest offset minus one; a SIGKILL chaos run got one below -1). aiokafka
        raises ValueError for a negative offset, which ended recovery and the
        worker. It can also ask for None (no offset known: the same ValueError, in
        another SIGKILL run). Before the start of the log, or nowhere, is its start."""
        await super().seek_wait(
            {tp: 0 if offset is None or offset < 0 else offset for tp, offset in partitions.items()}
        )

    def _is_hand_off(self, hand_off: Any, flow_stopped: Any) -> bool:
        """Whether this is the fetch loop's call: a message's hand-off raced against
        ``self.suspend_flow.wait()``, neither started yet."""
        return (
            inspect.iscoroutine(hand_off)
            and inspect.iscoroutine(flow_stopped)
            and inspect.getcoroutinestate(hand_off) == inspect.CORO_CREATED
            and inspect.getcoroutinestate(flow_stopped) == inspect.CORO_CREATED
            and flow_stopped.cr_frame is not None
            and flow_stopped.cr_frame.f_locals.get("self") is self.suspend_flow
        )


class InlineTransport(aiokafka_driver.Transport):
    Consumer = InlineConsumer
