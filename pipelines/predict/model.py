"""Which model reads: a registry URI (`models:/NAME@ALIAS` or `models:/NAME/VERSION`) or a local weights file.

A registered version is the pyfunc model `cordwatch register` logged: its `weights` and `config` artifacts (the
inference size, the operating-point confidence and the windowing it was trained with). They are downloaded once
per version into the local state folder and read from there; the version, not the alias, is what every output
records, so a later `cordwatch rollback` cannot make an old result name the wrong model.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipelines.contracts import CLASS_NAMES

if TYPE_CHECKING:
    from pipelines.config import Params

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


class ModelError(RuntimeError):
    """The model cannot be found or read; the message says which and what to do."""


@dataclass(frozen=True)
class ModelRef:
    """The model a prediction ran with, as every output records it."""

    name: str
    version: str
    uri: str  # as asked (an alias URI stays an alias URI here; `version` is what it resolved to)
    source: str  # "registry" or "weights"
    weights: Path
    imgsz: int
    conf: float
    clip_percentiles: tuple[float, float]
    class_names: tuple[str, ...]
    weights_sha256: str
    reference: Path | None = None  # monitoring's reference features, stored with a registered version
    validation: Path | None = None  # its external-validation figures with CIs (JSON), stored with it too

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "source": self.source,
            "imgsz": self.imgsz,
            "conf": self.conf,
            "clip_percentiles": list(self.clip_percentiles),
            "class_names": list(self.class_names),
            "weights_sha256": self.weights_sha256,
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_model(uri: str, params: Params) -> ModelRef:
    """The model `uri` names, ready to load.

    Raises:
        ModelError: no such file, registry, model, alias or version (the message names what exists).
    """
    match = _MODELS_URI.match(uri)
    if match is None:
        return _local_weights(Path(uri), params)
    return _registered(uri, match.group("name"), match.group("alias"), match.group("version"), params)


def _local_weights(path: Path, params: Params) -> ModelRef:
    if path.suffix != ".pt":
        raise ModelError(f"--model must be models:/NAME@ALIAS, models:/NAME/VERSION or a .pt weights file: {path}")
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    sha = _sha256(path)
    return ModelRef(
        name=path.stem,
        version=f"sha256:{sha[:12]}",
        uri=str(path),
        source="weights",
        weights=path,
        imgsz=params.train.profile(params.profile).imgsz,
        conf=params.evaluate.operating_conf,
        clip_percentiles=tuple(params.ingest.clip_percentiles),
        class_names=tuple(CLASS_NAMES),
        weights_sha256=sha,
    )


def _registered(uri: str, name: str, alias: str | None, version: str | None, params: Params) -> ModelRef:
    import mlflow.artifacts

    from pipelines.register.registry import Registry, RegistryError
    from pipelines.register.run import open_registry

    try:
        base = open_registry(params)
        registry = Registry(base.client, name, base.lock_wait_s, base.lock_stale_after_s)
        if alias is not None:
            version = registry.alias(alias)
            if version is None:
                known = ", ".join(f"{a}: v{v}" for a, v in sorted(registry.aliases().items())) or "none"
                raise ModelError(
                    f"no version of {name} holds the alias {alias!r} (aliases: {known}); a reviewer sets "
                    f"`champion` with `cordwatch approve VERSION`, or pass --model models:/{name}/VERSION"
                )
        registry.version(str(version))  # a clear error naming the versions that exist
    except RegistryError as exc:
        raise ModelError(str(exc)) from exc
    cache = params.paths.state_dir / "predict" / "models" / name / str(version)
    done = cache / ".complete"
    if not done.is_file():
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        try:
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=str(cache), tracking_uri=params.paths.mlflow_uri
            )
        except Exception as exc:
            shutil.rmtree(cache, ignore_errors=True)
            raise ModelError(f"cannot download {name} version {version}: {exc}") from exc
        done.touch()
    return _from_pyfunc_dir(cache, name, str(version), uri)


def _from_pyfunc_dir(root: Path, name: str, version: str, uri: str) -> ModelRef:
    """The weights and config of a downloaded cordwatch pyfunc model (MLmodel names where its artifacts are)."""
    mlmodel = next(iter(sorted(root.rglob("MLmodel"))), None)
    if mlmodel is None:
        raise ModelError(f"{name} version {version} has no MLmodel file: not a model `cordwatch register` logged")
    flavor = yaml.safe_load(mlmodel.read_text()).get("flavors", {}).get("python_function", {})
    artifacts = flavor.get("artifacts", {})
    try:
        weights = mlmodel.parent / artifacts["weights"]["path"]
        config = json.loads((mlmodel.parent / artifacts["config"]["path"]).read_text())
    except (KeyError, OSError, ValueError) as exc:
        raise ModelError(f"{name} version {version} lacks the weights/config artifacts of a cordwatch model") from exc
    return ModelRef(
        name=name,
        version=version,
        uri=uri,
        source="registry",
        weights=weights,
        imgsz=int(config["imgsz"]),
        conf=float(config["conf"]),
        clip_percentiles=tuple(config["clip_percentiles"]),
        class_names=tuple(config["class_names"]),
        weights_sha256=_sha256(weights),
        reference=_artifact(mlmodel.parent, artifacts, "monitoring_reference"),
        validation=_artifact(mlmodel.parent, artifacts, "external_validation"),
    )


def _artifact(root: Path, artifacts: dict[str, Any], name: str) -> Path | None:
    """An optional pyfunc artifact's path (versions registered before it existed lack it)."""
    return root / artifacts[name]["path"] if name in artifacts else None
