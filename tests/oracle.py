"""An independent batch recomputation of what the workers compute, for tests.

The engine folds events one at a time into compact, bounded, incrementally
maintained state; this module instead reads the whole input file, validates each
record by the documented rules (DESIGN section 4 and the constraints stated in
``schemas/``), de-duplicates by event id, and derives every figure from scratch
from the full list of a customer's events, by the definitions (DESIGN sections 4
to 6 and the field comments of ``retention/state.py``). It imports nothing from
``retention``, ``schemas``, ``streams`` or ``agents``: the few small definitions it
needs (the money unit, the 63-bit id hash that breaks ties, the calendar) are
written again here, so that a bug in the engine's copy cannot hide in both.

Reading engine objects is the test side's job: ``facts_of``, ``figures_of`` and
``Expected.compare_periods`` read attributes only, duck-typed.

Known limits, where the engine's behaviour is an implementation bound rather than a
definition: duplicates are recognised by (customer, event id) over the whole input,
as the engine does with its default ``dedup_ids`` (0: every id; a bound remembers
only recent ones); of two records with one event id, the first in file order wins;
``amount_overflow`` (a partition's money passing 2**62 micro-units) is not modelled,
as it depends on which partition a customer lands in; and a record with both a
field error and a JSON syntax error gets the reason the worker's decoder meets
first (it validates as it reads) only as far as ``_members`` reproduces that order,
which ``tests/unit/test_oracle_agrees.py`` checks against the decoder.
"""

from __future__ import annotations

import bisect
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from hashlib import blake2b
from pathlib import Path
from typing import Any, Final

SECOND: Final = 1_000_000
DAY: Final = 86_400 * SECOND
MONEY_UNIT: Final = 1_000_000  # micro-units per currency unit (integer sums are exact)
MAX_EVENT_BYTES: Final = 64 * 1024
MAX_FUTURE: Final = DAY  # events dated further ahead of the wall clock are rejected
ROLLING_DAYS: Final = 90
KINDS: Final = ("signup", "purchase", "cancellation", "feedback")
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _day_micros(year: int, month: int, day: int) -> int:
    return (date(year, month, day).toordinal() - _EPOCH_ORDINAL) * DAY


#: The supported range of event times (``schemas/decode.py``): [1900-01-01, 3000-01-01).
MIN_AT: Final = _day_micros(1900, 1, 1)
MAX_AT: Final = _day_micros(3000, 1, 1)


class Invalid(Exception):
    """A record the worker would dead-letter, with the reason it would give."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def id_hash(event_id: str) -> int:
    """The documented tie-break: blake2b-64 of the event id, shifted to 63 bits."""
    return int.from_bytes(blake2b(event_id.encode(), digest_size=8).digest(), "big") >> 1


def money(amount: float) -> int:
    return round(amount * MONEY_UNIT)


# --------------------------------------------------------------------------- time

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?"
)


_AFTER_9999: Final = (date.max.toordinal() + 1 - _EPOCH_ORDINAL) * DAY
_MIDNIGHTS: dict[str, int] = {}  # "YYYY-MM-DD" -> its UTC midnight, as dates repeat


def rfc3339(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 time with an offset.

    What the worker's decoder accepts: ``T``, ``t`` or a space between date and
    time, ``Z``/``z`` or ``+HH:MM``/``+HHMM`` (hours below 24), seconds below 60,
    any number of fraction digits rounded half up to the microsecond.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise Invalid("invalid_field", f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if zulu is None and sign is None:
        raise Invalid("invalid_field", f"time without an offset: {text!r}")
    midnight = _MIDNIGHTS.get(text[:10])
    if midnight is None:
        try:
            midnight = _MIDNIGHTS[text[:10]] = _day_micros(int(year), int(month), int(day))
        except ValueError:
            raise Invalid("invalid_field", f"no such date: {text!r}") from None
    hour, minute, second = int(hour), int(minute), int(second)
    if hour > 23 or minute > 59 or second > 59:
        raise Invalid("invalid_field", f"no such time: {text!r}")
    micros = midnight + ((hour * 60 + minute) * 60 + second) * SECOND
    if fraction:
        micros += int(fraction[:6].ljust(6, "0")) + (len(fraction) > 6 and fraction[6] >= "5")
        if micros >= _AFTER_9999:  # rounded up into a year no datetime holds
            raise Invalid("invalid_field", f"no such time: {text!r}")
    if sign is not None:
        if int(off_h) > 23 or int(off_m) > 59:
            raise Invalid("invalid_field", f"no such offset: {text!r}")
        offset = (int(off_h) * 60 + int(off_m)) * 60 * SECOND
        micros -= offset if sign == "+" else -offset
    return micros


def lenient_time(text: str) -> int | None:
    """The time a replay reads to route a line and skip it if at or after ``as_of``
    (``churnwatch replay``: ISO 8601 with an offset, ``Z`` accepted)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        if moment.tzinfo is None:
            return None
        return (moment - _EPOCH) // timedelta(microseconds=1)
    except (ValueError, OverflowError):
        return None


def iso(micros: int) -> str:
    return (_EPOCH + timedelta(microseconds=micros)).isoformat().replace("+00:00", "Z")


# ----------------------------------------------------------------------- calendar


def _date(micros: int) -> date:
    return date.fromordinal(micros // DAY + _EPOCH_ORDINAL)


def _micros(day: date) -> int:
    return (day.toordinal() - _EPOCH_ORDINAL) * DAY


def period_start(kind: str, micros: int) -> int:
    """Start of the UTC calendar period (day, ISO week, month, quarter) holding ``micros``."""
    day = _date(micros)
    if kind == "week":
        day -= timedelta(days=day.weekday())
    elif kind == "month":
        day = day.replace(day=1)
    elif kind == "quarter":
        day = day.replace(day=1, month=(day.month - 1) // 3 * 3 + 1)
    elif kind != "day":
        raise ValueError(f"unknown period kind {kind!r}")
    return _micros(day)


def next_start(kind: str, start: int) -> int:
    if kind in ("day", "week"):
        return start + (1 if kind == "day" else 7) * DAY
    day = _date(start)
    index = day.year * 12 + day.month - 1 + (1 if kind == "month" else 3)
    return _micros(date(index // 12, index % 12 + 1, 1))


def period_label(kind: str, start: int) -> str:
    day = _date(start)
    if kind == "month":
        return f"{day.year:04d}-{day.month:02d}"
    if kind == "quarter":
        return f"{day.year:04d}-Q{(day.month - 1) // 3 + 1}"
    if kind == "week":
        year, week, _ = day.isocalendar()
        return f"{year:04d}-W{week:02d}"
    return day.isoformat()


def month_index(micros: int) -> int:
    day = _date(micros)
    return day.year * 12 + day.month - 1


def month_label(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


# ------------------------------------------------------------------------ events


@dataclass(slots=True)
class Event:
    """A valid event, money already in micro-units."""

    type: str
    event_id: str
    customer_id: str
    at: int
    tie: int
    amount: int = 0  # purchase
    cost: int | None = None  # purchase cost_to_serve
    fee: int | None = None  # monthly_fee of a signup or cancellation
    segment: str | None = None
    plan: str | None = None
    channel: str | None = None
    reason_code: str | None = None
    kind: str | None = None  # feedback: nps | csat | support
    score: int | None = None
    outcome: str | None = None


Check = Callable[[Any], Any]


def _fail(what: str, value: Any) -> Invalid:
    return Invalid("invalid_field", f"{what}, got {value!r:.60}")


def _string(low: int, high: int, optional: bool) -> Check:
    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not low <= len(value) <= high:
            raise _fail(f"expected a string of {low} to {high} characters", value)
        return value

    return check


def _money(optional: bool) -> Check:
    """Non-negative and at most 1e12; JSON integers are read as floats, booleans are not."""

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail("expected an amount", value)
        try:
            amount = float(value)
        except OverflowError:
            raise _fail("amount out of range", value) from None
        if not 0 <= amount <= 1e12:
            raise _fail("expected an amount from 0 to 1e12", value)
        return amount

    return check


def _choice(*allowed: str, optional: bool) -> Check:
    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or value not in allowed:
            raise _fail(f"expected one of {allowed}", value)
        return value

    return check


def _score(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
        raise _fail("expected an integer score from 0 to 10", value)
    return value


def _time(value: Any) -> Any:
    if not isinstance(value, str):
        raise _fail("expected an RFC 3339 time", value)
    return rfc3339(value)


_ID = _string(1, 128, optional=False)
_LABEL = _string(1, 64, optional=True)
_TEXT = _string(0, 4096, optional=True)
_COMMON: dict[str, Check] = {"event_id": _ID, "customer_id": _ID, "occurred_at": _time}
#: Fields per event type (DESIGN section 4, ``schemas/events.py``); others are ignored.
FIELDS: Final[dict[str, dict[str, Check]]] = {
    "signup": {
        **_COMMON,
        "segment": _LABEL,
        "plan": _LABEL,
        "monthly_fee": _money(optional=True),
        "channel": _LABEL,
    },
    "purchase": {
        **_COMMON,
        "amount": _money(optional=False),
        "currency": _string(3, 3, optional=True),
        "order_id": _string(1, 128, optional=True),
        "cost_to_serve": _money(optional=True),
    },
    "cancellation": {
        **_COMMON,
        "reason_code": _LABEL,
        "reason": _TEXT,
        "monthly_fee": _money(optional=True),
    },
    "feedback": {
        **_COMMON,
        "kind": _choice("nps", "csat", "support", optional=False),
        "score": _score,
        "outcome": _choice("resolved", "unresolved", "bad", optional=True),
        "comment": _TEXT,
    },
}
REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "signup": ("event_id", "customer_id", "occurred_at"),
    "purchase": ("event_id", "customer_id", "occurred_at", "amount"),
    "cancellation": ("event_id", "customer_id", "occurred_at"),
    "feedback": ("event_id", "customer_id", "occurred_at", "kind"),
}
#: Identifiers and labels end up in keys and log lines: printable characters only.
PRINTABLE: Final[dict[str, tuple[str, ...]]] = {
    "signup": ("event_id", "customer_id", "segment", "plan", "channel"),
    "purchase": ("event_id", "customer_id", "order_id"),
    "cancellation": ("event_id", "customer_id", "reason_code"),
    "feedback": ("event_id", "customer_id"),
}


# -------------------------------------------------------------------------- JSON


class _Object(list[tuple[str, Any]]):
    """A JSON object as its members in document order (duplicate names kept)."""


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _integer(text: str) -> int | float:
    # Beyond Python's digit limit an integer can only be out of every range.
    return int(text) if len(text) < 4000 else float(text)


_JSON = json.JSONDecoder(object_pairs_hook=_Object, parse_constant=_constant, parse_int=_integer)
_WS = re.compile(r"[ \t\n\r]*")


def _skip(text: str, index: int) -> int:
    """Past the JSON whitespace at ``index``."""
    match = _WS.match(text, index)
    return index if match is None else match.end()


def _lone_surrogate(value: Any) -> bool:
    """Python's JSON reader accepts an unpaired ``\\ud800`` escape; JSON text cannot
    carry one in UTF-8, and the worker rejects it as malformed."""
    if isinstance(value, str):
        if value.isascii():
            return False
        try:
            value.encode()
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, list | tuple):
        return any(_lone_surrogate(item) for item in value)
    return False


def _parse(text: str) -> Any:
    """The whole document, or Invalid. Raises RecursionError for deep nesting."""
    try:
        value = _JSON.decode(text)
    except ValueError as exc:  # JSONDecodeError, a NaN/Infinity constant
        raise Invalid("malformed_json", str(exc)) from None
    if "\\u" in text and _lone_surrogate(value):
        raise Invalid("malformed_json", "unpaired UTF-16 surrogate escape")
    return value


_TRAILING: Final = "\x00trailing"  # not a member: text after the object


def _members(text: str, scalar_fields: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """The top-level members of a document that is not valid JSON as a whole, one
    at a time, so that an error in an earlier member is reported before a syntax
    error further on (the worker's decoder validates as it reads). A member of
    ``scalar_fields`` that opens an array or object is yielded as an empty list at
    once: the decoder rejects the type before reading the value. Text after the
    object is yielded last as ``_TRAILING``: the decoder checks the whole object
    (required fields, cross-field rules) before it looks past it."""
    scalars = set(scalar_fields)
    end = len(text)
    index = _skip(text, 0)
    if index == end:
        raise Invalid("malformed_json", "empty document")
    if text[index] != "{":
        if text[index] == "[":
            raise Invalid("not_an_object", "expected an object, got an array")
        value, after = _value(text, index)
        if type(value) in (int, float) and _number_goes_on(text, index, after):
            raise Invalid("malformed_json", "invalid number")
        raise _not_an_object(value)
    index = _skip(text, index + 1)
    if text[index : index + 1] == "}":
        index += 1
    else:
        while True:
            if text[index : index + 1] != '"':
                raise Invalid("malformed_json", f"expected a member name at {index}")
            try:
                name, index = json.decoder.scanstring(text, index + 1)  # type: ignore[attr-defined]
            except ValueError as exc:
                raise Invalid("malformed_json", str(exc)) from None
            if _lone_surrogate(name):
                raise Invalid("malformed_json", "unpaired UTF-16 surrogate escape")
            index = _skip(text, index)
            if text[index : index + 1] != ":":
                raise Invalid("malformed_json", f"expected ':' at {index}")
            index = _skip(text, index + 1)
            if name in scalars and text[index : index + 1] in ("[", "{"):
                yield name, []
            value, after = _value(text, index)
            if type(value) in (int, float) and _number_goes_on(text, index, after):
                raise Invalid("malformed_json", "invalid number")
            index = after
            yield name, value
            index = _skip(text, index)
            separator = text[index : index + 1]
            index = _skip(text, index + 1)
            if separator == "}":
                break
            if separator != ",":
                raise Invalid("malformed_json", f"expected ',' or '}}' at {index}")
    if _skip(text, index) != end:
        yield _TRAILING, None


def _not_an_object(document: Any) -> Invalid:
    if type(document) in (int, float):
        try:
            if abs(float(document)) == float("inf"):
                raise OverflowError
        except OverflowError:
            # A number beyond the float range is out of range before it is anything.
            return Invalid("invalid_field", "number out of range")
    kind = "an array" if isinstance(document, list) else type(document).__name__
    return Invalid("not_an_object", f"expected an object, got {kind}")


def _number_goes_on(text: str, start: int, end: int) -> bool:
    """Whether the number read from ``text[start:end]`` is followed by what a JSON
    reader takes as more of it (``01``, ``1.``, ``1e``): an invalid number, reported
    before the value is validated. Python's reader just stops before such a tail."""
    tail = text[end : end + 1]
    number = text[start:end].lower()
    if tail == ".":
        return "." not in number and "e" not in number
    if tail in ("e", "E"):
        return "e" not in number
    return tail != "" and tail in "0123456789"


def _value(text: str, index: int) -> tuple[Any, int]:
    try:
        value, after = _JSON.raw_decode(text, index)
    except ValueError as exc:
        raise Invalid("malformed_json", str(exc)) from None
    if "\\u" in text[index:after] and _lone_surrogate(value):
        raise Invalid("malformed_json", "unpaired UTF-16 surrogate escape")
    return value, after


_FAILED: Final = object()  # a document that did not parse as a whole


def _try_parse(text: str) -> Any:
    try:
        return _parse(text)
    except (Invalid, RecursionError):
        return _FAILED


def _object_members(
    text: str, scalar_fields: Iterable[str], document: Any = None
) -> Iterator[tuple[str, Any]]:
    """Members in document order; Invalid for a document that is not an object.
    ``document`` is ``text`` already parsed (or _FAILED), if it was."""
    if document is None:
        document = _try_parse(text)
    if document is _FAILED:
        yield from _members(text, scalar_fields)  # finds which error comes first
        return
    if not isinstance(document, _Object):
        raise _not_an_object(document)
    yield from document


# ---------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Record:
    """One input line as a replay publishes it: to its event type's topic, keyed by
    the customer id; a line that cannot be routed goes to the purchases topic
    without a key (and is dead-lettered there)."""

    type: str
    key: bytes | None
    value: bytes
    at: int | None  # the routing time; None when it cannot be read


def route(line: bytes, document: Any = None) -> Record:
    """Where a replay publishes ``line`` (``document``: the line parsed, if it was)."""
    if document is None:
        document = _try_parse(line.decode("utf-8", "surrogateescape"))
    head: dict[str, str | None] = {}
    if not isinstance(document, _Object):
        return Record("purchase", None, line, None)
    for name, value in document:
        if name in ("type", "customer_id", "occurred_at"):
            if value is not None and (not isinstance(value, str) or _lone_surrogate(value)):
                return Record("purchase", None, line, None)
            head[name] = value
    customer, moment, kind = head.get("customer_id"), head.get("occurred_at"), head.get("type")
    key = customer.encode() if customer else None
    at = None if moment is None else lenient_time(moment)
    return Record(kind if kind in KINDS else "purchase", key, line, at)


def validate(
    kind: str,
    key: bytes | None,
    value: bytes,
    max_bytes: int = MAX_EVENT_BYTES,
    document: Any = None,
) -> Event:
    """The record as a valid event of type ``kind``, or Invalid with the worker's
    reason (``document``: the value parsed, if it was)."""
    if len(value) > max_bytes:
        raise Invalid("too_large", f"{len(value)} bytes")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid("not_utf8", f"invalid UTF-8 at byte {exc.start}") from None
    checks = FIELDS[kind]
    got: dict[str, Any] = {}
    trailing = False
    try:
        if isinstance(document, _Object):
            members: Iterable[tuple[str, Any]] = document
        else:
            members = _object_members(text, checks, document)
        for name, item in members:
            if name == _TRAILING:
                trailing = True
            elif name == "type":
                if item != kind or not isinstance(item, str):
                    raise Invalid("wrong_type", f"a {item!r:.40} record on the {kind} topic")
            elif name in checks:
                got[name] = checks[name](item)
    except RecursionError:
        raise Invalid("too_deep", "JSON nested too deeply") from None
    for name in REQUIRED[kind]:
        if name not in got:
            raise Invalid("missing_field", f"no {name}")
    for name in PRINTABLE[kind]:
        if got.get(name) is not None and not got[name].isprintable():
            raise Invalid("invalid_field", f"control characters in {name}")
    _rules(kind, got)
    if trailing:
        raise Invalid("malformed_json", "trailing characters")
    if not MIN_AT <= got["occurred_at"] < MAX_AT:
        raise Invalid("invalid_field", "occurred_at outside 1900-01-01 to 3000-01-01")
    if key is None or key != got["customer_id"].encode():
        raise Invalid("key_mismatch", "the message key is not the customer id")
    return _event(kind, got)


def _rules(kind: str, got: dict[str, Any]) -> None:
    """Rules that span fields or go beyond a type and a range."""
    currency = got.get("currency")
    if currency is not None and not (
        currency.isascii() and currency.isalpha() and currency.isupper()
    ):
        raise Invalid("invalid_field", f"currency {currency!r} is not an ISO 4217 code")
    if kind == "feedback":
        score = got.get("score")
        if got["kind"] == "nps" and score is None:
            raise Invalid("invalid_field", "nps feedback needs a score")
        if got["kind"] == "csat" and (score is None or not 1 <= score <= 5):
            raise Invalid("invalid_field", "csat feedback needs a score from 1 to 5")
        if got["kind"] == "support" and got.get("outcome") is None:
            raise Invalid("invalid_field", "support feedback needs an outcome")


def _event(kind: str, got: dict[str, Any]) -> Event:
    get = got.get
    amount, cost, fee = get("amount"), get("cost_to_serve"), get("monthly_fee")
    return Event(
        kind,
        got["event_id"],
        got["customer_id"],
        got["occurred_at"],
        id_hash(got["event_id"]),
        0 if amount is None else money(amount),
        None if cost is None else money(cost),
        None if fee is None else money(fee),
        get("segment"),
        get("plan"),
        get("channel"),
        get("reason_code"),
        get("kind"),
        get("score"),
        get("outcome"),
    )


def read_lines(path: Path, fmt: str = "jsonl") -> Iterator[bytes]:
    """The records of an input file as the bytes a replay publishes."""
    if fmt == "cdnow":
        yield from _cdnow(path)
        return
    with path.open("rb") as handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield line


def _cdnow(path: Path) -> Iterator[bytes]:
    """CDNOW_master.txt rows (``customer yyyymmdd cds dollars``) as purchases; the
    event id is the line number, so two identical rows are two purchases."""
    with path.open("r", encoding="ascii") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts or parts[0] == "customer_id":
                continue
            if len(parts) != 4 or len(parts[1]) != 8 or not parts[1].isdigit():
                raise ValueError(f"CDNOW line {number}: {line!r}")
            customer, day, quantity, amount = parts
            value = float(amount)
            body = {
                "type": "purchase",
                "event_id": f"cdnow-{number}",
                "customer_id": customer,
                "occurred_at": f"{day[:4]}-{day[4:6]}-{day[6:]}T00:00:00Z",
                "amount": value if value - value == 0 else None,  # inf and NaN: null
                "quantity": int(quantity),
                "currency": "USD",
            }
            yield json.dumps(body, separators=(",", ":")).encode()


@dataclass
class Loaded:
    """The valid, distinct events of an input and how every record was counted."""

    events: list[Event]
    consumed: int = 0
    valid: int = 0
    duplicates: int = 0
    skipped: int = 0  # dated at or after as_of: a replay does not publish them
    rejected: Counter[str] = field(default_factory=Counter)


def load(
    lines: Iterable[bytes],
    as_of: int | None = None,
    *,
    now: int | None = None,
    max_event_bytes: int = MAX_EVENT_BYTES,
) -> Loaded:
    """Route, cut at ``as_of``, validate and de-duplicate, as the pipeline does.

    ``now`` (default: the wall clock) bounds event times: more than a day ahead of
    it is ``future_time``. Duplicates are by (customer id, event id): the engine
    remembers ids per customer; ids are unique per event by contract.
    """
    limit = (round(time.time() * SECOND) if now is None else now) + MAX_FUTURE
    loaded = Loaded(events=[])
    seen: set[tuple[str, str]] = set()
    for line in lines:
        document = _try_parse(line.decode("utf-8", "surrogateescape"))
        record = route(line, document)
        if as_of is not None and record.at is not None and record.at >= as_of:
            loaded.skipped += 1
            continue
        loaded.consumed += 1
        try:
            event = validate(record.type, record.key, line, max_event_bytes, document)
            if event.at > limit:
                raise Invalid("future_time", "more than a day ahead")
        except Invalid as rejected:
            loaded.rejected[rejected.reason] += 1
            continue
        identity = (event.customer_id, event.event_id)
        if identity in seen:
            loaded.duplicates += 1
            continue
        seen.add(identity)
        loaded.valid += 1
        loaded.events.append(event)
    return loaded


def events_from(lines: Iterable[bytes]) -> list[Event]:
    """Valid distinct events of JSON lines that must all be valid (test inputs)."""
    loaded = load(lines)
    if loaded.rejected:
        raise ValueError(f"invalid test events: {dict(loaded.rejected)}")
    return loaded.events


# --------------------------------------------------------------- customer facts


def _latest(events: list[Event]) -> Event | None:
    """The event with the greatest (time, id hash): "latest by event time"."""
    return max(events, key=lambda e: (e.at, e.tie), default=None)


def _attr(event: Event | None, name: str) -> Any:
    return None if event is None else getattr(event, name)


def facts(events: list[Event]) -> dict[str, Any]:
    """One customer's documented state, from the full list of its events."""
    by: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by[event.type].append(event)
    signups, purchases, cancels = by["signup"], by["purchase"], by["cancellation"]
    feedback: dict[str | None, list[Event]] = defaultdict(list)
    for event in by["feedback"]:
        feedback[event.kind].append(event)
    profile = _latest(signups)
    fee = _latest([s for s in signups if s.fee is not None])
    cancel = _latest(cancels)
    last_cancel = max((c.at for c in cancels), default=None)
    days: dict[int, list[int]] = {}
    for p in purchases:
        day = days.setdefault(p.at // DAY, [0, 0, p.at])
        day[0] += 1
        day[1] += p.amount
        day[2] = max(day[2], p.at)
    return {
        "first_signup_at": min((s.at for s in signups), default=None),
        "last_signup_at": max((s.at for s in signups), default=None),
        "segment": _attr(profile, "segment"),
        "plan": _attr(profile, "plan"),
        "channel": _attr(profile, "channel"),
        "first_purchase_at": min((p.at for p in purchases), default=None),
        "last_purchase_at": max((p.at for p in purchases), default=None),
        "purchases": len(purchases),
        "spend": sum(p.amount for p in purchases),
        "cost_to_serve": sum(p.cost for p in purchases if p.cost is not None),
        "purchase_days": len(days),
        "days": [(day, *days[day]) for day in sorted(days)],
        "fee": _attr(fee, "fee"),
        "fee_at": _attr(fee, "at"),
        # A paid subscription runs: its latest fee-bearing signup is after any cancel.
        "subscribed": fee is not None
        and bool(fee.fee)
        and (last_cancel is None or last_cancel < fee.at),
        "last_cancel_at": last_cancel,
        "cancellations": len(cancels),
        "cancel_reason": _attr(cancel, "reason_code"),
        "cancelled_fee": _attr(cancel, "fee"),
        "nps": _attr(_latest(feedback["nps"]), "score"),
        "csat": _attr(_latest(feedback["csat"]), "score"),
        "support": _attr(_latest(feedback["support"]), "outcome"),
        "nps_responses": len(feedback["nps"]),
        "csat_responses": len(feedback["csat"]),
        "support_contacts": len(feedback["support"]),
        "events": len(events),
    }


def by_customer(events: Iterable[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        out[event.customer_id].append(event)
    return out


def customers(events: Iterable[Event]) -> dict[str, dict[str, Any]]:
    return {cid: facts(items) for cid, items in by_customer(events).items()}


def facts_of(state: Any) -> dict[str, Any]:
    """The same facts read off an engine ``CustomerState`` (attributes only)."""

    def latest(name: str) -> Any:
        mark = getattr(state, name)
        return None if mark is None else mark.value

    fee = state.fee
    return {
        "first_signup_at": state.first_signup_at,
        "last_signup_at": state.last_signup_at,
        "segment": state.segment,
        "plan": state.plan,
        "channel": state.channel,
        "first_purchase_at": state.first_purchase_at,
        "last_purchase_at": state.last_purchase_at,
        "purchases": state.purchases,
        "spend": state.spend,
        "cost_to_serve": state.cost_to_serve,
        "purchase_days": len(state.days),
        "days": [(d.day, d.count, d.spend, d.last) for d in state.days],
        "fee": None if fee is None else fee.value,
        "fee_at": None if fee is None else fee.at,
        "subscribed": state.subscribed,
        "last_cancel_at": state.last_cancel_at,
        "cancellations": state.cancellations,
        "cancel_reason": latest("cancel"),
        "cancelled_fee": state.cancelled_fee,
        "nps": latest("nps"),
        "csat": latest("csat"),
        "support": latest("support"),
        "nps_responses": state.nps_responses,
        "csat_responses": state.csat_responses,
        "support_contacts": state.support_contacts,
        "events": state.events,
    }


# ---------------------------------------------------------------- period figures


@dataclass
class Figures:
    """DESIGN section 6 for one period: sums over customers, money in micro-units."""

    active_start: int = 0
    active_end: int = 0
    new: int = 0
    retained: int = 0
    buyers: int = 0
    repeat_buyers: int = 0
    revenue: int = 0
    mrr_start: int = 0
    mrr_churned: int = 0
    nps_promoters: int = 0
    nps_passives: int = 0
    nps_detractors: int = 0
    csat_satisfied: int = 0
    csat_responses: int = 0
    cost_to_serve: int = 0  # sum of the period's purchases' cost_to_serve


FIGURES: Final = tuple(f.name for f in fields(Figures))


def figures_of(obj: Any) -> Figures:
    """An engine ``Figures`` (any object with these attributes) as the oracle's."""
    return Figures(**{name: getattr(obj, name) for name in FIGURES})


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else numerator / denominator


@dataclass
class Period:
    label: str
    start: int
    end: int
    figures: Figures

    def line(self) -> dict[str, Any]:
        """The period as the replay report states it, ratios as DESIGN section 6
        defines them (money in currency units, rounded to the micro-unit)."""
        f = self.figures
        churned = f.active_start - f.retained
        responses = f.nps_promoters + f.nps_passives + f.nps_detractors
        return {
            "period": self.label,
            "start": iso(self.start),
            "end": iso(self.end),
            "customers_start": f.active_start,
            "customers_new": f.new,
            "customers_end": f.active_end,
            "retention_rate": _ratio(f.active_end - f.new, f.active_start),
            "retained": f.retained,
            "churned": churned,
            "churn_rate": _ratio(churned, f.active_start),
            "buyers": f.buyers,
            "repeat_buyers": f.repeat_buyers,
            "repeat_purchase_rate": _ratio(f.repeat_buyers, f.buyers),
            "revenue": round(f.revenue / MONEY_UNIT, 6),
            "mrr_start": round(f.mrr_start / MONEY_UNIT, 6),
            "mrr_churned": round(f.mrr_churned / MONEY_UNIT, 6),
            "revenue_churn_rate": _ratio(f.mrr_churned, f.mrr_start),
            "nps": _ratio(100 * (f.nps_promoters - f.nps_detractors), responses),
            "csat": _ratio(f.csat_satisfied, f.csat_responses),
            "nps_responses": responses,
            "csat_responses": f.csat_responses,
            "cost_to_serve": round(f.cost_to_serve / MONEY_UNIT, 6),
            "margin": round((f.revenue - f.cost_to_serve) / MONEY_UNIT, 6),
        }


class _History:
    """One customer's events as sorted times, for "what was true at instant t"."""

    def __init__(self, events: list[Event]) -> None:
        self.acts = sorted(e.at for e in events if e.type in ("signup", "purchase"))
        self.cancels = sorted(e.at for e in events if e.type == "cancellation")
        fees = sorted(
            (e.at, e.tie, e.fee) for e in events if e.type == "signup" and e.fee is not None
        )
        self.fee_times = [at for at, _, _ in fees]
        self.fees = fees
        buys = sorted((e.at, e.amount) for e in events if e.type == "purchase")
        self.buy_times = [at for at, _ in buys]
        self.spent = [0]
        for _, amount in buys:
            self.spent.append(self.spent[-1] + amount)

    def active(self, t: int, window: int | None) -> bool:
        """Active at t: the latest activity L before t exists, L >= t - W, and the
        latest cancellation before t (if any) is before L."""
        i = bisect.bisect_left(self.acts, t)
        if i == 0:
            return False
        last = self.acts[i - 1]
        if window is not None and last < t - window:
            return False
        j = bisect.bisect_left(self.cancels, t)
        return j == 0 or self.cancels[j - 1] < last

    def fee_at(self, t: int) -> int:
        """Monthly fee of the subscription running at t: the latest fee-bearing
        signup before t, unless it is free or a cancellation came since."""
        i = bisect.bisect_left(self.fee_times, t)
        if i == 0 or not self.fees[i - 1][2]:
            return 0
        since = self.fees[i - 1][0]
        j = bisect.bisect_left(self.cancels, since)
        return 0 if j < len(self.cancels) and self.cancels[j] < t else self.fees[i - 1][2]

    def bought(self, start: int, end: int) -> tuple[int, int]:
        """Purchases in [start, end) and their sum."""
        i = bisect.bisect_left(self.buy_times, start)
        j = bisect.bisect_left(self.buy_times, end)
        return j - i, self.spent[j] - self.spent[i]

    def cancelled(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self.cancels, start)
        return i < len(self.cancels) and self.cancels[i] < end


def batch(events: list[Event], period: str, window: int | None, until: int) -> list[Period]:
    """DESIGN section 6 for every period from the one holding the first event to the
    last one ending by ``until``."""
    if not events:
        return []
    periods = empty_periods(period, min(e.at for e in events), until)
    for items in by_customer(events).values():
        add_customer(periods, _History(items), window)
    starts = [p.start for p in periods]
    for e in events:
        add_event(periods, starts, e)
    return periods


def empty_periods(period: str, first: int, until: int) -> list[Period]:
    """The periods from the one holding ``first`` to the last ending by ``until``."""
    periods: list[Period] = []
    start = period_start(period, first)
    while (end := next_start(period, start)) <= until:
        periods.append(Period(period_label(period, start), start, end, Figures()))
        start = end
    return periods


def add_customer(periods: list[Period], history: _History, window: int | None) -> None:
    """One customer's share of the figures that come from their history."""
    acquired = history.acts[0] if history.acts else None
    for p in periods:
        f = p.figures
        at_start, at_end = history.active(p.start, window), history.active(p.end, window)
        f.active_start += at_start
        f.active_end += at_end
        f.retained += at_start and at_end
        f.new += acquired is not None and p.start <= acquired < p.end
        count, spent = history.bought(p.start, p.end)
        f.buyers += count >= 1
        f.repeat_buyers += count >= 2
        f.revenue += spent
        fee = history.fee_at(p.start)
        f.mrr_start += fee
        f.mrr_churned += fee if history.cancelled(p.start, p.end) else 0


def add_event(periods: list[Period], starts: list[int], e: Event) -> None:
    """The figures counted per event: NPS and CSAT responses, cost to serve."""
    if e.type == "purchase":
        if e.cost is None:
            return
    elif e.type != "feedback" or e.score is None or e.kind == "support":
        return
    i = bisect.bisect_right(starts, e.at) - 1
    if i < 0 or e.at >= periods[i].end:
        return
    f = periods[i].figures
    if e.type == "purchase":
        f.cost_to_serve += e.cost or 0
    elif e.kind == "nps":
        f.nps_promoters += e.score >= 9
        f.nps_passives += 7 <= e.score <= 8
        f.nps_detractors += e.score <= 6
    else:
        f.csat_responses += 1
        f.csat_satisfied += e.score >= 4


def cohorts(events: list[Event]) -> dict[str, list[int]]:
    """Acquisition month x month offset: customers acquired then with a purchase in
    the month at that offset."""
    cells: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for items in by_customer(events).values():
        acts = [e.at for e in items if e.type in ("signup", "purchase")]
        if not acts:
            continue
        acquired = month_index(min(acts))
        for offset in {month_index(e.at) - acquired for e in items if e.type == "purchase"}:
            cells[acquired][offset] += 1
    return {
        month_label(acquired): [row.get(k, 0) for k in range(max(row) + 1)]
        for acquired, row in sorted(cells.items())
    }


def rolling(events: list[Event], window: int | None, day: int) -> dict[str, Any]:
    """Active customers on ``day`` (activity window reaching its start), NPS/CSAT over
    the 90 days up to it, and customers by subscription status after all events."""
    start = day * DAY
    active = 0
    statuses: dict[str, int] = defaultdict(int)
    for items in by_customer(events).values():
        acts = [e.at for e in items if e.type in ("signup", "purchase")]
        cancels = [e.at for e in items if e.type == "cancellation"]
        if acts:
            last = max(acts)
            reaches = window is None or last + window >= start
            active += reaches and (not cancels or max(cancels) < last)
        fee = _latest([e for e in items if e.type == "signup" and e.fee is not None])
        if fee is not None and fee.fee:
            cancelled = any(c >= fee.at for c in cancels)
            statuses["cancelled" if cancelled else "subscribed"] += 1
        else:
            statuses["none"] += 1
    feedback = [0] * 5
    for e in events:
        if e.type == "feedback" and e.score is not None and day - ROLLING_DAYS < e.at // DAY <= day:
            if e.kind == "nps":
                feedback[0 if e.score >= 9 else 1 if e.score >= 7 else 2] += 1
            elif e.kind == "csat":
                feedback[3] += e.score >= 4
                feedback[4] += 1
    return {"active": active, "feedback": feedback, "statuses": dict(statuses)}


# ----------------------------------------------------------------- the whole file


@dataclass
class Expected:
    """What a replay of an input file up to ``as_of`` must end with."""

    as_of: int
    period: str
    window: int | None
    customers: dict[str, dict[str, Any]]
    periods: list[Period]
    cohorts: dict[str, list[int]]
    #: consumed (published to the workers), valid, deadletter, duplicates, skipped.
    counts: dict[str, int]
    rejected_by_reason: dict[str, int]
    events: list[Event] = field(repr=False, default_factory=list)

    def compare_periods(self, partitions: Iterable[Any]) -> list[str]:
        """Differences from engine partition records (``PartitionState``: closed
        periods and cohorts, summed over partitions as the report does)."""
        sums: dict[int, Figures] = {}
        labels: dict[int, tuple[str, int]] = {}
        cells: Counter[tuple[int, int]] = Counter()
        first: int | None = None
        for part in partitions:
            book = part.periods
            if book.first_event_at is not None and (first is None or book.first_event_at < first):
                first = book.first_event_at
            for p in book.closed:
                total = sums.setdefault(p.start, Figures())
                for name in FIGURES:
                    setattr(total, name, getattr(total, name) + getattr(p.figures, name))
                labels[p.start] = (p.label, p.end)
            for acquired, row in book.cohorts.items():
                for offset, count in row.items():
                    cells[acquired, offset] += count
        out: list[str] = []
        if self.periods and (
            first is None or period_start(self.period, first) != self.periods[0].start
        ):
            out.append(
                f"first period: engine {first and iso(first)}, oracle {self.periods[0].label}"
            )
        low = self.periods[0].start if self.periods else self.as_of
        got = {s: f for s, f in sums.items() if s >= low and labels[s][1] <= self.as_of}
        for p in self.periods:
            engine = got.pop(p.start, None)
            if engine is None:
                out.append(f"{p.label}: not closed by the engine")
            elif labels[p.start] != (p.label, p.end):
                out.append(f"{p.label}: engine label/end {labels[p.start]}")
            elif engine != p.figures:
                diff = {n: (getattr(engine, n), getattr(p.figures, n)) for n in FIGURES
                        if getattr(engine, n) != getattr(p.figures, n)}  # fmt: skip
                out.append(f"{p.label}: (engine, oracle) {diff}")
        out.extend(f"{iso(s)}: an engine period the oracle does not have" for s in got)
        want = Counter(
            {(a, k): n for a, row in self.cohort_cells().items() for k, n in row.items()}
        )
        engine_cells = Counter({cell: n for cell, n in cells.items() if n})
        if engine_cells != want:
            keys = sorted(set(engine_cells) | set(want))
            diff = {f"{month_label(a)}+{k}": (engine_cells[a, k], want[a, k]) for a, k in keys
                    if engine_cells[a, k] != want[a, k]}  # fmt: skip
            out.append(f"cohorts (engine, oracle): {diff}")
        return out

    def cohort_cells(self) -> dict[int, dict[int, int]]:
        out: dict[int, dict[int, int]] = {}
        for label, row in self.cohorts.items():
            year, month = label.split("-")
            out[int(year) * 12 + int(month) - 1] = {k: n for k, n in enumerate(row) if n}
        return out


def expected(
    path: Path,
    as_of: int,
    window_days: int | None = 90,
    period: str = "month",
    *,
    fmt: str = "jsonl",
    now: int | None = None,
    max_event_bytes: int = MAX_EVENT_BYTES,
) -> Expected:
    """Everything a replay of ``path`` up to ``as_of`` (microseconds) must end with:
    per-customer facts, the closed periods, the cohort matrix and the counts."""
    loaded = load(read_lines(Path(path), fmt), as_of, now=now, max_event_bytes=max_event_bytes)
    window = None if window_days is None else window_days * DAY
    events = loaded.events
    return Expected(
        as_of=as_of,
        period=period,
        window=window,
        customers=customers(events),
        periods=batch(events, period, window, as_of),
        cohorts=cohorts(events),
        counts={
            "consumed": loaded.consumed,
            "valid": loaded.valid,
            "deadletter": sum(loaded.rejected.values()),
            "duplicates": loaded.duplicates,
            "skipped": loaded.skipped,
        },
        rejected_by_reason=dict(loaded.rejected),
        events=events,
    )
