"""Who holds an LLM cache entry: the process that stored or claimed it (host, process id, start time), and whether
this process may claim it now (the owner is gone, or is this process with an unused reply)."""

from __future__ import annotations

import os
import socket

from harness.processes import process_alive, process_started

PENDING = 2  # `unclaimed` of an entry claimed by a command that has not yet written the results file counting it


def owner() -> str:
    """Who stores an entry: this host, process id and the process's start time (where /proc tells it)."""
    return f"{socket.gethostname()}:{os.getpid()}:{process_started(os.getpid()) or ''}"


def free_to_claim(unclaimed: int, holder: str | None) -> bool:
    """Whether an entry in claim state `unclaimed` (1: paid, never used; PENDING: claimed by a command whose results
    file does not record it yet) may be claimed by this process: unless another process on this host still runs
    that will count it, and never a pending claim of this process itself (counted already)."""
    if unclaimed == PENDING and holder == owner():
        return False
    return not held_by_another_live_process(holder)


def held_by_another_live_process(holder: str | None) -> bool:
    """Whether an unclaimed entry's owner is another process still running on this host (it claims and counts the
    entry when it hands its results on). Entries of older caches (no owner), of other hosts (a cache on a shared
    disk) or of this process are free to claim, as are all on Windows (no cheap liveness check). A process that
    stored entries and never claimed them (a notebook whose run raised) holds them as long as it runs."""
    host, pid_text, started = ((holder or "").split(":") + ["", ""])[:3]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid() \
            or not process_alive(int(pid_text)):  # gone: it ended without claiming (killed, interrupted)
        return False
    now = process_started(int(pid_text))
    return not (started and now and now != started)  # another process under the owner's pid: the owner ended
