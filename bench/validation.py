"""Which validation library for the hot path: msgspec, pydantic or faust.Record?

Every input event is validated inside the agent, so validation cost is paid per
event. This measures the same rules (types, ranges, RFC 3339 with offset,
non-empty ids, kind-specific feedback fields, unknown fields ignored) in the
three candidates on one realistic mix of valid and invalid messages, and checks
that each accepts and rejects the same messages as our decoder. Figures depend on
the machine; compare the ratios.

    python -m bench.validation [--messages N]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import faust
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas import EventDecoder, Rejected

Validator = Callable[[str, bytes, bytes], bool]

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
Money = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]


class PydanticPurchase(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["purchase"] | None = None
    event_id: Id
    customer_id: Id
    occurred_at: Annotated[AwareDatetime, Field(strict=False)]
    amount: Money
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    order_id: Id | None = None
    cost_to_serve: Money | None = None


class PydanticFeedback(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["feedback"] | None = None
    event_id: Id
    customer_id: Id
    occurred_at: Annotated[AwareDatetime, Field(strict=False)]
    kind: Literal["nps", "csat", "support"]
    score: Annotated[int, Field(ge=0, le=10)] | None = None
    outcome: Literal["resolved", "unresolved", "bad"] | None = None
    comment: Annotated[str, Field(max_length=4096)] | None = None

    @model_validator(mode="after")
    def by_kind(self) -> PydanticFeedback:
        if self.kind == "nps" and self.score is None:
            raise ValueError("nps requires score")
        if self.kind == "csat" and (self.score is None or not 1 <= self.score <= 5):
            raise ValueError("csat requires score 1-5")
        if self.kind == "support" and self.outcome is None:
            raise ValueError("support requires outcome")
        return self


class FaustPurchase(faust.Record, validation=True, coerce=False):
    """faust.Record checks field presence and (with validation) declared types only:
    no ranges, patterns, timezone requirement or kind-specific rules."""

    event_id: str
    customer_id: str
    occurred_at: str
    amount: float


class FaustFeedback(faust.Record, validation=True, coerce=False):
    event_id: str
    customer_id: str
    occurred_at: str
    kind: str


def sample(rng: random.Random, n: int) -> list[tuple[str, bytes, bytes]]:
    """(event type, Kafka key, value): half purchases, half NPS, ~10% invalid."""
    out: list[tuple[str, bytes, bytes]] = []
    for i in range(n):
        when = datetime(2025, 1, 1 + i % 28, rng.randrange(24), tzinfo=None).isoformat() + "Z"
        base: dict[str, Any] = {
            "event_id": f"e{i}",
            "customer_id": f"c{i % 5000}",
            "occurred_at": when,
        }
        body: dict[str, Any]
        if rng.random() < 0.5:
            kind = "purchase"
            amount = round(rng.uniform(1, 300), 2)
            body = {**base, "type": kind, "amount": amount, "currency": "USD", "order_id": f"o{i}"}
        else:
            kind = "feedback"
            body = {**base, "type": kind, "kind": "nps", "score": rng.randint(0, 10)}
        roll = rng.random()
        if roll < 0.02:
            body.pop("event_id")
        elif roll < 0.04:
            body["occurred_at"] = when[:-1]  # no offset
        elif roll < 0.06 and kind == "purchase":
            body["amount"] = -body["amount"]
        elif roll < 0.08 and kind == "purchase":
            body["amount"] = str(body["amount"])
        elif roll < 0.10 and kind == "feedback":
            body["score"] = 11
        out.append((kind, base["customer_id"].encode(), json.dumps(body).encode()))
    return out


def msgspec_validator() -> Validator:
    """Our decoder as the worker runs it (size, UTF-8, schema and key checks)."""
    decode = EventDecoder().decode

    def check(kind: str, key: bytes, raw: bytes) -> bool:
        return not isinstance(decode(kind, key, raw), Rejected)  # type: ignore[arg-type]

    return check


def pydantic_validator() -> Validator:
    models = {"purchase": PydanticPurchase, "feedback": PydanticFeedback}

    def check(kind: str, key: bytes, raw: bytes) -> bool:
        try:
            models[kind].model_validate_json(raw)
        except ValidationError:
            return False
        return True

    return check


def faust_validator() -> Validator:
    models = {"purchase": FaustPurchase, "feedback": FaustFeedback}

    def check(kind: str, key: bytes, raw: bytes) -> bool:
        try:
            record = models[kind].from_data(json.loads(raw))
            record.validate_or_raise()
        except Exception:
            return False
        return True

    return check


def measure(
    check: Callable[[str, bytes], bool], data: list[tuple[str, bytes]]
) -> tuple[float, list[bool]]:
    best = float("inf")
    verdicts: list[bool] = []
    for _ in range(5):
        started = time.perf_counter()
        verdicts = [check(kind, key, raw) for kind, key, raw in data]
        best = min(best, time.perf_counter() - started)
    return best, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    data = sample(random.Random(1), args.messages)
    results = {}
    for name, factory in (("msgspec", msgspec_validator), ("pydantic", pydantic_validator),
                          ("faust.Record", faust_validator)):  # fmt: skip
        results[name] = measure(factory(), data)
    base_seconds, base_verdicts = results["msgspec"]
    print(f"validation of {len(data):,} messages "
          f"({sum(base_verdicts):,} valid by our rules), best of 5 runs")  # fmt: skip
    print(f"{'library':<14}{'µs/msg':>9}{'msgs/s':>12}{'x msgspec time':>16}{'disagreements':>15}")
    for name, (seconds, verdicts) in results.items():
        differ = sum(a != b for a, b in zip(verdicts, base_verdicts, strict=True))
        print(f"{name:<14}{seconds / len(data) * 1e6:>9.2f}{len(data) / seconds:>12,.0f}"
              f"{seconds / base_seconds:>16.1f}{differ:>15,}")  # fmt: skip
    print("faust.Record cannot express ranges, patterns, a required UTC offset or per-kind rules;")
    print("its disagreements are the invalid messages it accepts.")


if __name__ == "__main__":
    main()
