"""Fault injection for tests: `crash_point(name)` kills this process where registration is most fragile.

The fault-injection tests (tests/integration/test_faults.py) run `cordwatch retrain` with `CORDWATCH_CRASH_AT` set
to a point's name; the process then dies there by SIGKILL (no `finally`, no atexit, as the OOM killer or a power cut
would), and the test checks what a re-run makes of the registry it left. Without the variable (always, outside
those tests) a crash point does nothing.

Points: `register:version-created` (the version exists with its gates, before its card, description and aliases),
and `registry:<step>` at each step of a promotion under the lock (`locked`, `checked`, `alias-set`, `audited`).
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "CORDWATCH_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process when `$CORDWATCH_CRASH_AT` equals `name`; a no-op otherwise."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
