"""Multi-reader multi-case (MRMC) analysis: readers and patients both random, for any figure of merit (FOM).

The patient bootstrap elsewhere in this package keeps the readers fixed, so its CI for "model minus mid-level
readers" is about these particular readers. Here readers are a random sample too: the Obuchowski-Rockette (OR)
model, with the error covariances estimated from leave-one-case-out (jackknife) FOMs and Hillis's (2007)
denominator degrees of freedom, as in the Iowa OR-DBM MRMC software and RJafroc (the FDA's iMRMC answers the same
random-reader random-case question with U-statistic variance estimates). In this project a "case" is a patient: the
caller removes one patient at a time (all its images and boxes) and recomputes the FOM.

This module only does the statistics on FOM arrays (numpy/scipy); the FOM and its jackknife come from the scoring
code. Two analyses:

- `or_rrrc`: two treatments read by the same R readers (OR-RRRC; Hillis 2007, Hillis, Berbaum & Metz 2008).
- `model_vs_readers`: a standalone model (one fixed "reader") against the mean of R readers, RJafroc's
  `StCadVsRad(method = "1T-RRRC")` (formerly `StSignificanceTestingCadVsRad`; Chakraborty, "Standalone CAD vs.
  radiologists", after Hillis 2007 section 5.3): single-treatment OR on the reader-minus-model differences.

Both follow RJafroc (R/StCadVsRad.R, R/StORAnalysis.R, R/UtilORVarComp.R) in how they handle a degenerate
estimate: the case-covariance term enters as max(., 0), so the denominator never falls below the reader mean
square; if the reader mean square is 0 the ddf is infinite (a normal reference); if the denominator itself is 0
(readers' FOMs identical and no positive case covariance), the statistic, P value, ddf and CI are undefined and
are returned as NaN with a RuntimeWarning, where RJafroc returns NaN or Inf.

References: Obuchowski NA, Rockette HE (1995) Commun Stat Simul Comput 24:285-308. Hillis SL (2007) Stat Med
26:596-619. Hillis SL, Berbaum KS, Metz CE (2008) Acad Radiol 15:647-661. Chakraborty DP, RJafroc
(github.com/dpc10ster/RJafroc) and RJafrocBook chapter "Standalone CAD vs. radiologists".
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

OR_RRRC_METHOD = "OR-RRRC, jackknife covariances over patients, Hillis (2007) ddf; treatment 0 minus treatment 1"
MODEL_VS_READERS_METHOD = (
    "1T-RRRC (single-treatment OR on reader-minus-model differences, RJafroc StCadVsRad), jackknife covariances "
    "over patients, Hillis (2007) ddf; model minus reader mean"
)


@dataclass(frozen=True)
class MRMCResult:
    """One MRMC comparison (random readers, random cases).

    Attributes:
        method: Human-readable name of the analysis.
        difference: Treatment 0 minus treatment 1 (`or_rrrc`), or model minus the reader mean (`model_vs_readers`).
        low: Lower CI bound at `level`.
        high: Upper CI bound at `level`.
        p_value: Two-sided P value for "difference = 0".
        statistic: `or_rrrc`: F with (1, df) degrees of freedom; `model_vs_readers`: t with df degrees of freedom,
            signed like `difference` (RJafroc's Tstat has the opposite sign, readers minus model). F = t**2.
        df: Hillis (2007) denominator degrees of freedom (inf when the reader mean square is 0).
        n_readers: Number of readers (R).
        n_cases: Number of cases (patients) in the jackknife (K).
        components: OR variance components and the test's ingredients: `ms_*` mean squares, `var`, `cov1`,
            `cov2`, `cov3` error (co)variances (OR's Var, Cov1, Cov2, Cov3), `var_r`, `var_tr` reader variance
            components (OR-RRRC only; ANOVA estimates, may be negative), `ms_den` the F denominator, `se` the
            standard error of `difference`.
        level: Confidence level of (low, high).
    """

    method: str
    difference: float
    low: float
    high: float
    p_value: float
    statistic: float
    df: float
    n_readers: int
    n_cases: int
    components: dict[str, float] = field(default_factory=dict)
    level: float = 0.95

    def to_dict(self) -> dict[str, float | int | str | None]:
        """Flat JSON-ready dict: the fields, then `components` under their own names; NaN and inf become None.

        inf (the ddf when the reader mean square is 0) is not valid JSON either, so it also maps to None; the
        P value and CI are still defined then (normal reference).
        """
        out: dict[str, float | int | str | None] = {
            "method": self.method,
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "p_value": self.p_value,
            "statistic": self.statistic,
            "df": self.df,
            "n_readers": self.n_readers,
            "n_cases": self.n_cases,
        }
        clash = out.keys() & self.components.keys()
        if clash:  # a component must never silently overwrite a headline figure
            raise ValueError(f"component names clash with result fields: {sorted(clash)}")
        out.update(self.components)
        return {k: (float(v) if math.isfinite(v) else None) if isinstance(v, float) else v for k, v in out.items()}


def or_rrrc(fom: np.ndarray, jack: np.ndarray, level: float = 0.95) -> MRMCResult:
    """OR random-reader random-case comparison of two treatments read by the same readers.

    Follows the Iowa OR-DBM MRMC software and RJafroc (`St(method = "OR")`, R/StORAnalysis.R `OR_RRRC`): OR's
    treatment x reader ANOVA of the FOMs, Var/Cov1/Cov2/Cov3 from the jackknife covariance matrix, F = MS(T) /
    [MS(T*R) + R max(Cov2 - Cov3, 0)] with Hillis's ddf_H.

    Args:
        fom: (2, R) FOM of each treatment and reader on all cases.
        jack: (2, R, K) the same FOMs with case k left out (leave-one-patient-out).
        level: Confidence level of the CI for the difference.

    Returns:
        The treatment 0 minus treatment 1 difference of reader-averaged FOMs, its CI, F test and components.

    Raises:
        ValueError: Fewer than 2 readers or 2 cases, mismatched shapes, non-finite values or a bad `level`.
    """
    fom = _as_float_array("fom", fom)
    jack = _as_float_array("jack", jack)
    if fom.ndim != 2 or fom.shape[0] != 2:
        raise ValueError(f"fom must have shape (2, n_readers), got {fom.shape}")
    n_trt, n_rdr = fom.shape
    _check_readers(n_rdr)
    if jack.ndim != 3 or jack.shape[:2] != fom.shape:
        raise ValueError(f"jack must have shape (2, {n_rdr}, n_cases) to match fom {fom.shape}, got {jack.shape}")
    n_cases = _check_cases(jack.shape[2])
    _check_finite("fom", fom)
    _check_finite("jack", jack)
    _check_level(level)

    trt_means = fom.mean(axis=1)
    rdr_means = fom.mean(axis=0)
    grand = fom.mean()
    ms_t = n_rdr * np.sum((trt_means - grand) ** 2) / (n_trt - 1)
    ms_r = n_trt * np.sum((rdr_means - grand) ** 2) / (n_rdr - 1)
    resid = fom - trt_means[:, None] - rdr_means[None, :] + grand
    ms_tr = np.sum(resid**2) / ((n_trt - 1) * (n_rdr - 1))

    # Covariance of every (treatment, reader) FOM with every other, indexed [i, j, i', j'], averaged by OR's
    # definitions: Var (same i, same j), Cov1 (other i, same j), Cov2 (same i, other j), Cov3 (other i, other j).
    cov = _jackknife_covariance(jack.reshape(n_trt * n_rdr, n_cases)).reshape(n_trt, n_rdr, n_trt, n_rdr)
    same_t = np.eye(n_trt, dtype=bool)[:, None, :, None]
    same_r = np.eye(n_rdr, dtype=bool)[None, :, None, :]
    var = float(cov[same_t & same_r].mean())
    cov1 = float(cov[~same_t & same_r].mean())
    cov2 = float(cov[same_t & ~same_r].mean())
    cov3 = float(cov[~same_t & ~same_r].mean())

    # Truncating Cov2 - Cov3 at 0 keeps the denominator at least MS(T*R) (Hillis 2007; RJafroc and Iowa do so).
    ms_den = ms_tr + max(n_rdr * (cov2 - cov3), 0.0)
    difference = float(trt_means[0] - trt_means[1])
    se2 = 2.0 * ms_den / n_rdr
    t, ddf, p, low, high = _hillis_t(difference, se2, ms_den, ms_tr, (n_trt - 1) * (n_rdr - 1), level, fom)

    # Variance components as RJafroc's OROutput and the Iowa software report them (for sizing future studies).
    var_tr = ms_tr - var + cov1 + max(cov2 - cov3, 0.0)
    var_r = (ms_r - var_tr - var + cov2 - (n_trt - 1) * (cov1 - cov3)) / n_trt
    components = {
        "ms_t": float(ms_t),
        "ms_r": float(ms_r),
        "ms_tr": float(ms_tr),
        "var": var,
        "cov1": cov1,
        "cov2": cov2,
        "cov3": cov3,
        "var_r": float(var_r),
        "var_tr": float(var_tr),
        "ms_den": float(ms_den),
        "se": math.sqrt(se2),
    }
    return MRMCResult(
        method=OR_RRRC_METHOD,
        difference=difference,
        low=low,
        high=high,
        p_value=p,
        statistic=t * t,  # F(1, ddf): with two treatments the F test is the square of the t test
        df=ddf,
        n_readers=n_rdr,
        n_cases=n_cases,
        components=components,
        level=level,
    )


def model_vs_readers(
    model_fom: float,
    model_jack: np.ndarray,
    reader_fom: np.ndarray,
    reader_jack: np.ndarray,
    level: float = 0.95,
) -> MRMCResult:
    """Standalone model minus the mean of R readers, with readers and cases random (1T-RRRC).

    RJafroc's `StCadVsRad(dataset, FOM, method = "1T-RRRC")` (R/StCadVsRad.R, `SingleModalityRRRC` and
    `DiffFomVarCov2`; the book's `StSignificanceTestingCadVsRad`): the model is one fixed reader with no reader
    variability, so each reader's FOM minus the model's on the same cases is a difference FOM psi_j, and Hillis's
    (2007, section 5.3) single-treatment OR analysis applies to psi: Var and Cov2 from the jackknife of psi,
    MS(R) = sample variance of psi over readers, denominator MS(R) + R max(Cov2, 0),
    ddf = denominator**2 (R - 1) / MS(R)**2, t = mean difference / sqrt(denominator / R). The model's own case
    sampling variability enters through the jackknife of psi. RJafroc reports readers minus model; here the sign
    is model minus readers (t and CI flip with it, the P value does not).

    Args:
        model_fom: Model FOM on all cases.
        model_jack: (K,) model FOM with case k left out.
        reader_fom: (R,) each reader's FOM on all cases.
        reader_jack: (R, K) each reader's FOM with case k left out (same case order as `model_jack`).
        level: Confidence level of the CI.

    Returns:
        Model minus reader-mean FOM, its CI, t test (`statistic`) and components (`ms_r`, which equals RJafroc's
        varR, `var`, `cov2`, `ms_den`, `se`).

    Raises:
        ValueError: Fewer than 2 readers or 2 cases, mismatched shapes, non-finite values or a bad `level`.
    """
    reader_fom = _as_float_array("reader_fom", reader_fom)
    reader_jack = _as_float_array("reader_jack", reader_jack)
    model_jack = _as_float_array("model_jack", model_jack)
    model_arr = _as_float_array("model_fom", model_fom)
    if model_arr.ndim != 0:
        raise ValueError(f"model_fom must be a scalar, got shape {model_arr.shape}")
    model_fom = float(model_arr)
    if reader_fom.ndim != 1:
        raise ValueError(f"reader_fom must have shape (n_readers,), got {reader_fom.shape}")
    n_rdr = reader_fom.shape[0]
    _check_readers(n_rdr)
    if model_jack.ndim != 1:
        raise ValueError(f"model_jack must have shape (n_cases,), got {model_jack.shape}")
    n_cases = _check_cases(model_jack.shape[0])
    if reader_jack.shape != (n_rdr, n_cases):
        raise ValueError(
            f"reader_jack must have shape (n_readers, n_cases) = ({n_rdr}, {n_cases}) to match reader_fom and "
            f"model_jack, got {reader_jack.shape}"
        )
    if not math.isfinite(model_fom):
        raise ValueError(f"model_fom must be finite, got {model_fom}")
    _check_finite("reader_fom", reader_fom)
    _check_finite("model_jack", model_jack)
    _check_finite("reader_jack", reader_jack)
    _check_level(level)

    psi = reader_fom - model_fom  # RJafroc's difference FOM, reader minus model
    ms_r = float(np.var(psi, ddof=1))
    cov = _jackknife_covariance(reader_jack - model_jack[None, :])
    off = ~np.eye(n_rdr, dtype=bool)
    var = float(np.diag(cov).mean())
    cov2 = float(cov[off].mean())

    ms_den = ms_r + max(n_rdr * cov2, 0.0)  # Hillis (2007) section 5.3; negative Cov2 truncated as in RJafroc
    difference = -float(psi.mean())  # model minus reader mean
    se2 = ms_den / n_rdr
    scale = np.concatenate(([model_fom], reader_fom))
    t, ddf, p, low, high = _hillis_t(difference, se2, ms_den, ms_r, n_rdr - 1, level, scale)
    components = {"ms_r": ms_r, "var": var, "cov2": cov2, "ms_den": float(ms_den), "se": math.sqrt(se2)}
    return MRMCResult(
        method=MODEL_VS_READERS_METHOD,
        difference=difference,
        low=low,
        high=high,
        p_value=p,
        statistic=t,
        df=ddf,
        n_readers=n_rdr,
        n_cases=n_cases,
        components=components,
        level=level,
    )


# ------------------------------------------------------------------------------------------------------- helpers
def _jackknife_covariance(jack: np.ndarray) -> np.ndarray:
    """Jackknife covariance matrix of leave-one-case-out FOMs (rows: FOM series, columns: left-out case).

    (K - 1) / K * sum_k (x_k - mean x)(y_k - mean y): the jackknife variance inflation of Efron and Stein, the
    same as RJafroc's cov() * (K - 1)**2 / K.
    """
    n_cases = jack.shape[-1]
    dev = jack - jack.mean(axis=-1, keepdims=True)
    return (n_cases - 1) / n_cases * (dev @ dev.T)


def _hillis_t(
    difference: float,
    se2: float,
    ms_den: float,
    ms_error: float,
    df_error: int,
    level: float,
    foms: np.ndarray,
) -> tuple[float, float, float, float, float]:
    """t statistic, Hillis ddf, two-sided P and CI from the OR denominator; NaN (with a warning) if degenerate.

    ddf_H = ms_den**2 / (ms_error**2 / df_error), where ms_error is the reader (or treatment x reader) mean
    square the denominator is built on.
    """
    # Mean squares of FOMs that are equal up to rounding come out as ~1e-34, not 0; treat those as exactly 0 so the
    # degenerate branches below are taken for identical readers rather than a rounding-noise t statistic.
    tiny = (64.0 * np.finfo(float).eps * max(1.0, float(np.max(np.abs(foms))))) ** 2
    if ms_den <= tiny:
        warnings.warn(
            "MRMC: the OR denominator is 0 (readers' FOM differences identical and no positive case covariance), "
            "so the test statistic, P value, ddf and CI are undefined (NaN)",
            RuntimeWarning,
            stacklevel=3,
        )
        nan = float("nan")
        return nan, nan, nan, nan, nan
    # With no reader-by-treatment spread all the denominator is case covariance: ddf -> inf, a normal reference
    # (RJafroc divides by 0 and gets Inf too).
    ddf = math.inf if ms_error <= tiny else float(ms_den**2 / (ms_error**2 / df_error))
    se = math.sqrt(se2)
    t = difference / se
    p = float(2.0 * stats.t.sf(abs(t), ddf))
    half = float(stats.t.ppf(0.5 + level / 2.0, ddf)) * se
    return float(t), ddf, p, difference - half, difference + half


def _as_float_array(name: str, value: object) -> np.ndarray:
    """`value` as a float array, with the argument name in the error if it is not numeric."""
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc


def _check_readers(n_readers: int) -> None:
    """Reader variance needs at least two readers (RJafroc refuses fewer too)."""
    if n_readers < 2:
        raise ValueError(f"MRMC needs at least 2 readers, got {n_readers}")


def _check_cases(n_cases: int) -> int:
    """A jackknife covariance needs at least two left-out cases."""
    if n_cases < 2:
        raise ValueError(f"the jackknife needs at least 2 cases (patients), got {n_cases}")
    return n_cases


def _check_finite(name: str, values: np.ndarray) -> None:
    """Reject NaN/inf, naming the first bad entry: a FOM undefined on some leave-one-patient-out sample."""
    bad = ~np.isfinite(values)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite value(s), first at index {first}: every FOM, including each "
            "leave-one-patient-out FOM, must be defined (e.g. a class left without reference boxes when a patient "
            "is removed makes AP undefined)"
        )


def _check_level(level: float) -> None:
    """CI level strictly between 0 and 1."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
