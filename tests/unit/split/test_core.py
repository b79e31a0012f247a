"""Patient-grouped, stratified splits: no leakage by construction, external sites whole, deterministic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.contracts import CV, EXTERNAL_TEST, INTERNAL_TEST, NO_FOLD
from pipelines.split import SplitError, SplitParams, make_splits, split_summary


def _dataset(n_dev: int = 200, n_ext: int = 40, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    images, boxes = [], []
    for p in range(n_dev + n_ext):
        site = "dev" if p < n_dev else "ext"
        key = f"P{p:016x}"
        compressed = rng.random() < 0.6
        for k in range(int(rng.integers(1, 4))):
            image_id = f"I{p:012x}{k:04x}"
            images.append({"image_id": image_id, "patient_key": key, "site": site})
            boxes.append({"patient_key": key, "reader_level": "expert", "label": "normal"})
            if compressed:
                boxes.append({"patient_key": key, "reader_level": "expert", "label": "compression"})
            if rng.random() < 0.3:  # a mid-level reader's overcall must not change the stratum
                boxes.append({"patient_key": key, "reader_level": "mid", "label": "compression"})
    return pd.DataFrame(images), pd.DataFrame(boxes)


def test_no_patient_leaks_and_external_site_is_held_out_whole() -> None:
    images, ann = _dataset()
    splits = make_splits(images, ann, SplitParams(), "expert")
    assert len(splits) == len(images) and splits["image_id"].is_unique
    per_patient = splits.groupby("patient_key")[["split", "fold"]].nunique()
    assert (per_patient == 1).all().all()  # every image of a patient in one split and one fold
    assert set(splits.loc[splits["site"] == "ext", "split"]) == {EXTERNAL_TEST}
    assert "ext" not in set(splits.loc[splits["split"] == CV, "site"])
    assert sorted(splits.loc[splits["split"] == CV, "fold"].unique()) == [0, 1, 2, 3, 4]
    assert set(splits.loc[splits["split"] != CV, "fold"]) == {NO_FOLD} == {-1}
    n_test = splits.loc[splits["split"] == INTERNAL_TEST, "patient_key"].nunique()
    assert n_test == 20  # 10% of 200 development patients


def test_folds_are_stratified_by_patient_compression() -> None:
    images, ann = _dataset(n_dev=400)
    splits = make_splits(images, ann, SplitParams(), "expert")
    cv = splits[splits["split"] == "cv"].drop_duplicates("patient_key")
    overall = cv["has_compression"].mean()
    shares = cv.groupby("fold")["has_compression"].mean()
    assert (shares - overall).abs().max() < 0.03
    expert_compressed = set(ann.loc[(ann.reader_level == "expert") & (ann.label == "compression"), "patient_key"])
    assert set(splits.loc[splits["has_compression"], "patient_key"]) == expert_compressed


def test_the_reference_level_from_readers_sets_the_strata() -> None:
    images, ann = _dataset()
    by_mid = make_splits(images, ann, SplitParams(), "mid")  # readers.reference_level: mid
    mid_compressed = set(ann.loc[(ann.reader_level == "mid") & (ann.label == "compression"), "patient_key"])
    assert set(by_mid.loc[by_mid["has_compression"], "patient_key"]) == mid_compressed


def test_deterministic_for_a_seed_and_sensitive_to_it() -> None:
    images, ann = _dataset()
    a = make_splits(images, ann, SplitParams(seed=1), "expert")
    shuffled = images.sample(frac=1, random_state=3)  # row order must not matter
    b = make_splits(shuffled, ann, SplitParams(seed=1), "expert")
    c = make_splits(images, ann, SplitParams(seed=2), "expert")
    pd.testing.assert_frame_equal(a, b)
    assert not a["fold"].equals(c["fold"])


def test_study_sized_split() -> None:
    images, ann = _dataset(n_dev=641, n_ext=94)
    summary = split_summary(make_splits(images, ann, SplitParams(), "expert"))
    patients = dict(zip(summary["split"], summary["patients"], strict=True))
    assert patients["internal_test"] == 64 and patients["external_test"] == 94
    assert sum(v for k, v in patients.items() if k.startswith("cv_")) == 577  # the study's 577 / 64 / 94


def test_clear_errors() -> None:
    images, ann = _dataset(n_dev=8, n_ext=2)
    with pytest.raises(SplitError, match=r"external site\(s\) \['elsewhere'\] not in the data"):
        make_splits(images, ann, SplitParams(external_sites=["elsewhere"]), "expert")
    with pytest.raises(SplitError, match="for 10 folds"):
        make_splits(images, ann, SplitParams(k_folds=10), "expert")
    extra = {"image_id": "Iffffffffffffffff", "patient_key": images["patient_key"].iloc[0], "site": "ext"}
    moved = pd.concat([images, pd.DataFrame([extra])], ignore_index=True)  # a dev patient also imaged at ext
    with pytest.raises(SplitError, match="more than one site"):
        make_splits(moved, ann, SplitParams(), "expert")
