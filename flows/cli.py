"""The `cordwatch` command line. Each command runs its stage as a Prefect flow whose task calls the stage's
`run_<stage>` function: the same code `dvc repro` calls, and that `python -m pipelines.driver` runs without Prefect.

Heavy imports (prefect, pipelines) happen inside the commands, after `pipelines.runtime.configure` has switched off
telemetry and pointed tool state at the project: several of those libraries read their settings at import time.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

app = typer.Typer(
    name="cordwatch",
    help="cordwatch: MLOps for AI detection of cervical spinal cord compression on sagittal T2 MRI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read.", dir_okay=False)]
ProfileOpt = Annotated[
    str | None, typer.Option("--profile", help="Override the profile in params.yaml (ci, demo, paper).")
]


def _setup(params_file: Path, profile: str | None):  # noqa: ANN202 - returns pipelines.config.Params, imported lazily
    """Load params and configure the offline runtime; exit 2 with a readable message on bad params."""
    from pipelines import runtime
    from pipelines.config import ParamsError, load_params

    try:
        params = load_params(params_file, profile)
    except ParamsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    runtime.configure(params.paths.state_dir)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return params


def _require(path: Path, message: str) -> None:
    """Exit 2 with a clear message when a stage's input is missing."""
    if not path.is_file():
        typer.echo(f"error: {message} ({path} not found)", err=True)
        raise typer.Exit(2)


def _require_one_input(path: Path | None, pacs: str | None) -> None:
    """Exit 2 unless exactly one of PATH and --pacs is given, and PATH exists."""
    if (path is None) == (pacs is None):
        typer.echo("error: give a PATH or --pacs URL (one of them)", err=True)
        raise typer.Exit(2)
    if path is not None and not path.exists():
        typer.echo(f"error: input not found: {path}", err=True)
        raise typer.Exit(2)


@app.command()
def synth(
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: paths.synth_dir).")] = None,
    preview: Annotated[
        bool, typer.Option(help="Also write OUT/preview.png: patients per site and worst grade, expert boxes.")
    ] = False,
) -> None:
    """Generate the SYNTHETIC two-centre sagittal T2 DICOM cohort (phantoms, not patient data) for a profile."""
    params = _setup(params_file, profile)
    from flows.synth_flow import synth_flow

    summary = synth_flow(params, out, preview)
    typer.echo(summary.line())


@app.command()
def ingest(
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
    input_dir: Annotated[Path | None, typer.Option("--input", help="DICOM tree (default: ingest.input_dir).")] = None,
    annotations: Annotated[
        Path | None, typer.Option(help="Reader annotations CSV (default: ingest.annotations_csv).")
    ] = None,
    no_annotations: Annotated[bool, typer.Option(help="Ingest images only, ignoring any annotations file.")] = False,
    out: Annotated[Path | None, typer.Option(help="Output dataset folder (default: paths.ingested_dir).")] = None,
) -> None:
    """Ingest a DICOM tree: series rules, de-identification, normalised images, labels, manifest, quarantine."""
    params = _setup(params_file, profile)
    from flows.ingest_flow import ingest_flow, ingest_inputs
    from pipelines.ingest import IngestInputError

    src, ann = ingest_inputs(params, input_dir, annotations, no_annotations=no_annotations)
    try:
        summary = ingest_flow(params, src, out or params.paths.ingested_dir, ann)
    except IngestInputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(summary.line())


@app.command()
def split(
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """Split patients: k stratified folds + internal test from development sites; external sites held out whole."""
    params = _setup(params_file, profile)
    from flows.split_flow import split_flow
    from pipelines.contracts import IMAGES_TABLE
    from pipelines.split import SplitError

    _require(params.paths.ingested_dir / IMAGES_TABLE, "no ingested dataset; run `cordwatch ingest` first")
    try:
        summary = split_flow(params)
    except SplitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(summary.to_string(index=False))
    typer.echo(f"splits -> {params.paths.splits_file}")


@app.command()
def validate(
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """Check the data contracts (great-expectations) on images, annotations and splits; exit 1 if any fails."""
    params = _setup(params_file, profile)
    from flows.validate_flow import validate_flow
    from pipelines.contracts import IMAGES_TABLE
    from pipelines.validate import DataContractError

    _require(params.paths.ingested_dir / IMAGES_TABLE, "no ingested dataset; run `cordwatch ingest` first")
    try:
        report = validate_flow(params)
    except DataContractError as exc:
        typer.echo(f"data contract violated:\n{exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"validate: all data contracts hold ({report.docs_index})")


@app.command()
def train(
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """Cross-validated YOLO11 training on the development folds, then the final model (MLflow parent + fold runs)."""
    params = _setup(params_file, profile)
    from flows.train_flow import train_flow

    _require(params.paths.splits_file, "run `cordwatch split` first")
    _require(
        params.paths.summary_file("validation"), "run `cordwatch validate` first: no model trains on unchecked data"
    )
    summary = train_flow(params)
    typer.echo(summary.line())


@app.command()
def evaluate(
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """Final model and reader groups on the internal and external test sets: bootstrap CIs, paired P, subgroups."""
    params = _setup(params_file, profile)
    from flows.evaluate_flow import evaluate_flow

    _require(params.paths.final_weights, "no final model; run `cordwatch train` first")
    evaluate_flow(params)
    report = params.paths.evaluation_report
    text = report.read_text(encoding="utf-8")
    typer.echo(text[: text.index("## internal") if "## internal" in text else len(text)].rstrip())
    typer.echo(f"\nfull report: {report}")
    typer.echo(f"MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {params.paths.mlflow_uri}")


@app.command()
def register(
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """Register the evaluated model: gates, pyfunc model, model card; aliases challenger (and approved-candidate)."""
    params = _setup(params_file, profile)
    from flows.register_flow import register_flow
    from pipelines.register.registry import RegistryError

    _require(params.paths.evaluation_metrics, "no evaluation; run `cordwatch evaluate` first")
    try:
        summary = register_flow(params)
    except RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    verdict = "passed every gate" if summary["passed"] else "FAILED a gate: it can never become champion"
    aliases = ", ".join(summary["aliases"]) or "none"
    typer.echo(f"{summary['model']} version {summary['version']}: {verdict} (aliases: {aliases})")
    for name, gate in summary["gates"].items():
        typer.echo(f"  {gate['status']:<4} {name}: {gate['reason']}")
    typer.echo(f"model card: MLflow run {summary['run_id']}, artifacts model_card/model_card.html")
    typer.echo(
        f"MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {params.paths.mlflow_uri}, then open "
        f"http://127.0.0.1:5000/#/models/{summary['model']}/versions/{summary['version']}?workflowType=machine_learning"
    )
    if summary["passed"]:
        typer.echo(
            f"to put it in use: cordwatch approve {summary['version']} --reviewer NAME --note 'why' (a reviewer)"
        )


@app.command()
def demo(
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """The whole platform on the SYNTHETIC cohort: synth, retrain, predict (quick and xai), monitor a drifted
    stream, then where to look. Stages already done with the same inputs and code are skipped."""
    params = _setup(params_file, profile)
    from flows.demo_flow import demo_flow

    summary = demo_flow(params)
    steps, look = summary["steps"], summary["look"]
    retrained = steps["retrain"]
    typer.echo(
        f"demo [{summary['profile']}] in {summary['seconds']:.0f} s on SYNTHETIC phantoms: registered "
        f"{summary['model_uri']} ({'passed every gate' if retrained['passed'] else 'FAILED a gate'}; ran "
        f"{', '.join(retrained['ran']) or 'nothing, all cached'})"
    )
    typer.echo(
        f"predict: {steps['predict_quick']['studies']} external studies, quick and xai; monitor: "
        f"{steps['monitor']['batches']} batches, {steps['monitor']['alerts']} alerts "
        f"({', '.join(steps['monitor']['alert_segments']) or 'none'})"
    )
    typer.echo("where to look:")
    typer.echo(f"  model registry and runs: {look['mlflow_ui']}  (then http://127.0.0.1:5000)")
    typer.echo(f"  drift dashboards:        .venv/bin/{look['dashboard']}")
    typer.echo(f"  evaluation report:       {look['evaluation_report']}")
    typer.echo(f"  worklists:               {', '.join(look['worklists'])}")
    typer.echo(f"  monitoring reports:      {look['monitoring_reports']} (alerts: {look['alerts']})")
    version = summary["model_uri"].rsplit("/", 1)[1]
    if retrained["passed"]:
        typer.echo(f"  to put the model in use: cordwatch approve {version} --reviewer NAME --note 'why'")
    else:
        typer.echo(
            f"  gates: version {version} failed one, so it can never become champion (reports/register/summary.json)"
        )


@app.command()
def retrain(
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """Ingest -> split -> validate -> train -> evaluate -> register as one Prefect flow; stages whose inputs, code
    and outputs are unchanged since their last run are skipped (cached)."""
    params = _setup(params_file, profile)
    from flows.retrain_flow import retrain_flow

    summary = retrain_flow(params)
    for stage in summary["stages"]:
        typer.echo(f"  {stage['stage']:<9} {stage['status']:<6} {stage['wall_s']:>7.1f} s")
    verdict = "passed every gate" if summary["passed"] else "FAILED a gate: it can never become champion"
    aliases = ", ".join(summary["aliases"]) or "none"
    typer.echo(
        f"retrain [{summary['profile']}] in {summary['seconds']:.0f} s: {summary['model']} version "
        f"{summary['version']} {verdict} (aliases: {aliases}); ran {', '.join(summary['ran']) or 'nothing'}"
    )
    for name, gate in summary["gates"].items():
        typer.echo(f"  {gate['status']:<4} {name}: {gate['reason']}")
    typer.echo(f"summary: {params.paths.summary_file('retrain')}")


@app.command()
def predict(
    path: Annotated[
        Path | None, typer.Argument(help="A DICOM file, a study folder or a tree of studies (or use --pacs).")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="quick: boxes + triage; xai: + a heatmap per detection; auto: xai where it helps."),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="models:/NAME@ALIAS, models:/NAME/VERSION or a .pt file.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: reports/predict).")] = None,
    pacs: Annotated[
        str | None, typer.Option("--pacs", help="DICOMweb root URL: read new studies, store results back.")
    ] = None,
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """Read studies with the registered champion: triage, boxes, heatmaps, DICOM SR and captures.

    Exit code 0: every study read; 1: some file or study had a problem (each named in its result.json and in
    summary.csv; the rest were read); 2: nothing could run (bad arguments, no model, no input, PACS unreachable).
    """
    params = _setup(params_file, profile)
    from flows.predict_flow import predict_flow, write_request
    from pipelines.predict.inputs import PredictInputError
    from pipelines.predict.model import ModelError
    from pipelines.predict.pacs import PacsError

    _require_one_input(path, pacs)
    if mode is not None and mode not in ("quick", "xai", "auto"):
        typer.echo(f"error: --mode must be quick, xai or auto, not {mode!r}", err=True)
        raise typer.Exit(2)
    out_dir = out or params.paths.reports_dir / "predict"
    write_request(out_dir, source=path, pacs_url=pacs, mode=mode, model_uri=model)
    try:
        summary = predict_flow(params, out_dir)
    except (ModelError, PredictInputError, PacsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    model_info = summary["model"]
    synthetic = " [SYNTHETIC phantom studies]" if summary.get("synthetic_note") else ""
    typer.echo(
        f"predict ({summary['mode']}, {model_info['name']} version {model_info['version']}): {summary['studies']} "
        f"studies, {summary['images']} images, {summary['suspected']} with compression suspected, "
        f"{summary['explained']} explained, {summary['failed']} with problems{synthetic}"
    )
    typer.echo(f"worklist: {out_dir / 'summary.csv'} (most urgent first); per study: {out_dir / 'studies'}")
    if summary["failed"]:
        raise typer.Exit(1)


ReviewerOpt = Annotated[str, typer.Option("--reviewer", help="Who signs off (recorded on the version and the log).")]
NoteOpt = Annotated[str, typer.Option("--note", help="Why: recorded with the sign-off.")]


def _registry(params_file: Path, profile: str | None):  # noqa: ANN202 - pipelines.register.registry.Registry
    """The registry, or exit 2 with a one-line reason."""
    params = _setup(params_file, profile)
    from pipelines.register.registry import RegistryError
    from pipelines.register.run import open_registry

    try:
        return open_registry(params)
    except RegistryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _refused(action):  # noqa: ANN001, ANN202 - a zero-argument callable
    """Run a registry action; a refusal is one line on stderr and exit code 1 (nothing was changed)."""
    from mlflow.exceptions import MlflowException

    from pipelines.register.registry import RegistryError

    try:
        return action()
    except (RegistryError, MlflowException) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def approve(
    version: Annotated[str, typer.Argument(help="The model version to put in use.")],
    reviewer: ReviewerOpt = "",
    note: NoteOpt = "",
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """A reviewer's sign-off: `champion` moves to VERSION, which must have passed every gate against the current
    champion. Recorded on the version and in the registry's append-only audit log."""
    registry = _registry(params_file, profile)
    previous = _refused(lambda: registry.approve(version, reviewer, note))
    typer.echo(
        f"{registry.name}@champion: version {version} (was {previous or 'none'}), approved by {reviewer.strip()}"
    )


@app.command()
def rollback(
    to: Annotated[
        str | None, typer.Option("--to", help="The earlier approved version (default: the last one).")
    ] = None,
    reviewer: ReviewerOpt = "",
    note: NoteOpt = "",
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """Move `champion` back to an earlier approved version, recorded like an approval."""
    registry = _registry(params_file, profile)
    previous, now = _refused(lambda: registry.rollback(reviewer, note, to))
    typer.echo(f"{registry.name}@champion: version {now} (was {previous or 'none'}), rolled back by {reviewer.strip()}")


@app.command()
def models(
    audit: Annotated[bool, typer.Option(help="Also print the audit log (who moved which alias, when, why).")] = False,
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """The registered versions: aliases, gate outcomes, external mAP50, sign-offs."""
    from tabulate import tabulate

    registry = _registry(params_file, profile)
    rows = _refused(registry.table)
    if not rows:
        typer.echo(f"{registry.name}: no versions yet (run `cordwatch register`)")
        return
    typer.echo(tabulate(rows, headers="keys", tablefmt="simple"))
    if audit:
        entries = _refused(registry.audit_log)
        typer.echo("\naudit log:")
        for e in entries:
            detail = ", ".join(f"{k} {v}" for k, v in e.items() if k not in {"seq", "at", "action"} and v)
            typer.echo(f"  {e['seq']:>4}  {e.get('at', '')}  {e.get('action', '?'):<11} {detail}")


@app.command()
def score(
    pred: Annotated[Path, typer.Option("--pred", help="Prediction boxes CSV/parquet (score column optional).")],
    ref: Annotated[Path, typer.Option("--ref", help="Reference boxes CSV/parquet (patient_key optional).")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every figure with its CI here.")] = None,
    params_file: ParamsOpt = Path("params.yaml"),
) -> None:
    """Score any box file against a reference: mAP50, mAP50-95, P/R, lesion sensitivity/PPV, patient-bootstrap CIs.

    Both files: image_id, label (normal|compression), x_min, y_min, x_max, y_max in pixels. --pred may add `score`
    (absent: a reader, every box 1.0); --ref may add `patient_key` (absent: each image is its own cluster).
    """
    params = _setup(params_file, None)
    from pipelines.evaluate.score_files import score_files
    from pipelines.evaluate.scoring import BoxFileError
    from pipelines.io import write_json

    try:
        result = score_files(pred, ref, params.evaluate)
    except BoxFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(result.table())
    if json_out is not None:
        write_json(json_out, result.to_json())
        typer.echo(f"figures -> {json_out}")


class _StudiesByDefault(TyperGroup):
    """`cordwatch monitor PATH` runs the `studies` subcommand: any first argument that names no subcommand (a path,
    --pacs) is the default command's; `cordwatch monitor labels CSV` still reaches `labels`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["studies", *args]
        return super().parse_args(ctx, args)


monitor_app = typer.Typer(
    cls=_StudiesByDefault,
    help="Drift monitoring: `cordwatch monitor PATH|--pacs URL` reads new studies and compares windows with the "
    "model's reference; `cordwatch monitor labels CSV` scores delayed expert reads.",
    no_args_is_help=True,
)
app.add_typer(monitor_app, name="monitor")


@monitor_app.command("studies")
def monitor_studies(
    path: Annotated[Path | None, typer.Argument(help="A DICOM file, a study folder or a tree (or use --pacs).")] = None,
    pacs: Annotated[str | None, typer.Option("--pacs", help="DICOMweb root URL: read its new studies.")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="models:/NAME@ALIAS or /VERSION (default: monitor.model_uri).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where the quick reads go (default: reports/monitoring/reads).")
    ] = None,
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """Quick-read new studies, keep one feature row each, compare closed windows with the model's reference.

    An alert is a result, not a failure: each is printed, appended to data/monitoring/alerts.parquet and emitted as
    a Prefect event. Exit code 0: every study read; 1: some study had a problem (the rest were read); 2: nothing
    could run (bad arguments, no model or reference, no input, PACS unreachable).
    """
    params = _setup(params_file, profile)
    from flows.monitor_flow import monitor_flow
    from flows.predict_flow import write_request
    from pipelines.predict.inputs import PredictInputError
    from pipelines.predict.model import ModelError
    from pipelines.predict.pacs import PacsError

    _require_one_input(path, pacs)
    out_dir = out or params.paths.report_dir("monitoring") / "reads"
    write_request(out_dir, source=path, pacs_url=pacs, mode="quick", model_uri=model)
    try:
        summary = monitor_flow(params, out_dir)
    except (ModelError, PredictInputError, PacsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    info = summary["model"]
    typer.echo(
        f"monitor ({info['name']} version {info['version']}, reference {summary['reference_studies']} training "
        f"studies): {summary['studies_read']} studies read, {summary['new_rows']} new, {summary['already_kept']} "
        f"already kept, {summary['failed']} with problems; {summary['studies_kept']} in the feature store"
    )
    for alert in summary["alerts"]:
        typer.echo(f"ALERT window {alert['window']} {alert['segment']} (sites {alert['sites']}): {alert['reasons']}")
    typer.echo(f"reports: {summary['reports']}; dashboard: cordwatch dashboard")
    if summary["failed"]:
        raise typer.Exit(1)


@monitor_app.command("labels")
def monitor_labels(
    labels_csv: Annotated[
        Path, typer.Argument(help="Expert reads (ingestion's annotation CSV format) of monitored studies.")
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="The model whose external-validation CI is the floor.")
    ] = None,
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """Score delayed expert reads against what the model said: sensitivity and PPV at the operating point with
    patient-bootstrap CIs, per site and window.

    A site below the external-validation CI is an alert. Exit 0: scored; 2: unusable file or no model.
    """
    params = _setup(params_file, profile)
    from flows.monitor_flow import monitor_labels_flow, write_labels_request
    from monitoring.prospective import LabelsError
    from pipelines.ingest.annotations import AnnotationFileError
    from pipelines.predict.model import ModelError

    reports = params.paths.report_dir("monitoring")
    write_labels_request(reports, labels_csv, model)
    try:
        summary = monitor_labels_flow(params, reports)
    except (LabelsError, AnnotationFileError, ModelError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{summary['labelled_images']} labelled images scored ({summary['definition']})")
    if summary["labels_for_unmonitored_images"]:
        typer.echo(f"{summary['labels_for_unmonitored_images']} labelled images were never monitored: ignored")
    for r in summary["results"]:
        where = r["site"] if r["window"] is None else f"{r['site']} window {r['window']}"
        shown = []
        for name in ("sensitivity", "ppv"):
            f = r[name]
            ci = f" ({f['low']:.3f}-{f['high']:.3f})" if f.get("low") is not None else ""
            shown.append(f"{name} " + ("n/a" if f.get("point") is None else f"{f['point']:.3f}{ci}"))
        typer.echo(f"  {where}: {', '.join(shown)}; {r['images']} images, {r['patients']} patients")
    for alert in summary["alerts"]:
        typer.echo(f"ALERT {alert['segment']}: {alert['reasons']}")
    typer.echo(f"report: {reports / 'prospective.md'}")


@app.command()
def dashboard(
    site: Annotated[str | None, typer.Option(help="Your site code: its dashboard is listed first.")] = None,
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = None,
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """Serve the drift dashboards (the Evidently UI on loopback) until Ctrl-C; print each site's address."""
    params = _setup(params_file, profile)
    from monitoring.ui import DashboardError, serve_dashboard

    workspace = params.paths.monitoring_dir / "workspace"
    try:
        with serve_dashboard(workspace, port=port) as server:
            typer.echo(f"drift dashboards at {server.url} (Ctrl-C stops them)")
            for name, url in server.site_urls(first=site):
                typer.echo(f"  {name}: {url}")
            server.wait()
    except DashboardError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def ui(
    site: Annotated[str | None, typer.Option(help="Your site code: its drift dashboard is listed first.")] = None,
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """Start the Prefect UI, the MLflow UI and the drift dashboard on 127.0.0.1; print their addresses; Ctrl-C stops
    them and every process they started."""
    import signal

    params = _setup(params_file, profile)
    from flows.services import ServiceError, mlflow_ui, prefect_ui
    from monitoring.ui import DashboardError, exit_on_signal, serve_dashboard

    signal.signal(signal.SIGTERM, exit_on_signal)
    signal.signal(signal.SIGHUP, exit_on_signal)
    started: list[Any] = []  # Service or DashboardServer: each has .url, .process and .stop()
    try:
        started.append(prefect_ui(Path(os.environ.get("PREFECT_HOME", params.paths.state_dir / "prefect"))))
        typer.echo(f"Prefect UI (flow runs, deployments): {started[-1].url}")
        started.append(mlflow_ui(params.paths.mlflow_uri))
        typer.echo(f"MLflow UI (runs, registry, model cards): {started[-1].url}")
        workspace = params.paths.monitoring_dir / "workspace"
        if workspace.is_dir():
            dashboard = serve_dashboard(workspace)
            started.append(dashboard)
            typer.echo(f"drift dashboards: {dashboard.url}")
            for name, url in dashboard.site_urls(first=site):
                typer.echo(f"  {name}: {url}")
        else:
            typer.echo("drift dashboards: none yet (run `cordwatch monitor` first)")
        typer.echo("Ctrl-C stops them all.", err=True)
        while all(s.process.poll() is None for s in started):
            time.sleep(1.0)
        typer.echo("a server exited: stopping the others", err=True)
    except (ServiceError, DashboardError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        pass
    finally:
        for service in reversed(started):
            service.stop()


@app.command()
def schedule(
    params_file: ParamsOpt = Path("params.yaml"),
    profile: ProfileOpt = None,
) -> None:
    """Serve the retraining and monitoring deployments (schedules and triggers from params.yaml `schedule:`) until
    Ctrl-C. Point PREFECT_API_URL at a Prefect server (`prefect server start`): triggers need its services."""
    _setup(params_file, profile)
    import os

    from prefect import serve

    from flows.schedule import deployments

    if not os.environ.get("PREFECT_API_URL"):
        typer.echo(
            "warning: PREFECT_API_URL is not set: the deployments go to a temporary server that is gone when this "
            "stops, and event triggers do not run there (docs/orchestration.md)",
            err=True,
        )
    built = deployments(params_file)
    for d in built:
        typer.echo(f"serving {d.name}: cron {d.schedules[0].schedule.cron if d.schedules else 'none'}, "
                   f"{len(d.triggers)} trigger(s)")  # fmt: skip
    serve(*built)


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
