"""A fold is never trained by two processes at once: a lock per fold, and workers that die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipelines.train.core import FoldBusyError, fold_lock
from tests.conftest import REPO

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pipelines.train.core import fold_lock
    with fold_lock(Path(sys.argv[1]), "fold1"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_a_second_process_cannot_train_a_held_fold_and_a_killed_holder_frees_it(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(
                FoldBusyError, match=f"fold fold1 is being trained by another process \\(pid {holder.pid}\\)"
            ),
            fold_lock(tmp_path, "fold1"),
        ):
            pass
        with fold_lock(tmp_path, "fold2"):  # other folds are free
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        with fold_lock(tmp_path, "fold1"):  # the kernel released it with its holder: no stale lock
            pass
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_worker_exits_when_its_parent_is_killed() -> None:
    child = (
        "import os, time; from pipelines.train.core import watch_parent; watch_parent(os.getppid(), 0.2); "
        "time.sleep(60)"
    )
    # bash plays the training parent: it starts the worker and waits; SIGKILL on it orphans the worker.
    parent = subprocess.Popen(
        ["bash", "-c", f'"{sys.executable}" -c "{child}" & echo $!; wait'], cwd=REPO, stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    worker = int(parent.stdout.readline())
    try:
        time.sleep(2)  # the worker has imported and started its watch
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the orphaned worker kept running"
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
