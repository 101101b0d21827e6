"""Whether a process named by its id still runs, and when it started: how leftovers of killed processes (tiny-vlm
build temporaries, LLM cache entries paid for and never claimed) are told from those of live ones."""

from __future__ import annotations

import os
from pathlib import Path


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
