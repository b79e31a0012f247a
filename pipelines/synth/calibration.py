"""Score simulated (or real) physician reads against the expert reference with ultralytics' own AP code.

Readers give no confidence, so every box scores 1.0. Matching is COCO-style greedy per image and class, by IoU
(highest first, each reference box used once, IoU >= 0.5) using `ultralytics.utils.metrics.box_iou`; AP comes
from `ultralytics.utils.metrics.ap_per_class`, and mAP50 is the mean over the classes present in the
reference. With all scores tied, the precision-recall curve follows input order (numpy's argsort keeps it for
equal keys), so rows are sorted by (image UID, label, box) first: the figure no longer depends on CSV order,
and since UIDs are hashes true and false positives interleave as they would in an arbitrary reading order.

Re-run the paper-profile calibration (no pixels rendered, about a minute):
    python -m pipelines.synth.calibration --profile paper [--params params.yaml]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.contracts import CLASS_NAMES
from pipelines.synth.params import SynthParams, load_synth_params
from pipelines.synth.readers import ANNOTATION_HEADER

IOU_THRESHOLD = 0.5
_BOX = ["x_min", "y_min", "x_max", "y_max"]


def _match(pred: pd.DataFrame, ref: pd.DataFrame) -> np.ndarray:
    """True-positive flags (n_pred,) from greedy IoU matching per image and class."""
    import torch
    from ultralytics.utils.metrics import box_iou

    tp = np.zeros(len(pred), dtype=bool)
    ref_groups = {key: grp for key, grp in ref.groupby(["sop_instance_uid", "label"], sort=False)}
    pos = {idx: i for i, idx in enumerate(pred.index)}
    for key, grp in pred.groupby(["sop_instance_uid", "label"], sort=False):
        gt = ref_groups.get(key)
        if gt is None:
            continue
        iou = box_iou(
            torch.as_tensor(grp[_BOX].to_numpy(np.float64)), torch.as_tensor(gt[_BOX].to_numpy(np.float64))
        ).numpy()
        cand = np.argwhere(iou >= IOU_THRESHOLD)
        if not len(cand):
            continue
        order = np.argsort(-iou[cand[:, 0], cand[:, 1]], kind="stable")
        used_p: set[int] = set()
        used_g: set[int] = set()
        for p_i, g_i in cand[order]:
            if p_i in used_p or g_i in used_g:
                continue
            used_p.add(int(p_i))
            used_g.add(int(g_i))
            tp[pos[grp.index[p_i]]] = True
    return tp


def reader_ap50(pred_df: pd.DataFrame, ref_df: pd.DataFrame) -> dict[str, float]:
    """AP at IoU 0.5 per class and their mean (`map50`) of one reader's boxes against the reference boxes.

    Args:
        pred_df: the reader's rows (columns sop_instance_uid, label, x_min, y_min, x_max, y_max); all score
        1.0.
        ref_df: the reference rows (same columns). Only images present in `ref_df` are scored.

    Returns:
        {"normal": ap, "compression": ap, "map50": mean over classes present in the reference}.
    """
    from ultralytics.utils.metrics import ap_per_class

    ref = ref_df[ref_df["label"].isin(CLASS_NAMES)]
    pred = pred_df[pred_df["sop_instance_uid"].isin(set(ref["sop_instance_uid"]))]
    pred = pred.sort_values(["sop_instance_uid", "label", *_BOX], kind="stable").reset_index(drop=True)
    cls_id = {c: i for i, c in enumerate(CLASS_NAMES)}
    tp = _match(pred, ref)
    out = ap_per_class(
        tp[:, None],
        np.ones(len(pred)),
        pred["label"].map(cls_id).to_numpy(),
        ref["label"].map(cls_id).to_numpy(),
    )
    ap, classes = out[5][:, 0], out[6]
    res = {CLASS_NAMES[int(c)]: float(a) for c, a in zip(classes, ap, strict=True)}
    res["map50"] = float(ap.mean()) if len(ap) else 0.0
    return res


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
                "ap50_normal": s.get("normal", 0.0),
                "ap50_compression": s.get("compression", 0.0),
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


if __name__ == "__main__":
    main()
