"""Triton's process group: tied to its launcher's life, signalled and reaped as a whole.

tritonserver runs in a session of its own (so a stop signals it and the stub processes it forks,
and nothing else); these helpers make sure that group never outlives the process that started it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
GROUP_POLL_S = 0.05  # killed stubs are reaped within milliseconds; poll often, it is a cheap syscall


def die_with_parent() -> Callable[[], None] | None:
    """preexec_fn for Linux: the child gets SIGTERM when the thread that launched it dies.

    Without it a launcher killed by SIGKILL (or by SIGTERM without a handler) leaves tritonserver
    running forever, since it runs in a session of its own. None where the platform has no prctl.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def kill_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to every process of group ``pgid``; a group that is gone is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait until no process of the group is left (killed stubs take a moment to be reaped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return True
        time.sleep(GROUP_POLL_S)
    return False
