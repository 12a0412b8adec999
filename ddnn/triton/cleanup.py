"""What a killed Triton or client leaves behind, and removing it.

Shared-memory files and launcher work directories carry the pid of the process that made them,
so a later launcher can tell leftovers of processes that are gone (a SIGKILL runs no cleanup)
from those of processes still running.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

SHM_DIR = Path("/dev/shm")
# ddnn_triton_<pid>_…: the Python backend's regions (prefix given to tritonserver by the launcher);
# ddnn_triton_client_<pid>_…: the regions a client registers with Triton.
CLIENT_SHM_PREFIX = "ddnn_triton_client_"
_STALE_SHM = re.compile(r"^ddnn_triton_(?:client_)?(\d+)_")
WORK_DIR_PREFIX = "ddnn-triton-"
_STALE_WORK_DIR = re.compile(rf"^{WORK_DIR_PREFIX}(\d+)-")


def server_shm_prefix(owner: int, attempt: int) -> str:
    """The shm-region prefix for one launch by this process (``owner`` tells servers of one process apart)."""
    return f"ddnn_triton_{os.getpid()}_{owner & 0xFFFFFF:x}_{attempt}_"


def client_shm_prefix(tag: str) -> str:
    """The shm-region prefix of one client of this process."""
    return f"{CLIENT_SHM_PREFIX}{os.getpid()}_{tag}"


def work_dir_prefix() -> str:
    """Prefix of this process's launcher work directories (``tempfile.mkdtemp(prefix=...)``)."""
    return f"{WORK_DIR_PREFIX}{os.getpid()}-"


def pid_gone(pid: int) -> bool:
    """Whether no process ``pid`` exists (one owned by another user counts as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_shared_memory(prefix: str, shm_dir: Path = SHM_DIR) -> None:
    """Remove every shared-memory file whose name starts with ``prefix``."""
    for f in shm_dir.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            f.unlink()


def remove_stale_shared_memory(shm_dir: Path = SHM_DIR) -> list[str]:
    """Remove shared-memory files that ddnn's Tritons and clients made in processes that are gone.

    Named ``ddnn_triton_<pid>_…`` (the Python backend's regions, prefix set by the launcher) and
    ``ddnn_triton_client_<pid>_…`` (client regions); a server or client killed with SIGKILL leaves them.
    """
    removed = []
    for f in shm_dir.glob("ddnn_triton_*"):
        m = _STALE_SHM.match(f.name)
        if m and pid_gone(int(m.group(1))):
            with contextlib.suppress(OSError):
                f.unlink()
                removed.append(f.name)
    return removed


def remove_stale_work_dirs(tmp_dir: Path | None = None) -> list[str]:
    """Remove launcher work directories (``ddnn-triton-<pid>-…``) whose launcher process is gone."""
    removed = []
    for d in Path(tmp_dir or tempfile.gettempdir()).glob(f"{WORK_DIR_PREFIX}*"):
        m = _STALE_WORK_DIR.match(d.name)
        if m and d.is_dir() and pid_gone(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    return removed
