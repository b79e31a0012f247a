"""Do the heatmaps explain? On a detector trained here on SYNTHETIC phantoms (tests/probe_detector.py), each
compression box's map (the method `cordwatch predict --mode xai` uses, HiResCAM on the Detect head's inputs):
- puts most of its mass on the true compressed level, far above a flat map and above EigenCAM (class-agnostic);
- moves when the compression moves (same patient, same noise, another level);
- names pixels that matter: removing the map's top pixels lowers the box's confidence more than removing as many
  random pixels.
Thresholds are set from the baselines measured here (see the closing note of issue 11 for the figures)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from pipelines.predict import cam
from pipelines.predict.detector import Boxes, Detector
from tests.probe_detector import ProbeDetector, probe, probe_image, train_probe_detector

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MARGIN_PX = 8  # one P3 cell at this input size (128 px, stride 8)
SEEDS, LEVELS = range(10), (1, 3, 4)  # test patients are not among the training seeds (1000+)
CONF = 0.25


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, repo_params) -> ProbeDetector:
    return train_probe_detector(tmp_path_factory.mktemp("probe-detector"), repo_params.synth)


@pytest.fixture(scope="module")
def repo_params():  # the repo's params.yaml (module-scoped: the trained detector is shared by the tests)
    from pipelines.config import load_params
    from tests.conftest import REPO

    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="module")
def detector(trained: ProbeDetector) -> Detector:
    return Detector(trained.weights, imgsz=trained.imgsz, conf=CONF)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _compression_box(boxes: Boxes, truth: np.ndarray) -> int | None:
    """The kept compression box matching the true level (IoU >= 0.5), the most confident; None if missed."""
    hits = [k for k in range(len(boxes)) if boxes.class_index[k] == 1 and _iou(boxes.xyxy[k], truth) >= 0.5]
    return max(hits, key=lambda k: boxes.confidence[k]) if hits else None


def _explained(detector: Detector, repo_params, method: str = "hirescam") -> Iterator[tuple]:
    for seed in SEEDS:
        for level in LEVELS:
            p = probe(repo_params.synth, seed, level)
            image = probe_image(p)
            boxes, states = detector.detect([image], keep_state=True)
            k = _compression_box(boxes[0], p.compressed_box)
            if k is not None:
                yield p, image, boxes[0], k, detector.explain(states[0], boxes[0], method)[k]


def _confidence(detector: Detector, image: np.ndarray, box: np.ndarray) -> float:
    """The best compression box's confidence at the same place (IoU >= 0.5), 0 when none is left."""
    after = detector.detect([image])[0][0]
    same = [j for j in range(len(after)) if after.class_index[j] == 1 and _iou(after.xyxy[j], box) >= 0.5]
    return max((float(after.confidence[j]) for j in same), default=0.0)


def test_the_map_falls_on_the_compressed_level(detector: Detector, repo_params) -> None:
    explained = list(_explained(detector, repo_params))
    assert len(explained) >= 0.8 * len(SEEDS) * len(LEVELS), "the detector must find the compressions first"
    near = [cam.energy_inside(heat, p.compressed_box, MARGIN_PX) for p, _, _, _, heat in explained]
    flat = [cam.energy_inside(np.ones_like(heat), p.compressed_box, MARGIN_PX) for p, _, _, _, heat in explained]
    eigen = [
        cam.energy_inside(heat, p.compressed_box, MARGIN_PX)
        for p, _, _, _, heat in _explained(detector, repo_params, "eigencam")
    ]
    pointing = np.mean([cam.peak_inside(heat, p.compressed_box, MARGIN_PX) for p, _, _, _, heat in explained])
    print(f"energy within {MARGIN_PX} px: hirescam {np.mean(near):.2f} (min {np.min(near):.2f}), flat map "
          f"{np.mean(flat):.3f}, eigencam {np.mean(eigen):.2f}; pointing {pointing:.2f}")  # fmt: skip
    assert np.mean(near) >= 0.6  # most of the mass on the level (measured about 0.9)
    assert np.mean(near) >= 5 * np.mean(flat) and np.mean(near) > np.mean(eigen) + 0.2
    assert pointing >= 0.8


def test_the_map_moves_with_the_compression(detector: Detector, repo_params) -> None:
    moved = 0
    for seed in SEEDS:
        upper, lower = probe(repo_params.synth, seed, 1), probe(repo_params.synth, seed, 4)  # C3-C4, then C6-C7
        maps = []
        for p in (upper, lower):
            boxes, states = detector.detect([probe_image(p)], keep_state=True)
            k = _compression_box(boxes[0], p.compressed_box)
            maps.append(None if k is None else detector.explain(states[0], boxes[0])[k])
        if maps[0] is None or maps[1] is None:
            continue
        moved += 1
        for heat, own, other in ((maps[0], upper, lower), (maps[1], lower, upper)):
            assert cam.energy_inside(heat, own.compressed_box, MARGIN_PX) > 3 * cam.energy_inside(
                heat, other.compressed_box, MARGIN_PX
            )
        rows = np.arange(maps[0].shape[0])[:, None]
        centre = [float((heat * rows).sum() / heat.sum()) for heat in maps]
        truth = [(p.compressed_box[1] + p.compressed_box[3]) / 2 for p in (upper, lower)]
        for c, p in zip(centre, (upper, lower), strict=True):  # each map's centre row on its own level
            assert p.compressed_box[1] - MARGIN_PX <= c <= p.compressed_box[3] + MARGIN_PX
        # and it moves as far as the compression did (three levels, about 55 px here), within a quarter
        assert abs((centre[1] - centre[0]) - (truth[1] - truth[0])) <= 0.25 * (truth[1] - truth[0])
    assert moved >= 0.7 * len(SEEDS)


def test_removing_the_map_top_pixels_lowers_confidence_more_than_random(detector: Detector, repo_params) -> None:
    rng = np.random.default_rng(0)
    drops_map, drops_random = [], []
    for p, image, boxes, k, heat in _explained(detector, repo_params):
        box, before = boxes.xyxy[k], float(boxes.confidence[k])
        n = int((p.compressed_box[2] - p.compressed_box[0]) * (p.compressed_box[3] - p.compressed_box[1]))

        drops_map.append(
            before - _confidence(detector, cam.remove_evidence(image, np.argsort(heat.ravel())[::-1][:n]), box)
        )
        randoms = [
            _confidence(detector, cam.remove_evidence(image, rng.choice(heat.size, n, replace=False)), box)
            for _ in range(3)
        ]
        drops_random.append(before - float(np.mean(randoms)))
    print(f"confidence drop: map top {np.mean(drops_map):.3f}, random {np.mean(drops_random):.3f}")
    assert np.mean(drops_map) > 0.1 and np.mean(drops_map) > 2 * max(np.mean(drops_random), 0.0)


def test_the_detector_keeps_the_boxes_ultralytics_predict_keeps(trained: ProbeDetector, repo_params) -> None:
    """cordwatch runs ultralytics' predict steps itself (to keep anchors and features): same boxes, same scores."""
    from ultralytics import YOLO

    ours = Detector(trained.weights, imgsz=trained.imgsz, conf=0.05)
    bare = YOLO(str(trained.weights))
    compared = 0
    for seed in range(4):
        image = probe_image(probe(repo_params.synth, seed, seed % 6))
        theirs = bare.predict(image, imgsz=trained.imgsz, conf=0.05, device="cpu", verbose=False)[0].boxes
        mine = ours.detect([image])[0][0]
        order = np.lexsort((mine.xyxy[:, 1], mine.class_index))
        ref_order = np.lexsort((theirs.xyxy.numpy()[:, 1], theirs.cls.numpy()))
        assert len(mine) == len(theirs)
        np.testing.assert_allclose(mine.xyxy[order], theirs.xyxy.numpy()[ref_order], atol=1e-3)
        np.testing.assert_allclose(mine.confidence[order], theirs.conf.numpy()[ref_order], atol=1e-5)
        compared += len(mine)
    assert compared > 0
