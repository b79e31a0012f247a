"""Promotion in the MLflow registry: aliases move only under a lock, only to versions whose own tags say they passed.

MLflow has no compare-and-set on aliases (the last writer wins), so the invariant "a version that failed any gate
never holds `champion` (nor `approved-candidate`)" cannot rest on the order of events. It rests on three things:
1. a version's gate outcomes are written in the same call that creates it (`create_model_version(tags=...)`) and
   never rewritten, so no version exists without its verdict, and a missing verdict reads as a failure;
2. every alias move happens inside `PromotionLock`, re-reads the version's own tags there, and reads the alias back
   after setting it;
3. the lock is a registered model created for the occasion: creating a registered model is an atomic insert in
   every MLflow store (SQLite, PostgreSQL, or a server in front of either), so it holds across processes and
   machines that share the registry. A lock left by a crashed holder is broken after `lock_stale_after_s`, or at
   once when the holder was a process on this machine that no longer runs.
Even if a lock were broken under a live holder, (1) and the re-check in (2) keep failed versions off the protected
aliases: the lock orders the audit log, the tags guard the invariant.

A registration killed half way leaves a version tagged `cordwatch.registration: in-progress` (written in the
creating call, like its gates): no alias ever moves to it, and registering the same inputs again completes that
version instead of adding another (`pipelines.register.run`). Registering other inputs deletes it once its creator
is known dead (`clear_abandoned`): nothing refers to it, no alias, no audit entry, no card.

Who did what is kept twice: on the version (`cordwatch.signoff.*` tags: who approved, when, why) and in an
append-only audit log of registered-model tags `cordwatch.audit.NNNNNN` (a JSON entry each, never overwritten; a
server running the `cordwatch-auth` app refuses overwrites and deletes, see `server_auth.py`).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.register.gates import GateOutcome

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHALLENGER = "challenger"  # the latest registered version, whatever its gates
APPROVED = "approved-candidate"  # the latest version that passed every gate, waiting for a reviewer
CHAMPION = "champion"  # the version in use: moved only by `approve` or `rollback`, with a reviewer and a note

TAG_PREFIX = "cordwatch."
GATE_PREFIX = "cordwatch.gate."  # one tag per gate: "<pass|warn|fail>: <reason>"
VERDICT_TAG = "cordwatch.gates"  # pass | fail: all gates together
COMPARED_TAG = "cordwatch.gates.champion_version"  # the champion the non-inferiority gate compared with ("" none)
REGISTRATION_TAG = "cordwatch.registration"  # IN_PROGRESS from creation until its card is written, then COMPLETE
REGISTRATION_KEY_TAG = "cordwatch.registration.key"  # what the version registers, hashed (run.registration_key)
REGISTRATION_PROCESS_TAG = "cordwatch.registration.process"  # who created it (`process_identity`)
IN_PROGRESS, COMPLETE = "in-progress", "complete"  # versions from before this tag have none: complete
ABANDONED = "abandoned"  # half-registered, its creator dead, and the registry refused to delete it
SIGNOFF_PREFIX = "cordwatch.signoff."
AUDIT_PREFIX = "cordwatch.audit."
REQUIRED_GATES: tuple[str, ...] = (
    "external_map50_floor",
    "subgroups",
    "non_inferior_to_champion",
    "data_contracts",
    "clean_git_tree",
)
MAX_NOTE = 1000  # characters: a note is a reason, not a document (MLflow tag values are limited)
LOCK_DESCRIPTION = (
    "cordwatch promotion lock: exists only while a process moves an alias of {model}. Held by {owner} since "
    "{since}. If that process died, the next promotion breaks it after the stale time set in params.yaml."
)


class RegistryError(RuntimeError):
    """A refusal or failure with a one-line reason for the person at the command line; nothing was changed."""


# --- gate tags --------------------------------------------------------------------------------------------------


def gate_tags(outcomes: Sequence[GateOutcome], compared_with: str | None) -> dict[str, str]:
    """The version tags that record the gates: one per gate, the overall verdict, the champion compared with."""
    tags = {f"{GATE_PREFIX}{o.name}": f"{o.status}: {o.reason}" for o in outcomes}
    tags[VERDICT_TAG] = "pass" if all(o.passed for o in outcomes) else "fail"
    tags[COMPARED_TAG] = compared_with or ""
    return tags


def gate_verdict(tags: Mapping[str, str]) -> tuple[bool, str]:
    """Read a version's own gate tags: passed, and why not. Anything missing or unreadable is a failure."""
    missing = [g for g in REQUIRED_GATES if f"{GATE_PREFIX}{g}" not in tags]
    if missing:
        return False, f"no recorded outcome for gate(s) {', '.join(missing)}"
    failed = [g for g in REQUIRED_GATES if not tags[f"{GATE_PREFIX}{g}"].startswith(("pass:", "warn:"))]
    if failed:
        reasons = "; ".join(f"{g}: {tags[f'{GATE_PREFIX}{g}']}" for g in failed)
        return False, f"failed gate(s): {reasons}"
    if tags.get(VERDICT_TAG) != "pass":
        return False, f"overall verdict is {tags.get(VERDICT_TAG, 'missing')!r}"
    return True, "passed every gate"


# --- the lock ---------------------------------------------------------------------------------------------------


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", ""))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def actor_identity() -> str:
    """The process doing the work: OS user, host, pid (and the registry login, when there is one)."""
    login = os.environ.get("MLFLOW_TRACKING_USERNAME")
    who = f"{getpass.getuser()}@{socket.gethostname()}:{os.getpid()}"
    return f"{who} (registry user {login})" if login else who


def process_identity(pid: int) -> str | None:
    """Which process `pid` is, machine-wide: host, boot, PID namespace, pid and start time (a reused pid reads as
    another process); None when it does not run, or off Linux."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]  # field 22, starttime
    except (OSError, IndexError):
        return None
    return f"{socket.gethostname()}|{boot}|{namespace}|{pid}|{start}"


def holder_died(process: str) -> bool:
    """Whether a lock holder recorded as `process` (`process_identity`) ran on this machine, in this PID namespace,
    and runs no more. A holder elsewhere, or unknown, is alive as far as we can tell: only staleness breaks it."""
    mine = process_identity(os.getpid())
    parts = process.split("|")
    if mine is None or len(parts) != 5 or not parts[3].isdigit() or mine.split("|")[:3] != parts[:3]:
        return False
    return process_identity(int(parts[3])) != process


@dataclass
class PromotionLock:
    """An exclusive lock on a registered model's aliases, held as a registered model named `<model>.promotion-lock`.

    Args:
        client: the registry.
        model: the registered model whose aliases it guards.
        wait_s: how long to wait for a holder before giving up with a clear error.
        stale_after_s: a lock older than this is taken as left by a crashed process and broken.
    """

    client: MlflowClient
    model: str
    wait_s: float = 120.0
    stale_after_s: float = 600.0
    owner: str = field(default_factory=actor_identity)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    broken: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.model}.promotion-lock"

    @contextmanager
    def held(self) -> Iterator[PromotionLock]:
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        process = process_identity(os.getpid()) or ""
        while True:
            try:
                self.client.create_registered_model(
                    self.name,
                    tags={
                        "cordwatch.lock.token": self.token,
                        "cordwatch.lock.owner": self.owner,
                        "cordwatch.lock.process": process,
                    },
                    description=LOCK_DESCRIPTION.format(model=self.model, owner=self.owner, since=_now_iso()),
                )
                return
            except Exception as exc:
                # DOES_NOT_EXIST: the store found the name taken, then the holder released it before the store
                # read it back for its message. Either way: someone held it a moment ago; look and retry.
                if _error_code(exc) not in {"RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"}:
                    raise RegistryError(f"cannot take the promotion lock {self.name}: {exc}") from exc
            holder = self._holder()
            if holder is not None:
                token, owner, created_ms, held_by = holder
                age = time.time() - created_ms / 1000
                died = bool(held_by) and holder_died(held_by)  # killed holding it: no need to wait for staleness
                if died or age > self.stale_after_s:
                    self._break(token, owner, age, died)
                    continue
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"the registry is busy: {owner} has held the promotion lock {self.name} for {age:.0f} s "
                        f"(waited {self.wait_s:.0f} s); try again, or wait {self.stale_after_s:.0f} s for a stale "
                        "lock to be broken"
                    )
            time.sleep(random.uniform(0.05, 0.25))  # jitter, so waiters do not retry in lockstep

    def release(self) -> None:
        holder = self._holder()
        if holder is None or holder[0] != self.token:
            log.warning("promotion lock %s was no longer ours at release (broken as stale?)", self.name)
            return
        self.client.delete_registered_model(self.name)

    def _holder(self) -> tuple[str, str, int, str] | None:
        try:
            lock = self.client.get_registered_model(self.name)
        except Exception as exc:
            if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise RegistryError(f"cannot read the promotion lock {self.name}: {exc}") from exc
        tags = lock.tags or {}
        token, owner = tags.get("cordwatch.lock.token", ""), tags.get("cordwatch.lock.owner", "?")
        return token, owner, lock.creation_timestamp, tags.get("cordwatch.lock.process", "")

    def _break(self, token: str, owner: str, age: float, died: bool = False) -> None:
        """Delete a stale lock (or one whose holder died), only if it is still the one judged so (re-read just before
        deleting)."""
        holder = self._holder()
        if holder is None or holder[0] != token:
            return
        try:
            self.client.delete_registered_model(self.name)
        except Exception as exc:
            if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                raise RegistryError(f"cannot break the stale promotion lock {self.name}: {exc}") from exc
            return
        message = (
            f"broke the promotion lock of {owner}, which died holding it (taken {age:.0f} s ago)"
            if died
            else f"broke a stale promotion lock held by {owner} for {age:.0f} s"
        )
        log.warning(message)
        self.broken.append(message)


# --- the registry -----------------------------------------------------------------------------------------------


def _no_checkpoint(_: str) -> None:
    return None


@dataclass
class Registry:
    """One registered model's versions, aliases, sign-offs and audit log.

    Args:
        client: an MlflowClient on the registry (embedded SQLite or a server: the same code).
        name: the registered model.
        lock_wait_s, lock_stale_after_s: see `PromotionLock`.
        checkpoint: called with a step name at each step of a promotion ("locked", "checked", "audited",
            "alias-set"); tests use it to force interleavings. A no-op otherwise.
    """

    client: MlflowClient
    name: str
    lock_wait_s: float = 120.0
    lock_stale_after_s: float = 600.0
    checkpoint: Callable[[str], None] = _no_checkpoint

    # --- reading ----------------------------------------------------------------------------------------------
    def alias(self, alias: str) -> str | None:
        """The version an alias points at, or None."""
        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except Exception as exc:
            if _error_code(exc) in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                return None
            raise RegistryError(f"cannot read alias {alias!r} of {self.name}: {exc}") from exc

    def version(self, version: str) -> ModelVersion:
        """A version, or a RegistryError naming the versions that exist."""
        if not str(version).isdigit():
            raise RegistryError(f"version must be a number, got {version!r}")
        try:
            return self.client.get_model_version(self.name, str(version))
        except Exception as exc:
            if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                known = ", ".join(str(v.version) for v in self.versions()) or "none"
                raise RegistryError(f"{self.name} has no version {version} (versions: {known})") from exc
            raise RegistryError(f"cannot read version {version} of {self.name}: {exc}") from exc

    def versions(self) -> list[ModelVersion]:
        """Every version, oldest first."""
        try:
            found = self.client.search_model_versions(f"name = '{self.name}'")
        except Exception as exc:
            raise RegistryError(f"cannot list versions of {self.name}: {exc}") from exc
        return sorted(found, key=lambda v: int(v.version))

    def registered_as(self, key: str) -> ModelVersion | None:
        """The newest version created with registration key `key` (`REGISTRATION_KEY_TAG`), or None."""
        found = [v for v in self.versions() if (v.tags or {}).get(REGISTRATION_KEY_TAG) == key]
        return found[-1] if found else None

    def clear_abandoned(self, keep: str) -> list[str]:
        """Delete the half-registered versions, other than those of registration key `keep` (a re-run finishes
        those), whose creating process died on this machine; where the registry refuses the delete (a user without
        MANAGE on a server), tag them abandoned. A version whose creator may be alive is left to it. Returns them."""
        cleared = []
        for v in self.versions():
            tags = v.tags or {}
            if tags.get(REGISTRATION_TAG) != IN_PROGRESS or tags.get(REGISTRATION_KEY_TAG) == keep:
                continue
            if not holder_died(tags.get(REGISTRATION_PROCESS_TAG, "")):
                continue
            try:
                self.client.delete_model_version(self.name, str(v.version))
            except Exception as exc:
                log.warning("cannot delete half-registered version %s (%s): tagging it abandoned", v.version, exc)
                self.client.set_model_version_tag(self.name, str(v.version), REGISTRATION_TAG, ABANDONED)
            cleared.append(str(v.version))
        return cleared

    def aliases(self) -> dict[str, str]:
        """alias -> version for the registered model (empty if it does not exist yet)."""
        try:
            model = self.client.get_registered_model(self.name)
        except Exception as exc:
            if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise RegistryError(f"cannot read {self.name}: {exc}") from exc
        return {str(k): str(v) for k, v in (model.aliases or {}).items()}

    def audit_log(self) -> list[dict[str, Any]]:
        """The audit entries, oldest first."""
        try:
            tags = self.client.get_registered_model(self.name).tags or {}
        except Exception as exc:
            if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise RegistryError(f"cannot read the audit log of {self.name}: {exc}") from exc
        entries = []
        for key in sorted(k for k in tags if k.startswith(AUDIT_PREFIX)):
            try:
                entry = json.loads(tags[key])
            except json.JSONDecodeError:
                entry = {"unreadable": tags[key]}
            entries.append({"seq": int(key.removeprefix(AUDIT_PREFIX)), **entry})
        return entries

    def eligible(self, version: str, champion: str | None, *, for_rollback: bool = False) -> tuple[bool, str]:
        """Whether `version` may hold a protected alias now, read from its own tags.

        Beyond its gates: the non-inferiority gate must have compared it with the champion there is now (a newer
        champion since registration makes that comparison stale). A rollback returns to an earlier champion on
        purpose, so it needs the gates and an earlier sign-off instead.
        """
        tags = self.version(version).tags or {}
        if tags.get(REGISTRATION_TAG, COMPLETE) != COMPLETE:
            return False, f"version {version} is half-registered (killed before its card): register again to finish it"
        ok, why = gate_verdict(tags)
        if not ok:
            return False, f"version {version} {why}"
        if for_rollback:
            if f"{SIGNOFF_PREFIX}approved_by" not in tags:
                return False, f"version {version} was never approved by a reviewer: nothing to roll back to"
            return True, "passed every gate and was approved before"
        compared = tags.get(COMPARED_TAG) or None
        if compared != champion:
            then = f"champion version {compared}" if compared else "no champion"
            now = f"version {champion}" if champion else "none"
            return False, (
                f"version {version} was compared with {then} at registration, but the champion is now {now}: "
                "register it again to compare with the current champion"
            )
        return True, "passed every gate"

    # --- writing (all under the lock) ------------------------------------------------------------------------
    def _lock(self) -> PromotionLock:
        return PromotionLock(self.client, self.name, self.lock_wait_s, self.lock_stale_after_s)

    def _append_audit(self, entry: dict[str, Any]) -> int:
        """Append one entry (call under the lock): the next sequence number, never an existing key."""
        existing = [e["seq"] for e in self.audit_log()]
        seq = max(existing, default=0) + 1
        record = {"at": _now_iso(), "by": actor_identity(), **entry}
        self.client.set_registered_model_tag(self.name, f"{AUDIT_PREFIX}{seq:06d}", json.dumps(record, sort_keys=True))
        return seq

    def _set_alias(self, alias: str, version: str) -> None:
        try:
            self.client.set_registered_model_alias(self.name, alias, version)
        except Exception as exc:  # e.g. PERMISSION_DENIED from a server: only a reviewer moves champion
            raise RegistryError(f"the registry refused to move {alias} to version {version}: {exc}") from exc
        self.checkpoint("alias-set")
        now = self.alias(alias)
        if now != version:
            raise RegistryError(f"alias {alias} reads back as version {now}, not {version}: another writer moved it")

    def _audit_breaks(self, lock: PromotionLock) -> None:
        """Record each stale lock broken, and any alias the crashed holder moved without logging it (an alias moves
        before its audit entry is written, so a refused move leaves no entry; a crash in between leaves a move the
        log does not show, named here)."""
        for message in lock.broken:
            entry: dict[str, Any] = {"action": "lock-broken", "note": message}
            logged = self._logged_aliases()
            unlogged = {
                alias: now
                for alias in (CHAMPION, APPROVED)
                if (now := self.alias(alias)) != logged.get(alias) and not (now is None and alias not in logged)
            }
            if unlogged:
                entry["unlogged"] = unlogged
                entry["note"] += "; aliases it moved without a log entry: " + ", ".join(
                    f"{alias} -> version {version}" for alias, version in unlogged.items()
                )
            self._append_audit(entry)

    def _logged_aliases(self) -> dict[str, str | None]:
        """Where the audit log says `champion` and `approved-candidate` point (approvals and rollbacks move the
        champion and take the approved version off `approved-candidate`; registrations move both)."""
        where: dict[str, str | None] = {}
        for e in self.audit_log():
            version = e.get("version")
            if e.get("action") in {"approve", "rollback"}:
                where[CHAMPION] = version
                if e.get("action") == "approve" and where.get(APPROVED) == version:
                    where[APPROVED] = None
            elif e.get("action") == "register" and APPROVED in (e.get("aliases") or []):
                where[APPROVED] = version
            elif e.get("action") == "lock-broken":
                where.update(e.get("unlogged") or {})
        return where

    def record_registration(self, version: str) -> dict[str, str | None]:
        """After a version is created: `challenger` moves to it (if it is the newest), and `approved-candidate` too
        if its own tags say it passed every gate against the current champion. Returns the aliases it now holds.
        Recording a version already recorded (a re-run after a crash that followed its audit entry) moves nothing.
        """
        held: dict[str, str | None] = {CHALLENGER: None, APPROVED: None}
        if (self.version(version).tags or {}).get(REGISTRATION_TAG, COMPLETE) != COMPLETE:
            raise RegistryError(f"version {version} is half-registered: no alias moves to it")
        lock = self._lock()
        with lock.held():
            self.checkpoint("locked")
            self._audit_breaks(lock)
            if any(e.get("action") == "register" and e.get("version") == version for e in self.audit_log()):
                return {alias: version if self.alias(alias) == version else None for alias in held}
            newest = max(int(v.version) for v in self.versions())
            champion = self.alias(CHAMPION)
            ok, why = self.eligible(version, champion)
            self.checkpoint("checked")
            moves = []
            if int(version) >= newest:
                moves.append(CHALLENGER)
            current_approved = self.alias(APPROVED)
            if ok and (current_approved is None or int(version) > int(current_approved)):
                moves.append(APPROVED)
            for alias in moves:
                self._set_alias(alias, version)
                held[alias] = version
            self._append_audit(
                {"action": "register", "version": version, "aliases": moves, "gates": "pass" if ok else why}
            )
            self.checkpoint("audited")
        return held

    def approve(self, version: str, reviewer: str, note: str) -> str | None:
        """A reviewer's sign-off: `champion` moves to `version`. Returns the previous champion."""
        reviewer, note = _check_signoff(reviewer, note)
        version = str(self.version(version).version)  # unknown version: a clear error before any lock
        lock = self._lock()
        with lock.held():
            self.checkpoint("locked")
            self._audit_breaks(lock)
            previous = self.alias(CHAMPION)
            if previous == version:
                raise RegistryError(f"version {version} is already the champion")
            ok, why = self.eligible(version, previous)
            self.checkpoint("checked")
            if not ok:
                raise RegistryError(f"cannot approve: {why}")
            self._set_alias(CHAMPION, version)  # refused by the server (not a reviewer): nothing was written
            self._append_audit(
                {"action": "approve", "version": version, "previous": previous, "reviewer": reviewer, "note": note}
            )
            self.checkpoint("audited")
            self._sign(version, "approved", reviewer, note)
            if self.alias(APPROVED) == version:  # no longer a candidate: it is in use
                self.client.delete_registered_model_alias(self.name, APPROVED)
        return previous

    def rollback(self, reviewer: str, note: str, to: str | None = None) -> tuple[str | None, str]:
        """`champion` back to an earlier approved version (default: the champion before the current one).

        Returns (the champion it replaced, the version now champion).
        """
        reviewer, note = _check_signoff(reviewer, note)
        if to is not None:
            to = str(self.version(to).version)
        lock = self._lock()
        with lock.held():
            self.checkpoint("locked")
            self._audit_breaks(lock)
            current = self.alias(CHAMPION)
            target = to or self._previous_champion(current)
            if target is None:
                raise RegistryError("no earlier champion to roll back to; name one with --to VERSION")
            if target == current:
                raise RegistryError(f"version {target} is already the champion")
            ok, why = self.eligible(target, current, for_rollback=True)
            self.checkpoint("checked")
            if not ok:
                raise RegistryError(f"cannot roll back: {why}")
            self._set_alias(CHAMPION, target)
            self._append_audit(
                {"action": "rollback", "version": target, "previous": current, "reviewer": reviewer, "note": note}
            )
            self.checkpoint("audited")
            self._sign(target, "restored", reviewer, note)
        return current, target

    def _previous_champion(self, current: str | None) -> str | None:
        """The most recent version made champion (by approve or rollback) that is not the current one."""
        for entry in reversed(self.audit_log()):
            if entry.get("action") in {"approve", "rollback"} and entry.get("version") != current:
                return str(entry["version"])
        return None

    def _sign(self, version: str, verb: str, reviewer: str, note: str) -> None:
        for key, value in (("by", reviewer), ("at", _now_iso()), ("note", note)):
            self.client.set_model_version_tag(self.name, version, f"{SIGNOFF_PREFIX}{verb}_{key}", value)

    # --- the table for people --------------------------------------------------------------------------------
    def table(self) -> list[dict[str, str]]:
        """One row per version: aliases, gate verdict (with failed or warned gates), headline, sign-offs."""
        by_version: dict[str, list[str]] = {}
        for alias, version in self.aliases().items():
            by_version.setdefault(version, []).append(alias)
        rows = []
        for v in self.versions():
            tags = v.tags or {}
            ok, _ = gate_verdict(tags)
            flagged = [
                f"{g} {tags[f'{GATE_PREFIX}{g}'].split(':', 1)[0]}"
                for g in REQUIRED_GATES
                if not tags.get(f"{GATE_PREFIX}{g}", "fail").startswith("pass:")
            ]
            signed = [
                f"{verb} by {tags[f'{SIGNOFF_PREFIX}{verb}_by']} {tags.get(f'{SIGNOFF_PREFIX}{verb}_at', '')}"
                for verb in ("approved", "restored")
                if f"{SIGNOFF_PREFIX}{verb}_by" in tags
            ]
            rows.append(
                {
                    "version": str(v.version),
                    "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M"),
                    "aliases": ", ".join(sorted(by_version.get(str(v.version), []))),
                    "gates": ("pass" if ok else "FAIL")
                    + (f" ({'; '.join(flagged)})" if flagged else "")
                    + ("; HALF-REGISTERED" if tags.get(REGISTRATION_TAG, COMPLETE) != COMPLETE else ""),
                    "external mAP50": tags.get("cordwatch.external.map50", ""),
                    "sign-off": "; ".join(signed),
                }
            )
        return rows


def _check_signoff(reviewer: str, note: str) -> tuple[str, str]:
    reviewer, note = (reviewer or "").strip(), (note or "").strip()
    if not reviewer:
        raise RegistryError("a sign-off needs the reviewer's name (--reviewer NAME)")
    if not note:
        raise RegistryError("a sign-off needs a note saying why (--note TEXT)")
    if len(note) > MAX_NOTE:
        raise RegistryError(f"the note is {len(note)} characters; keep it under {MAX_NOTE} and link to a document")
    return reviewer, note
