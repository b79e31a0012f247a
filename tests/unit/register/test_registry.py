"""Promotion rules against a real (SQLite) MLflow registry: gates read from the version's own tags, sign-offs,
the audit log, the promotion lock, and the invariant under forced interleavings, concurrent processes and crashes.

Invariant: a version that failed any gate never holds `champion` or `approved-candidate`.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipelines.register.gates import GateOutcome
from pipelines.register.registry import (
    APPROVED,
    AUDIT_PREFIX,
    CHALLENGER,
    CHAMPION,
    COMPLETE,
    IN_PROGRESS,
    REGISTRATION_TAG,
    REQUIRED_GATES,
    PromotionLock,
    Registry,
    RegistryError,
    gate_tags,
    gate_verdict,
    holder_died,
    process_identity,
)

NAME = "cordwatch-detector"


def _outcomes(fail: str | None = None) -> list[GateOutcome]:
    return [GateOutcome(g, g != fail, f"{g} {'failed' if g == fail else 'ok'}") for g in REQUIRED_GATES]


@pytest.fixture
def uri(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(NAME)
    return uri


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _new_version(uri: str, passed: bool, compared_with: str | None = None) -> str:
    """A version created with its gate tags in the same call, as `run_register` does."""
    tags = gate_tags(_outcomes(None if passed else "subgroups"), compared_with)
    return str(_client(uri).create_model_version(NAME, source="file:///nowhere", tags=tags).version)


def _registry(uri: str, **kw) -> Registry:
    return Registry(_client(uri), NAME, lock_wait_s=kw.pop("wait", 30), lock_stale_after_s=kw.pop("stale", 60), **kw)


def _failed_versions(uri: str) -> set[str]:
    return {str(v.version) for v in _registry(uri).versions() if not gate_verdict(v.tags)[0]}


def test_gate_verdict_reads_missing_or_failed_gates_as_failure() -> None:
    assert gate_verdict(gate_tags(_outcomes(), None)) == (True, "passed every gate")
    ok, why = gate_verdict(gate_tags(_outcomes("data_contracts"), None))
    assert not ok and "data_contracts: fail: data_contracts failed" in why
    partial = {k: v for k, v in gate_tags(_outcomes(), None).items() if "clean_git_tree" not in k}
    assert gate_verdict(partial) == (False, "no recorded outcome for gate(s) clean_git_tree")
    assert not gate_verdict({})[0]
    warned = gate_tags([*_outcomes()[:-1], GateOutcome("clean_git_tree", True, "dirty", warning=True)], None)
    assert gate_verdict(warned)[0]  # a recorded warning does not block


def test_registration_moves_challenger_always_and_approved_candidate_only_when_passed(uri: str) -> None:
    reg = _registry(uri)
    v1 = _new_version(uri, passed=True)
    assert reg.record_registration(v1) == {CHALLENGER: v1, APPROVED: v1}
    v2 = _new_version(uri, passed=False)
    assert reg.record_registration(v2) == {CHALLENGER: v2, APPROVED: None}
    assert reg.aliases() == {CHALLENGER: v2, APPROVED: v1}
    actions = [(e["action"], e["version"]) for e in reg.audit_log()]
    assert actions == [("register", v1), ("register", v2)]
    assert "failed gate(s): subgroups" in reg.audit_log()[-1]["gates"]


def test_approve_moves_champion_with_a_recorded_signoff(uri: str) -> None:
    reg = _registry(uri)
    v1 = _new_version(uri, passed=True)
    reg.record_registration(v1)
    assert reg.approve(v1, "Dr Ada Reviewer", "external CI above floor; subgroups fine") is None
    aliases = reg.aliases()
    assert aliases[CHAMPION] == v1 and APPROVED not in aliases  # in use: no longer a candidate
    tags = reg.version(v1).tags
    assert tags["cordwatch.signoff.approved_by"] == "Dr Ada Reviewer"
    assert tags["cordwatch.signoff.approved_note"].startswith("external CI")
    entry = reg.audit_log()[-1]
    assert (entry["action"], entry["version"], entry["previous"], entry["reviewer"]) == (
        "approve",
        v1,
        None,
        "Dr Ada Reviewer",
    )
    row = {r["version"]: r for r in reg.table()}[v1]
    assert row["aliases"] == "challenger, champion" and row["sign-off"].startswith("approved by Dr Ada Reviewer")


@pytest.mark.parametrize(
    ("version", "reviewer", "note", "message"),
    [
        ("2", "rev", "why", "failed gate(s): subgroups"),
        ("9", "rev", "why", "has no version 9 (versions: 1, 2)"),
        ("x", "rev", "why", "version must be a number"),
        ("1", " ", "why", "needs the reviewer's name"),
        ("1", "rev", "", "needs a note"),
        ("1", "rev", "n" * 1001, "keep it under 1000"),
    ],
)
def test_bad_approvals_are_refused_and_change_nothing(uri: str, version, reviewer, note, message) -> None:
    reg = _registry(uri)
    for passed in (True, False):
        reg.record_registration(_new_version(uri, passed))
    before = (reg.aliases(), reg.audit_log(), [v.tags for v in reg.versions()])
    with pytest.raises(RegistryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        reg.approve(version, reviewer, note)
    assert (reg.aliases(), reg.audit_log(), [v.tags for v in reg.versions()]) == before
    assert reg.client.search_registered_models(f"name = '{NAME}.promotion-lock'") == []  # lock released


def test_a_comparison_with_an_older_champion_is_stale(uri: str) -> None:
    reg = _registry(uri)
    v1, v2 = _new_version(uri, True), _new_version(uri, True)  # both compared with "no champion"
    reg.approve(v1, "rev", "first")
    with pytest.raises(RegistryError, match="compared with no champion at registration, but the champion is now"):
        reg.approve(v2, "rev", "second")
    v3 = _new_version(uri, True, compared_with=v1)
    assert reg.record_registration(v3)[APPROVED] == v3
    reg.approve(v3, "rev", "better than v1")
    assert reg.alias(CHAMPION) == v3


def test_rollback_returns_to_the_previous_champion_and_only_to_approved_versions(uri: str) -> None:
    reg = _registry(uri)
    v1 = _new_version(uri, True)
    reg.approve(v1, "rev", "first")
    v2 = _new_version(uri, True, compared_with=v1)
    reg.approve(v2, "rev", "second")
    never = _new_version(uri, True, compared_with=v2)
    with pytest.raises(RegistryError, match=f"version {never} was never approved"):
        reg.rollback("rev", "bad", to=never)
    assert reg.rollback("Dr B", "v2 misses compression at site C") == (v2, v1)
    assert reg.alias(CHAMPION) == v1
    assert reg.version(v1).tags["cordwatch.signoff.restored_by"] == "Dr B"
    assert reg.audit_log()[-1]["action"] == "rollback"
    assert reg.rollback("Dr B", "back again") == (v1, v2)  # the previous champion is v2 now


def test_audit_entries_are_appended_never_rewritten(uri: str) -> None:
    reg = _registry(uri)
    for _ in range(3):
        reg.record_registration(_new_version(uri, True))
    tags = reg.client.get_registered_model(NAME).tags
    keys = sorted(k for k in tags if k.startswith(AUDIT_PREFIX))
    assert keys == [f"{AUDIT_PREFIX}{i:06d}" for i in (1, 2, 3)]
    assert all(json.loads(tags[k])["action"] == "register" for k in keys)


def test_a_half_registered_version_gets_no_alias_and_a_recorded_one_is_not_recorded_twice(uri: str) -> None:
    """A registration killed after creating its version (tagged in-progress in that call) left it without a card:
    nothing may promote it. Recording a version twice (a re-run after a kill that followed its audit entry) moves
    nothing and logs nothing more."""
    reg = _registry(uri)
    tags = {**gate_tags(_outcomes(), None), REGISTRATION_TAG: IN_PROGRESS}
    half = str(_client(uri).create_model_version(NAME, source="file:///nowhere", tags=tags).version)
    with pytest.raises(RegistryError, match="half-registered: no alias moves to it"):
        reg.record_registration(half)
    with pytest.raises(RegistryError, match=f"version {half} is half-registered"):
        reg.approve(half, "rev", "looks fine")
    assert "HALF-REGISTERED" in reg.table()[0]["gates"]
    assert reg.aliases() == {} and reg.audit_log() == []
    reg.client.set_model_version_tag(NAME, half, REGISTRATION_TAG, COMPLETE)  # its card written
    assert reg.record_registration(half) == {CHALLENGER: half, APPROVED: half}
    assert reg.record_registration(half) == {CHALLENGER: half, APPROVED: half}
    assert [e["action"] for e in reg.audit_log()] == ["register"]


def test_a_lock_whose_holder_died_on_this_machine_is_broken_at_once(uri: str) -> None:
    mine = process_identity(os.getpid())
    assert mine is not None and not holder_died(mine)
    host, boot, namespace, _, _ = mine.split("|")
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = f"{host}|{boot}|{namespace}|{gone.pid}|1"
    assert holder_died(dead)
    assert holder_died(f"{host}|{boot}|{namespace}|{os.getpid()}|1")  # this pid, but another process (start time)
    assert not holder_died(f"{host}|{boot}|pid:[1]|{gone.pid}|1")  # another PID namespace: cannot tell
    assert not holder_died(f"otherhost|{boot}|{namespace}|{gone.pid}|1") and not holder_died("")
    tags = {"cordwatch.lock.token": "t", "cordwatch.lock.owner": "crashed@host:1", "cordwatch.lock.process": dead}
    _client(uri).create_registered_model(f"{NAME}.promotion-lock", tags=tags)
    reg = _registry(uri, wait=2, stale=600)  # the lock is fresh: only its holder's death can break it
    v1 = _new_version(uri, True)
    assert reg.record_registration(v1) == {CHALLENGER: v1, APPROVED: v1}
    log = reg.audit_log()
    assert [e["action"] for e in log] == ["lock-broken", "register"] and "died holding it" in log[0]["note"]


def test_half_registered_versions_of_other_inputs_are_cleared_once_their_creator_is_dead(uri: str) -> None:
    mine = process_identity(os.getpid())
    assert mine is not None
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = "|".join([*mine.split("|")[:3], str(gone.pid), "1"])

    def half(key: str, creator: str) -> str:
        tags = {**gate_tags(_outcomes(), None), REGISTRATION_TAG: IN_PROGRESS}
        tags.update({"cordwatch.registration.key": key, "cordwatch.registration.process": creator})
        return str(_client(uri).create_model_version(NAME, source="file:///nowhere", tags=tags).version)

    killed, alive, same_inputs = half("old", dead), half("other", mine), half("now", dead)
    reg = _registry(uri)
    assert reg.clear_abandoned(keep="now") == [killed]
    assert [str(v.version) for v in reg.versions()] == [alive, same_inputs]  # a live creator's and the re-run's own


# --- the lock --------------------------------------------------------------------------------------------------


def test_lock_excludes_a_second_holder_until_released(uri: str) -> None:
    first = PromotionLock(_client(uri), NAME, wait_s=5)
    first.acquire()
    second = PromotionLock(_client(uri), NAME, wait_s=0.5)
    with pytest.raises(RegistryError, match=r"the registry is busy: .* has held the promotion lock"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()
    assert _client(uri).search_registered_models(f"name = '{NAME}.promotion-lock'") == []


def test_a_stale_lock_is_broken_and_the_break_is_audited(uri: str) -> None:
    PromotionLock(_client(uri), NAME).acquire()  # a holder that never releases (it crashed)
    time.sleep(1.1)
    reg = _registry(uri, stale=1)
    v1 = _new_version(uri, True)
    reg.record_registration(v1)
    assert reg.alias(APPROVED) == v1
    assert [e["action"] for e in reg.audit_log()] == ["lock-broken", "register"]
    assert "unlogged" not in reg.audit_log()[0]  # the crashed holder had moved nothing


def test_forced_interleaving_a_waiting_approval_rechecks_after_the_holder(uri: str) -> None:
    """A approves v1 and pauses inside the lock after its check; B approves v2 (compared with no champion) and must
    wait; when A finishes, B re-checks under the lock and is refused (its comparison is now stale)."""
    v1, v2 = _new_version(uri, True), _new_version(uri, True)
    paused, resume = threading.Event(), threading.Event()
    b_locked = threading.Event()

    def hold(step: str) -> None:
        if step == "checked":
            paused.set()
            resume.wait(10)

    a = _registry(uri, checkpoint=hold)
    b = _registry(uri, checkpoint=lambda step: b_locked.set() if step == "locked" else None)
    errors: list[Exception] = []
    ta = threading.Thread(target=lambda: a.approve(v1, "A", "first"))
    ta.start()
    assert paused.wait(10)

    def approve_b() -> None:
        try:
            b.approve(v2, "B", "second")
        except RegistryError as exc:
            errors.append(exc)

    tb = threading.Thread(target=approve_b)
    tb.start()
    time.sleep(1.0)
    assert not b_locked.is_set()  # B waits for the lock while A holds it
    resume.set()
    ta.join(10)
    tb.join(30)
    assert b_locked.is_set() and len(errors) == 1 and "champion is now version" in str(errors[0])
    assert a.alias(CHAMPION) == v1


# --- concurrent processes --------------------------------------------------------------------------------------


def _actor(uri: str, seed: int, rounds: int) -> None:
    """One process: register versions (passing or failing) and approve whichever it likes, failed ones included."""
    rng = random.Random(seed)
    reg = _registry(uri, wait=60)
    for _ in range(rounds):
        champion = reg.alias(CHAMPION)
        version = _new_version(uri, passed=rng.random() < 0.6, compared_with=champion)
        reg.record_registration(version)
        target = rng.choice([v.version for v in reg.versions()])
        with contextlib.suppress(RegistryError):  # refusals (failed or stale versions) are part of the test
            reg.approve(target, f"reviewer{seed}", "concurrency test")


def _crasher(uri: str, version: str) -> None:
    """Dies inside the lock, after moving the alias and before writing its audit entry."""

    def die(step: str) -> None:
        if step == "alias-set":
            os._exit(3)

    _registry(uri, checkpoint=die).approve(version, "crasher", "dies half way")


def test_concurrent_registrations_and_approvals_never_give_a_failed_version_a_protected_alias(uri: str) -> None:
    failed_seen: list[tuple[str, str]] = []
    stop = threading.Event()

    def watch() -> None:  # polls the aliases the whole time, not only at the end
        reg = _registry(uri)
        while not stop.is_set():
            failed = _failed_versions(uri)
            for alias, version in reg.aliases().items():
                if alias in {CHAMPION, APPROVED} and version in failed:
                    failed_seen.append((alias, version))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_actor, args=(uri, seed, 4)) for seed in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(240)
    # A crash inside the lock: the next promotion breaks the stale lock and the invariant still holds.
    eligible = _new_version(uri, passed=True, compared_with=_registry(uri).alias(CHAMPION))
    crasher = context.Process(target=_crasher, args=(uri, eligible))
    crasher.start()
    crasher.join(60)
    time.sleep(1.1)
    reg = _registry(uri, stale=1)
    reg.record_registration(_new_version(uri, passed=False, compared_with=reg.alias(CHAMPION)))
    stop.set()
    watcher.join(10)

    assert all(w.exitcode == 0 for w in workers) and crasher.exitcode == 3
    assert failed_seen == []
    aliases, failed = reg.aliases(), _failed_versions(uri)
    assert aliases.get(CHAMPION) not in failed and aliases.get(APPROVED) not in failed
    log = reg.audit_log()
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))  # no entry lost or rewritten
    broken = [e for e in log if e["action"] == "lock-broken"]
    assert len(broken) == 1
    assert not any(e.get("reviewer") == "crasher" for e in log)  # it died before its entry
    # Its move took effect (the version passed) and the break names it, so the log still accounts for the alias.
    assert aliases[CHAMPION] == eligible and broken[0]["unlogged"] == {CHAMPION: eligible}
    assert "champion -> version" in broken[0]["note"]
    assert reg._logged_aliases()[CHAMPION] == aliases[CHAMPION]
