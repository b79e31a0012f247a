"""The MLflow store every stage writes to: the URI and artifact root from params, the experiment, common run tags.

MLflow 3 defaults to `sqlite:///mlflow.db` in the working directory and refuses a plain file store; we name the
URI and the artifact root from params so nothing lands elsewhere. The experiment is marked as classic model
development, so the UI opens on runs and models rather than MLflow 3's GenAI view. Telemetry is off via
`pipelines.runtime`. The same code serves the embedded SQLite store and a tracking server (`paths.mlflow_uri`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.lineage import lineage

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.config import Params

EXPERIMENT = "cordwatch"
SYNTHETIC_NOTE = (
    "SYNTHETIC DATA: these figures come from cordwatch's synthetic phantom cohort, not from patients; "
    "they demonstrate the pipeline and are not evidence about any clinical model."
)
EXPERIMENT_DESCRIPTION = (
    "cordwatch: YOLO11 detection of cervical spinal cord compression on sagittal T2 MRI. Runs: `train-*` "
    "(cross-validated training, a child run per fold), `evaluate-*` (test sets, reader study, CIs), `register-*` "
    "(the registered version's model card and gate outcomes). Reviewers: start from Models > cordwatch-detector, "
    "open a version, and read its model card."
)
# MLflow 3's UI reads this experiment tag to choose the experiment's tabs (classic model training, not GenAI).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# Its sidebar's GenAI / Model training switch defaults to GenAI (kept in the browser's local storage); a link with
# this query opens the classic view, with the model registry in the sidebar.
CLASSIC_VIEW = "workflowType=machine_learning"


def setup_mlflow(params: Params) -> str:
    """Point MLflow at the configured store; create the experiment with our artifact root; return its id."""
    import mlflow

    mlflow.set_tracking_uri(params.paths.mlflow_uri)
    mlflow.set_registry_uri(params.paths.mlflow_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        tags = {**EXPERIMENT_KIND, "mlflow.note.content": EXPERIMENT_DESCRIPTION}
        if params.paths.mlflow_uri.startswith(("http://", "https://")):
            # A tracking server keeps artifacts in its own root (proxied): a local path here would strand them.
            experiment_id = mlflow.create_experiment(EXPERIMENT, tags=tags)
        else:
            root = params.paths.mlflow_artifacts.resolve()
            root.mkdir(parents=True, exist_ok=True)
            experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=root.as_uri(), tags=tags)
    else:
        experiment_id = experiment.experiment_id
        if experiment.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
            mlflow.set_experiment_tags({**EXPERIMENT_KIND, "mlflow.note.content": EXPERIMENT_DESCRIPTION})
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def lineage_tags(params: Params, data_path: Path, synthetic: bool, description: str = "") -> dict[str, str]:
    """Tags every run carries: data (DVC hash), code (git commit), settings (params hash), profile, synthetic flag,
    and the run's description (what it holds, for a reviewer who opens it; the SYNTHETIC note when it applies)."""
    tags = lineage(params, data_path).as_tags()
    tags["cordwatch.profile"] = params.profile
    tags["cordwatch.synthetic_data"] = str(synthetic).lower()
    note = "\n\n".join(part for part in (description, SYNTHETIC_NOTE if synthetic else "") if part)
    if note:
        tags["mlflow.note.content"] = note
    return tags


TRAIN_DESCRIPTION = (
    "Cross-validated YOLO11 training: one child run per fold (its patients held out of its training), each with "
    "its epochs, weights and ultralytics plots; this run holds the CV figures (cv_*) and the final model's weights "
    "(model/). A reviewer reads these figures in the registered version's model card."
)
EVALUATE_DESCRIPTION = (
    "Evaluation of the final model on the internal and external test sets, with the reader study: every figure "
    "with its patient-bootstrap CI (metrics), the subgroup tables, metrics.json and report.md. A reviewer reads "
    "them in the registered version's model card."
)


def start_run(params: Params, name: str, tags: dict[str, str]) -> tuple[MlflowClient, str]:
    """A new top-level run with MLflow's own context tags (user, source), as `mlflow.start_run` would add."""
    from mlflow import MlflowClient
    from mlflow.tracking.context.registry import resolve_tags

    experiment_id = setup_mlflow(params)
    client = MlflowClient(tracking_uri=params.paths.mlflow_uri, registry_uri=params.paths.mlflow_uri)
    run = client.create_run(experiment_id, run_name=name, tags=resolve_tags(tags))
    return client, run.info.run_id
