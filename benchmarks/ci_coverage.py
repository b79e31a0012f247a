"""Coverage of the patient-bootstrap CIs: percentile (before) against BCa (after), in a simulation.

    .venv/bin/python benchmarks/ci_coverage.py                  # 500 replicates x 2,000 resamples: about 1.5 min
    .venv/bin/python benchmarks/ci_coverage.py --variants       # also three alternatives to BCa, on the same draws
    .venv/bin/python benchmarks/ci_coverage.py --replicates 60 --resamples 500     # a quick look (about 15 s)
    nohup .venv/bin/python benchmarks/ci_coverage.py --variants > /tmp/ci_coverage.log 2>&1 &

Times: one process (numpy single-threaded work), on the shared 2-core dev machine: 10 s to build and match the
population, 0.15 s a replicate (three sources, mAP50 only, 2,000 resamples + 94 jackknife rows), about 90 s in all.

Data: a SYNTHETIC population of 20,000 patients (1-3 sagittal images each, 6 intervertebral levels an image, each
level normal or compressed by the expert reference, with a per-patient compression prevalence) and a per-patient
difficulty (mean 0, SD 1, a long tail of hard patients) that makes the model's and both readers' errors go together
within a patient: on a hard patient the model misses more levels, mislabels more, localizes worse, scores its boxes
lower and adds more false positives, and the readers miss and mislabel more. The model gives scored boxes; two
mid-level readers give unscored boxes (score 1.0), each with its own sensitivity and PPV. Everything is scored with
the project's own `match` and `score_resamples` (mAP50, ultralytics' 101-point AP).

True values: the model's mAP50, and model minus the reader-group mean (mean of the two readers' mAP50), computed on
all 20,000 patients (the issue's definition), and the same figures as the exact area under the same precision
envelope (`exact_map50`). They differ because the 101-point sum is a sawtooth in a class's last recall: the
population's value sits at one fixed point of it (here -0.003 for the model), while a 94-patient sample's last
recall moves by more than the 0.01 step, so the sample's mAP50 averages the sawtooth out and estimates the exact
area. No CI computed from one sample can see the population's offset.

Each replicate draws 94 patients (the study's external set) without replacement, scores them on the sample, on B
bootstrap resamples (one weight matrix shared by the model and the readers, so the difference is paired) and on
the 94 leave-one-patient-out samples, and builds the percentile and the BCa CI (95%). Printed per figure, truth and
method: coverage, the share of true values below the CI and above it, mean width; the mean z0 and acceleration
and their spread; then the time for one replicate's bootstrap of the model, every figure, with and without the
jackknife. Goal (issue 8, A.4): coverage 93-97% with neither tail above about 3.5%, and 2,000 resamples +
jackknife under 2 s. With 500 replicates a coverage has a Monte Carlo standard error of about 1 point (printed).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtri

from pipelines.evaluate.intervals import (
    bca_constants,
    bca_difference,
    bca_interval,
    bca_level,
    jackknife_weights,
    percentile_interval,
)
from pipelines.evaluate.scoring import METRICS, Matched, match, pr_curve, resample_weights, score_resamples

LEVEL = 0.95
CONF = 0.25  # evaluate's default operating threshold (mAP50 does not depend on it)
IOU_INDEX = 0  # IoU 0.50
MAP50 = METRICS.index("map50")
GOAL_S = 2.0
COLS = ["image_id", "label", "x_min", "y_min", "x_max", "y_max"]
LEVELS = 6
READERS = (  # (miss bias, mislabel bias, localization sd): two mid-level readers, the second a little looser
    (4.4, -3.6, 1.7),
    (4.2, -3.5, 1.8),
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


@dataclass
class Population:
    model: Matched
    readers: tuple[Matched, ...]
    n_patients: int
    n_images: int
    image_patient: np.ndarray  # (I,) patient index of each image, in the matchings' image order


def population(n_patients: int, seed: int) -> Population:
    """Reference, model and reader boxes for `n_patients` patients, matched once per source."""
    rng = np.random.default_rng(seed)
    difficulty = rng.gamma(2.0, 0.7, n_patients) - 1.4  # mean 0, SD 1, a long tail of hard patients
    prevalence = rng.beta(1.4, 2.6, n_patients)  # share of a patient's levels compressed (mean 0.35)
    compressed = rng.random((n_patients, LEVELS)) < prevalence[:, None]  # the same on each of its images
    n_img = rng.choice([1, 2, 3], size=n_patients, p=[0.3, 0.55, 0.15])  # about 1.85 an image, as the study's
    img_patient = np.repeat(np.arange(n_patients), n_img)
    n_images = img_patient.size
    image_ids = np.array([f"p{p:05d}_{k}" for p, k in zip(img_patient, _within(n_img), strict=True)], dtype=object)
    patient_of = dict(zip(image_ids, (f"P{p:05d}" for p in img_patient), strict=True))

    # Reference: one box per level, in pixels on a 384 x 384 sagittal slice.
    scale = rng.uniform(0.9, 1.1, n_images)
    x0 = rng.uniform(150, 190, n_images)
    y_top = rng.uniform(50, 80, n_images)
    lv = np.tile(np.arange(LEVELS), n_images)
    img = np.repeat(np.arange(n_images), LEVELS)
    ref_box = np.column_stack(
        [x0[img], y_top[img] + lv * 40 * scale[img], x0[img] + 36 * scale[img], y_top[img] + lv * 40 * scale[img]]
    )
    ref_box[:, 3] += 18 * scale[img]
    ref_box += rng.normal(0, 0.8, ref_box.shape)
    is_comp = compressed[img_patient[img], lv]
    d = difficulty[img_patient[img]]
    ref = _boxes(image_ids[img], is_comp, ref_box)

    # Model: scored boxes; a hard patient is missed, mislabelled and mislocalized more, with lower scores.
    n = img.size
    found = rng.random(n) < _sigmoid(4.2 - 1.1 * d)
    wrong = rng.random(n) < _sigmoid(-3.8 + 0.9 * d)
    box = ref_box + rng.normal(0, 1.0, (n, 4)) * np.exp(0.35 * d)[:, None]
    score = np.where(
        wrong, _sigmoid(-0.6 - 0.5 * d + rng.normal(0, 0.9, n)), _sigmoid(2.4 - 1.0 * d + rng.normal(0, 0.9, n))
    )
    model = _boxes(image_ids[img][found], (is_comp ^ wrong)[found], box[found], score[found])
    # False positives: stray low-score boxes (more on hard patients), some on a level with the other class.
    d_img = difficulty[img_patient]
    n_fp = rng.poisson(0.35 * np.exp(0.5 * d_img))
    fp_img = np.repeat(np.arange(n_images), n_fp)
    fp_lv = rng.integers(0, LEVELS, fp_img.size)
    on_level = rng.random(fp_img.size) < 0.5
    fp_box = ref_box[fp_img * LEVELS + fp_lv] + rng.normal(0, 2.0, (fp_img.size, 4))
    fp_box[~on_level, 0] -= 80  # off the canal
    fp_box[~on_level, 2] -= 80
    fp_label = np.where(on_level, ~compressed[img_patient[fp_img], fp_lv], rng.random(fp_img.size) < 0.4)
    fp_score = _sigmoid(-1.8 + 0.3 * difficulty[img_patient[fp_img]] + rng.normal(0, 0.9, fp_img.size))
    model = pd.concat([model, _boxes(image_ids[fp_img], fp_label, fp_box, fp_score)], ignore_index=True)

    # Readers: unscored boxes; the same patients are hard for them (shared difficulty) plus their own noise.
    readers = []
    for miss, mislabel, sd in READERS:
        found = rng.random(n) < _sigmoid(miss - 1.0 * d)
        wrong = rng.random(n) < _sigmoid(mislabel + 0.8 * d)
        box = ref_box + rng.normal(0, sd, (n, 4)) * np.exp(0.25 * d)[:, None]
        extra = rng.random(n_images) < 0.04  # an occasional extra box on a level, the other class
        ex_lv = rng.integers(0, LEVELS, n_images)[extra]
        ex_img = np.flatnonzero(extra)
        ex_box = ref_box[ex_img * LEVELS + ex_lv] + rng.normal(0, sd, (ex_img.size, 4))
        readers.append(
            pd.concat(
                [
                    _boxes(image_ids[img][found], (is_comp ^ wrong)[found], box[found]),
                    _boxes(image_ids[ex_img], ~compressed[img_patient[ex_img], ex_lv], ex_box),
                ],
                ignore_index=True,
            )
        )

    m_model = match(model, ref, patient_of)
    m_readers = tuple(match(r, ref, patient_of) for r in readers)
    for m in m_readers:
        if not np.array_equal(m.patient_ids, m_model.patient_ids):
            raise RuntimeError("every source must score the same patients")
    # Patient keys P00000... sort as the patient numbers, so a matching's patient index is the patient number.
    return Population(m_model, m_readers, n_patients, n_images, m_model.image_patient)


def _within(n_img: np.ndarray) -> np.ndarray:
    """0, 1, ... within each patient's run of images."""
    starts = np.repeat(np.cumsum(n_img) - n_img, n_img)
    return np.arange(n_img.sum()) - starts


def _boxes(
    image_ids: np.ndarray, compressed: np.ndarray, box: np.ndarray, score: np.ndarray | None = None
) -> pd.DataFrame:
    box = box.copy()
    box[:, 2:] = np.maximum(box[:, 2:], box[:, :2] + 2)  # a jittered corner never crosses the other
    frame = pd.DataFrame(
        {
            "image_id": image_ids,
            "label": np.where(compressed, "compression", "normal"),
            "x_min": box[:, 0],
            "y_min": box[:, 1],
            "x_max": box[:, 2],
            "y_max": box[:, 3],
        }
    )
    if score is not None:
        frame["score"] = score
    return frame


def map50(m: Matched, weights: np.ndarray) -> np.ndarray:
    """mAP50 for each row of weights (B, P)."""
    return score_resamples(m, weights, CONF, IOU_INDEX, ap50_only=True)[:, MAP50]


def exact_map50(m: Matched) -> float:
    """mAP50 as the exact area under the same interpolated precision envelope that ultralytics' AP samples at 101
    recall points (same sentinels, the curve closed at the last recall with precision 0). The 101-point sum's
    error is a sawtooth in the last recall (up to about half a 0.01 step of precision, per class); a sample's last
    recall varies by more than a step, so over samples that error averages out, but the population's value sits
    at one fixed point of the sawtooth."""
    aps = []
    for c in range(len(m.n_references)):
        recall, precision, _ = pr_curve(m, c)
        if recall.size == 0:
            continue
        mrec = np.r_[0.0, recall, recall[-1], 1.0]
        mpre = np.flip(np.maximum.accumulate(np.flip(np.r_[1.0, precision, 0.0, 0.0])))
        aps.append(np.trapezoid(mpre, mrec))
    return float(np.mean(aps))


class Tally:
    """One (figure, truth, method): how often the truth fell inside, below and above the CI, and the widths."""

    def __init__(self) -> None:
        self.below = self.above = self.inside = self.undefined = 0
        self.widths: list[float] = []

    def add(self, truth: float, low: float, high: float) -> None:
        if not (np.isfinite(low) and np.isfinite(high)):
            self.undefined += 1
            return
        self.widths.append(high - low)
        if truth < low:
            self.below += 1
        elif truth > high:
            self.above += 1
        else:
            self.inside += 1

    def row(self, name: str) -> str:
        n = max(1, self.inside + self.below + self.above + self.undefined)
        width = float(np.mean(self.widths)) if self.widths else float("nan")
        return (
            f"  {name:<46} {100 * self.inside / n:6.1f}% {100 * self.below / n:6.1f}% {100 * self.above / n:6.1f}% "
            f"{width:8.4f}" + (f"  ({self.undefined} undefined)" if self.undefined else "")
        )


BEFORE, AFTER = "percentile (before)", "BCa (after)"
VARIANTS = (
    "accelerated percentile (BCa with z0 = 0)",
    "BCa with z0 at the draws' mean",
    "bootstrap-t, jackknife-influence SE",
)


def cis(point: float, draws: np.ndarray, jack: np.ndarray, weights: np.ndarray, variants: bool) -> dict:
    """method -> (low, high) of one figure on one replicate."""
    pct = percentile_interval(point, draws, LEVEL)
    bca = bca_interval(point, draws, jack, LEVEL)
    out = {BEFORE: (pct.low, pct.high), AFTER: (bca.low, bca.high)}
    if not variants:
        return out
    z = np.array([ndtri((1 - LEVEL) / 2), -ndtri((1 - LEVEL) / 2)])
    _, a, reason = bca_constants(point, draws, jack)
    a = 0.0 if reason else a
    out[VARIANTS[0]] = tuple(np.percentile(draws, 100 * bca_level(z, 0.0, a)))
    z0_mean, _, reason = bca_constants(float(np.mean(draws)), draws, jack)
    out[VARIANTS[1]] = tuple(np.percentile(draws, 100 * bca_level(z, 0.0 if reason else z0_mean, a)))
    # Studentized: each resample's SE from the sample's jackknife influence values, weighted by the resample.
    n = jack.size
    u = (n - 1) * (jack.mean() - jack)
    se = np.sqrt(np.sum(u**2)) / n
    u_b = weights @ u / n
    se_b = np.sqrt(np.maximum(weights @ u**2 / n - u_b**2, 1e-30) / n)
    t_low, t_high = np.percentile((draws - point) / se_b, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    out[VARIANTS[2]] = (point - t_high * se, point - t_low * se)
    return out


def time_one_replicate(m: Matched, resamples: int, seed: int) -> tuple[float, float]:
    """(percentile-only s, BCa s) for one source on one replicate, every METRICS figure, as evaluate scores it:
    scoring the sample + B resamples (+ P jackknife rows for BCa) in one batched call, then every CI."""
    n = m.n_patients
    w = resample_weights(n, resamples, seed)
    t0 = time.perf_counter()
    values = score_resamples(m, np.vstack([np.ones((1, n)), w]), CONF, IOU_INDEX)
    for k in range(len(METRICS)):
        percentile_interval(values[0, k], values[1:, k], LEVEL)
    t_pct = time.perf_counter() - t0
    t0 = time.perf_counter()
    values = score_resamples(m, np.vstack([np.ones((1, n)), w, jackknife_weights(n)]), CONF, IOU_INDEX)
    for k in range(len(METRICS)):
        bca_interval(values[0, k], values[1 : 1 + resamples, k], values[1 + resamples :, k], LEVEL)
    return t_pct, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=500)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--patients", type=int, default=94, help="patients in each sample (the external set)")
    parser.add_argument("--population", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", action="store_true", help="also three alternatives to BCa (same draws)")
    args = parser.parse_args()

    t_start = time.perf_counter()
    pop = population(args.population, args.seed)
    t_pop = time.perf_counter() - t_start
    ones = np.ones((1, pop.model.n_patients))
    sources = (pop.model, *pop.readers)
    grid = [float(map50(m, ones)[0]) for m in sources]
    exact = [exact_map50(m) for m in sources]
    truths = {  # figure -> (101-point truth, exact-area truth)
        "map50": (grid[0], exact[0]),
        "diff": (grid[0] - float(np.mean(grid[1:])), exact[0] - float(np.mean(exact[1:]))),
    }
    print(f"population (SYNTHETIC): {pop.n_patients} patients, {pop.n_images} images, "
          f"{sum(pop.model.n_references.values())} reference boxes "
          f"({pop.model.n_references['compression']} compressed), {pop.model.n_predictions} model boxes; "
          f"built and matched in {t_pop:.0f} s")  # fmt: skip
    print(
        f"true mAP50 (ultralytics' 101-point AP on all patients): model {grid[0]:.4f}; readers "
        f"{', '.join(f'{v:.4f}' for v in grid[1:])}; model minus reader-group mean {truths['diff'][0]:+.4f}"
    )
    print(f"exact area under the same envelope: model {exact[0]:.4f}; readers "
          f"{', '.join(f'{v:.4f}' for v in exact[1:])}; model minus reader-group mean {truths['diff'][1]:+.4f} "
          f"(the population's 101-point offset: model {grid[0] - exact[0]:+.4f}, difference "
          f"{truths['diff'][0] - truths['diff'][1]:+.4f})")  # fmt: skip

    rng = np.random.default_rng(args.seed + 1)
    jack_w = jackknife_weights(args.patients)
    methods = (BEFORE, AFTER, *(VARIANTS if args.variants else ()))
    tallies = {(f, t, m): Tally() for f in truths for t in (0, 1) for m in methods}
    points: dict[str, list[float]] = {f: [] for f in truths}
    shifts: dict[str, list[float]] = {f: [] for f in truths}
    consts: dict[str, list[tuple[float, float]]] = {f: [] for f in truths}
    fallbacks = 0
    b = args.resamples
    t_loop = time.perf_counter()
    for rep in range(args.replicates):
        chosen = rng.choice(pop.n_patients, args.patients, replace=False)
        images = np.isin(pop.image_patient, chosen)
        weights = resample_weights(args.patients, b, 1000 + rep)  # shared by the model and the readers: paired
        rows = np.vstack([np.ones((1, args.patients)), weights, jack_w])
        model = map50(pop.model.subset(images), rows)
        group = np.mean([map50(r.subset(images), rows) for r in pop.readers], axis=0)
        for figure, values in (("map50", model), ("diff", model - group)):
            point, draws, jack = float(values[0]), values[1 : 1 + b], values[1 + b :]
            for method, (low, high) in cis(point, draws, jack, weights, args.variants).items():
                for t in (0, 1):
                    tallies[figure, t, method].add(truths[figure][t], low, high)
            make = bca_difference if figure == "diff" else bca_interval
            fallbacks += make(point, draws, jack, LEVEL).method != "bca"
            points[figure].append(point)
            shifts[figure].append(float(np.nanmean(draws)) - point)
            consts[figure].append(bca_constants(point, draws, jack)[:2])
        if (rep + 1) % max(1, args.replicates // 10) == 0:
            done = time.perf_counter() - t_loop
            left = done / (rep + 1) * (args.replicates - rep - 1)
            print(f"  replicate {rep + 1}/{args.replicates}: {done:.0f} s, about {left:.0f} s left", file=sys.stderr)
    t_reps = time.perf_counter() - t_loop

    r = args.replicates
    print(
        f"\n{r} replicates of {args.patients} patients, {b} resamples each, {100 * LEVEL:.0f}% CIs ({t_reps:.0f} s, "
        f"{t_reps / r:.2f} s a replicate: 3 sources, mAP50 only); BCa fell back to percentile {fallbacks} time(s)"
    )
    names = {"map50": "model mAP50", "diff": "model minus reader-group mean mAP50"}
    for figure, name in names.items():
        z0, a = np.array(consts[figure]).T
        print(f"{name}: sample minus 101-point truth {np.mean(points[figure]) - truths[figure][0]:+.4f}, minus "
              f"exact-area truth {np.mean(points[figure]) - truths[figure][1]:+.4f}; draws' mean minus the sample's "
              f"{np.mean(shifts[figure]):+.4f}; z0 mean {np.nanmean(z0):+.3f} (SD {np.nanstd(z0):.3f}), "
              f"acceleration mean {np.nanmean(a):+.4f} (SD {np.nanstd(a):.4f})")  # fmt: skip
    print(f"\n  {'figure / truth / CI method':<46} {'cover':>7} {'below':>7} {'above':>7} {'width':>8}")
    for figure, name in names.items():
        for t, truth_name in enumerate(("101-point truth (the issue's)", "exact-area truth")):
            print(f"{name}, {truth_name} {truths[figure][t]:+.4f}")
            for method in methods:
                print(tallies[figure, t, method].row(method))
    se = 100 * np.sqrt(LEVEL * (1 - LEVEL) / r)
    tail_se = 100 * np.sqrt((1 - LEVEL) / 2 * (1 + LEVEL) / 2 / r)
    print(f"(below: the true value under the CI's lower end; above: over its upper end. Monte Carlo SE with {r} "
          f"replicates: {se:.1f} points for a coverage near {100 * LEVEL:.0f}%, {tail_se:.1f} for a tail near "
          f"{50 * (1 - LEVEL):.1f}%. Goal: 93-97% with neither tail above about 3.5%)")  # fmt: skip

    model = pop.model.subset(np.isin(pop.image_patient, np.random.default_rng(args.seed + 1).choice(
        pop.n_patients, args.patients, replace=False)))  # fmt: skip
    time_one_replicate(model, 50, 0)  # warm-up: first calls pay numpy's lazy set-up
    t_pct, t_bca = time_one_replicate(model, b, 1)
    print(f"\none replicate, the model, every METRICS figure ({len(METRICS)}), {b} resamples, one process: "
          f"percentile only {t_pct:.2f} s; with the {args.patients}-patient jackknife and BCa {t_bca:.2f} s "
          f"({t_bca / GOAL_S:.2f} x the {GOAL_S:.0f} s goal)")  # fmt: skip


if __name__ == "__main__":
    main()
