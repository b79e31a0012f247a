"""The register stage: the evaluated detector becomes a registry version with its gates, lineage and model card.

`run_register` is called by the Prefect flow (`flows/register_flow.py`), the CLI (so DVC's `register` stage) and
any driver. It reads what train and evaluate wrote (the final weights, `metrics.json`, the predictions, the train
and validation summaries), compares the model with the current champion on the same external set (a paired patient
bootstrap with evaluate's own scorer), judges the gates, logs a `register-<profile>` MLflow run holding the pyfunc
model and the model card, creates the version with every gate outcome in the same call, and moves the aliases
through `Registry.record_registration` (under the promotion lock). `champion` is never moved here: that needs a
reviewer (`cordwatch approve`).

Killed at any point, a re-run with the same inputs ends where an uninterrupted run would: the version is created
`in-progress` under a key of what it registers (`registration_key`), so the re-run finds it and finishes it (card,
description, aliases) instead of registering a copy, and a version already finished is only recorded, if it was not.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from pipelines import runtime
from pipelines.contracts import ANNOTATIONS_TABLE, EXTERNAL_TEST, IMAGES_TABLE
from pipelines.evaluate.predict import predict_boxes
from pipelines.evaluate.scoring import match
from pipelines.evaluate.uncertainty import paired_difference
from pipelines.io import write_json
from pipelines.labels import reference_boxes
from pipelines.mlflow_store import CLASSIC_VIEW, lineage_tags, setup_mlflow
from pipelines.predict.reference import REFERENCE_FILE, training_reference
from pipelines.progress import Progress, ProgressFn
from pipelines.register import gates
from pipelines.register.card import CardInputs, data_provenance, reader_protocol, render_card
from pipelines.register.faults import crash_point
from pipelines.register.pyfunc import log_detector
from pipelines.register.registry import (
    CHAMPION,
    COMPLETE,
    IN_PROGRESS,
    REGISTRATION_KEY_TAG,
    REGISTRATION_PROCESS_TAG,
    REGISTRATION_TAG,
    Registry,
    RegistryError,
    gate_tags,
    process_identity,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.config import Params

STAGE = "register"
MODEL_ARTIFACT = "detector"  # the pyfunc model's name in the register run
PREDICTIONS_ARTIFACT = "evaluation/external_predictions.parquet"  # kept for later champion comparisons
VALIDATION_FILE = "external_validation.json"  # stored with the model: what prospective monitoring compares with
CARD_ARTIFACTS = "model_card"
EXTERNAL_SET_TAG = "cordwatch.external_set"  # fingerprint of the external images and their reference boxes
CARD_FILES_TAG = "cordwatch.card_files"  # register run tag: the card's artifact paths (JSON), for a re-run's summary


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise RegistryError(f"{what} not found ({path}): run the earlier stages first")
    return json.loads(path.read_text(encoding="utf-8"))


def _fmt(figure: dict[str, Any] | None) -> str:
    if not figure or figure.get("point") is None:
        return "n/a"
    low, high = figure.get("low"), figure.get("high")
    ci = f" ({low:.3f}-{high:.3f})" if low is not None and high is not None else ""
    return f"{figure['point']:.3f}{ci}"


class ExternalSet(NamedTuple):
    """The external test set as the champion comparison needs it."""

    images: pd.DataFrame  # images.parquet rows, by image_id
    reference: pd.DataFrame  # the reference standard's boxes
    patient_of: dict[str, str]  # image_id -> patient key (the bootstrap's clusters)
    fingerprint: str  # of all three: a champion's stored predictions are reused only on the very same set


def external_set(params: Params) -> ExternalSet:
    """The external test set of the current splits, with its fingerprint."""
    paths = params.paths
    images = pd.read_parquet(paths.ingested_dir / IMAGES_TABLE)
    splits = pd.read_parquet(paths.splits_file)
    ids = set(splits.loc[splits["split"] == EXTERNAL_TEST, "image_id"])
    if not ids:
        raise RegistryError("the splits hold no external test set: nothing to compare a champion on")
    subset = images[images["image_id"].isin(ids)].sort_values("image_id").reset_index(drop=True)
    annotations = pd.read_parquet(paths.ingested_dir / ANNOTATIONS_TABLE)
    ref = reference_boxes(annotations[annotations["image_id"].isin(ids)], params.readers.reference_level)
    box_columns = ["image_id", "label", "x_min", "y_min", "x_max", "y_max"]
    ref = ref[box_columns].sort_values(box_columns).reset_index(drop=True)
    patient_of = dict(zip(subset["image_id"], subset["patient_key"].astype(str), strict=True))
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(subset[["image_id", "patient_key"]], index=False).values.tobytes())
    digest.update(pd.util.hash_pandas_object(ref, index=False).values.tobytes())
    return ExternalSet(subset, ref, patient_of, digest.hexdigest()[:16])


def champion_predictions(
    params: Params, registry: Registry, champion: str, images: pd.DataFrame, fingerprint: str
) -> tuple[pd.DataFrame, str]:
    """The champion's boxes on the external set: those it stored at its own registration when the set is the same,
    else predicted now with its own weights and image size. Returns the boxes and how they were obtained."""
    import mlflow

    client = registry.client
    version = registry.version(champion)
    with tempfile.TemporaryDirectory() as tmp:  # this client's store, whatever MLflow's process-wide URIs say
        if (version.tags or {}).get(EXTERNAL_SET_TAG) == fingerprint and version.run_id:
            local = client.download_artifacts(version.run_id, PREDICTIONS_ARTIFACT, tmp)
            return pd.read_parquet(local), "its predictions stored at registration (same external set)"
        source = client.get_model_version_download_uri(registry.name, champion)  # a logged model, not a run file
        model_dir = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=params.paths.mlflow_uri)
        )
        config = json.loads((model_dir / "artifacts" / "config.json").read_text())
        weights = next((model_dir / "artifacts").glob("*.pt"))
        boxes = predict_boxes(
            weights,
            [params.paths.ingested_dir / p for p in images["image_path"]],
            int(config["imgsz"]),
            device=params.train.device,
        )
        return boxes, "predicted now with its own weights (the external set changed since its registration)"


def compare_with_champion(
    params: Params, registry: Registry, champion: str | None, challenger_boxes: pd.DataFrame, external: ExternalSet
) -> tuple[dict[str, Any] | None, str]:
    """Challenger minus champion external mAP50 with a paired patient bootstrap (evaluate's scorer and settings).
    Returns the difference (None without a champion) and how the champion's boxes were obtained."""
    if champion is None:
        return None, ""
    theirs, how = champion_predictions(params, registry, champion, external.images, external.fingerprint)
    ref, patient_of = external.reference, external.patient_of
    ids = set(external.images["image_id"])
    ours = challenger_boxes[challenger_boxes["image_id"].isin(ids)].reset_index(drop=True)
    theirs = theirs[theirs["image_id"].isin(ids)].reset_index(drop=True)
    difference = paired_difference(
        match(ours, ref, patient_of), match(theirs, ref, patient_of), params.evaluate, "map50"
    ).to_dict()
    return difference, how


def external_validation(metrics: dict[str, Any]) -> dict[str, Any]:
    """The external test set's figures with their CIs, as evaluate wrote them, plus how they were made."""
    external = metrics["sets"][EXTERNAL_TEST]
    return {
        "set": EXTERNAL_TEST,
        "synthetic": bool(metrics.get("synthetic")),
        "ci_method": external.get("ci_method"),
        "ci_level": (metrics.get("params") or {}).get("ci_level"),
        "model": external["model"],
    }


def _headline_tags(metrics: dict[str, Any], train_summary: dict[str, Any]) -> dict[str, str]:
    external = metrics["sets"][EXTERNAL_TEST]
    tags = {"cordwatch.external.map50": _fmt(external["model"].get("map50"))}
    for group, figure in (external.get("model_minus_group") or {}).items():
        p = figure.get("p_value")
        tags[f"cordwatch.external.model_minus_{group}"] = _fmt(figure) + (f", P {p:.3f}" if p is not None else "")
    cv = train_summary.get("cv") or {}
    if "map50_mean" in cv:
        tags["cordwatch.cv.map50"] = f"mean {cv['map50_mean']:.3f}, range {cv['map50_min']:.3f}-{cv['map50_max']:.3f}"
    return tags


def training_tree_dirty(train_run_tags: dict[str, str]) -> bool | None:
    """Whether the model was trained from a git tree with uncommitted changes, read from its training run's lineage
    tag (written as Python's `True`/`False`); None when unknown (no git there, or no training run)."""
    return {"true": True, "false": False}.get(train_run_tags.get("cordwatch.lineage.git_dirty", "").strip().lower())


def _train_run_tags(client: MlflowClient, run_id: str) -> dict[str, str]:
    if not run_id:
        return {}
    try:
        return dict(client.get_run(run_id).data.tags)
    except Exception:  # a training run deleted or in another store: lineage reads as unknown
        return {}


def _evaluation_run_id(client: MlflowClient, experiment_id: str, train_run_id: str) -> str:
    """The latest evaluation run of this training run (the flow logs one per `cordwatch evaluate`)."""
    if not train_run_id:
        return ""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`cordwatch.stage` = 'evaluate' and tags.`cordwatch.train_run_id` = '{train_run_id}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else ""


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(
            name,
            description=(
                "YOLO11 detector of cervical spinal cord compression on sagittal T2 MRI (cordwatch). Aliases: "
                "`challenger` = latest registered; `approved-candidate` = passed every gate, awaiting a reviewer; "
                "`champion` = in use, moved only by a reviewer's sign-off (`cordwatch approve`). Each version's "
                "description links its model card."
            ),
        )
    except Exception as exc:
        if str(getattr(exc, "error_code", "")) != "RESOURCE_ALREADY_EXISTS":
            raise RegistryError(f"cannot create registered model {name}: {exc}") from exc


def _log_card(
    params: Params,
    metrics: dict[str, Any],
    train_summary: dict[str, Any],
    outcomes: list[gates.GateOutcome],
    lineage: dict[str, str],
    synthetic: bool,
    version: str,
    run_id: str,
) -> list[str]:
    """Render the model card of `version` and log it (markdown, offline HTML, plots, the validation Data Docs) to
    the register run under `model_card/`; return the artifact paths."""
    import mlflow

    paths = params.paths
    images = pd.read_parquet(paths.ingested_dir / IMAGES_TABLE)
    annotations = pd.read_parquet(paths.ingested_dir / ANNOTATIONS_TABLE)
    splits = pd.read_parquet(paths.splits_file)
    docs = paths.report_dir("validation")
    shown = {
        "git commit": lineage["cordwatch.lineage.git_commit"] or "unknown",
        "git tree at training": {"false": "clean", "true": "uncommitted changes"}.get(
            lineage["cordwatch.lineage.git_dirty"], "unknown"
        ),
        "DVC data hash (ingested data)": lineage["cordwatch.lineage.dvc_hash"] or "not run through dvc repro",
        "data fingerprint (images, annotations, splits)": lineage["cordwatch.data_fingerprint"] or "unknown",
        "params hash": lineage["cordwatch.lineage.params_hash"] or "unknown",
        "training run": lineage["cordwatch.train_run_id"] or "unknown",
        "evaluation run": lineage["cordwatch.evaluation_run_id"] or "not logged to MLflow",
        "registration run": run_id,
    }
    inputs = CardInputs(
        model_name=params.registry.model_name,
        version=version,
        metrics=metrics,
        train_summary=train_summary,
        provenance=data_provenance(images, splits),
        readers=reader_protocol(annotations, params.readers.reference_level),
        gates=outcomes,
        gate_params=params.registry.gates,
        lineage=shown,
        evaluation_dir=paths.evaluation_dir,
        validation_docs=docs if (docs / "index.html").is_file() else None,
        synthetic=synthetic,
    )
    with tempfile.TemporaryDirectory() as tmp:
        files = render_card(inputs, Path(tmp))  # the Data Docs are copied in beside the card, linked from it
        mlflow.log_artifacts(tmp, CARD_ARTIFACTS)
        logged = [files.markdown, files.html, *files.plots]
        return [f"{CARD_ARTIFACTS}/{path.relative_to(tmp).as_posix()}" for path in logged]


def _description(
    metrics: dict[str, Any], outcomes: list[gates.GateOutcome], synthetic: bool, experiment_id: str, run_id: str
) -> str:
    """The version's (and the register run's) description: where the card is, the verdict, the headline."""
    link = f"#/experiments/{experiment_id}/runs/{run_id}/artifacts/{CARD_ARTIFACTS}/model_card.html?{CLASSIC_VIEW}"
    lines = [
        f"**Model card:** [{CARD_ARTIFACTS}/model_card.html]({link}) (also `{CARD_ARTIFACTS}/model_card.md`), "
        f"artifacts of the registration run `{run_id}`. Start there.",
        "",
    ]
    if synthetic:
        lines += ["**SYNTHETIC DATA:** every figure below comes from the phantom cohort, not from patients.", ""]
    verdict = "passed every gate" if all(o.passed for o in outcomes) else "FAILED a gate: never eligible for champion"
    lines += [f"**Gates:** {verdict}.", ""]
    lines += [f"- {o.status}: `{o.name}`: {o.reason}" for o in outcomes]
    external = metrics["sets"][EXTERNAL_TEST]["model"].get("map50")
    lines += [
        "",
        f"**External mAP50** (AP at IoU 0.50, mean over classes, 101-point interpolation; 95% patient-bootstrap CI): "
        f"{_fmt(external)}.",
    ]
    return "\n".join(lines)


def registration_key(params: Params, version_tags: dict[str, str]) -> str:
    """What a version registers, hashed: the final weights, the settings stored with them, and every tag it is
    created with (gates and the champion compared with, headline figures, lineage down to the training and
    evaluation runs, the external set). Two registrations with one key would make two identical versions."""
    digest = hashlib.sha256(hashlib.sha256(params.paths.final_weights.read_bytes()).digest())
    imgsz = params.train.profile(params.profile).imgsz
    settings = [imgsz, params.evaluate.operating_conf, list(params.ingest.clip_percentiles), params.predict.iou]
    settings += [list(params.predict.uncertainty_band), params.predict.batch]
    digest.update(json.dumps({"tags": version_tags, "settings": settings}, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def _finish_version(
    params: Params,
    client: MlflowClient,
    metrics: dict[str, Any],
    train_summary: dict[str, Any],
    outcomes: list[gates.GateOutcome],
    lineage: dict[str, str],
    version: str,
    run_id: str,
    experiment_id: str,
) -> list[str]:
    """Inside the version's register run: its model card, then the description pointing at it. Safe to repeat (a
    re-run after a kill overwrites the same artifacts). Returns the card's artifact paths."""
    import mlflow

    synthetic = bool(metrics.get("synthetic"))
    card_files = _log_card(params, metrics, train_summary, outcomes, lineage, synthetic, version, run_id)
    description = _description(metrics, outcomes, synthetic, experiment_id, run_id)
    client.update_model_version(params.registry.model_name, version, description=description)
    mlflow.set_tag("mlflow.note.content", description)
    mlflow.set_tag(CARD_FILES_TAG, json.dumps(card_files))
    return card_files


def _new_version(
    params: Params,
    registry: Registry,
    metrics: dict[str, Any],
    train_summary: dict[str, Any],
    outcomes: list[gates.GateOutcome],
    lineage: dict[str, str],
    external: ExternalSet,
    predictions: pd.DataFrame,
    experiment_id: str,
    version_tags: dict[str, str],
    tell: Callable[[int, str], None],
) -> tuple[str, str, list[str]]:
    """Log the register run (pyfunc model with monitoring's reference, the external predictions, the reports),
    create the version with every tag in that one call, and finish it. Returns the version, run id and card files."""
    import mlflow

    paths, settings = params.paths, params.registry
    synthetic = bool(metrics.get("synthetic"))
    imgsz = params.train.profile(params.profile).imgsz
    tell(2, "reading the training data into monitoring's reference")
    reference = training_reference(
        paths.ingested_dir, paths.splits_file, paths.final_weights, imgsz=imgsz, conf=params.evaluate.operating_conf,
        iou=params.predict.iou, band=params.predict.uncertainty_band, batch=params.predict.batch,
    )  # fmt: skip

    tell(3, "logging the pyfunc model")
    run_tags = {
        **lineage_tags(params, paths.ingested_dir, synthetic),
        **lineage,
        "cordwatch.stage": STAGE,
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"register-{params.profile}", tags=run_tags) as run:
        run_id = run.info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            reference_path = Path(tmp) / REFERENCE_FILE
            reference.to_parquet(reference_path, index=False)
            # What prospective monitoring compares a site's performance with (monitoring.prospective).
            validation_path = Path(tmp) / VALIDATION_FILE
            write_json(validation_path, external_validation(metrics))
            info = log_detector(
                paths.final_weights,
                imgsz=imgsz,
                conf=params.evaluate.operating_conf,
                clip_percentiles=tuple(params.ingest.clip_percentiles),
                name=MODEL_ARTIFACT,
                extra_artifacts={"monitoring_reference": reference_path, "external_validation": validation_path},
            )
            external_ids = set(external.images["image_id"])
            kept = Path(tmp) / "external_predictions.parquet"
            predictions[predictions["image_id"].isin(external_ids)].to_parquet(kept, index=False)
            mlflow.log_artifact(str(kept), artifact_path="evaluation")
        for report in (paths.evaluation_metrics, paths.evaluation_report, paths.summary_file("train")):
            mlflow.log_artifact(str(report), artifact_path="evaluation")

        tell(4, "creating the version with its gates")
        _ensure_registered_model(registry.client, settings.model_name)
        version = registry.client.create_model_version(
            settings.model_name,
            source=info.model_uri,
            run_id=run_id,
            tags=version_tags,
            description="Model card: being written (see the register run's model_card/ artifacts).",
            model_id=info.model_id,
        ).version
        version = str(version)
        crash_point("register:version-created")  # the worst moment to die: a version with no card, no aliases

        tell(5, f"writing the model card of version {version}")
        card_files = _finish_version(
            params, registry.client, metrics, train_summary, outcomes, lineage, version, run_id, experiment_id
        )
    return version, run_id, card_files


def run_register(params: Params, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Register the evaluated final model as a new version of `registry.model_name`; return the summary also
    written to `reports/register/summary.json` (version, aliases it holds, gate outcomes, timings)."""
    import mlflow

    start = time.perf_counter()
    paths, settings = params.paths, params.registry

    def tell(done: int, detail: str) -> None:
        if progress is not None:
            progress(Progress(STAGE, done, 6, "step", detail, detail))

    runtime.configure_ultralytics(paths.state_dir)
    if not paths.final_weights.is_file():
        raise RegistryError(f"no final model ({paths.final_weights}): run `cordwatch train` first")
    metrics = _read_json(paths.evaluation_metrics, "evaluation metrics")
    train_summary = _read_json(paths.summary_file("train"), "train summary")
    validation = (
        json.loads(paths.summary_file("validation").read_text()) if paths.summary_file("validation").is_file() else None
    )
    train_run_id = _read_json(paths.train_run_file, "training run record").get("mlflow_run_id", "")
    predictions = pd.read_parquet(paths.evaluation_dir / "predictions.parquet")

    registry = open_registry(params)
    client = registry.client
    experiment_id = setup_mlflow(params)
    trained = _train_run_tags(client, train_run_id)
    evaluation_run_id = _evaluation_run_id(client, experiment_id, train_run_id)

    tell(1, "comparing with the champion on the external set")
    champion = registry.alias(CHAMPION)
    external = external_set(params)
    difference, champion_source = compare_with_champion(params, registry, champion, predictions, external)
    g = settings.gates
    dirty = training_tree_dirty(trained)
    outcomes = [
        gates.external_floor(metrics, g.min_external_map50_lower),
        gates.subgroups(metrics, g.max_subgroup_shortfall),
        gates.non_inferior(difference, g.noninferiority_margin, champion),
        gates.data_contracts(
            validation, train_summary.get("data_fingerprint", ""), (validation or {}).get("data_fingerprint")
        ),
        gates.clean_tree(dirty, g.dirty_tree),
    ]
    synthetic = bool(metrics.get("synthetic"))
    lineage = {
        "cordwatch.lineage.git_commit": trained.get("cordwatch.lineage.git_commit", ""),
        "cordwatch.lineage.git_dirty": "" if dirty is None else str(dirty).lower(),
        "cordwatch.lineage.dvc_hash": trained.get("cordwatch.lineage.dvc_hash", ""),
        "cordwatch.lineage.params_hash": trained.get("cordwatch.lineage.params_hash", ""),
        "cordwatch.data_fingerprint": train_summary.get("data_fingerprint", ""),
        "cordwatch.train_run_id": train_run_id,
        "cordwatch.evaluation_run_id": evaluation_run_id,
    }

    version_tags = {
        **gate_tags(outcomes, champion),
        **_headline_tags(metrics, train_summary),
        **lineage,
        EXTERNAL_SET_TAG: external.fingerprint,
        "cordwatch.synthetic_data": str(synthetic).lower(),
        "cordwatch.profile": params.profile,
    }
    if champion is not None:
        version_tags["cordwatch.gates.champion_boxes"] = champion_source
    key = registration_key(params, version_tags)
    abandoned = registry.clear_abandoned(key)  # killed registrations of other inputs
    earlier = registry.registered_as(key)  # a run of these very inputs was killed, or this is a repeat
    if earlier is None:
        creating = {REGISTRATION_KEY_TAG: key, REGISTRATION_TAG: IN_PROGRESS}
        creating[REGISTRATION_PROCESS_TAG] = process_identity(os.getpid()) or ""
        version, run_id, card_files = _new_version(
            params, registry, metrics, train_summary, outcomes, lineage, external, predictions, experiment_id,
            {**version_tags, **creating}, tell,
        )  # fmt: skip
    elif (earlier.tags or {}).get(REGISTRATION_TAG, COMPLETE) != COMPLETE:  # in progress (or abandoned)
        version, run_id = str(earlier.version), str(earlier.run_id)
        tell(5, f"finishing version {version}, whose registration was killed half way")
        with mlflow.start_run(run_id=run_id):  # the killed run, reopened: the card goes beside its model
            card_files = _finish_version(
                params, client, metrics, train_summary, outcomes, lineage, version, run_id, experiment_id
            )
    else:  # finished before: only its aliases may be missing (killed before or inside record_registration)
        version, run_id = str(earlier.version), str(earlier.run_id)
        card_files = json.loads(client.get_run(run_id).data.tags.get(CARD_FILES_TAG, "[]"))
    if (client.get_model_version(settings.model_name, version).tags or {}).get(REGISTRATION_TAG, COMPLETE) != COMPLETE:
        client.set_model_version_tag(settings.model_name, version, REGISTRATION_TAG, COMPLETE)  # card written

    tell(6, "moving aliases under the promotion lock")
    held = registry.record_registration(version)
    summary = {
        "model": settings.model_name,
        "version": version,
        "aliases": {k: v for k, v in held.items() if v is not None},
        "gates": {o.name: {"status": o.status, "reason": o.reason} for o in outcomes},
        "passed": all(o.passed for o in outcomes),
        "champion_compared": champion,
        "abandoned_versions_cleared": abandoned,
        "run_id": run_id,
        "card": card_files,
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_json(paths.summary_file(STAGE), summary)
    return summary


def open_registry(params: Params) -> Registry:
    """The registry named by `paths.mlflow_uri`, credentials from the environment or a 0600 file, and a fast,
    readable failure when a server does not answer (MLflow's own client retries for minutes)."""
    import urllib.error
    import urllib.request

    from mlflow import MlflowClient

    from pipelines.register.credentials import CredentialsError, use_credentials

    uri = params.paths.mlflow_uri
    if uri.startswith(("http://", "https://")):
        try:
            use_credentials()
        except CredentialsError as exc:
            raise RegistryError(str(exc)) from exc
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5).close()
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryError(f"the registry at {uri} is unreachable: {getattr(exc, 'reason', exc)}") from exc
    settings = params.registry
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return Registry(
        client,
        settings.model_name,
        settings.lock_wait_s,
        settings.lock_stale_after_s,
        checkpoint=lambda step: crash_point(f"registry:{step}"),
    )
