"""Whether a process named by its id still runs, and when it started: how leftovers of killed processes (tiny-vlm
builds and METEOR's paraphrase index: temporary folders and files named by host and process, `temp_tag`; LLM cache
entries paid for and never claimed) are told from those of live ones."""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from pathlib import Path

STALE_AFTER_S = 3600.0  # a temporary of another host, or of an older harness, is a leftover after this long


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (one of another user counts); False on Windows, where signal 0 would
    end the process instead of asking about it."""
    if os.name == "nt":
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # alive, another user's
    except (OSError, OverflowError):  # ProcessLookupError: gone
        return False
    return True


def process_started(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux /proc: field 22 of its stat), else None. With the pid
    it names one process: a pid reused after the owner ended, or another container's process under the same pid and
    host name, has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def temp_tag() -> str:
    """`<host>.<pid>`: what names a temporary file or folder's owner, so later builds can tell leftovers."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"
    return f"{host}.{os.getpid()}"


def remove_stale_temporaries(folder: Path, stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete what killed builds left in `folder` (a cache's tiny-vlm or meteor-paraphrase folder): hidden temporary
    build folders and `*.tmp` checkpoint files whose process, named in them, is gone on this host; those that name no
    process of this host (another host's, an older harness's) once older than `stale_after_s`. Resumable checkpoints
    (`.<final>.checkpoint.pt`) and finished builds stay. Returns what was removed."""
    if not folder.is_dir():
        return []
    host = temp_tag().split(".")[0]
    removed = []
    for entry in folder.iterdir():
        if not entry.name.startswith(".") or not (entry.is_dir() or entry.name.endswith(".tmp")):
            continue
        owner = re.search(r"\.([A-Za-z0-9]+)\.(\d+)\.[^.]+$", entry.name)
        if owner and owner[1] == host and os.name != "nt":  # (Windows: no liveness check; the age decides)
            stale = not process_alive(int(owner[2]))
        else:
            try:
                stale = time.time() - entry.stat().st_mtime > stale_after_s
            except OSError:
                continue
        if not stale:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
