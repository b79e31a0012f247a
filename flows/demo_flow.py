"""Prefect flow: the whole of cordwatch on the SYNTHETIC cohort, in one command (`cordwatch demo`, `make demo`).

1. synth: the two-centre phantom cohort of the profile (cached like every stage);
2. retrain: ingest -> split -> validate -> train -> evaluate -> register (`flows.retrain_flow`, a sub-flow);
3. predict: a few external-site studies read by the version just registered, in quick and in xai mode;
4. monitor: a stream of new dev-site studies, unchanged and then from a scanner the model never saw
   (`monitoring/scenarios.yaml`: `new_scanner`), read by the same version: its windows alert;
5. where to look: the MLflow UI, the drift dashboard, the reports.
Steps 3 and 4 name the new version explicitly: `champion` needs a reviewer (`cordwatch approve`), which a demo
must not do for anyone.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.retrain_flow import retrain_flow, run_cached_stage
from monitoring.run import run_monitor
from monitoring.scenarios import generate_stream, load_scenarios
from pipelines.config import Params
from pipelines.io import write_json
from pipelines.predict.inputs import group_by_study
from pipelines.predict.run import run_predict

STAGE = "demo"
PREDICTED_STUDIES = 3  # external-site studies shown in each mode


def _some_studies(site_dir: Path, out: Path, n: int) -> Path:
    """A folder holding copies of the files of the first `n` studies of a site (every series: predict selects)."""
    shutil.rmtree(out, ignore_errors=True)
    studies = group_by_study(site_dir)
    for uid in sorted(studies)[:n]:
        for path in studies[uid]:
            target = out / path.relative_to(site_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return out


@flow(name="cordwatch-demo")
def demo_flow(params: Params) -> dict[str, Any]:
    """Run the demo; returns (and writes to `reports/demo/summary.json`) what ran and where to look."""
    logger = get_run_logger()
    start = time.perf_counter()
    steps: dict[str, Any] = {}

    def step(n: int, name: str) -> None:
        logger.info("[%d/5] %s (%.0f s so far)", n, name, time.perf_counter() - start)

    step(1, "synth: the SYNTHETIC two-centre cohort")
    steps["synth"] = run_cached_stage(params, "synth")
    step(2, "retrain: ingest, split, validate, train, evaluate, register")
    retrained = retrain_flow(params)
    steps["retrain"] = {k: retrained[k] for k in ("ran", "cached", "version", "aliases", "passed", "seconds")}
    model_uri = f"models:/{retrained['model']}/{retrained['version']}"

    step(3, f"predict: {PREDICTED_STUDIES} external-site studies, quick and xai, with {model_uri}")
    demo_dir = params.paths.report_dir(STAGE)
    sites = {s.role: s.folder for s in params.synth.sites.values()}
    external = params.paths.synth_dir / "dicom" / sites["external"]
    chosen = _some_studies(external, params.paths.monitoring_dir.parent / "demo-studies", PREDICTED_STUDIES)
    for mode in ("quick", "xai"):
        out = demo_dir / f"predict-{mode}"
        summary = run_predict(params, chosen, out_dir=out, mode=mode, model_uri=model_uri)
        steps[f"predict_{mode}"] = {"studies": summary["studies"], "worklist": str(out / "summary.csv")}

    step(4, "monitor: new studies, unchanged then from a scanner the model never saw")
    scenario = load_scenarios(base=params.synth)["new_scanner"]
    scale = params.synth.profile(params.profile).matrix_scale
    stream_dir = params.paths.monitoring_dir.parent / "demo-stream"
    window = params.monitor.window_size  # one batch per window: the unchanged one quiet, the new scanner's alerting
    stream = generate_stream(
        params.synth, scenario, stream_dir, before=window, after=window, batch=window, seed=7, matrix_scale=scale
    )
    alerts: list[dict[str, Any]] = []
    for batch in stream:
        alerts += run_monitor(params, batch.dicom, model_uri=model_uri)["alerts"]
    segments = sorted({a["segment"] for a in alerts})
    steps["monitor"] = {"batches": len(stream), "alerts": len(alerts), "alert_segments": segments}

    step(5, "done")
    summary = {
        "stage": STAGE,
        "profile": params.profile,
        "synthetic": True,
        "model_uri": model_uri,
        "steps": steps,
        "seconds": round(time.perf_counter() - start, 1),
        "look": {
            "mlflow_ui": f".venv/bin/mlflow ui --backend-store-uri {params.paths.mlflow_uri}",
            "dashboard": "cordwatch dashboard",
            "evaluation_report": str(params.paths.evaluation_report),
            "worklists": [steps["predict_quick"]["worklist"], steps["predict_xai"]["worklist"]],
            "monitoring_reports": str(params.paths.report_dir("monitoring")),
            "alerts": str(params.paths.monitoring_dir / "alerts.parquet"),
        },
    }
    write_json(params.paths.summary_file(STAGE), summary)
    return summary
