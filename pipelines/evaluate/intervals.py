"""Confidence intervals and P values from patient-bootstrap draws: percentile and BCa (pure numpy / scipy).

Inputs are already-scored figures: `point` (the figure on the sample), `draws` (B,) (the figure on each bootstrap
resample of patients) and, for BCa, `jack` (P,) (the figure with each patient left out in turn; `jackknife_weights`
gives the weight rows for `scoring.score_resamples`). Nothing here knows about boxes.

Percentile (`percentile_interval`, `percentile_difference`): the (1-level)/2 and (1+level)/2 quantiles of the draws
(numpy's linear interpolation); P = twice the smaller share of differences on either side of 0.

BCa (`bca_interval`, `bca_difference`): bias-corrected and accelerated bootstrap (Efron 1987, JASA 82:171-185;
Efron & Tibshirani 1993, An Introduction to the Bootstrap, ch. 14.3 and eq. 14.15), the same arithmetic as
`scipy.stats.bootstrap(method="BCa")`:

- z0 = Phi^-1(share of draws below the point), a draw equal to the point counting as half (scipy's
  `_percentile_of_score`, percentileofscore's kind="mean"); "equal" allows a relative 1e-12 of float noise, so a
  figure at its ceiling scored through different weights still ties;
- a = sum(d^3) / (6 * sum(d^2)^1.5), d = mean(jack) - jack: the jackknife skewness over patients (scipy's U-based
  form reduces to this);
- the CI is the draws' quantiles at Phi(z0 + (z0 + z)/(1 - a(z0 + z))) for z = Phi^-1((1-level)/2) and its negative.

Why not call scipy: `scipy.stats.bootstrap` draws its own resamples from raw data; it can take precomputed draws
(`bootstrap_result=` with `n_resamples=0`), but it then computes the jackknife by calling the statistic on
leave-one-out copies of the data, has no P value, and returns NaN (with a warning) where the rules below give an
answer. The arithmetic is a dozen lines; the tests check it against `scipy.stats.bootstrap(method="BCa")` on the
same resamples.

Degenerate cases (each gives a finite answer or NaN only where nothing is defined; `method` says which CI was
computed, `note` why it is not the one asked for or why it is a point):

- non-finite draws are dropped; `n_valid` counts the finite ones used. No finite draw: low/high/P NaN, method
  "none";
- every finite draw equal (a figure at its ceiling, 0.995 for ultralytics' mAP50, in every resample): the CI is
  that value, low == high, with a note; BCa reduces to it without special handling (z0 = 0 when the point ties
  the draws, a = 0);
- jackknife values with no spread (no single patient moves the figure): a = 0, the bias-corrected (BC) interval;
- point not finite, no jackknife values, or any non-finite jackknife value (leaving one patient out makes the
  figure undefined, e.g. the only patient with a class): acceleration cannot be estimated, so percentile, with the
  reason in `note`;
- every draw strictly on one side of the point (z0 = +-infinity, where scipy returns NaN): the BCa quantiles
  would be the extreme draw on both ends, so percentile, with the reason in `note`;
- a(z0 + z) >= 1 (past the pole of the BCa mapping, only with extreme skew): the adjusted level is its limit, 0 or
  1, i.e. the extreme draw, so the mapping stays monotone;
- the adjusted levels are quantiles of at most B draws: beyond 1/B they clamp to the smallest or largest draw.

P value of a BCa difference: the smallest alpha whose (1 - alpha) BCa interval excludes 0, found by inverting the
BCa level mapping at the share of differences <= 0 (lower end) and < 0 (upper end), so `P < alpha` exactly when
the interval excludes 0 (up to one resample's step). With z0 = a = 0 it is the percentile P. Floored at 1/(B+1):
B resamples cannot show a smaller one.

Caveat for ultralytics' AP (measured in benchmarks/ci_coverage.py): the 101-point AP is a sawtooth in each class's
last recall (steps of about 0.005 in mAP50). A sample's value sits at one place on it while its resamples, whose
last recall moves by more than a step, average over it; so for mAP50 z0 largely measures the sample's own grid
error (SD 0.1-0.2 over samples), not a bias, and the bias correction shifts the CI by it. In the simulation this
made BCa worse than percentile for the model-minus-readers difference, while for the model's own mAP50 (skewed
by hard patients) the acceleration improved the lower tail.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import ndtr, ndtri

# How each `ci_method` is named wherever a CI is shown (the report, `cordwatch score`).
CI_METHOD_LABELS: dict[str, str] = {
    "bca": "BCa (bias-corrected and accelerated) patient bootstrap, acceleration from the leave-one-patient-out "
    "jackknife",
    "percentile": "percentile patient bootstrap",
}
_TIE_RTOL = 1e-12  # |draw - point| within this (relative) counts as a tie: float noise, not a difference
_NO_DRAWS = "no resample gave a finite value"
_COLLAPSED = "every resample gave the same value: the CI is a point, not zero uncertainty"
_NO_POINT = "BCa needs the figure on the sample, which is undefined: percentile CI instead"
_NO_JACK = "BCa needs a leave-one-patient-out value for every patient: percentile CI instead"
_JACK_UNDEFINED = (
    "BCa acceleration undefined (leaving out a patient makes the figure undefined, e.g. the only patient with a "
    "class): percentile CI instead"
)
_ONE_SIDED = "BCa bias correction infinite (every resample on one side of the sample's value): percentile CI instead"


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap CI; `n_valid` resamples where the figure was defined.

    `method`: "percentile" or "bca" (the CI computed), "none" without a finite resample; `note`: why BCa fell back
    to percentile, or that the CI collapsed to a point (empty otherwise).
    """

    point: float
    low: float
    high: float
    n_valid: int = 0
    method: str = "percentile"
    note: str = ""

    def to_dict(self) -> dict[str, float | int | str | None]:
        """JSON-ready dict (NaN becomes None)."""
        return _json_dict(self)


@dataclass(frozen=True)
class Difference:
    """A paired difference (A minus B) with its bootstrap CI and two-sided bootstrap P value against 0.

    `method` and `note` as for `Interval`.
    """

    point: float
    low: float
    high: float
    p_value: float
    n_valid: int = 0
    method: str = "percentile"
    note: str = ""

    def to_dict(self) -> dict[str, float | int | str | None]:
        """JSON-ready dict (NaN becomes None)."""
        return _json_dict(self)


def _json_dict(item: Interval | Difference) -> dict[str, float | int | str | None]:
    # Strict JSON has no NaN: an undefined figure (no references of a class, say) is written as null.
    out: dict[str, float | int | str | None] = {}
    for key, value in asdict(item).items():
        if isinstance(value, int | str):
            out[key] = value
        else:
            out[key] = float(value) if np.isfinite(value) else None
    return out


# ------------------------------------------------------------------------------------------------- undefined
def undefined_on_sample(draws: np.ndarray) -> str:
    """The note of a figure undefined on the sample (a matched point the model's curve never reaches, a class with
    no reference): no CI and no P, because the resamples where it happens to be defined describe only themselves."""
    defined = _finite(draws).size
    return f"undefined on this set; defined in {defined} of {np.asarray(draws).size} resamples: no CI"


def undefined_interval(point: float, draws: np.ndarray) -> Interval:
    return Interval(float(point), np.nan, np.nan, int(_finite(draws).size), "none", undefined_on_sample(draws))


def undefined_difference(point: float, diffs: np.ndarray) -> Difference:
    note = undefined_on_sample(diffs)
    return Difference(float(point), np.nan, np.nan, np.nan, int(_finite(diffs).size), "none", note)


# --------------------------------------------------------------------------------------------------- percentile
def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float).ravel()
    return values[np.isfinite(values)]


def _collapsed_note(valid: np.ndarray) -> str:
    return _COLLAPSED if valid.size and valid.min() == valid.max() else ""


def percentile_interval(point: float, draws: np.ndarray, level: float) -> Interval:
    """Percentile CI: the (1-level)/2 and (1+level)/2 quantiles of the finite draws."""
    valid = _finite(draws)
    if valid.size == 0:
        return Interval(float(point), np.nan, np.nan, 0, "none", _NO_DRAWS)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(valid, [tail, 100 - tail])
    return Interval(float(point), float(low), float(high), int(valid.size), "percentile", _collapsed_note(valid))


def _percentile_p(valid: np.ndarray) -> float:
    # Two-sided: twice the smaller share of resampled differences on either side of zero, floored at 1/(B+1)
    # because B resamples cannot show a smaller P.
    p = min(1.0, 2 * min(np.mean(valid <= 0), np.mean(valid >= 0)))
    return max(p, 1 / (valid.size + 1))


def percentile_difference(point: float, diffs: np.ndarray, level: float) -> Difference:
    """Percentile CI of a paired difference and its two-sided P value (see `_percentile_p`)."""
    valid = _finite(diffs)
    if valid.size == 0:
        return Difference(float(point), np.nan, np.nan, np.nan, 0, "none", _NO_DRAWS)
    iv = percentile_interval(point, valid, level)
    return Difference(iv.point, iv.low, iv.high, _percentile_p(valid), iv.n_valid, "percentile", iv.note)


# -------------------------------------------------------------------------------------------------------- BCa
def jackknife_weights(n: int) -> np.ndarray:
    """(n, n) leave-one-patient-out weight rows for `score_resamples`: ones, zero on the diagonal."""
    w = np.ones((n, n))
    np.fill_diagonal(w, 0.0)
    return w


def bca_constants(point: float, draws: np.ndarray, jack: np.ndarray) -> tuple[float, float, str]:
    """(z0, a, reason): BCa's bias correction and acceleration from finite draws; `reason` is empty when both are
    defined, otherwise why BCa falls back to percentile (z0 and a are then NaN)."""
    valid = _finite(draws)
    jack = np.asarray(jack, dtype=float).ravel()
    if valid.size == 0:
        return np.nan, np.nan, _NO_DRAWS
    if not np.isfinite(point):
        return np.nan, np.nan, _NO_POINT
    if jack.size == 0:
        return np.nan, np.nan, _NO_JACK
    if not np.isfinite(jack).all():
        return np.nan, np.nan, _JACK_UNDEFINED
    tie = np.abs(valid - point) <= _TIE_RTOL * max(1.0, abs(point))
    share = (np.count_nonzero((valid < point) & ~tie) + 0.5 * np.count_nonzero(tie)) / valid.size
    if share <= 0 or share >= 1:
        return np.nan, np.nan, _ONE_SIDED
    z0 = float(ndtri(share))
    d = jack.mean() - jack
    scale = max(1.0, float(np.abs(jack).max()))
    ss = float(np.sum(d**2))
    if np.ptp(jack) <= _TIE_RTOL * scale or ss == 0:
        return z0, 0.0, ""  # no patient moves the figure: no acceleration (the BC interval)
    return z0, float(np.sum(d**3) / (6 * ss**1.5)), ""


def bca_level(z: np.ndarray | float, z0: float, a: float) -> np.ndarray:
    """BCa's adjusted quantile level for nominal normal quantile(s) z: Phi(z0 + (z0+z)/(1 - a(z0+z))); past the
    mapping's pole (a(z0+z) >= 1) its limit, 1 for z0+z > 0 and 0 below."""
    w = z0 + np.asarray(z, dtype=float)
    den = 1 - a * w
    with np.errstate(divide="ignore", invalid="ignore"):
        level = ndtr(z0 + w / den)
    return np.where(den > 0, level, (w > 0).astype(float))


def _bca_nominal_z(q: float, z0: float, a: float) -> float:
    """Inverse of `bca_level`: the nominal z whose adjusted level is q (+-inf where no z reaches it)."""
    if q <= 0:
        return -np.inf
    if q >= 1:
        return np.inf
    d = float(ndtri(q)) - z0
    den = 1 + a * d
    if den <= 0:  # q lies beyond the levels the mapping reaches (its pole is on that side)
        return -np.inf if d < 0 else np.inf
    return d / den - z0


def bca_interval(point: float, draws: np.ndarray, jack: np.ndarray, level: float) -> Interval:
    """BCa CI of a figure (see the module docstring for the degenerate cases).

    Args:
        point: the figure on the sample.
        draws: (B,) the figure on each bootstrap resample (non-finite ones dropped).
        jack: (P,) the figure with each patient left out in turn (rows of `jackknife_weights`).
        level: e.g. 0.95.
    """
    valid = _finite(draws)
    if valid.size == 0:
        return Interval(float(point), np.nan, np.nan, 0, "none", _NO_DRAWS)
    z0, a, reason = bca_constants(point, valid, jack)
    if reason:
        iv = percentile_interval(point, valid, level)
        return Interval(iv.point, iv.low, iv.high, iv.n_valid, "percentile", iv.note or reason)
    z = float(ndtri((1 - level) / 2))
    levels = bca_level(np.array([z, -z]), z0, a)
    low, high = np.percentile(valid, 100 * levels)
    return Interval(float(point), float(low), float(high), int(valid.size), "bca", _collapsed_note(valid))


def bca_difference(point: float, diffs: np.ndarray, jack_diffs: np.ndarray, level: float) -> Difference:
    """BCa CI of a paired difference (A minus B, resample by resample) and its two-sided P value against 0.

    P: the smallest alpha whose (1 - alpha) BCa interval excludes 0 (module docstring), floored at 1/(B+1). Where
    BCa falls back to percentile (module docstring), so does P.

    Args:
        point: the difference on the sample.
        diffs: (B,) the difference on each bootstrap resample (the same resample for A and B).
        jack_diffs: (P,) the difference with each patient left out.
        level: e.g. 0.95.
    """
    valid = _finite(diffs)
    if valid.size == 0:
        return Difference(float(point), np.nan, np.nan, np.nan, 0, "none", _NO_DRAWS)
    iv = bca_interval(point, valid, jack_diffs, level)
    if iv.method != "bca":
        return Difference(iv.point, iv.low, iv.high, _percentile_p(valid), iv.n_valid, iv.method, iv.note)
    z0, a, _ = bca_constants(point, valid, jack_diffs)
    # Lower end above 0 once its level passes the share of differences <= 0; upper end below 0 once its level
    # falls under the share < 0. Each side's alpha/2 is where the mapping meets that share.
    alpha_low = float(ndtr(_bca_nominal_z(float(np.mean(valid <= 0)), z0, a)))
    alpha_high = 1 - float(ndtr(_bca_nominal_z(float(np.mean(valid < 0)), z0, a)))
    p = min(1.0, 2 * min(alpha_low, alpha_high))
    return Difference(iv.point, iv.low, iv.high, max(p, 1 / (valid.size + 1)), iv.n_valid, "bca", iv.note)
