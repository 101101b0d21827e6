"""One harness process at a time per run folder or leaderboard: an exclusive lock on a file in the folder.

Another process that wants the same folder says so on stderr and waits, then carries on with what the first one
left (a second `harness run` of the same run finds the predictions made and only scores). The lock is a POSIX
record lock (fcntl.lockf): the operating system releases it when the process ends, even by SIGKILL, and a child
process (vLLM forks its engine) does not inherit it, so no stale lock is left. Where locks are not available
(Windows, a file system without them) the command runs without one, with a warning.

A command that fails before writing anything removes the folder it created (no empty run folder, nor a run.json
holding arguments that were refused), and it does so while it holds the lock, and only if this process made the
folder. A process that was waiting for a lock whose file has meanwhile been removed (or replaced) takes the lock
again on the file now there: it never goes on holding a lock nobody else can see.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

RUN_LOCK = ".harness.lock"


def _made(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; the ones this process created (another process may create the
    same folder at the same moment: only one of them made it), deepest first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]  # shallowest first
    made = []
    for path in missing:
        try:
            path.mkdir()
            made.append(path)
        except FileExistsError:
            continue  # FileNotFoundError (a parent removed meanwhile) goes to exclusive(), which tries again
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)  # raises the reason (a file in the way, no permission)
    return made[::-1]


def _still_there(fh: Any, path: Path) -> bool:
    """Whether the file locked through `fh` is still the one at `path` (not removed or replaced meanwhile)."""
    try:
        held, now = os.fstat(fh.fileno()), os.stat(path)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


@contextmanager
def exclusive(folder: Path, lock_name: str = RUN_LOCK, owned: Iterable[str] = (),
              remove_unless: Iterable[str] | None = None, what: str | None = None,
              transient: bool = False) -> Iterator[None]:
    """Hold an exclusive lock (file `lock_name` in `folder`) while a command changes the folder's files.

    Once it is held, the temporary files of atomic writes of the `owned` file names (`.<name>.*.tmp`) are removed:
    with nobody else writing them, they can only be what a process killed mid-write left behind.
    `remove_unless`: when the command fails (or is interrupted) before any of these files exists in the folder,
    and this process created the folder, the folder and the parents it created are removed (lock still held).
    `what` names the locked thing in the waiting note (default: the folder).
    `transient`: the lock file is removed when the lock is let go (a waiter then locks a new one), and so are the
    folders this process made for it if they are left empty (a lock beside a fine-tune's --out leaves nothing).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, the rest as elsewhere
        fcntl = None
        print(f"warning: {what or folder}: file locks are not available on this system; do not run two harness "
              "commands on it at once", file=sys.stderr, flush=True)
    shown = what or str(folder)
    folder = Path(folder).absolute()
    lock_path = folder / lock_name
    for attempt in range(1000):
        try:
            made = _made(folder)
            fh = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - closed below
        except FileNotFoundError:  # another process removed the folder (or a parent) just now: make it again
            if attempt == 999:
                raise
            continue
        locked = fcntl is not None and _lock(fcntl, fh, shown)
        if not locked or _still_there(fh, lock_path):
            break
        fh.close()  # its holder removed the folder: lock the one there now
    try:
        if locked:
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            for name in owned:
                for stale in folder.glob(f".{name}.*.tmp"):
                    if "." not in stale.name[len(name) + 2:-4]:  # not the temporary file of `name`.x
                        stale.unlink(missing_ok=True)
        try:
            yield
        except BaseException:
            if remove_unless is not None and folder in made and folder.is_dir() \
                    and not any((folder / name).exists() for name in remove_unless):
                _remove_made(folder, lock_path, made)
            raise
    finally:
        if fcntl is None:  # no lock held, and Windows deletes no open file
            fh.close()
        if transient:
            with suppress(OSError):
                lock_path.unlink(missing_ok=True)
            _remove_empty(made)
        fh.close()  # releases the lock (closing twice is harmless)


def _remove_made(folder: Path, lock_path: Path, made: list[Path]) -> None:
    """Remove a folder this process made (the lock file last: until then a newcomer waits on it) and the parents
    it made, if nothing else is in them."""
    for entry in folder.iterdir():
        if entry != lock_path:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    with suppress(OSError):  # still open where there is no lock (Windows deletes no open file): left
        lock_path.unlink(missing_ok=True)
    _remove_empty(made)


def _remove_empty(made: list[Path]) -> None:
    """Remove the folders this process made (deepest first) as long as they are empty."""
    for made_folder in made:
        try:
            made_folder.rmdir()
        except OSError:  # not empty: another process put something there meanwhile
            break


def _lock(fcntl: Any, fh: Any, what: str) -> bool:
    """Take the lock, waiting (and saying so) while another process holds it; False where locks are not
    supported (then the caller goes on unlocked, with a warning)."""
    try:
        fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except (BlockingIOError, PermissionError):  # held by another process (EAGAIN or EACCES)
        fh.seek(0)
        holder = fh.read().strip()
        pid = f" (pid {holder})" if holder.isdigit() else ""
        print(f"note: another harness process{pid} is using {what}; waiting for it to finish", file=sys.stderr,
              flush=True)
        fcntl.lockf(fh, fcntl.LOCK_EX)
        return True
    except OSError as exc:  # ENOLCK / EOPNOTSUPP: e.g. Lustre without -o flock, some NFS or FUSE mounts
        print(f"warning: {what}: file locks are not supported here ({exc.strerror or exc}); going on without "
              "one, so do not run two harness commands on it at once", file=sys.stderr, flush=True)
        return False
