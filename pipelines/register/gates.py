"""Registration gates: pure functions from the evaluation's figures and the lineage to an outcome with a reason.

A reviewer reads these reasons in the registry (one tag per gate), so each says what was compared with what. The
figures come from `reports/evaluation/metrics.json` (external test set); nothing here recomputes a metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.contracts import EXTERNAL_TEST


@dataclass(frozen=True)
class GateOutcome:
    """One gate's verdict. `warning` marks a recorded concern that does not block (e.g. a dirty tree on `warn`)."""

    name: str
    passed: bool
    reason: str
    warning: bool = False

    @property
    def status(self) -> str:
        """pass | warn | fail, as tagged on the model version."""
        return "fail" if not self.passed else ("warn" if self.warning else "pass")


def _external(metrics: dict[str, Any]) -> dict[str, Any]:
    try:
        return metrics["sets"][EXTERNAL_TEST]
    except KeyError:
        raise ValueError(
            "metrics.json has no external test set: evaluate the model on the external centre first"
        ) from None


def external_floor(metrics: dict[str, Any], floor: float) -> GateOutcome:
    """External mAP50: the lower bound of its CI must reach `floor`."""
    m = _external(metrics)["model"]["map50"]
    low = m.get("low")
    if low is None:
        return GateOutcome("external_map50_floor", False, f"external mAP50 {m.get('point')} has no CI lower bound")
    ok = low >= floor
    verdict = "at or above" if ok else "below"
    return GateOutcome(
        "external_map50_floor",
        ok,
        f"external mAP50 {m['point']:.3f}, 95% CI lower bound {low:.3f} {verdict} the floor {floor:.3f}",
    )


def subgroups(metrics: dict[str, Any], max_shortfall: float) -> GateOutcome:
    """No subgroup large enough to judge is worse than the overall external mAP50 by more than `max_shortfall`."""
    rows = [r for r in _external(metrics)["subgroups"] if r["metric"] == "map50"]
    overall = next((r for r in rows if r["subgroup"] == "all"), None)
    if overall is None:
        return GateOutcome("subgroups", False, "no overall external mAP50 in the subgroup table")
    judged = [r for r in rows if r["subgroup"] != "all" and not r["too_small"] and r["point"] is not None]
    skipped = [r for r in rows if r["subgroup"] != "all" and r["too_small"]]
    worse = sorted((r for r in judged if r["point"] < overall["point"] - max_shortfall), key=lambda r: r["point"])
    note = f"; {len(skipped)} too small to judge" if skipped else ""
    if worse:
        listed = ", ".join(f"{r['subgroup']}={r['value']} {r['point']:.3f}" for r in worse)
        return GateOutcome(
            "subgroups",
            False,
            f"{listed} below overall {overall['point']:.3f} by more than {max_shortfall:.3f}{note}",
        )
    return GateOutcome(
        "subgroups",
        True,
        f"{len(judged)} subgroups within {max_shortfall:.3f} of overall {overall['point']:.3f}{note}",
    )


def non_inferior(difference: dict[str, Any] | None, margin: float, champion: str | None) -> GateOutcome:
    """Challenger minus champion external mAP50 (paired patient bootstrap on the same set): CI lower bound above
    -`margin`. No champion yet passes, and says so."""
    if champion is None or difference is None:
        return GateOutcome("non_inferior_to_champion", True, "no champion yet: nothing to compare with")
    low = difference.get("low")
    ok = low is not None and low > -margin
    bound = "none" if low is None else f"{low:+.3f}"
    return GateOutcome(
        "non_inferior_to_champion",
        ok,
        f"minus champion {champion}: {difference['point']:+.3f} (95% CI lower bound {bound}); margin -{margin:.3f}",
    )


def data_contracts(
    validation_summary: dict[str, Any] | None, trained_hash: str, validated_hash: str | None
) -> GateOutcome:
    """The data contracts passed, for the exact data the model was trained on."""
    if validation_summary is None:
        return GateOutcome("data_contracts", False, "no validation summary: run `cordwatch validate`")
    if not validation_summary.get("success"):
        failed = len(validation_summary.get("failed_expectations", []))
        return GateOutcome("data_contracts", False, f"data contracts failed ({failed} expectations)")
    if validated_hash != trained_hash:
        return GateOutcome(
            "data_contracts",
            False,
            f"contracts passed on data {validated_hash}, but the model was trained on {trained_hash}",
        )
    return GateOutcome("data_contracts", True, f"contracts passed on the training data {trained_hash}")


def clean_tree(dirty: bool | None, policy: str) -> GateOutcome:
    """Trained from a clean git tree; a dirty one (or an unknown state: no git, no training run) is a warning or a
    failure by `policy` (warn|fail)."""
    if dirty is None:
        return GateOutcome(
            "clean_git_tree",
            policy != "fail",
            f"git state at training unknown (no git or no training run in MLflow; policy: {policy})",
            warning=policy != "fail",
        )
    if not dirty:
        return GateOutcome("clean_git_tree", True, "trained from a clean git tree")
    if policy == "fail":
        return GateOutcome("clean_git_tree", False, "trained from a git tree with uncommitted changes (policy: fail)")
    return GateOutcome(
        "clean_git_tree", True, "trained from a git tree with uncommitted changes (policy: warn)", warning=True
    )
