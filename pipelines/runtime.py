"""Process-wide settings that keep cordwatch offline and its tools' state inside the project.

Call `configure(state_dir)` once at an entry point (CLI, tests, benchmarks) before importing prefect, mlflow,
ultralytics or dvc: several of them read these variables at import time. Nothing happens at import of this module.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Telemetry and phone-home switches, each named for the tool that reads it.
_OFFLINE_ENV = {
    "DO_NOT_TRACK": "1",  # generic opt-out honoured by several tools (ultralytics, evidently)
    "DVC_NO_ANALYTICS": "1",  # dvc usage analytics
    "MLFLOW_DISABLE_TELEMETRY": "true",  # mlflow 3 usage telemetry
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # prefect server analytics
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",  # prefect client telemetry
    "YOLO_OFFLINE": "1",  # ultralytics: no GitHub/hub checks, no asset downloads
    "YOLO_VERBOSE": "False",  # ultralytics: quiet unless asked
    "HF_HUB_OFFLINE": "1",  # anything that would reach a model hub
    "EVIDENTLY_DISABLE_TELEMETRY": "1",  # evidently usage telemetry
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # not a phone-home: mlflow's download bars clutter the logs
}


def configure(state_dir: Path) -> None:
    """Switch every known phone-home off and point tool settings at `state_dir` (created if needed).

    Existing environment values win, so an operator can still point Prefect or MLflow at a real server.
    """
    state_dir = state_dir.resolve()
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    # Ultralytics keeps settings.json (and would fetch Arial.ttf) in YOLO_CONFIG_DIR: keep it in our state, with a
    # local TTF in place so dataset checks never ask the internet for a font.
    yolo_dir = state_dir / "ultralytics"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(yolo_dir))
    _place_font(Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics")
    # Prefect's ephemeral server keeps its SQLite under PREFECT_HOME.
    os.environ.setdefault("PREFECT_HOME", str(state_dir / "prefect"))
    # pydicom never downloads unless get_testdata_file(download=True) is called; we never call it.


def _place_font(font_dir: Path) -> None:
    """Copy matplotlib's bundled DejaVuSans as the Arial.ttf ultralytics looks for (any TTF satisfies it)."""
    target = font_dir / "Arial.ttf"
    if target.is_file():
        return
    try:
        import matplotlib

        source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    except ImportError:  # matplotlib comes with ultralytics; without it there is nothing to plot anyway
        return
    if source.is_file():
        font_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def configure_ultralytics(state_dir: Path) -> None:
    """Ultralytics settings for an offline, self-contained run (call before building a YOLO model).

    `sync` off stops its usage events; its own MLflow/ClearML/Comet/DVC/W&B callbacks are off because cordwatch logs
    to MLflow deliberately through its own callbacks (no stray `mlflow.db` or `runs/` in the working directory);
    datasets, weights and runs folders point into the project state instead of the user's home or CWD.
    """
    configure(state_dir)
    from ultralytics.utils import SETTINGS

    state_dir = state_dir.resolve()
    wanted = {
        "sync": False,
        "mlflow": False,
        "clearml": False,
        "comet": False,
        "dvc": False,
        "wandb": False,
        "tensorboard": False,
        "raytune": False,
        "datasets_dir": str(state_dir / "ultralytics" / "datasets"),
        "weights_dir": str(state_dir / "ultralytics" / "weights"),
        "runs_dir": str(state_dir / "ultralytics" / "runs"),
    }
    if any(SETTINGS.get(k) != v for k, v in wanted.items()):
        SETTINGS.update(wanted)
