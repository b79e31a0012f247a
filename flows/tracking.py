"""MLflow at the edge: tracking URI, experiment with an explicit artifact location, lineage tags.

MLflow 3 defaults to `sqlite:///mlflow.db` in the working directory and refuses a plain file store; we name the
URI and the artifact root from params so nothing lands elsewhere. Telemetry is off via `pipelines.runtime`.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.config import Params
from pipelines.lineage import lineage

EXPERIMENT = "cordwatch"
SYNTHETIC_NOTE = (
    "SYNTHETIC DATA: these figures come from cordwatch's synthetic phantom cohort, not from patients; "
    "they demonstrate the pipeline and are not evidence about any clinical model."
)


def setup_mlflow(params: Params) -> str:
    """Point MLflow at the configured store; create the experiment with our artifact root; return its id."""
    import mlflow

    mlflow.set_tracking_uri(params.paths.mlflow_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        root = params.paths.mlflow_artifacts.resolve()
        root.mkdir(parents=True, exist_ok=True)
        experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=root.as_uri())
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def lineage_tags(params: Params, data_path: Path, synthetic: bool) -> dict[str, str]:
    """Tags every run carries: data (DVC hash), code (git commit), settings (params hash), profile, synthetic flag."""
    tags = lineage(params, data_path).as_tags()
    tags["cordwatch.profile"] = params.profile
    tags["cordwatch.synthetic_data"] = str(synthetic).lower()
    if synthetic:
        tags["mlflow.note.content"] = SYNTHETIC_NOTE
    return tags
