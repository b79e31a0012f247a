"""Shadow mode: how often a silent challenger agrees with the champion on the same studies, per site.

The challenger's boxes are in `STORE/predictions.parquet` only (`monitoring.collect`); nothing it says reaches a
clinician's output. Before labels exist, agreement is what can be measured:
- study level: both call the study positive (any compression box) or both negative; the share, and Cohen's kappa
  (scikit-learn), which discounts the agreement two raters with those positive rates would reach by chance;
- box level: per image, each class's challenger boxes matched one-to-one to the champion's (IoU >= 0.5, greedy in
  descending confidence, evaluate's `box_iou` and `greedy_match`); agreement F1 = 2 * matched / (champion boxes +
  challenger boxes).
Once labels arrive, `monitoring.prospective` adds the paired difference in mAP50.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from monitoring.collect import CHALLENGER, CHAMPION
from pipelines.evaluate.scoring import box_iou, greedy_match

BOX = ["x_min", "y_min", "x_max", "y_max"]


def _matched_boxes(champion: pd.DataFrame, challenger: pd.DataFrame) -> int:
    """Challenger boxes matched to a champion box of the same class and image at IoU >= 0.5."""
    matched = 0
    by_image = dict(iter(champion.groupby(["image_id", "label"])))  # once: a filter per group would be quadratic
    for key, chal in challenger.groupby(["image_id", "label"]):
        champ = by_image.get(key)
        if champ is None:
            continue
        chal = chal.sort_values("score", ascending=False)
        iou = box_iou(champ[BOX].to_numpy(float), chal[BOX].to_numpy(float))
        matched += int(greedy_match(iou)[:, 0].sum())  # column 0: IoU 0.5
    return matched


def agreement(predictions: pd.DataFrame, images: pd.DataFrame) -> list[dict[str, Any]]:
    """Per site and over all sites: studies both models read, study-level agreement and kappa, box F1."""
    from sklearn.metrics import cohen_kappa_score

    if "challenger" not in images or not images["challenger"].astype(bool).any():
        return []
    read = images[images["challenger"].astype(bool)]  # studies the challenger read, with or without boxes
    out = []
    for site, rows in [("all", read), *read.groupby("site")]:
        studies = sorted(rows["study_key"].unique())
        preds = predictions[predictions["study_key"].isin(set(studies))]
        champ, chal = preds[preds["role"] == CHAMPION], preds[preds["role"] == CHALLENGER]

        def positive(boxes: pd.DataFrame, studies: list[str] = studies) -> np.ndarray:
            pos = set(boxes.loc[boxes["label"] == "compression", "study_key"])
            return np.array([s in pos for s in studies])

        a, b = positive(champ), positive(chal)
        kappa = float(cohen_kappa_score(a, b)) if len(set(a) | set(b)) > 1 else None
        total = len(champ) + len(chal)
        out.append(
            {
                "site": site,
                "studies": len(studies),
                "challenger": str(rows["challenger"].iloc[0]),
                "study_agreement": float((a == b).mean()),
                "kappa": kappa,
                "positive_rate": {"champion": float(a.mean()), "challenger": float(b.mean())},
                "box_f1": 2 * _matched_boxes(champ, chal) / total if total else None,
            }
        )
    return out
