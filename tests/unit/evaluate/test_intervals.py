"""Percentile and BCa intervals: against scipy.stats.bootstrap on the same resamples, P value against the interval,
and the degenerate cases (collapsed draws, one-sided draws, undefined jackknife, pole of the BCa mapping)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pipelines.evaluate.intervals import (
    Difference,
    Interval,
    _bca_nominal_z,
    bca_constants,
    bca_difference,
    bca_interval,
    bca_level,
    jackknife_weights,
    percentile_difference,
    percentile_interval,
)
from pipelines.evaluate.scoring import resample_weights

LEVEL = 0.95


def mean_draws(x: np.ndarray, resamples: int, seed: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(point, bootstrap draws, jackknife values) of the mean, through the weight rows evaluate uses."""
    n = x.size
    return float(x.mean()), resample_weights(n, resamples, seed) @ x / n, jackknife_weights(n) @ x / (n - 1)


@pytest.fixture
def skewed() -> np.ndarray:
    return np.random.default_rng(11).exponential(size=40)


# ------------------------------------------------------------------------------------------------- jackknife
def test_jackknife_weights_leave_one_out() -> None:
    w = jackknife_weights(4)
    assert w.shape == (4, 4)
    assert np.array_equal(np.diag(w), np.zeros(4))
    assert np.array_equal(w.sum(1), np.full(4, 3.0))
    assert jackknife_weights(0).shape == (0, 0)


def test_acceleration_of_the_mean_is_the_closed_form(skewed: np.ndarray) -> None:
    # For the mean, theta_(i) = (n xbar - x_i)/(n-1), so a = sum((x - xbar)^3) / (6 sum((x - xbar)^2)^1.5).
    point, draws, jack = mean_draws(skewed, 500, 0)
    c = skewed - skewed.mean()
    _, a, reason = bca_constants(point, draws, jack)
    assert reason == ""
    assert a == pytest.approx(np.sum(c**3) / (6 * np.sum(c**2) ** 1.5), rel=1e-9)
    assert a > 0  # right-skewed data


# ------------------------------------------------------------------------------------------ against scipy's BCa
@pytest.mark.parametrize("level", [0.95, 0.90])
def test_bca_matches_scipy_on_the_same_resamples(skewed: np.ndarray, level: float) -> None:
    # resample_weights and scipy.stats.bootstrap draw the same (B, n) indices from the same generator, so scipy's
    # own BCa run sees exactly these resamples.
    b, seed = 2000, 7
    point, draws, jack = mean_draws(skewed, b, seed)
    ref = stats.bootstrap(
        (skewed,), np.mean, n_resamples=b, rng=np.random.default_rng(seed), method="BCa", confidence_level=level
    )
    np.testing.assert_allclose(np.sort(ref.bootstrap_distribution), np.sort(draws), rtol=1e-12)
    iv = bca_interval(point, draws, jack, level)
    assert iv.method == "bca" and iv.note == "" and iv.n_valid == b
    assert iv.low == pytest.approx(ref.confidence_interval.low, rel=1e-9)
    assert iv.high == pytest.approx(ref.confidence_interval.high, rel=1e-9)
    # A difference is the same interval (its P value is tested below).
    d = bca_difference(point - 1.0, draws - 1.0, jack - 1.0, level)
    assert d.low == pytest.approx(ref.confidence_interval.low - 1.0, rel=1e-9, abs=1e-12)
    assert d.high == pytest.approx(ref.confidence_interval.high - 1.0, rel=1e-9, abs=1e-12)


def test_bca_matches_scipy_on_precomputed_draws_of_a_nonlinear_statistic(skewed: np.ndarray) -> None:
    # The standard deviation (ddof 0) as a weighted statistic; scipy gets our draws through `bootstrap_result`
    # with no resampling of its own, and computes the jackknife itself.
    n, b = skewed.size, 1500
    w = resample_weights(n, b, 3)
    draws = np.sqrt(w @ skewed**2 / n - (w @ skewed / n) ** 2)
    jack = np.array([np.std(np.delete(skewed, i)) for i in range(n)])
    prior = stats.bootstrap((skewed,), np.std, n_resamples=10, rng=np.random.default_rng(0))
    prior.bootstrap_distribution = draws
    ref = stats.bootstrap((skewed,), np.std, n_resamples=0, bootstrap_result=prior, method="BCa")
    iv = bca_interval(float(np.std(skewed)), draws, jack, LEVEL)
    assert iv.low == pytest.approx(ref.confidence_interval.low, rel=1e-9)
    assert iv.high == pytest.approx(ref.confidence_interval.high, rel=1e-9)


def test_bca_respects_monotone_transformations(skewed: np.ndarray) -> None:
    # BCa is transformation-respecting: the CI of log(mean) is the log of the CI of the mean; z0 is invariant
    # exactly, the jackknife's acceleration estimate only to first order.
    point, draws, jack = mean_draws(skewed, 2000, 5)
    iv = bca_interval(point, draws, jack, LEVEL)
    log_iv = bca_interval(np.log(point), np.log(draws), np.log(jack), LEVEL)
    assert bca_constants(np.log(point), np.log(draws), np.log(jack))[0] == bca_constants(point, draws, jack)[0]
    assert log_iv.low == pytest.approx(np.log(iv.low), abs=2e-3)
    assert log_iv.high == pytest.approx(np.log(iv.high), abs=2e-3)


def test_bca_shifts_the_percentile_interval_with_skew(skewed: np.ndarray) -> None:
    point, draws, jack = mean_draws(skewed, 2000, 1)
    pct, bca = percentile_interval(point, draws, LEVEL), bca_interval(point, draws, jack, LEVEL)
    assert bca.low > pct.low and bca.high > pct.high  # right skew: BCa moves both ends up


# -------------------------------------------------------------------------------------------------- P values
def test_level_mapping_inverts() -> None:
    rng = np.random.default_rng(0)
    for z0, a in [(0.0, 0.0), (0.2, 0.05), (-0.3, -0.08), (0.1, 0.3)]:
        for z in rng.uniform(-2.5, 2.5, 20):
            q = float(bca_level(z, z0, a))
            if 1e-6 < q < 1 - 1e-6 and 1 - a * (z0 + z) > 0:  # (beyond, q's float resolution bounds z's)
                assert _bca_nominal_z(q, z0, a) == pytest.approx(z, abs=1e-9)


@pytest.mark.parametrize("shift", [0.65, 0.75, 0.9, 1.2, 1.4, 1.5])
def test_p_value_is_the_alpha_whose_interval_touches_zero(skewed: np.ndarray, shift: float) -> None:
    point, draws, jack = mean_draws(skewed, 4000, 2)
    point, draws, jack = point - shift, draws - shift, jack - shift  # differences, 0 at various depths
    d = bca_difference(point, draws, jack, LEVEL)
    assert d.method == "bca" and 1 / 4001 < d.p_value < 1
    # The (1 - P) interval has an end at 0, up to one resample's step of the sorted draws around 0.
    at_p = bca_interval(point, draws, jack, 1 - d.p_value)
    end = at_p.low if point > 0 else at_p.high
    ordered = np.sort(draws)
    k = int(np.searchsorted(ordered, 0))
    step = np.diff(ordered[max(k - 2, 0) : k + 2]).max()
    assert abs(end) <= 2 * step
    # P < alpha exactly when the (1 - alpha) interval excludes 0 (away from the boundary).
    for alpha in (d.p_value * 0.8, d.p_value * 1.25):
        iv = bca_interval(point, draws, jack, 1 - min(alpha, 0.999))
        excludes = iv.low > 0 or iv.high < 0
        assert excludes == (d.p_value < alpha)


def test_p_value_reduces_to_percentile_without_bias_or_acceleration() -> None:
    # Draws symmetric about the point (z0 = 0) and a constant jackknife (a = 0): BCa is the percentile method.
    half = np.random.default_rng(4).normal(0.03, 0.02, 1000)
    point = 0.03
    draws = np.concatenate([half, 2 * point - half])
    jack = np.full(50, point)
    z0, a, _ = bca_constants(point, draws, jack)
    assert z0 == pytest.approx(0.0, abs=1e-12) and a == 0.0
    bca, pct = bca_difference(point, draws, jack, LEVEL), percentile_difference(point, draws, LEVEL)
    assert bca.p_value == pytest.approx(pct.p_value, rel=1e-9)
    assert (bca.low, bca.high) == pytest.approx((pct.low, pct.high), rel=1e-9)


def test_p_value_floor_when_no_resample_reaches_zero() -> None:
    rng = np.random.default_rng(8)
    draws = rng.normal(0.05, 0.01, 999)
    jack = rng.normal(0.05, 0.001, 60)
    d = bca_difference(0.05, draws, jack, LEVEL)
    assert d.p_value == pytest.approx(1 / 1000)


# ---------------------------------------------------------------------------------------------- degenerate cases
def test_all_draws_at_the_ceiling_collapse_without_nan() -> None:
    draws, jack = np.full(2000, 0.995), np.full(94, 0.995)
    iv = bca_interval(0.995, draws, jack, LEVEL)
    assert (iv.low, iv.high, iv.method, iv.n_valid) == (0.995, 0.995, "bca", 2000)
    assert "same value" in iv.note
    # Float noise from scoring through different weights still ties.
    iv = bca_interval(0.995, draws + 1e-15, jack, LEVEL)
    assert iv.method == "bca" and iv.low == pytest.approx(0.995)
    d = bca_difference(0.0, np.zeros(2000), np.zeros(94), LEVEL)
    assert (d.low, d.high, d.p_value) == (0.0, 0.0, 1.0)


def test_ceiling_with_some_draws_below_stays_finite() -> None:
    draws = np.r_[np.full(1600, 0.995), np.linspace(0.95, 0.99, 400)]
    jack = np.r_[np.full(90, 0.995), np.full(4, 0.9952)]
    iv = bca_interval(0.995, draws, jack, LEVEL)
    assert iv.method == "bca" and np.isfinite([iv.low, iv.high]).all() and iv.low <= 0.995 <= iv.high + 1e-12


def test_every_draw_on_one_side_falls_back_to_percentile() -> None:
    draws = np.linspace(0.80, 0.90, 500)  # all above the point: z0 = -infinity
    iv = bca_interval(0.75, draws, np.linspace(0.7, 0.8, 30), LEVEL)
    pct = percentile_interval(0.75, draws, LEVEL)
    assert (iv.low, iv.high, iv.method) == (pct.low, pct.high, "percentile")
    assert "one side" in iv.note
    d = bca_difference(-0.1, draws - 0.85, np.linspace(-0.2, 0.0, 30), LEVEL)
    assert d.method == "percentile" and d.p_value == percentile_difference(-0.1, draws - 0.85, LEVEL).p_value


def test_non_finite_values() -> None:
    rng = np.random.default_rng(2)
    draws, jack = rng.normal(0.9, 0.02, 300), rng.normal(0.9, 0.002, 40)
    with_nan = np.r_[draws, np.nan, np.inf]
    iv = bca_interval(0.9, with_nan, jack, LEVEL)
    assert iv.n_valid == 300 and iv == bca_interval(0.9, draws, jack, LEVEL)
    # An undefined leave-one-out value (the only patient with a class): percentile, with the reason.
    jack_nan = jack.copy()
    jack_nan[3] = np.nan
    iv = bca_interval(0.9, draws, jack_nan, LEVEL)
    assert iv.method == "percentile" and "leaving out a patient" in iv.note
    pct = percentile_interval(0.9, draws, LEVEL)
    assert (iv.low, iv.high) == (pct.low, pct.high)
    assert bca_interval(np.nan, draws, jack, LEVEL).method == "percentile"
    assert bca_interval(0.9, draws, np.zeros(0), LEVEL).method == "percentile"
    assert bca_constants(0.9, np.full(5, np.nan), jack)[2] != ""
    empty = bca_difference(0.1, np.full(10, np.nan), jack, LEVEL)
    assert empty.n_valid == 0 and empty.method == "none" and np.isnan([empty.low, empty.high, empty.p_value]).all()


def test_constant_jackknife_gives_the_bias_corrected_interval() -> None:
    draws = np.random.default_rng(6).normal(0.5, 0.1, 1000)
    z0, a, reason = bca_constants(0.52, draws, np.full(30, 0.52))
    assert a == 0.0 and reason == "" and np.isfinite(z0)


def test_pole_of_the_mapping_is_monotone_and_finite() -> None:
    z = np.linspace(-6, 6, 241)
    for z0, a in [(0.0, 0.5), (0.3, -0.6), (1.0, 0.9)]:
        levels = bca_level(z, z0, a)
        assert np.isfinite(levels).all() and (np.diff(levels) >= -1e-15).all()
        assert ((levels >= 0) & (levels <= 1)).all()
    # Extreme acceleration: one patient far out. Still a finite interval and P in (0, 1].
    draws = np.random.default_rng(1).normal(0.02, 0.01, 2000)
    jack = np.r_[np.full(9, 0.02), -0.5]
    d = bca_difference(0.02, draws, jack, LEVEL)
    assert np.isfinite([d.low, d.high, d.p_value]).all() and 0 < d.p_value <= 1


# ------------------------------------------------------------------------------------------------ percentile
def test_percentile_forms_are_unchanged() -> None:
    draws = np.r_[np.random.default_rng(3).normal(0.02, 0.015, 999), np.nan]
    iv = percentile_interval(0.02, draws, LEVEL)
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(draws[:-1], [tail, 100 - tail])
    assert (iv.point, iv.low, iv.high, iv.n_valid, iv.method) == (0.02, low, high, 999, "percentile")
    d = percentile_difference(0.02, draws, LEVEL)
    valid = draws[:-1]
    p = max(min(1.0, 2 * min(np.mean(valid <= 0), np.mean(valid >= 0))), 1 / 1000)
    assert (d.low, d.high, d.p_value, d.n_valid) == (low, high, p, 999)


def test_to_dict_is_strict_json() -> None:
    out = Difference(0.1, np.nan, 0.2, 0.04, 10, "bca", "").to_dict()
    assert out == {"point": 0.1, "low": None, "high": 0.2, "p_value": 0.04, "n_valid": 10, "method": "bca", "note": ""}
    assert Interval(0.5, 0.4, 0.6).to_dict()["method"] == "percentile"


def test_a_figure_undefined_on_the_sample_gets_no_ci_and_no_p() -> None:
    """A matched point the model's curve never reaches on the sample: the resamples where it is defined describe
    only themselves, so neither method reports a CI or P; the count of such resamples is kept for the report."""
    from pipelines.evaluate.uncertainty import SourceDraws

    draws = np.full((200, 1), np.nan)
    draws[:11, 0] = np.linspace(-0.2, -0.1, 11)
    d = SourceDraws(("ppv_gain_at_reader_sensitivity",), np.array([np.nan]), draws, np.full((10, 1), np.nan))
    for method in ("percentile", "bca"):
        gain = d.difference("ppv_gain_at_reader_sensitivity", 0.95, method).to_dict()
        assert gain["point"] is None and gain["low"] is None and gain["high"] is None and gain["p_value"] is None
        assert gain["n_valid"] == 11 and gain["note"] == "undefined on this set; defined in 11 of 200 resamples: no CI"
        figure = d.interval("ppv_gain_at_reader_sensitivity", 0.95, method).to_dict()
        assert figure["low"] is None and figure["n_valid"] == 11 and figure["method"] == "none"
    defined = SourceDraws(("x",), np.array([0.5]), np.linspace(0.4, 0.6, 200)[:, None], np.full((10, 1), 0.5))
    assert defined.interval("x", 0.95, "percentile").low > 0.39  # a defined figure keeps its CI
