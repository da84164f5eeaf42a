"""Which validation library for the hot path: msgspec, pydantic v2 or faust.Record?

The worker validates every input event before anything else touches it, so the
validation cost is paid once per event on the hot path and bounds throughput per
partition. This benchmark restates the rules of ``schemas/events.py`` for purchase
and feedback events in pydantic v2 and in faust.Record, runs all three on one
realistic mix (90% valid events of ~180 bytes, 10% invalid of many kinds), and
checks that each accepts and rejects exactly what ``EventDecoder`` does.

Figures are machine-dependent: compare the ratios, not the absolute numbers.

    python -m bench.validation [--messages N]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import faust
from faust.models.fields import FloatField, IntegerField, StringField
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticError

from schemas.decode import DEFAULT_MAX_EVENT_BYTES, EventDecoder, Rejected

Message = tuple[str, bytes, bytes, str]  # event type, key, value, label ("ok" or the fault)
Check = Callable[[str, bytes, bytes], bool]


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("control characters")
    return value


def _currency(value: str) -> str:
    if not (value.isascii() and value.isalpha() and value.isupper()):
        raise ValueError("not an ISO 4217 code")
    return value


def _feedback_rules(kind: str, score: int | None, outcome: str | None) -> None:
    if kind == "nps" and score is None:
        raise ValueError("nps feedback requires score")
    if kind == "csat" and (score is None or not 1 <= score <= 5):
        raise ValueError("csat feedback requires score 1-5")
    if kind == "support" and outcome is None:
        raise ValueError("support feedback requires outcome")


# --- pydantic v2: strict types, unknown fields ignored ------------------------------------------
Id = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_printable)]
Money = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
Currency = Annotated[str, Field(min_length=3, max_length=3), AfterValidator(_currency)]
_STRICT = ConfigDict(strict=True, extra="ignore", frozen=True)


class PydanticPurchase(BaseModel):
    model_config = _STRICT
    type: Literal["purchase"] = "purchase"
    event_id: Id
    customer_id: Id
    occurred_at: AwareDatetime
    amount: Money
    currency: Currency | None = None
    order_id: Id | None = None
    cost_to_serve: Money | None = None


class PydanticFeedback(BaseModel):
    model_config = _STRICT
    type: Literal["feedback"] = "feedback"
    event_id: Id
    customer_id: Id
    occurred_at: AwareDatetime
    kind: Literal["nps", "csat", "support"]
    score: Annotated[int, Field(ge=0, le=10)] | None = None
    outcome: Literal["resolved", "unresolved", "bad"] | None = None
    comment: Annotated[str, Field(max_length=4096)] | None = None

    @model_validator(mode="after")
    def _by_kind(self) -> PydanticFeedback:
        _feedback_rules(self.kind, self.score, self.outcome)
        return self


# --- faust.Record: its own field declarations plus the same __post_init__ hooks as the structs ---
FAUST_GAPS = (
    "strict JSON types (coerces '12.5' to 12.5 and 5 to '5')",
    "a required UTC offset (naive timestamps accepted)",
    "a lower bound of 0 (NumberField skips falsy min_value)",
    "Literal values (type tag, kind, outcome)",
)


class FaustEvent(faust.Record, abstract=True, validation=True, isodates=True, coerce=False):
    event_id: str = StringField(min_length=1, max_length=128)
    customer_id: str = StringField(min_length=1, max_length=128)
    occurred_at: datetime

    def __post_init__(self) -> None:  # runs before validate_or_raise(), on coerced values
        for value in (self.event_id, self.customer_id):
            _printable(value)


class FaustPurchase(FaustEvent, validation=True, isodates=True, coerce=False):
    amount: float = FloatField(min_value=0, max_value=10**12)
    currency: str | None = StringField(min_length=3, max_length=3, required=False, default=None)
    order_id: str | None = StringField(min_length=1, max_length=128, required=False, default=None)
    cost_to_serve: float | None = FloatField(max_value=10**12, required=False, default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.order_id is not None:
            _printable(self.order_id)
        if self.currency is not None:
            _currency(self.currency)


class FaustFeedback(FaustEvent, validation=True, isodates=True, coerce=False):
    kind: str
    score: int | None = IntegerField(min_value=0, max_value=10, required=False, default=None)
    outcome: str | None = None
    comment: str | None = StringField(max_length=4096, required=False, default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        _feedback_rules(self.kind, self.score, self.outcome)


# --- the workload --------------------------------------------------------------------------------
Fault = Callable[[dict[str, Any]], object]
COMMON_FAULTS: dict[str, Fault] = {
    "missing field": lambda b: b.pop("event_id"),
    "naive timestamp": lambda b: b.update(occurred_at=b["occurred_at"][:-6]),
    "id with control char": lambda b: b.update(event_id=b["event_id"] + "\x07"),
    "empty id": lambda b: b.update(event_id=""),
    "id as number": lambda b: b.update(event_id=12345),
    "wrong type tag": lambda b: b.update(type="refund"),
}
PURCHASE_FAULTS: dict[str, Fault] = {
    "negative amount": lambda b: b.update(amount=-5.0),
    "amount as string": lambda b: b.update(amount=str(b["amount"])),
    "amount above 1e12": lambda b: b.update(amount=2e12),
    "lowercase currency": lambda b: b.update(currency="usd"),
}
FEEDBACK_FAULTS: dict[str, Fault] = {
    "score 11": lambda b: b.update(kind="nps", score=11),
    "score as string": lambda b: b.update(kind="nps", score="7"),
    "score as bool": lambda b: b.update(kind="nps", score=True),
    "csat score 0": lambda b: b.update(kind="csat", score=0),
    "support without outcome": lambda b: (b.update(kind="support"), b.pop("outcome", None)),
    "unknown kind": lambda b: b.update(kind="email"),
}
FAULTS = {"purchase": COMMON_FAULTS | PURCHASE_FAULTS, "feedback": COMMON_FAULTS | FEEDBACK_FAULTS}


def workload(rng: random.Random, n: int) -> list[Message]:
    """Half purchases, half feedback (nps/csat/support); 10% carry one fault."""
    out: list[Message] = []
    for i in range(n):
        cid = f"cust-{rng.randrange(100_000):06d}"
        body: dict[str, Any] = {
            "event_id": f"evt-{i:010d}",
            "customer_id": cid,
            "occurred_at": f"2025-03-{1 + i % 28:02d}T{rng.randrange(24):02d}:26:53.589+00:00",
        }
        event_type = "purchase" if rng.random() < 0.5 else "feedback"
        if event_type == "purchase":
            body |= {"type": "purchase", "amount": round(rng.uniform(0, 300), 2)}
            body |= {"currency": "USD", "order_id": f"ord-{i:08d}"}
        else:
            kind = rng.choice(["nps", "csat", "support"])
            body |= {"type": "feedback", "kind": kind, "comment": "slow checkout"}
            if kind == "support":
                body["outcome"] = rng.choice(["resolved", "unresolved", "bad"])
            else:
                body["score"] = rng.randint(0, 10) if kind == "nps" else rng.randint(1, 5)
        label, key = "ok", cid.encode()
        if rng.random() < 0.10:
            label = rng.choice([*FAULTS[event_type], "malformed JSON", "key mismatch"])
            if label == "key mismatch":
                key = b"cust-other"
            elif label != "malformed JSON":
                FAULTS[event_type][label](body)
        raw = json.dumps(body, separators=(",", ":")).encode()
        out.append((event_type, key, raw[:-9] if label == "malformed JSON" else raw, label))
    return out


# --- the three checks, each also enforcing the decoder's size and key rules ----------------------
def msgspec_check() -> Check:
    decode = EventDecoder().decode
    return lambda kind, key, raw: not isinstance(decode(kind, key, raw), Rejected)  # type: ignore[arg-type]


def guarded(parse: Callable[[str, bytes], Any], errors: tuple[type[Exception], ...]) -> Check:
    """Add the decoder's size and key rules around a library's parse-and-validate call."""

    def check(kind: str, key: bytes, raw: bytes) -> bool:
        if len(raw) > DEFAULT_MAX_EVENT_BYTES:
            return False
        try:
            event = parse(kind, raw)
        except errors:
            return False
        return bool(key == event.customer_id.encode())

    return check


PYDANTIC: dict[str, type[BaseModel]] = {"purchase": PydanticPurchase, "feedback": PydanticFeedback}
FAUST: dict[str, type[FaustEvent]] = {"purchase": FaustPurchase, "feedback": FaustFeedback}
FAUST_ERRORS = (ValueError, TypeError, AttributeError)
CHECKS: dict[str, Callable[[], Check]] = {
    "msgspec": msgspec_check,
    "pydantic v2": lambda: guarded(
        lambda kind, raw: PYDANTIC[kind].model_validate_json(raw), (PydanticError,)
    ),
    # faust's ValidationError is a ValueError; a missing field is a TypeError from __init__;
    # a null id reaches __post_init__ as None (AttributeError).
    "faust.Record": lambda: guarded(
        lambda kind, raw: FAUST[kind].loads(raw, serializer="json"), FAUST_ERRORS
    ),
}


def best_of(check: Check, data: list[Message], repeat: int = 5) -> tuple[float, list[bool]]:
    best, verdicts = float("inf"), []
    for _ in range(repeat):
        started = time.perf_counter()
        verdicts = [check(kind, key, raw) for kind, key, raw, _ in data]
        best = min(best, time.perf_counter() - started)
    return best, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    data = workload(random.Random(7), args.messages)
    truth = best_of(msgspec_check(), data, repeat=1)[1]
    valid = [m for m, ok in zip(data, truth, strict=True) if ok]
    invalid = [m for m, ok in zip(data, truth, strict=True) if not ok]
    mean_size = sum(len(m[2]) for m in valid) / len(valid)
    print(f"{len(data):,} messages: {len(valid):,} valid (mean {mean_size:.0f} bytes), "
          f"{len(invalid):,} invalid; best of 5 runs; figures are machine-dependent")  # fmt: skip
    rows: dict[str, tuple[float, float, float]] = {}
    disagreements: dict[str, Counter[str]] = {}
    for name, factory in CHECKS.items():
        check = factory()
        mix_s, verdicts = best_of(check, data)
        ok_s, bad_s = best_of(check, valid)[0], best_of(check, invalid)[0]
        rows[name] = (ok_s / len(valid) * 1e6, bad_s / len(invalid) * 1e6, len(data) / mix_s)
        disagreements[name] = Counter(
            f"{m[3]} {'accepted' if got else 'rejected'}"
            for m, got, want in zip(data, verdicts, truth, strict=True)
            if got != want
        )
    base = rows["msgspec"]
    print(f"\n{'library':<14}{'valid µs/msg':>20}{'invalid µs/msg':>20}{'mix msgs/s':>22}"
          f"{'disagreements':>15}")  # fmt: skip
    for name, (ok_us, bad_us, rate) in rows.items():
        print(f"{name:<14}{ok_us:>11.2f} ({ok_us / base[0]:4.1f}x){bad_us:>11.2f} "
              f"({bad_us / base[1]:4.1f}x){rate:>13,.0f} ({rate / base[2]:4.2f}x)"
              f"{disagreements[name].total():>15,}")  # fmt: skip
    for name, counts in disagreements.items():
        if counts:
            detail = ", ".join(f"{label} x{n}" for label, n in counts.most_common())
            print(f"\n{name} differs from msgspec on: {detail}")
    print("faust.Record cannot enforce: " + "; ".join(FAUST_GAPS) + ".")
    print("Its figures therefore cover fewer checks than the other two.")


if __name__ == "__main__":
    main()
