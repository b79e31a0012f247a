"""MRMC analysis (OR-RRRC and 1T-RRRC model vs readers) against published outputs, identities and edge cases.

Sources of the expected figures (read from the files, not recalled):

- Van Dyke (cine vs spin-echo MRI, the example dataset of the Iowa software and of Hillis, Berbaum & Metz 2008,
  Acad Radiol 15:647): the output of the Iowa OR-DBM MRMC 2.51 software (Schartz, Hillis, Pesce, Berbaum) for
  "VanDyke.lrc", trapezoidal/Wilcoxon AUC, jackknife covariances, as shipped in RJafroc
  (github.com/dpc10ster/RJafroc, inst/Iowa/VanDyke.txt), asserted to the digits printed there; and F, ddf and p to
  8 digits from RJafrocBook (github.com/dpc10ster/RJafrocBook, gh-pages) as RJafroc computes them.
- Hupse et al. (2013) CAD vs 9 radiologists (RJafroc dataset09 / datasetCadLroc, Wilcoxon AUC): RJafroc's own
  regression values for `StCadVsRad(datasetCadLroc, FOM = "Wilcoxon", method = "1T-RRRC")` and "2T-RRRC"
  (tests/testthat/goodValues361/SigTestCad/datasetCadLroc_1T-RRRC_Wilcoxon.rds and _2T-RRRC_Wilcoxon.rds, R
  serialized doubles decoded to full precision), which RJafrocBook's chapter "Standalone CAD vs. radiologists"
  (Table 38.2) prints to 3 digits: CAD 0.817, radiologists 0.849, difference 0.0317, CI (-0.031, 0.0945),
  F 0.986, ddf 878, p 0.32.

Raw ratings are in tests/unit/evaluate/fixtures/ (origin in each file's header); the AUCs and leave-one-case-out
AUCs are computed here.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from pipelines.evaluate.mrmc import MRMCResult, model_vs_readers, or_rrrc

FIXTURES = Path(__file__).parent / "fixtures"


# ------------------------------------------------------------------------------------------------ FOM helpers
def auc_and_jackknife(ratings: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wilcoxon (trapezoidal) AUC of each row of `ratings` (..., K) and its leave-one-case-out values (..., K)."""
    pos, neg = ratings[..., truth == 1], ratings[..., truth == 0]
    d = pos[..., :, None] - neg[..., None, :]
    kernel = (d > 0) + 0.5 * (d == 0)  # (..., n1, n0)
    n1, n0 = kernel.shape[-2:]
    total = kernel.sum(axis=(-2, -1))
    jack = np.empty(ratings.shape)
    jack[..., truth == 1] = (total[..., None] - kernel.sum(axis=-1)) / ((n1 - 1) * n0)
    jack[..., truth == 0] = (total[..., None] - kernel.sum(axis=-2)) / (n1 * (n0 - 1))
    return total / (n1 * n0), jack


def load(name: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Fixture columns after case,truth; ratings (columns, K); truth (K,)."""
    lines = [line for line in (FIXTURES / name).read_text().splitlines() if not line.startswith("#")]
    table = np.loadtxt(lines[1:], delimiter=",")
    return lines[0].split(",")[2:], table[:, 2:].T, table[:, 1].astype(int)


def printed(value: float, text: str) -> None:
    """`value` rounds to `text` (as printed by the source): within half a unit of its last digit."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    assert abs(value - float(text)) <= 0.5 * 10.0**-decimals * (1 + 1e-9), (value, text)


def test_auc_jackknife_helper_matches_recomputation():
    rng = np.random.default_rng(0)
    truth = np.array([0, 1, 0, 1, 1, 0, 0])
    ratings = rng.integers(1, 4, size=(2, 7)).astype(float)  # ties on purpose
    auc, jack = auc_and_jackknife(ratings, truth)
    for k in range(7):
        keep = np.arange(7) != k
        np.testing.assert_allclose(jack[:, k], auc_and_jackknife(ratings[:, keep], truth[keep])[0])
    assert auc.shape == (2,)


# ------------------------------------------------------------------------------------ or_rrrc: Van Dyke (1993)
@pytest.fixture(scope="module")
def van_dyke() -> tuple[np.ndarray, np.ndarray]:
    columns, ratings, truth = load("vandyke_roc.csv")
    assert columns == [f"m{t}_r{j}" for t in range(2) for j in range(5)]
    assert ratings.shape == (10, 114) and (truth == 1).sum() == 45
    auc, jack = auc_and_jackknife(ratings.reshape(2, 5, 114), truth)
    return auc, jack


def test_or_rrrc_van_dyke_matches_iowa_or_dbm_mrmc_output(van_dyke):
    """Every OR-RRRC figure of the Iowa output (inst/Iowa/VanDyke.txt), to the digits it prints."""
    auc, jack = van_dyke
    # TREATMENT x READER AUC ESTIMATES
    iowa_auc = [
        ["0.91964573", "0.85877617", "0.90386473", "0.97310789", "0.82979066"],
        ["0.94782609", "0.90531401", "0.92173913", "0.99935588", "0.92995169"],
    ]
    for i in range(2):
        for j in range(5):
            printed(auc[i, j], iowa_auc[i][j])
    printed(auc[0].mean(), "0.89703704")
    printed(auc[1].mean(), "0.94083736")

    res = or_rrrc(auc, jack)
    c = res.components
    assert res.n_readers == 5 and res.n_cases == 114 and res.level == 0.95
    printed(res.difference, "-0.04380032")
    # TREATMENT X READER ANOVA of AUCs
    printed(c["ms_t"], "0.00479617")
    printed(c["ms_r"], "0.00383620")
    printed(c["ms_tr"], "0.00055103")
    # Obuchowski-Rockette variance component and covariance estimates
    printed(c["var_r"], "0.00153500")
    printed(c["var_tr"], "0.00020040")
    printed(c["cov1"], "0.00034661")
    printed(c["cov2"], "0.00034407")
    printed(c["cov3"], "0.00023903")
    printed(c["var"], "0.00080229")
    # Analysis 1 (OR Analysis): Random Readers and Random Cases, a) F test, b) CI of the difference
    printed(c["ms_den"], "0.00107626")
    printed(res.statistic, "4.46")
    printed(res.df, "15.26")
    printed(res.p_value, "0.0517")
    printed(c["se"], "0.02075")
    printed(res.difference / c["se"], "-2.11")
    printed(res.low, "-0.08796")
    printed(res.high, "0.00036")
    # More digits: RJafrocBook (gh-pages, dbm-analysis-significance-testing.html, section 17.4.4.3) prints
    # RJafroc's StSignificanceTesting(dataset02, FOM = "Wilcoxon", method = "DBM") RRRC test; DBM on jackknife
    # pseudovalues with Hillis's ddf is algebraically the OR-RRRC test with jackknife covariances (Hillis et al.
    # 2005, Stat Med 24:1579).
    printed(res.statistic, "4.4563187")
    printed(res.df, "15.259675")
    printed(res.p_value, "0.051665686")


def test_or_rrrc_is_antisymmetric_in_treatment_order(van_dyke):
    auc, jack = van_dyke
    a, b = or_rrrc(auc, jack), or_rrrc(auc[::-1], jack[::-1])
    assert b.difference == pytest.approx(-a.difference)
    assert (b.low, b.high) == pytest.approx((-a.high, -a.low))
    assert (b.statistic, b.df, b.p_value) == pytest.approx((a.statistic, a.df, a.p_value))


# ------------------------------------------------------------------- model_vs_readers: Hupse et al. (2013) CAD
@pytest.fixture(scope="module")
def hupse() -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    columns, ratings, truth = load("hupse_cad_roc.csv")
    assert columns == ["cad", *(f"r{j}" for j in range(1, 10))]
    assert ratings.shape == (10, 200) and (truth == 1).sum() == 80
    auc, jack = auc_and_jackknife(ratings, truth)
    return float(auc[0]), jack[0], auc[1:], jack[1:]


# RJafroc goodValues361/SigTestCad/datasetCadLroc_1T-RRRC_Wilcoxon.rds (readers minus CAD, as RJafroc reports).
RJAFROC_1T = {
    "fomCAD": 0.8169270833333333,
    "fomRAD": [
        0.8415625,
        0.8411979166666667,
        0.8997395833333334,
        0.838125,
        0.8563541666666666,
        0.8786979166666666,
        0.8583854166666667,
        0.79703125,
        0.826875,
    ],
    "avgRadFom": 0.8486631944444445,
    "avgDiffFom": 0.03173611111111114,
    "CIAvgDiffFom": (-0.03099876877455298, 0.09447099099677525),
    "varR": 0.0008777926974826393,
    "varError": 0.0013995490916340135,
    "cov2": 0.0009241680013129357,
    "Tstat": 0.9928688833840893,
    "df": 877.886378333107,
    "pval": 0.3210474342573218,
}
# ... and _2T-RRRC_Wilcoxon.rds: CAD replicated as a second "treatment", OR-RRRC (Kooi et al. 2016's design).
RJAFROC_2T = {
    "varR": 2.981555974335137e-19,
    "varTR": 0.00020120580358078203,
    "cov1": 0.00026186297234264604,
    "cov2": 0.0007239469729991144,
    "cov3": 0.00026186297234264566,
    "varError": 0.0009616375181596524,
    "FStat": 0.9857886195923697,
    "df": 877.8863783331099,
    "pval": 0.3210474342573215,
}


def test_model_vs_readers_matches_rjafroc_1t_rrrc_on_hupse_cad_data(hupse):
    """Published example: RJafroc's StCadVsRad 1T-RRRC on its CAD dataset (values in the module docstring)."""
    model_fom, model_jack, reader_fom, reader_jack = hupse
    ref = RJAFROC_1T
    assert model_fom == pytest.approx(ref["fomCAD"], rel=1e-12)
    np.testing.assert_allclose(reader_fom, ref["fomRAD"], rtol=1e-12)

    res = model_vs_readers(model_fom, model_jack, reader_fom, reader_jack)
    c = res.components
    assert res.n_readers == 9 and res.n_cases == 200
    # RJafroc reports readers minus CAD; here it is model minus readers, so difference, t and CI flip sign.
    assert res.difference == pytest.approx(-ref["avgDiffFom"], rel=1e-10)
    assert (res.low, res.high) == pytest.approx((-ref["CIAvgDiffFom"][1], -ref["CIAvgDiffFom"][0]), rel=1e-9)
    assert res.statistic == pytest.approx(-ref["Tstat"], rel=1e-10)
    assert res.df == pytest.approx(ref["df"], rel=1e-10)
    assert res.p_value == pytest.approx(ref["pval"], rel=1e-9)
    assert c["ms_r"] == pytest.approx(ref["varR"], rel=1e-10)
    assert c["var"] == pytest.approx(ref["varError"], rel=1e-10)
    assert c["cov2"] == pytest.approx(ref["cov2"], rel=1e-10)
    # RJafrocBook Table 38.2, Wilcoxon / 1T-RRRC row, as printed (3 significant digits).
    printed(model_fom, "0.817")
    printed(reader_fom.mean(), "0.849")
    printed(-res.difference, "0.0317")
    printed(-res.high, "-0.031")
    printed(-res.low, "0.0945")
    printed(res.statistic**2, "0.986")
    printed(res.df, "878")
    printed(res.p_value, "0.32")


def test_or_rrrc_with_replicated_model_matches_rjafroc_2t_rrrc(hupse):
    """RJafroc's 2T-RRRC: the model's ratings replicated once per reader as a second treatment, plain OR-RRRC."""
    model_fom, model_jack, reader_fom, reader_jack = hupse
    fom = np.stack([np.full(9, model_fom), reader_fom])  # treatment 0 = CAD (RJafroc's trt1), 1 = readers
    jack = np.stack([np.broadcast_to(model_jack, reader_jack.shape), reader_jack])
    res = or_rrrc(fom, jack)
    c, ref = res.components, RJAFROC_2T
    assert res.statistic == pytest.approx(ref["FStat"], rel=1e-10)
    assert res.df == pytest.approx(ref["df"], rel=1e-10)
    assert res.p_value == pytest.approx(ref["pval"], rel=1e-9)
    for ours, theirs in [
        ("var_tr", "varTR"),
        ("cov1", "cov1"),
        ("cov2", "cov2"),
        ("cov3", "cov3"),
        ("var", "varError"),
    ]:
        assert c[ours] == pytest.approx(ref[theirs], rel=1e-10), ours
    assert c["var_r"] == pytest.approx(ref["varR"], abs=1e-15)  # 0 up to rounding in both
    # ... and it answers the same question as 1T-RRRC: same difference, CI, F = t**2, ddf and P.
    one = model_vs_readers(model_fom, model_jack, reader_fom, reader_jack)
    assert res.difference == pytest.approx(one.difference, rel=1e-12)
    assert (res.low, res.high) == pytest.approx((one.low, one.high), rel=1e-10)
    assert (res.statistic, res.df, res.p_value) == pytest.approx((one.statistic**2, one.df, one.p_value), rel=1e-10)


@pytest.mark.parametrize(("seed", "n_readers", "n_cases"), [(1, 2, 5), (2, 3, 40), (3, 7, 120)])
def test_model_vs_readers_equals_or_rrrc_on_replicated_model(seed, n_readers, n_cases):
    """The 1T/2T identity (RJafrocBook, "Standalone CAD vs. radiologists") holds on arbitrary FOM arrays."""
    rng = np.random.default_rng(seed)
    case = rng.normal(0, 0.02, n_cases)  # shared case effect, so the covariances are not all ~0
    model_jack = 0.85 + case + rng.normal(0, 0.01, n_cases)
    reader_jack = 0.80 + rng.normal(0, 0.03, (n_readers, 1)) + case + rng.normal(0, 0.01, (n_readers, n_cases))
    model_fom, reader_fom = float(model_jack.mean() + 0.001), reader_jack.mean(axis=1) - 0.002
    one = model_vs_readers(model_fom, model_jack, reader_fom, reader_jack, level=0.9)
    two = or_rrrc(
        np.stack([np.full(n_readers, model_fom), reader_fom]),
        np.stack([np.broadcast_to(model_jack, reader_jack.shape), reader_jack]),
        level=0.9,
    )
    assert two.difference == pytest.approx(one.difference, rel=1e-12)
    assert (two.low, two.high, two.df, two.p_value) == pytest.approx((one.low, one.high, one.df, one.p_value))
    assert two.statistic == pytest.approx(one.statistic**2)


def test_model_vs_readers_hand_computed_example():
    """Three readers, four patients, numbers worked by hand.

    Reader FOMs 0.80, 0.85, 0.90, model 0.90: differences psi = reader - model = -0.10, -0.05, 0; model minus
    reader mean = +0.05; MS(R) = var(psi) = (0.05**2 + 0 + 0.05**2) / 2 = 0.0025. Jackknife: every FOM moves with
    a shared patient effect g (cancels in reader - model) plus 0.01 * e, e = (1, -1, 1, -1), for each reader, so
    the jackknife covariance of any two difference series is (K - 1) / K * sum(e**2) * 0.01**2 = 3/4 * 4 * 1e-4
    = 3e-4 = Var = Cov2. Denominator = 0.0025 + 3 * 3e-4 = 0.0034; ddf = 0.0034**2 * 2 / 0.0025**2 = 3.6992;
    SE = sqrt(0.0034 / 3) = 0.0336650; t = 0.05 / SE = 1.485221.
    """
    g = np.array([0.003, -0.001, 0.002, 0.0])
    e = np.array([1.0, -1.0, 1.0, -1.0])
    reader_fom = np.array([0.80, 0.85, 0.90])
    res = model_vs_readers(0.90, 0.90 + g, reader_fom, reader_fom[:, None] + g + 0.01 * e)
    c = res.components
    assert res.difference == pytest.approx(0.05)
    assert c["ms_r"] == pytest.approx(0.0025)
    assert (c["var"], c["cov2"]) == pytest.approx((3e-4, 3e-4))
    assert c["ms_den"] == pytest.approx(0.0034)
    assert res.df == pytest.approx(3.6992)
    assert c["se"] == pytest.approx(0.0336650, abs=5e-8)
    assert res.statistic == pytest.approx(1.485221, abs=5e-7)
    assert res.p_value == pytest.approx(2 * stats.t.sf(1.485221, 3.6992), abs=1e-6)
    half = stats.t.ppf(0.975, 3.6992) * math.sqrt(0.0034 / 3)
    assert (res.low, res.high) == pytest.approx((0.05 - half, 0.05 + half))


@pytest.mark.parametrize("negative_cov2", [False, True])
def test_model_vs_readers_without_case_covariance_is_the_one_sample_t_test(negative_cov2):
    """With Cov2 = 0 (or negative, truncated at 0 as in RJafroc) 1T-RRRC reduces to 1T-RRFC: the one-sample t test
    of the model-minus-reader FOM differences over readers, df = R - 1."""
    reader_fom = np.array([0.81, 0.86, 0.79, 0.9, 0.84])
    model_fom = 0.88
    if negative_cov2:  # reader differences move against each other: Cov2 < 0
        a = np.array([1.0, -1.0, 1.0, -1.0, 0.0])
        reader_jack = reader_fom[:, None] + 0.01 * a[:, None] * np.array([1.0, -1.0, 0.0, 1.0, -1.0, 0.0])
    else:  # no case variation at all
        reader_jack = np.repeat(reader_fom[:, None], 6, axis=1)
    res = model_vs_readers(model_fom, np.full(6, model_fom), reader_fom, reader_jack)
    assert (res.components["cov2"] < 0) if negative_cov2 else (res.components["cov2"] == 0)
    ref = stats.ttest_1samp(model_fom - reader_fom, 0.0)
    ci = ref.confidence_interval(0.95)
    assert res.df == 4
    assert (res.statistic, res.p_value) == pytest.approx((ref.statistic, ref.pvalue))
    assert (res.low, res.high) == pytest.approx((ci.low, ci.high))


# ------------------------------------------------------------------------------------------- degenerate estimates
def test_identical_readers_with_case_covariance_use_a_normal_reference():
    """MS(R) = 0: ddf = inf (RJafroc divides by zero too), so P and CI come from the normal distribution."""
    e = np.array([1.0, -1.0, 1.0, -1.0])
    reader_fom = np.full(3, 0.8)
    res = model_vs_readers(0.85, np.full(4, 0.85), reader_fom, reader_fom[:, None] + 0.01 * e)
    assert res.df == math.inf
    se = math.sqrt(res.components["cov2"])  # denominator = R * Cov2, SE = sqrt(denominator / R)
    assert res.statistic == pytest.approx(0.05 / se)
    assert res.p_value == pytest.approx(2 * stats.norm.sf(0.05 / se))
    assert res.high - res.low == pytest.approx(2 * stats.norm.ppf(0.975) * se)
    assert res.to_dict()["df"] is None


def test_zero_denominator_gives_nan_and_a_warning():
    """MS(R) = 0 and Cov2 <= 0: no variance left to test against; NaN (RJafroc: NaN), never a division error."""
    reader_fom = np.full(3, 0.8)
    a = np.array([1.0, -1.0, 0.0])  # differences move against each other: Cov2 < 0, truncated to 0
    reader_jack = reader_fom[:, None] + 0.01 * a[:, None] * np.array([1.0, -1.0, 1.0, -1.0])
    with pytest.warns(RuntimeWarning, match="denominator is 0"):
        res = model_vs_readers(0.9, np.full(4, 0.9), reader_fom, reader_jack)
    assert res.difference == pytest.approx(0.1)
    assert all(math.isnan(v) for v in (res.statistic, res.p_value, res.df, res.low, res.high))
    out = res.to_dict()
    assert out["p_value"] is None and out["low"] is None and out["difference"] == pytest.approx(0.1)
    json.dumps(out, allow_nan=False)


def test_or_rrrc_identical_treatments_without_case_covariance_is_degenerate():
    fom = np.array([[0.8, 0.85, 0.9], [0.8, 0.85, 0.9]])
    jack = np.repeat(fom[:, :, None], 5, axis=2)
    with pytest.warns(RuntimeWarning):
        res = or_rrrc(fom, jack)
    assert res.difference == 0 and math.isnan(res.p_value)


def test_no_warning_in_the_regular_case(hupse):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model_vs_readers(*hupse)


# ------------------------------------------------------------------------------------------------- to_dict
def test_to_dict_is_flat_and_strict_json(van_dyke):
    out = or_rrrc(*van_dyke).to_dict()
    assert out["method"].startswith("OR-RRRC")
    assert {"difference", "low", "high", "level", "p_value", "statistic", "df", "n_readers", "n_cases"} <= out.keys()
    assert {"var", "cov1", "cov2", "cov3", "ms_tr", "ms_den", "se", "var_r", "var_tr"} <= out.keys()
    assert isinstance(out["n_readers"], int) and isinstance(out["difference"], float)
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_to_dict_rejects_a_component_named_like_a_field():
    res = MRMCResult("m", 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 2, 2, components={"df": 1.0})
    with pytest.raises(ValueError, match="clash"):
        res.to_dict()


# ------------------------------------------------------------------------------------------------- bad input
def _model_args(n_readers: int = 3, n_cases: int = 4) -> dict[str, object]:
    rng = np.random.default_rng(0)
    return {
        "model_fom": 0.9,
        "model_jack": 0.9 + rng.normal(0, 0.01, n_cases),
        "reader_fom": np.linspace(0.8, 0.9, n_readers),
        "reader_jack": 0.85 + rng.normal(0, 0.01, (n_readers, n_cases)),
    }


def test_fewer_than_two_readers_is_refused():
    with pytest.raises(ValueError, match="at least 2 readers"):
        model_vs_readers(**_model_args(n_readers=1))
    with pytest.raises(ValueError, match="at least 2 readers"):
        or_rrrc(np.full((2, 1), 0.8), np.full((2, 1, 5), 0.8))


def test_fewer_than_two_cases_is_refused():
    with pytest.raises(ValueError, match="at least 2 cases"):
        model_vs_readers(**_model_args(n_cases=1))
    with pytest.raises(ValueError, match="at least 2 cases"):
        or_rrrc(np.full((2, 3), 0.8), np.full((2, 3, 1), 0.8))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"reader_jack": np.zeros((3, 5))}, r"reader_jack must have shape \(n_readers, n_cases\) = \(3, 4\)"),
        ({"reader_jack": np.zeros((2, 4))}, "reader_jack must have shape"),
        ({"model_jack": np.zeros((1, 4))}, "model_jack must have shape"),
        ({"reader_fom": np.zeros((3, 1))}, "reader_fom must have shape"),
        ({"model_fom": np.array([0.9, 0.8])}, "model_fom must be a scalar"),
        ({"reader_fom": ["a", "b", "c"]}, "reader_fom must be numeric"),
    ],
)
def test_model_vs_readers_shape_mismatch(change, match):
    with pytest.raises(ValueError, match=match):
        model_vs_readers(**{**_model_args(), **change})


@pytest.mark.parametrize(
    ("fom", "jack", "match"),
    [
        (np.zeros((3, 4)), np.zeros((3, 4, 5)), r"fom must have shape \(2, n_readers\)"),
        (np.zeros(4), np.zeros((2, 4, 5)), r"fom must have shape \(2, n_readers\)"),
        (np.zeros((2, 4)), np.zeros((2, 3, 5)), r"jack must have shape \(2, 4, n_cases\)"),
        (np.zeros((2, 4)), np.zeros((2, 4)), "jack must have shape"),
    ],
)
def test_or_rrrc_shape_mismatch(fom, jack, match):
    with pytest.raises(ValueError, match=match):
        or_rrrc(fom, jack)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_jackknife_values_are_refused_with_their_position(bad):
    args = _model_args()
    args["reader_jack"] = args["reader_jack"].copy()
    args["reader_jack"][1, 2] = bad
    with pytest.raises(ValueError, match=r"reader_jack has 1 non-finite value\(s\), first at index \(1, 2\)"):
        model_vs_readers(**args)
    args = _model_args()
    args["model_jack"] = args["model_jack"].copy()
    args["model_jack"][3] = bad
    with pytest.raises(ValueError, match=r"model_jack .* index \(3,\).*leave-one-patient-out"):
        model_vs_readers(**args)
    jack = np.full((2, 3, 4), 0.8)
    jack[0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"jack has 1 non-finite"):
        or_rrrc(np.full((2, 3), 0.8), jack)


def test_non_finite_foms_are_refused():
    with pytest.raises(ValueError, match="model_fom must be finite"):
        model_vs_readers(**{**_model_args(), "model_fom": math.nan})
    with pytest.raises(ValueError, match="reader_fom has 1 non-finite"):
        model_vs_readers(**{**_model_args(), "reader_fom": np.array([0.8, np.nan, 0.9])})
    with pytest.raises(ValueError, match="fom has 1 non-finite"):
        or_rrrc(np.array([[0.8, np.nan], [0.8, 0.9]]), np.full((2, 2, 3), 0.8))


@pytest.mark.parametrize("level", [0.0, 1.0, 95])
def test_level_must_be_a_probability(level):
    with pytest.raises(ValueError, match="level must be in"):
        model_vs_readers(**_model_args(), level=level)
