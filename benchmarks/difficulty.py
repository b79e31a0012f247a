"""How hard the SYNTHETIC phantoms are: the demo recipe trained on CPU, scored on the external centre, broken down by
Kang grade, look-alike, artefact and slice position, for the current generator and an older one side by side.

    .venv/bin/python benchmarks/difficulty.py                          # both generators, the demo recipe (~30 min)
    .venv/bin/python benchmarks/difficulty.py --no-baseline            # the current generator only (~15 min)
    .venv/bin/python benchmarks/difficulty.py --folds 0 --epochs 8     # a quick look (~5 min per generator)
    .venv/bin/python benchmarks/difficulty.py --analyse .              # the breakdown of a finished `make demo` here

Each generator's demo cohort goes through the pipeline's own stages (`pipelines.driver`: ingest, split, validate,
train with the demo recipe, evaluate; fixed seeds), so the overall figure is the one `make demo` reports. The
baseline is an older commit's generator (`--baseline-ref`, default 3e6fc6f: the phantoms issue 9 was filed
against), extracted with `git archive` and run on its own; everything after generation is the current code.

Definitions (external centre only, the model's boxes from `reports/evaluation/predictions.parquet`):
- mAP50: evaluate's own matching and 101-point interpolated AP (ultralytics/COCO), mean of the two classes;
  the 95% CI is evaluate's patient bootstrap from metrics.json.
- per grade: the expert's boxes of that Kang grade (the expert's `severity`); sensitivity = share with a
  `compression` box at IoU >= 0.5 and confidence >= evaluate.operating_conf; AP50 (compression) on the images whose
  compressed levels all have that grade, plus every image without compression.
- per look-alike: the expert's `normal` boxes at levels with that look-alike (from the generator's plan); false-
  positive rate = share with a `compression` box at IoU >= 0.5 and confidence >= operating_conf.
- per artefact and slice position: mAP50 on the images with / without it (images are few: read n).
Levels and images are not resampled here: these are point figures on one external set of ~30 patients.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.config import load_params  # noqa: E402
from pipelines.contracts import EXTERNAL_TEST  # noqa: E402
from pipelines.evaluate.scoring import box_iou, match, metrics  # noqa: E402
from pipelines.ingest import deid  # noqa: E402

BASELINE_REF = "3e6fc6f"
GRADE = {"none": 0, "mild": 1, "moderate": 2, "severe": 3}
BOX = ["x_min", "y_min", "x_max", "y_max"]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, log: Path | None = None) -> float:
    start = time.perf_counter()
    with open(log, "w") if log else open(os.devnull, "w") as fh:
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}); see {log}")
    return time.perf_counter() - start


def _generate(root: Path, ref: str | None, work: Path) -> float:
    """The demo cohort into root/data/synth: this checkout's generator, or the one at git `ref`."""
    synth = root / "data" / "synth"
    if (synth / "annotations.csv").is_file():
        return 0.0
    src = REPO
    if ref is not None:
        src = work / f"src-{ref}"
        if not src.is_dir():
            blob = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True, check=True).stdout
            src.mkdir(parents=True)
            with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
                tar.extractall(src, filter="data")
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "pipelines.synth", "--profile", "demo", "--out", str(synth)]
    return _run(cmd, src, env, root / "synth.log")


def _pipeline(root: Path, args: argparse.Namespace) -> float:
    """ingest -> split -> validate -> train -> evaluate through the driver, with the demo recipe."""
    if (root / "reports" / "evaluation" / "metrics.json").is_file():
        return 0.0
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    demo = raw["train"]["profiles"]["demo"]
    if args.folds is not None:
        demo["folds"] = args.folds
    source = root / "params.source.yaml"
    source.write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [sys.executable, "-m", "pipelines.driver", "--root", str(root), "--out", str(root / "out")]
    cmd += ["--params", str(source), "--profile", "demo", "--device", "cpu", "--loader-workers", "0"]
    cmd += ["--parallel", str(args.parallel), "--progress-every", "120"]
    if args.epochs is not None:
        cmd += ["--epochs", str(args.epochs)]
    return _run(cmd, REPO, log=root / "pipeline.log")


def _plan_levels(synth_dir: Path) -> pd.DataFrame:
    """Per sagittal T2 image and level: the generator's true box and look-alike (current generator only)."""
    from pipelines.synth.cohort import iter_plans
    from pipelines.synth.params import SynthParams
    from pipelines.synth.render import level_boxes

    rows = []
    for plan in iter_plans(SynthParams(), "demo", ["ext"]):
        for k, g in enumerate(plan.geoms):
            for lvl, box in enumerate(level_boxes(plan.anat, g)):
                if not np.isnan(box).any():
                    rows.append((plan.sop_uid("sag_t2", k), lvl, plan.anat.lookalike[lvl], *box))
    return pd.DataFrame(rows, columns=["sop_instance_uid", "level", "lookalike", *BOX])


def breakdown(root: Path, current_generator: bool) -> dict[str, Any]:
    """External-centre figures of one generator's run (see the module docstring for the definitions)."""
    params = load_params(root / "params.yaml")
    paths = params.paths
    conf = params.evaluate.operating_conf
    key = deid.load_key(params.ingest.pseudonym_key_env, paths.state_dir / "pseudonym.key")
    pseudo = deid.Pseudonymizer(key)
    cohort = pd.read_csv(paths.synth_dir / "cohort.csv", keep_default_na=False)
    cohort = cohort[(cohort["is_distractor"] == 0) & (cohort["site"] == "ext")].copy()
    cohort["image_id"] = cohort["sop_instance_uid"].map(pseudo.image)
    splits = pd.read_parquet(paths.splits_file)
    external = set(splits.loc[splits["split"] == EXTERNAL_TEST, "image_id"])
    cohort = cohort[cohort["image_id"].isin(external)]
    patient_of = dict(zip(cohort["image_id"], cohort["patient_id"], strict=True))

    ann = pd.read_csv(paths.synth_dir / "annotations.csv", keep_default_na=False)
    expert = ann[(ann["reader_level"] == "expert") & ann["sop_instance_uid"].isin(cohort["sop_instance_uid"])].copy()
    expert["image_id"] = expert["sop_instance_uid"].map(pseudo.image)
    expert["grade"] = expert["severity"].map(GRADE).fillna(0).astype(int)
    expert[BOX] = expert[BOX].astype(float)
    expert["lookalike"] = "none"
    if current_generator:
        plan = _plan_levels(paths.synth_dir)
        for i, row in expert.iterrows():
            cand = plan[plan["sop_instance_uid"] == row["sop_instance_uid"]]
            iou = box_iou(row[BOX].to_numpy(float)[None, :], cand[BOX].to_numpy(float))[0]
            expert.loc[i, "lookalike"] = cand["lookalike"].iloc[int(iou.argmax())]

    pred = pd.read_parquet(paths.evaluation_dir / "predictions.parquet")
    pred = pred[pred["image_id"].isin(cohort["image_id"])]
    m = match(pred.drop(columns="source"), expert[["image_id", "label", *BOX]], patient_of)
    evaluated = json.loads(paths.evaluation_metrics.read_text())["sets"][EXTERNAL_TEST]
    overall = metrics(m, conf=conf)

    # Best compression confidence over each expert box (IoU >= 0.5): the level's call at the operating point.
    comp = pred[pred["label"] == "compression"]
    best = np.zeros(len(expert))
    for j, (img, boxes) in enumerate(zip(expert["image_id"], expert[BOX].to_numpy(float), strict=True)):
        cand = comp[comp["image_id"] == img]
        if len(cand):
            iou = box_iou(boxes[None, :], cand[BOX].to_numpy(float))[0]
            hits = cand["score"].to_numpy()[iou >= 0.5]
            best[j] = hits.max() if hits.size else 0.0
    expert["called"] = best >= conf

    out: dict[str, Any] = {
        "n_patients": int(cohort["patient_id"].nunique()),
        "n_images": len(cohort),
        "map50": evaluated["model"]["map50"],
        "map50_rescored": overall["map50"],
        "mid_readers_map50": evaluated["reader_groups"].get("mid", {}).get("map50"),
        "per_grade": {},
        "per_lookalike": {},
        "per_image_condition": {},
    }
    image_index = pd.Series(np.arange(m.n_images), index=m.image_ids)
    worst = expert.groupby("image_id")["grade"].agg(lambda g: sorted(set(g) - {0}))
    for grade in (1, 2, 3):
        levels = expert[expert["grade"] == grade]
        pure = worst[worst.map(lambda gs, g=grade: gs in ([], [g]))].index
        mask = np.isin(m.image_ids, pure.to_numpy())
        sub = metrics(m.subset(mask), conf=conf) if levels.size else {}
        out["per_grade"][grade] = {
            "levels": len(levels),
            "sensitivity": float(levels["called"].mean()) if len(levels) else None,
            "ap50_compression": sub.get("ap50_compression"),
        }
    normal = expert[expert["grade"] == 0]
    for kind, grp in normal.groupby("lookalike"):
        out["per_lookalike"][kind] = {"levels": len(grp), "false_positive_rate": float(grp["called"].mean())}

    conditions: dict[str, pd.Series] = {}
    if "motion" in cohort:
        conditions["motion ghosts"] = cohort["motion"].astype(int) == 1
        conditions["wrap-around"] = cohort["wrap"].astype(int) == 1
        offset = cohort["slice_offset_mm"].astype(float).abs()
        conditions["slice >= 2.5 mm off midline"] = offset >= 2.5
    conditions["1.5 T"] = cohort["field_strength"].astype(float) < 2.0
    for name, flag in conditions.items():
        entry = {}
        for side, ids in (
            ("with", cohort.loc[flag.to_numpy(), "image_id"]),
            ("without", cohort.loc[~flag.to_numpy(), "image_id"]),
        ):
            mask = np.zeros(m.n_images, dtype=bool)
            mask[image_index.reindex(ids).dropna().astype(int).to_numpy()] = True
            entry[side] = {
                "images": int(mask.sum()),
                "map50": metrics(m.subset(mask), conf=conf)["map50"] if mask.any() else None,
            }
        out["per_image_condition"][name] = entry
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        return f"{v['point']:.3f} ({v['low']:.3f}-{v['high']:.3f})" if v.get("low") is not None else f"{v['point']:.3f}"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def render(results: dict[str, dict[str, Any]], seconds: dict[str, float]) -> str:
    names = list(results)
    lines = ["SYNTHETIC phantoms, demo profile, external centre (see the module docstring for definitions)", ""]
    head = "| figure | " + " | ".join(names) + " |"
    lines += [head, "|" + " --- |" * (len(names) + 1)]

    def row(label: str, get: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(_fmt(get(results[n])) for n in names) + " |")

    row("patients / images", lambda r: f"{r['n_patients']} / {r['n_images']}")
    row("model mAP50 (95% CI, patient bootstrap)", lambda r: r["map50"])
    row("simulated mid-level readers mAP50", lambda r: r["mid_readers_map50"])
    for g in (1, 2, 3):
        row(f"grade {g}: levels", lambda r, g=g: r["per_grade"][g]["levels"])
        row(f"grade {g}: sensitivity", lambda r, g=g: r["per_grade"][g]["sensitivity"])
        row(f"grade {g}: AP50 compression (pure images)", lambda r, g=g: r["per_grade"][g]["ap50_compression"])
    kinds = sorted({k for r in results.values() for k in r["per_lookalike"]})
    for k in kinds:
        row(f"normal, {k}: levels", lambda r, k=k: r["per_lookalike"].get(k, {}).get("levels"))
        row(
            f"normal, {k}: false-positive rate", lambda r, k=k: r["per_lookalike"].get(k, {}).get("false_positive_rate")
        )
    conds = sorted({c for r in results.values() for c in r["per_image_condition"]})
    for c in conds:
        for side in ("with", "without"):
            row(
                f"{side} {c}: images / mAP50",
                lambda r, c=c, s=side: (lambda e: f"{e['images']} / {_fmt(e['map50'])}" if e else None)(
                    r["per_image_condition"].get(c, {}).get(s)
                ),
            )
    lines.append("| wall time, s (generate + pipeline) | " + " | ".join(f"{seconds[n]:.0f}" for n in names) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/cordwatch-difficulty"))
    ap.add_argument("--baseline-ref", default=BASELINE_REF, help="git ref of the older generator")
    ap.add_argument("--no-baseline", action="store_true", help="only the current generator")
    ap.add_argument("--folds", type=int, nargs="*", default=None, help="CV folds to train (default: the demo's)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs (default: the demo's)")
    ap.add_argument("--parallel", type=int, default=2, help="folds trained at once")
    ap.add_argument("--analyse", type=Path, help="only break down a finished run of the current generator in DIR")
    args = ap.parse_args(argv)
    if args.analyse is not None:
        os.chdir(args.analyse)  # params.yaml's relative paths are relative to its folder
        result = {"current": breakdown(Path("."), current_generator=True)}
        print(render(result, {"current": float("nan")}))
        return 0
    out = args.out.resolve()
    runs: dict[str, str | None] = {"current": None}
    if not args.no_baseline:
        runs[f"baseline {args.baseline_ref}"] = args.baseline_ref
    results, seconds = {}, {}
    for name, ref in runs.items():
        root = out / ("current" if ref is None else f"baseline-{ref}")
        root.mkdir(parents=True, exist_ok=True)
        print(f"[{name}] generating and running the demo recipe in {root}", flush=True)
        seconds[name] = _generate(root, ref, out) + _pipeline(root, args)
        results[name] = breakdown(root, current_generator=ref is None)
    (out / "difficulty.json").write_text(json.dumps(results, indent=2, default=str))
    print(render(results, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
