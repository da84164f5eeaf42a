"""What the notifier has decided, kept so that a restart decides the same.

Per destination, one entry per episode it was told of (admitted): the sequence of
the alert that opened it and the capacity day that opening used. It answers the
three questions a restart must answer as before the crash:

- was this alert admitted as an opening? (it is delivered again, with the same
  idempotency key, and not counted again: the capacity holds across a SIGKILL);
- was the destination told of this episode? (its later alerts are follow-ups);
- how much of today's capacity is used? (entries whose day is today).

Invariant: an entry is durable (acknowledged by the broker on the state topic,
``churnwatch.notify.state``, compacted) before the opening it records is sent, and
the input offset is committed only after the send. So any opening a receiver has
seen is in the ledger a restart reads, and no opening is admitted twice.

Entries are kept while the episode is open (up to ``OPEN_DAYS``) and for
``CLOSED_DAYS`` after it was resolved (so a re-read of its alerts after a restart
still finds it), then deleted by a tombstone when the notifier starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Final

import msgspec

#: Days an entry of an episode never resolved is kept (most end ``churned``).
OPEN_DAYS: Final = 400
#: Days an entry is kept after its episode was resolved.
CLOSED_DAYS: Final = 7

#: A state-topic record: key, and value (None: a tombstone).
StateRecord = tuple[bytes, bytes | None]


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    #: The sequence of the alert that opened the episode for the destination.
    opening: int
    #: The capacity day (``YYYY-MM-DD``) the opening was admitted on.
    day: str
    #: Counted against the day's capacity (the destination has one).
    counted: bool = True
    closed: bool = False


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Entry)
_PREFIX: Final = b"told/"


def state_key(destination: str, dedup_key: str) -> bytes:
    # Destination names hold no "/" (config._NAME), so the key splits unambiguously.
    return _PREFIX + destination.encode() + b"/" + dedup_key.encode()


class Ledger:
    """The in-memory copy of the state topic; changes return the records to write."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {}
        #: (destination, day) -> openings counted on that day.
        self._used: dict[tuple[str, str], int] = {}

    def load(self, records: dict[bytes, bytes | None]) -> int:
        """The latest value per key of the state topic; returns entries loaded.
        Unknown or undecodable keys are ignored (a newer notifier's records)."""
        loaded = 0
        for key, value in records.items():
            if value is None or not key.startswith(_PREFIX):
                continue
            destination, _, dedup_key = key[len(_PREFIX) :].decode(errors="replace").partition("/")
            try:
                entry = _DECODER.decode(value)
            except msgspec.DecodeError:
                continue
            self._put(destination, dedup_key, entry)
            loaded += 1
        return loaded

    def _put(self, destination: str, dedup_key: str, entry: Entry) -> None:
        entries = self._entries.setdefault(destination, {})
        previous = entries.get(dedup_key)
        if previous is not None and previous.counted:
            self._used[(destination, previous.day)] -= 1
        entries[dedup_key] = entry
        if entry.counted:
            slot = (destination, entry.day)
            self._used[slot] = self._used.get(slot, 0) + 1

    def entry(self, destination: str, dedup_key: str) -> Entry | None:
        return self._entries.get(destination, {}).get(dedup_key)

    def used(self, destination: str, day: str) -> int:
        return self._used.get((destination, day), 0)

    def admit(
        self, destination: str, dedup_key: str, opening: int, day: str, *, counted: bool
    ) -> StateRecord:
        entry = Entry(opening=opening, day=day, counted=counted)
        self._put(destination, dedup_key, entry)
        return state_key(destination, dedup_key), _ENCODER.encode(entry)

    def close(self, destination: str, dedup_key: str) -> StateRecord | None:
        """The episode was resolved: its entry may go after CLOSED_DAYS."""
        entry = self.entry(destination, dedup_key)
        if entry is None or entry.closed:
            return None
        closed = msgspec.structs.replace(entry, closed=True)
        self._put(destination, dedup_key, closed)
        return state_key(destination, dedup_key), _ENCODER.encode(closed)

    def expire(self, today: str) -> list[StateRecord]:
        """Tombstones for entries past their keeping time, removed from memory."""
        now = date.fromisoformat(today)
        gone: list[StateRecord] = []
        for destination, entries in self._entries.items():
            for dedup_key, entry in list(entries.items()):
                age = (now - date.fromisoformat(entry.day)).days
                if age > (CLOSED_DAYS if entry.closed else OPEN_DAYS):
                    del entries[dedup_key]
                    if entry.counted:
                        self._used[(destination, entry.day)] -= 1
                    gone.append((state_key(destination, dedup_key), None))
        return gone

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())


@dataclass(frozen=True)
class Known:
    """How a destination stands to an alert's episode, from the ledger."""

    #: The alert is the episode's admitted opening (deliver again, count nothing).
    is_opening: bool
    #: The alert follows the admitted opening (a follow-up).
    follows: bool
    day: str


def known(entry: Entry | None, sequence: int) -> Known | None:
    """None when the destination was not told of the episode; else where the alert
    of this ``sequence`` stands (before the opening: neither opening nor follow-up,
    it was held back or filtered before the episode was opened)."""
    if entry is None:
        return None
    return Known(
        is_opening=sequence == entry.opening, follows=sequence > entry.opening, day=entry.day
    )
