"""Patient bootstrap of the external set: one matching reused by every resample, against re-matching each time.

    .venv/bin/python benchmarks/bootstrap.py                 # 2,000 resamples, naive side on 20 extrapolated
    .venv/bin/python benchmarks/bootstrap.py --resamples 500 --naive 10

Data: a SYNTHETIC external set shaped like the study's (94 patients, 175 sagittal T2 images, 6 intervertebral
levels an image), a model with confidence scores and a mid-level reader without. Timed: `match` once, then
`bootstrap` (2,000 patient resamples, every metric) and `paired_difference` (model minus reader, mAP50).
Baseline ("naive"): for each resample, build the resampled box tables (each drawn patient's images copied under new
ids), re-match and score them; timed on a few resamples and extrapolated. Goal (issue): bootstrap under 2 s on 2
cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from pipelines.evaluate import EvaluateParams, bootstrap, match, metrics, paired_difference
from pipelines.evaluate.report import format_p
from pipelines.evaluate.scoring import resample_weights, score_resamples

GOAL_S = 2.0
COLS = ["image_id", "label", "x_min", "y_min", "x_max", "y_max"]


def external_set(seed: int = 0, patients: int = 94, images: int = 175, levels: int = 6):
    """(model boxes, reader boxes, reference boxes, image -> patient): synthetic, study-sized."""
    rng = np.random.default_rng(seed)
    per_patient = np.ones(patients, dtype=int)
    per_patient[rng.choice(patients, images - patients, replace=False)] += 1  # 81 patients with 2 images
    ref, model, reader, patient_of = [], [], [], {}
    for p, n_images in enumerate(per_patient):
        compressed = rng.random(levels) < 0.35  # a patient's levels are the same on each of its images
        for k in range(n_images):
            image = f"ext{p:03d}_{k}"
            patient_of[image] = f"P{p:03d}"
            scale = rng.uniform(0.9, 1.1)
            for lv in range(levels):
                y0 = 60 + lv * 32 * scale
                box = np.array([120, y0, 150, y0 + 14 * scale]) + rng.normal(0, 1, 4)
                label = "compression" if compressed[lv] else "normal"
                ref.append((image, label, *box))
                # Model: nearly always finds the level, sometimes calls the wrong class with a lower score.
                if rng.random() < 0.97:
                    wrong = rng.random() < 0.06
                    out = ("normal" if compressed[lv] else "compression") if wrong else label
                    score = rng.uniform(0.1, 0.6) if wrong else rng.beta(8, 1.5)
                    model.append((image, out, *(box + rng.normal(0, 1.2, 4)), score))
                # Mid-level reader: a little looser boxes, more class errors, no score.
                if rng.random() < 0.96:
                    out = ("normal" if compressed[lv] else "compression") if rng.random() < 0.09 else label
                    reader.append((image, out, *(box + rng.normal(0, 1.8, 4))))
            if rng.random() < 0.3:  # a stray model box off the canal
                model.append((image, "normal", 60, 40, 90, 55, rng.uniform(0.05, 0.4)))
    return (
        pd.DataFrame(model, columns=[*COLS, "score"]),
        pd.DataFrame(reader, columns=COLS),
        pd.DataFrame(ref, columns=COLS),
        patient_of,
    )


def naive_resample(
    pred: pd.DataFrame, ref: pd.DataFrame, patient_of: dict[str, str], patients: np.ndarray, counts: np.ndarray
) -> dict[str, float]:
    """One resample the slow way: copy each drawn patient's boxes under new image ids, re-match, score."""
    preds, refs, owner = [], [], {}
    pred_by = {p: g for p, g in pred.groupby(pred["image_id"].map(patient_of))}
    ref_by = {p: g for p, g in ref.groupby(ref["image_id"].map(patient_of))}
    for patient, k in zip(patients, counts, strict=True):
        for copy in range(int(k)):
            for frames, source in ((preds, pred_by), (refs, ref_by)):
                if patient in source:
                    frames.append(source[patient].assign(image_id=source[patient]["image_id"] + f"~{copy}"))
            owner.update({f"{i}~{copy}": f"{patient}~{copy}" for i in ref_by[patient]["image_id"].unique()})
    return metrics(match(pd.concat(preds), pd.concat(refs), owner))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--naive", type=int, default=20, help="resamples timed on the naive side, extrapolated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = EvaluateParams(bootstrap_resamples=args.resamples)

    model_boxes, reader_boxes, ref, patient_of = external_set(args.seed)
    t0 = time.perf_counter()
    metrics(match(model_boxes.iloc[:5], ref.iloc[:5]))  # warm-up: first calls pay numpy's lazy set-up
    t_warmup = time.perf_counter() - t0

    t0 = time.perf_counter()
    model = match(model_boxes, ref, patient_of)
    t_match = time.perf_counter() - t0
    reader = match(reader_boxes, ref, patient_of)

    t0 = time.perf_counter()
    boot = bootstrap(model, params)
    t_boot = time.perf_counter() - t0
    t0 = time.perf_counter()
    for w in resample_weights(model.n_patients, args.resamples, params.bootstrap_seed):
        score_resamples(model, w[None, :], params.operating_conf, params.iou_index)
    t_rows = time.perf_counter() - t0
    t0 = time.perf_counter()
    diff = paired_difference(model, reader, params, metric="map50")
    t_paired = time.perf_counter() - t0

    weights = resample_weights(model.n_patients, args.naive, params.bootstrap_seed)
    t0 = time.perf_counter()
    for w in weights:
        naive_resample(model_boxes, ref, patient_of, model.patient_ids, w)
    t_naive = (time.perf_counter() - t0) / args.naive * args.resamples

    r = bootstrap(reader, params.model_copy(update={"bootstrap_resamples": 200}))["map50"]
    m50 = boot["map50"]
    print(f"external set (SYNTHETIC): {model.n_patients} patients, {model.n_images} images, "
          f"{sum(model.n_references.values())} reference boxes, {model.n_predictions} model boxes")  # fmt: skip
    print(f"model mAP50 {m50.point:.3f} ({m50.low:.3f}-{m50.high:.3f}); reader mAP50 {r.point:.3f}; model - reader "
          f"{diff.point:+.3f} ({diff.low:+.3f} to {diff.high:+.3f}), P {format_p(diff.to_dict())}")  # fmt: skip
    print(f"warm-up call: {t_warmup:.2f} s (once per process, not counted)")
    print(f"match once: {1000 * t_match:.1f} ms")
    total = t_match + t_boot
    print(f"bootstrap, {args.resamples} resamples, {len(boot)} metrics: {t_boot:.2f} s "
          f"({1000 * t_boot / args.resamples:.2f} ms each); match + bootstrap {total:.2f} s = "
          f"{total / GOAL_S:.2f} x the {GOAL_S:.0f} s goal")  # fmt: skip
    print(f"same resamples scored one at a time (no batching): {t_rows:.2f} s; batching gains {t_rows / t_boot:.1f}x")
    print(f"paired model-minus-reader bootstrap, {args.resamples} resamples: {t_paired:.2f} s")
    print(f"naive (re-match every resample), {args.naive} timed, extrapolated to {args.resamples}: {t_naive:.1f} s; "
          f"speed-up {t_naive / t_boot:.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
