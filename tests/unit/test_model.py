"""BG/NBD and Gamma-Gamma agree with ``lifetimes`` on CDNOW; model files and fits fail clearly.

The CDNOW summaries come from the project's own reading and folding of the file
(``streams.fitting``); ``lifetimes`` is then fitted on those same numbers, so the
comparison is of the models, not of two summaries.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import lifetimes
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from retention.fit import FitError, bgnbd_log_likelihood, fit_bgnbd, fit_gamma_gamma, fit_model
from retention.model import (
    BgNbd,
    GammaGamma,
    Model,
    ModelError,
    Purchasing,
    clv,
    dump_model,
    expected_purchases,
    expected_spend,
    load_model,
    p_alive,
    p_alive_array,
)
from retention.timeutil import parse_time
from streams.cli import app
from streams.fitting import summarise_file
from streams.inputs import cdnow_event

CDNOW = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_master.txt"
AS_OF = parse_time("1997-10-01T00:00:00Z")


class Fitted:
    """Everything the module compares, computed once (the fits take seconds)."""

    def __init__(self) -> None:
        rows = np.array(summarise_file(CDNOW, "cdnow", AS_OF), dtype=np.float64)
        self.x, self.t_x, self.T, self.spend = rows.T
        self.ours, self.loglik = fit_bgnbd(self.x, self.t_x, self.T)
        spenders = (self.x > 0) & (self.spend > 0)
        self.gg = fit_gamma_gamma(self.x, self.spend)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.bgf = lifetimes.BetaGeoFitter(penalizer_coef=0.0).fit(self.x, self.t_x, self.T)
            self.ggf = lifetimes.GammaGammaFitter(penalizer_coef=0.0).fit(
                self.x[spenders], self.spend[spenders]
            )
        self.theirs = BgNbd(**{k: float(v) for k, v in self.bgf.params_.items()})
        self.their_gg = GammaGamma(**{k: float(v) for k, v in self.ggf.params_.items()})


@pytest.fixture(scope="module")
def fitted() -> Fitted:
    return Fitted()


def _relative(a: float, b: float) -> float:
    return abs(a / b - 1)


# --- (a) the fit -------------------------------------------------------------------


def test_summaries_are_the_cdnow_calibration_period(fitted: Fitted) -> None:
    # 23,570 customers, all acquired in the first quarter of 1997.
    assert len(fitted.x) == 23_570
    assert int((fitted.x > 0).sum()) == 9_451
    assert np.all(fitted.t_x <= fitted.T) and fitted.T.min() > 0


def test_bgnbd_fit_matches_lifetimes(fitted: Fitted) -> None:
    for name in ("r", "alpha", "a", "b"):
        assert _relative(getattr(fitted.ours, name), getattr(fitted.theirs, name)) < 5e-3, name
    # Ours is at least as good a maximum as lifetimes' (same data, same likelihood).
    ones = np.ones_like(fitted.x)
    theirs = bgnbd_log_likelihood(fitted.theirs, fitted.x, fitted.t_x, fitted.T, ones)
    assert fitted.loglik >= theirs - 1e-6


def test_gamma_gamma_fit_matches_lifetimes(fitted: Fitted) -> None:
    for name in ("p", "q", "v"):
        assert _relative(getattr(fitted.gg, name), getattr(fitted.their_gg, name)) < 5e-3, name


def test_fit_model_records_what_it_was_fitted_on(fitted: Fitted) -> None:
    rows = zip(fitted.x.astype(int), fitted.t_x, fitted.T, fitted.spend, strict=True)
    model = fit_model(rows, "1997-10-01T00:00:00Z")
    assert model.bgnbd == fitted.ours and model.gamma_gamma == fitted.gg
    assert (model.customers, model.repeat_customers) == (23_570, 9_451)
    assert model.spend_customers == int(((fitted.x > 0) & (fitted.spend > 0)).sum())
    assert model.log_likelihood == pytest.approx(fitted.loglik)


# --- (b) per-customer figures with the same parameters -----------------------------


def test_p_alive_and_expected_purchases_match_lifetimes_for_every_customer(
    fitted: Fitted,
) -> None:
    m, bgf = fitted.theirs, fitted.bgf
    x, t_x, T = fitted.x, fitted.t_x, fitted.T
    alive = np.array([p_alive(m, int(a), b, c) for a, b, c in zip(x, t_x, T, strict=True)])
    expected = np.array(
        [expected_purchases(m, 90.0, int(a), b, c) for a, b, c in zip(x, t_x, T, strict=True)]
    )
    their_alive = bgf.conditional_probability_alive(x, t_x, T)
    their_expected = bgf.conditional_expected_number_of_purchases_up_to_time(90, x, t_x, T)
    assert np.all(np.isfinite(their_expected))
    assert np.max(np.abs(alive - their_alive)) < 1e-6
    assert np.max(np.abs(expected - their_expected)) < 1e-6
    assert np.max(np.abs(p_alive_array(m, x, t_x, T) - their_alive)) < 1e-6


def test_expected_spend_and_clv_match_lifetimes(fitted: Fitted) -> None:
    m, g = fitted.theirs, fitted.their_gg
    rng = np.random.default_rng(7)
    sample = np.concatenate(
        [
            rng.choice(np.flatnonzero(fitted.x > 0), 150, replace=False),
            rng.choice(np.flatnonzero(fitted.x == 0), 50, replace=False),
            [int(np.argmax(fitted.x)), int(np.argmax(fitted.spend))],
        ]
    )
    x, t_x, T, spend = (col[sample] for col in (fitted.x, fitted.t_x, fitted.T, fitted.spend))
    ours_spend = [expected_spend(g, int(a), s) for a, s in zip(x, spend, strict=True)]
    their_spend = fitted.ggf.conditional_expected_average_profit(x, spend)
    np.testing.assert_allclose(ours_spend, their_spend, rtol=1e-6)
    population = g.p * g.v / (g.q - 1)
    assert expected_spend(g, 0, 123.0) == pytest.approx(population, rel=1e-12)
    ours_clv = [clv(m, g, int(a), b, c, s) for a, b, c, s in zip(x, t_x, T, spend, strict=True)]
    series = [pd.Series(col) for col in (x, t_x, T, spend)]
    their_clv = fitted.ggf.customer_lifetime_value(
        fitted.bgf, *series, time=12, discount_rate=0.01, freq="D"
    )
    np.testing.assert_allclose(ours_clv, their_clv.to_numpy(), rtol=1e-6)


# --- (c) numerical stability -------------------------------------------------------

EXTREME_MODELS = [
    BgNbd(r=0.25, alpha=33.0, a=0.75, b=2.2),
    BgNbd(r=0.25, alpha=1e12, a=0.75, b=2.2),
    BgNbd(r=0.25, alpha=1e-8, a=0.75, b=2.2),
    BgNbd(r=50.0, alpha=1e-3, a=1e-3, b=1e3),
    BgNbd(r=1e-3, alpha=1e4, a=5.0, b=1e-2),
]
EXTREME_HISTORIES = [
    (200, 0.0, 10_000.0),
    (200, 10_000.0, 10_000.0),
    (0, 0.0, 10_000.0),
    (1, 0.0, 1e-9),
    (5_000, 1.0, 1e7),
]


@pytest.mark.parametrize("m", EXTREME_MODELS)
@pytest.mark.parametrize(("x", "t_x", "T"), EXTREME_HISTORIES)
def test_extreme_inputs_stay_finite(m: BgNbd, x: int, t_x: float, T: float) -> None:
    alive = p_alive(m, x, t_x, T)
    assert math.isfinite(alive) and 0.0 <= alive <= 1.0
    for t in (1.0, 90.0, 1e6):
        assert math.isfinite(expected_purchases(m, t, x, t_x, T)) and (
            expected_purchases(m, t, x, t_x, T) >= 0.0
        )
    g = GammaGamma(p=6.0, q=3.6, v=15.0)
    assert math.isfinite(clv(m, g, x, t_x, T, 1e6))


@pytest.mark.parametrize("m", EXTREME_MODELS)
@pytest.mark.parametrize(("x", "t_x", "T"), [*EXTREME_HISTORIES, (3, 40.0, 95.5), (1, 7.0, 7.0)])
def test_purchasing_is_p_alive_and_expected_purchases_to_the_bit(
    m: BgNbd, x: int, t_x: float, T: float
) -> None:
    """The probe's per-customer terms must give the very floats of the functions."""
    for t in (0.0, 1.0, 90.0, 1e6):
        for age in (T, T + 0.5, T * 3 + 17.25):
            alive, expected = Purchasing(m, t, x, t_x).at(age)
            assert alive == p_alive(m, x, t_x, age)
            want = expected_purchases(m, t, x, t_x, age)
            assert expected == want or (math.isnan(expected) and math.isnan(want))


def test_long_silent_frequent_buyer_is_dead_not_an_overflow() -> None:
    m = BgNbd(r=0.25, alpha=33.0, a=0.75, b=2.2)
    assert p_alive(m, 200, 0.0, 10_000.0) == 0.0
    assert expected_purchases(m, 90.0, 200, 0.0, 10_000.0) == 0.0
    assert p_alive(m, 0, 0.0, 10_000.0) == 1.0  # BG/NBD: no repeat purchase, no dropout


# --- (d) model files ---------------------------------------------------------------

MODEL = Model(
    bgnbd=BgNbd(r=0.25, alpha=33.35, a=0.746, b=2.216),
    gamma_gamma=GammaGamma(p=6.28, q=3.62, v=14.98),
    as_of="1997-10-01T00:00:00Z",
    customers=23_570,
    repeat_customers=9_451,
    log_likelihood=-142_801.4,
)


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_bytes(dump_model(MODEL))
    assert load_model(path) == MODEL
    document = json.loads(path.read_text())
    assert document["bgnbd"] == {"r": 0.25, "alpha": 33.35, "a": 0.746, "b": 2.216}
    assert document["gamma_gamma"] == {"p": 6.28, "q": 3.62, "v": 14.98}
    assert document["time_unit"] == "days"


def test_a_model_without_gamma_gamma_loads(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"bgnbd": {"r": 1, "alpha": 2, "a": 3, "b": 4}}))
    model = load_model(path)
    assert model.gamma_gamma is None and model.time_unit == "days"


def _document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(dump_model(MODEL))
    for dotted, value in changes.items():
        target = document
        *parents, last = dotted.split("__")
        for name in parents:
            target = target[name]
        target[last] = value
    return document


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read model file"),
        ("{not json", "is not a valid model"),
        (json.dumps({"gamma_gamma": None}), "missing required field `bgnbd`"),
        (json.dumps(_document(bgnbd__r="0.25")), "Expected `float`"),
        (json.dumps(_document(bgnbd__alpha=0)), "bgnbd.alpha must be a finite positive number"),
        (json.dumps(_document(gamma_gamma__v=-1.5)), "gamma_gamma.v must be a finite positive"),
        (json.dumps(_document(bgnbd__b=0.5)).replace("0.5", "1e999"), "Number out of range"),
        (json.dumps(_document(time_unit="weeks")), "time_unit is 'weeks'"),
        (json.dumps(_document(bgnbd__a=1.0)), "divide by a - 1"),
        (json.dumps(_document(gamma_gamma__q=0.9)), "needs q > 1"),
    ],
)
def test_unusable_model_files_are_clear_errors(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "model.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ModelError, match=message) as caught:
        load_model(path)
    assert str(path) in str(caught.value)


# --- (e) data that cannot support a fit --------------------------------------------


def _ages(n: int) -> np.ndarray:
    return np.random.default_rng(3).uniform(30.0, 300.0, n)


def _counts(n: int) -> np.ndarray:
    return np.random.default_rng(4).integers(1, 5, n).astype(np.float64)


@pytest.mark.parametrize(
    ("x", "t_x", "T", "message"),
    [
        (np.ones(20), np.full(20, 5.0), np.full(20, 10.0), "too few customers"),
        (np.zeros(500), np.zeros(500), _ages(500), "too few repeat buyers"),
        (np.zeros(100), np.zeros(100), np.zeros(100), "age T == 0"),
        (np.ones(200), np.zeros(200), _ages(200), "ran off to 0 or infinity"),
        # Flat likelihood or unbounded standard error, depending on the optimizer's
        # last step (it changed between scipy releases): refused either way.
        (np.full(200, 3.0), _ages(200), _ages(200), "the data do not identify"),
        (_counts(200), _ages(200), _ages(200), "no proper maximum"),
        (np.ones(100), np.full(100, 50.0), np.full(100, 10.0), "t_x <= T"),
    ],
)
def test_fit_bgnbd_refuses_data_that_cannot_support_it(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, message: str
) -> None:
    with pytest.raises(FitError, match=message):
        fit_bgnbd(x, t_x, T)


def test_fit_gamma_gamma_needs_repeat_buyers_with_spend() -> None:
    with pytest.raises(FitError, match="too few repeat buyers with positive spend"):
        fit_gamma_gamma(np.zeros(500), np.zeros(500))


def test_fit_model_without_enough_spend_keeps_the_purchase_model(fitted: Fitted) -> None:
    rows = zip(fitted.x.astype(int), fitted.t_x, fitted.T, np.zeros_like(fitted.x), strict=True)
    model = fit_model(rows)
    assert model.gamma_gamma is None
    assert model.gamma_gamma_error is not None and "positive spend" in model.gamma_gamma_error
    assert model.bgnbd == fitted.ours


# --- the CLI -----------------------------------------------------------------------


def _cdnow_as_jsonl(path: Path, customers: int) -> None:
    lines = []
    with CDNOW.open() as handle:
        for number, text in enumerate(handle, start=1):
            fields = text.split()
            if fields and fields[0] != "customer_id" and int(fields[0]) <= customers:
                value = cdnow_event(number, text)
                assert value is not None
                lines.append(value.decode())
    path.write_text("\n".join(lines) + "\n")


def test_fit_command_writes_the_model(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    _cdnow_as_jsonl(events, 3_000)  # auto-detected as JSON Lines
    out = tmp_path / "out" / "params.json"
    result = CliRunner().invoke(
        app, ["fit", str(events), "--as-of", "1997-10-01T00:00:00Z", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert set(document["bgnbd"]) == {"r", "alpha", "a", "b"}
    assert set(document["gamma_gamma"]) == {"p", "q", "v"}
    assert document["time_unit"] == "days"
    assert document["as_of"] == "1997-10-01T00:00:00Z"
    assert document["customers"] == 3_000 and 0 < document["repeat_customers"] < 3_000
    assert load_model(out).bgnbd.r == document["bgnbd"]["r"]
    assert "log-likelihood" in result.output and "repeat customers" in result.output


def test_fit_command_exits_2_with_one_line_when_the_data_cannot_be_fitted(
    tmp_path: Path,
) -> None:
    events = tmp_path / "cdnow.txt"
    events.write_text(" 00001 19970101  1   11.77\n 00002 19970112  1   12.00\n")
    out = tmp_path / "params.json"
    args = ["fit", str(events), "--as-of", "1997-10-01T00:00:00Z", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--format", "cdnow"])
    assert result.exit_code == 2
    assert "fit failed: too few customers" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
