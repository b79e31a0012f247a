"""Score simulated (or real) physician reads against the expert reference, with the evaluation's own scoring.

Readers give no confidence, so every box scores 1.0 and a reader is one operating point. Matching and AP are
`pipelines.evaluate.scoring`'s `match` and `metrics`, the code `cordwatch evaluate` and `cordwatch score` use, so
the figures calibrated here are the figures the evaluation reports for the same reads. A reader's mAP50 is the
convention stated in `READER_METRICS_NOTE` (ultralytics' interpolation from recall 0, precision 1: about
r(1+p)/2 per class); tied scores form one curve point, so it does not depend on row order.

Re-run the paper-profile calibration and the disagreement table (no pixels rendered, about a minute):
    python -m pipelines.synth.calibration --profile paper [--params params.yaml]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.evaluate.scoring import match, metrics
from pipelines.synth.params import SynthParams, load_synth_params
from pipelines.synth.readers import ANNOTATION_HEADER

_BOX = ["x_min", "y_min", "x_max", "y_max"]


def _as_box_table(rows: pd.DataFrame) -> pd.DataFrame:
    """annotations.csv rows -> the scoring's box table (image_id is the SOP instance UID)."""
    return rows.rename(columns={"sop_instance_uid": "image_id"})[["image_id", "label", *_BOX]]


def reader_ap50(pred_df: pd.DataFrame, ref_df: pd.DataFrame) -> dict[str, float]:
    """AP at IoU 0.5 per class and their mean (`map50`) of one reader's boxes against the reference boxes.

    Args:
        pred_df: the reader's rows (columns sop_instance_uid, label, x_min, y_min, x_max, y_max); all score 1.0.
        ref_df: the reference rows (same columns). Only images present in `ref_df` are scored.

    Returns:
        {"normal": ap, "compression": ap, "map50": mean over the classes present in the reference}; a class
        without references is NaN.
    """
    ref = ref_df[ref_df["label"].isin(("normal", "compression"))]
    pred = pred_df[pred_df["sop_instance_uid"].isin(set(ref["sop_instance_uid"]))]
    figures = metrics(match(_as_box_table(pred), _as_box_table(ref)))
    return {
        "normal": figures["ap50_normal"],
        "compression": figures["ap50_compression"],
        "map50": figures["map50"],
    }


def reader_map50(pred_df: pd.DataFrame, ref_df: pd.DataFrame) -> float:
    """mAP50 (mean over the two classes) of one reader's boxes against the reference; see `reader_ap50`."""
    return reader_ap50(pred_df, ref_df)["map50"]


def score_readers(annotations: pd.DataFrame) -> pd.DataFrame:
    """mAP50 and per-class AP50 of every non-expert reader against the expert reads (one row per reader)."""
    ref = annotations[annotations["reader_level"] == "expert"]
    rows = []
    for (reader_id, level), grp in annotations[annotations["reader_level"] != "expert"].groupby(
        ["reader_id", "reader_level"], sort=True
    ):
        s = reader_ap50(grp, ref)
        rows.append(
            {
                "reader_id": reader_id,
                "reader_level": level,
                "map50": s["map50"],
                "ap50_normal": s["normal"],
                "ap50_compression": s["compression"],
            }
        )
    return pd.DataFrame(rows)


def simulate_annotations(
    params: SynthParams, profile: str, *, sites: Sequence[str] | None = None, max_patients: int | None = None
) -> pd.DataFrame:
    """The annotations.csv rows `generate_cohort` would write, without rendering or writing any image.

    Args:
        params: synth params.
        profile: size profile.
        sites: only these sites (default all in the profile).
        max_patients: only the first N patients of each site.
    """
    from pipelines.synth.cohort import annotate, iter_plans

    rows = []
    for plan in iter_plans(params, profile, list(sites) if sites else None, max_patients):
        rows.extend(annotate(params, profile, plan))
    df = pd.DataFrame(rows, columns=list(ANNOTATION_HEADER))
    df[_BOX] = df[_BOX].astype(float)
    return df


def calibration_table(
    params: SynthParams,
    profile: str = "paper",
    *,
    sites: Sequence[str] | None = None,
    max_patients: int | None = None,
) -> pd.DataFrame:
    """Per-reader mAP50 on a profile (all sites, or a subset), plus one summary row per reader level."""
    per_reader = score_readers(simulate_annotations(params, profile, sites=sites, max_patients=max_patients))
    levels = per_reader.groupby("reader_level", sort=False)[["map50", "ap50_normal", "ap50_compression"]].mean()
    levels = levels.reset_index().assign(reader_id=lambda d: "mean_" + d["reader_level"])
    return pd.concat([per_reader, levels[per_reader.columns]], ignore_index=True)


def disagreement_table(params: SynthParams, profile: str = "paper", *, max_patients: int | None = None) -> pd.DataFrame:
    """Where the simulated readers disagree with the expert: share of levels each reader labels differently, by the
    level's truth (Kang grade 1-3, a look-alike, a plain normal level). One row per reader, one column per kind.

    Levels are paired by simulating the same reads without skipped levels (`omit_rate` 0, every other draw as
    before), so each reader's rows of an image come in the expert's level order.
    """
    from pipelines.synth.cohort import iter_plans
    from pipelines.synth.render import level_boxes

    no_skips = params.model_copy(update={"readers": [r.model_copy(update={"omit_rate": 0.0}) for r in params.readers]})
    ann = simulate_annotations(no_skips, profile, max_patients=max_patients)
    looks = []
    for plan in iter_plans(no_skips, profile, max_patients=max_patients):
        for g in plan.geoms:
            present = np.flatnonzero(~np.isnan(level_boxes(plan.anat, g)).any(axis=1))
            looks += [plan.anat.lookalike[k] for k in present]
    expert = ann[ann["reader_level"] == "expert"].reset_index(drop=True)
    kind = np.where(expert["severity"] == "mild", "grade 1", "")
    kind = np.where(expert["severity"] == "moderate", "grade 2", kind)
    kind = np.where(expert["severity"] == "severe", "grade 3", kind)
    look = np.asarray(looks, dtype=object)
    kind = np.where((kind == "") & (look != "none"), "look-alike", kind)
    kind = np.where(kind == "", "plain normal", kind)
    rows = []
    for (reader_id, level), grp in ann[ann["reader_level"] != "expert"].groupby(["reader_id", "reader_level"]):
        if not np.array_equal(grp["sop_instance_uid"].to_numpy(), expert["sop_instance_uid"].to_numpy()):
            raise RuntimeError(f"reader {reader_id}'s levels do not pair with the expert's")  # a reader skipped one
        differs = grp["label"].to_numpy() != expert["label"].to_numpy()
        rows.append(
            {
                "reader_id": reader_id,
                "reader_level": level,
                **{
                    k: float(differs[kind == k].mean())
                    for k in ("grade 1", "grade 2", "grade 3", "look-alike", "plain normal")
                },
            }
        )
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: print the reader calibration table for a profile."""
    ap = argparse.ArgumentParser(description="Reader mAP50 against the expert on a synthetic profile")
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--params", type=Path, default=None, help="params.yaml (uses its synth: section) or a synth block")
    ap.add_argument("--sites", nargs="*", default=None)
    ap.add_argument("--max-patients", type=int, default=None)
    args = ap.parse_args(argv)
    table = calibration_table(
        load_synth_params(args.params), args.profile, sites=args.sites, max_patients=args.max_patients
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    params = load_synth_params(args.params)
    print("\nShare of levels labelled differently from the expert, by the level's truth:")
    print(
        disagreement_table(params, args.profile, max_patients=args.max_patients).to_string(
            index=False, float_format=lambda v: f"{v:.3f}"
        )
    )


if __name__ == "__main__":
    main()
