"""Patient-grouped, compression-stratified splits (the study's design: 5-fold CV, internal test, external centre).

Patients, not images, are the unit: every image of a patient lands in the same fold or test set, so nothing about a
patient leaks between training and evaluation. External site(s) named in params are held out whole.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from pipelines.contracts import CV, EXTERNAL_TEST, INTERNAL_TEST, NO_FOLD, SPLIT_COLUMNS
from pipelines.split.params import SplitParams


class SplitError(ValueError):
    """The data cannot be split as configured (unknown external site, too few patients for k folds, ...)."""


def patient_table(images: pd.DataFrame, annotations: pd.DataFrame, reference_level: str) -> pd.DataFrame:
    """One row per patient: site and whether the reference reader marked any level as compressed."""
    sites = images.groupby("patient_key")["site"].agg(lambda s: sorted(set(s)))
    multi = sites[sites.map(len) > 1]
    if not multi.empty:
        raise SplitError(
            f"{len(multi)} patient(s) imaged at more than one site, e.g. {multi.index[0]}: {multi.iloc[0]}"
        )
    ref = annotations[(annotations["reader_level"] == reference_level) & (annotations["label"] == "compression")]
    compressed = set(ref["patient_key"])
    table = pd.DataFrame({"patient_key": sites.index, "site": [s[0] for s in sites]})
    table["has_compression"] = table["patient_key"].isin(compressed)
    return table.sort_values("patient_key", kind="stable").reset_index(drop=True)


def make_splits(
    images: pd.DataFrame, annotations: pd.DataFrame, params: SplitParams, reference_level: str
) -> pd.DataFrame:
    """Assign every image to `cv` (with a fold), `internal_test` or `external_test`.

    Args:
        images: images.parquet (needs image_id, patient_key, site).
        annotations: annotations.parquet (needs patient_key, reader_level, label).
        params: the `split` section.
        reference_level: whose compression boxes define a patient's stratum (`readers.reference_level`).

    Returns:
        One row per image with SPLIT_COLUMNS, sorted by image_id; fold is NO_FOLD (-1) outside cv.

    Raises:
        SplitError: an external site is absent from the data, or there are too few development patients.
    """
    patients = patient_table(images, annotations, reference_level)
    present = set(patients["site"])
    missing = sorted(set(params.external_sites) - present)
    if missing:
        raise SplitError(f"external site(s) {missing} not in the data; sites present: {sorted(present)}")
    dev = patients[~patients["site"].isin(params.external_sites)].reset_index(drop=True)
    n_test = round(params.internal_test_fraction * len(dev))
    if len(dev) - n_test < params.k_folds:
        raise SplitError(
            f"{len(dev)} development patients leave {len(dev) - n_test} for {params.k_folds} folds; need at least one "
            "patient per fold (lower split.k_folds or split.internal_test_fraction)"
        )
    labels = dev["has_compression"].to_numpy()
    stratify = labels if _can_stratify(labels, n_test) else None
    if n_test:
        cv_idx, test_idx = train_test_split(
            np.arange(len(dev)), test_size=n_test, random_state=params.seed, stratify=stratify
        )
    else:
        cv_idx, test_idx = np.arange(len(dev)), np.array([], dtype=int)
    external = patients.loc[patients["site"].isin(params.external_sites), "patient_key"]
    assignment = {key: (EXTERNAL_TEST, NO_FOLD) for key in external}
    assignment.update({dev.at[i, "patient_key"]: (INTERNAL_TEST, NO_FOLD) for i in test_idx})
    cv = dev.iloc[np.sort(cv_idx)].reset_index(drop=True)
    cv_labels = cv["has_compression"].to_numpy()
    # Stratify folds when every class has at least k patients; otherwise plain shuffled folds (tiny ci cohorts).
    splitter = (
        StratifiedKFold(params.k_folds, shuffle=True, random_state=params.seed)
        if np.bincount(cv_labels.astype(int), minlength=2).min() >= params.k_folds
        else None
    )
    if splitter is not None:
        folds = splitter.split(np.zeros(len(cv)), cv_labels)
    else:
        folds = KFold(params.k_folds, shuffle=True, random_state=params.seed).split(np.zeros(len(cv)))
    for fold, (_, val_idx) in enumerate(folds):
        assignment.update({cv.at[i, "patient_key"]: (CV, fold) for i in val_idx})

    out = images[["image_id", "patient_key", "site"]].copy()
    out["split"] = out["patient_key"].map(lambda k: assignment[k][0])
    out["fold"] = out["patient_key"].map(lambda k: assignment[k][1]).astype("int64")
    out["has_compression"] = out["patient_key"].isin(set(patients.loc[patients["has_compression"], "patient_key"]))
    return out.sort_values("image_id", kind="stable").reset_index(drop=True)[list(SPLIT_COLUMNS)]


def _can_stratify(labels: np.ndarray, n_test: int) -> bool:
    counts = np.bincount(labels.astype(int), minlength=2)
    return n_test >= 2 and counts.min() >= 2 and len(labels) - n_test >= 2


def split_summary(splits: pd.DataFrame) -> pd.DataFrame:
    """Patients, images and compression share (of patients) per split and fold, for reports and DVC metrics."""
    rows = []
    keys = splits[["split", "fold"]].drop_duplicates().sort_values(["split", "fold"]).itertuples(index=False)
    for split, fold in keys:
        part = splits[(splits["split"] == split) & (splits["fold"] == fold)]
        per_patient = part.drop_duplicates("patient_key")
        rows.append(
            {
                "split": split if fold == NO_FOLD else f"{split}_fold{fold}",
                "patients": int(per_patient.shape[0]),
                "images": int(part.shape[0]),
                "compression_share": round(float(per_patient["has_compression"].mean()), 4),
                "sites": ",".join(sorted(set(part["site"]))),
            }
        )
    return pd.DataFrame(rows)
