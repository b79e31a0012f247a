"""Per-image latency of the registered pyfunc detector against bare ultralytics predict on the same weights, in one run.

    .venv/bin/python benchmarks/pyfunc_latency.py [--weights models/final.pt] [--synth data/synth] [--n 40]

Both sides run on CPU, one image a call, after a warm-up call each. Bare: `YOLO(weights).predict(png)` on the image
ingestion would write (the windowed 8-bit PNG, already on disk). pyfunc: `mlflow.pyfunc.load_model(...).predict`
on a one-row DataFrame with the DICOM path, so it also reads and windows the DICOM (the work a PACS-facing
model must do). The model is logged to a throwaway SQLite registry under a temporary folder.
Goal (issue 10): report the ratio; the pyfunc adds DICOM decoding and windowing, nothing else.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=REPO / "models" / "final.pt")
    ap.add_argument("--synth", type=Path, default=REPO / "data" / "synth", help="a generated cohort (cohort.csv)")
    ap.add_argument("--imgsz", type=int, default=224)
    ap.add_argument("--n", type=int, default=40, help="images timed on each side")
    args = ap.parse_args(argv)
    if not args.weights.is_file():
        raise SystemExit(f"no weights at {args.weights}: run `make demo` first or pass --weights")

    import cv2
    import mlflow
    import pandas as pd
    import pydicom

    from pipelines import runtime
    from pipelines.imaging import normalise
    from pipelines.register.pyfunc import log_detector

    clip = (0.5, 99.5)
    cohort = pd.read_csv(args.synth / "cohort.csv")
    dicoms = [args.synth / p for p in cohort.loc[cohort["is_distractor"] == 0, "rel_path"].head(args.n + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runtime.configure_ultralytics(root / "state")
        from ultralytics import YOLO

        pngs = []
        for i, path in enumerate(dicoms):
            png = root / f"{i}.png"
            cv2.imwrite(str(png), normalise(pydicom.dcmread(path).pixel_array, clip))
            pngs.append(png)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        exp = mlflow.create_experiment("latency", artifact_location=(root / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=exp):
            info = log_detector(args.weights, imgsz=args.imgsz, conf=0.001, clip_percentiles=clip)
        model = mlflow.pyfunc.load_model(info.model_uri)
        bare = YOLO(str(args.weights))

        def timed(call, items) -> list[float]:
            call(items[0])  # warm-up
            out = []
            for item in items[1:]:
                start = time.perf_counter()
                call(item)
                out.append(time.perf_counter() - start)
            return out

        t_bare = timed(lambda p: bare.predict(str(p), imgsz=args.imgsz, conf=0.001, device="cpu", verbose=False), pngs)
        t_pyfunc = timed(lambda p: model.predict(pd.DataFrame({"path": [str(p)]})), dicoms)
    med_bare, med_py = statistics.median(t_bare), statistics.median(t_pyfunc)
    print(f"images: {len(t_bare)} (SYNTHETIC phantoms), imgsz {args.imgsz}, CPU, one image a call, median latency")
    print(f"bare ultralytics predict on the PNG: {1000 * med_bare:.1f} ms")
    print(f"pyfunc predict on the DICOM path:    {1000 * med_py:.1f} ms")
    print(f"ratio pyfunc / bare: {med_py / med_bare:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
