"""Imports go down, and DVC sees every module a stage runs.

The layers, bottom to top:
1. shared modules, the top-level modules of `pipelines/` (contracts, settings, labels, io, runtime, progress, ...):
   they import no stage package and no edge module;
2. stage packages, `pipelines/<stage>/`: each imports shared modules and itself, never another stage package
   (except those named in STAGE_USES) and never an edge module at run time (a `run_<stage>(params: Params)` names
   `Params` under `if TYPE_CHECKING:`);
3. edge modules, `pipelines/config.py` (imports only the stages' `params` modules) and the driver: they may import
   stages;
4. `flows/`, which nothing in `pipelines/` imports.

Imports are read with `ast`, including those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PIPELINES = REPO / "pipelines"
STAGES = ("synth", "ingest", "split", "validate", "train", "evaluate", "register")
# Packages under the same import rule that are no DVC stage: predict reads new studies, not the pipeline's data.
PACKAGES = (*STAGES, "predict")
EDGES = {"pipelines.config", "pipelines.driver"}
# Stages built on another stage's code, each with the reason. Register judges the model evaluate scored: it compares
# a challenger with the champion on the same external set with evaluate's predictor and paired bootstrap, and the
# model card formats figures as evaluate's report does (one scorer, one format).
# Predict reads files through ingestion's own checks (one path for training and reading-room images) and finds the
# model through the registry's client (aliases, versions, the registry's readable errors).
# Register also stores monitoring's reference with the model: the training studies' feature rows, made by predict's
# detector and feature code, so a reference row and a monitored row of the same image are built by one function.
STAGE_USES = {"register": {"evaluate", "predict"}, "predict": {"ingest", "register"}}
# Modules a stage imports that cannot change what it writes for DVC, only what it tells MLflow: not dependencies
# (and not followed further: tracking reads the train package's results, it does not run training).
TRACKING_ONLY = {"flows/tracking.py"}
# Known exceptions to the rule, each with the reason it stands (keep this short; fix rather than extend it).
ALLOWED = {
    # A tool (`python -m pipelines.synth.calibration`), not run by the synth stage: it scores the simulated readers
    # with evaluate's scorer so the figures quoted in params.yaml are the ones evaluate computes (issue 8, A.1).
    ("pipelines/synth/calibration.py", "pipelines.evaluate.scoring"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def imports(path: Path) -> set[str]:
    """Project modules `path` imports at run time (`from pkg import mod` counts as pkg.mod when it is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                module = _module_name(path)
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                base = ".".join([package.rsplit(".", node.level - 1)[0], base]).strip(".")
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if _file_of(f"{base}.{a.name}") is not None)
    return {m for m in found if m.split(".")[0] in {"pipelines", "flows"}}


def _file_of(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pipelines" and parts[1] in PACKAGES else None


def _py_files(root: Path) -> Iterator[Path]:
    yield from sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_stage_packages_import_only_themselves_and_shared_modules() -> None:
    wrong = []
    for stage in PACKAGES:
        for path in _py_files(PIPELINES / stage):
            for module in imports(path):
                other = _stage_of(module)
                allowed = {stage, *STAGE_USES.get(stage, set())}
                upward = (other is not None and other not in allowed) or module in EDGES or module.startswith("flows")
                if upward and (str(path.relative_to(REPO)), module) not in ALLOWED:
                    wrong.append(f"{path.relative_to(REPO)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_every_exception_is_still_needed() -> None:
    stale = [(path, module) for path, module in ALLOWED if module not in imports(REPO / path)]
    assert not stale, f"remove from ALLOWED, the import is gone: {stale}"


def test_shared_modules_import_no_stage_and_no_edge() -> None:
    wrong = []
    for path in sorted(PIPELINES.glob("*.py")):
        name = _module_name(path)
        if name in EDGES:
            continue
        for module in imports(path):
            if _stage_of(module) or module in EDGES or module.startswith("flows"):
                wrong.append(f"{path.relative_to(REPO)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_config_imports_only_the_stages_params_modules() -> None:
    stage_imports = {m for m in imports(PIPELINES / "config.py") if _stage_of(m)}
    assert stage_imports, "config.py should assemble the stages' params"
    assert all(m.endswith(".params") or m == f"pipelines.{_stage_of(m)}" for m in stage_imports), stage_imports


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    # The rule is only as good as the parser: an upward import inside a function is caught, a type-only one is not.
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipelines.config import Params\n"
        "def f():\n    from pipelines.train.yolo_data import build_view\n"
    )
    assert imports(probe) == {"pipelines.train.yolo_data"}


# ---------------------------------------------------------------------------------------------- dvc.yaml deps


def runtime_closure(entries: list[Path]) -> set[str]:
    """Project files the entries import, transitively, as repo-relative paths.

    `pipelines.config` is a leaf here: it imports every stage's params schema, but those reach a stage as values
    DVC already tracks (the stage's `params:`), and params.yaml documents every default (tests/unit/test_config.py).
    """
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        path = todo.pop()
        rel = str(path.relative_to(REPO))
        if rel in seen:
            continue
        seen.add(rel)
        if _module_name(path) == "pipelines.config" or rel in TRACKING_ONLY:
            continue
        for module in imports(path):
            # Importing pipelines.x.y runs pipelines/x/__init__.py first.
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                found = _file_of(".".join(parts[:i]))
                if found is not None:
                    todo.append(found)
    return seen


def _dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def _code_deps(stage: dict) -> list[str]:
    return [d for d in stage.get("deps", []) if str(d).startswith(("pipelines", "flows"))]


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_stage_depends_on_every_module_it_runs(stage: str) -> None:
    # What `cordwatch <stage>` runs: its flow, and the stage package's entry points (tools in the package that the
    # stage never runs, like synth's calibration, are covered by the package folder dep but not followed).
    candidates = [
        REPO / "flows" / f"{stage}_flow.py",
        *(PIPELINES / stage / f for f in ("__init__.py", "run.py", "core.py")),
    ]
    entries = [p for p in candidates if p.is_file()]
    deps = [d.rstrip("/") for d in _code_deps(_dvc_stages()[stage])]
    needed = {
        rel
        for rel in runtime_closure(entries)
        if rel not in TRACKING_ONLY and not rel.endswith(("pipelines/__init__.py", "flows/__init__.py"))
    }
    missing = sorted(rel for rel in needed if not any(rel == d or rel.startswith(f"{d}/") for d in deps))
    assert not missing, f"dvc.yaml stage {stage!r} runs these without listing them as deps: {missing}"
    unused = [d for d in deps if not any(rel == d or rel.startswith(f"{d}/") for rel in needed)]
    assert not unused, f"dvc.yaml stage {stage!r} lists code it never imports (needless re-runs): {unused}"
    assert "pipelines/config.py" in needed  # every stage parses params.yaml through it


def test_dvc_code_deps_exist() -> None:
    for name, stage in _dvc_stages().items():
        for dep in _code_deps(stage):
            assert (REPO / dep).exists(), f"{name}: dependency {dep} does not exist"
