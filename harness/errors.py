"""User-facing errors: one clear line, non-zero exit, no traceback.

Raise `UserError` for anything the user can fix (a bad flag, a missing file, a malformed YAML).
The CLI catches it and prints `error: <message>`; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input; the message must name the file, field or value and what was expected."""

    exit_code = 2


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    """Build the error for an unknown plugin/task/judge name, with the closest match and the known names."""
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UserError(f"unknown {kind} '{name}'.{hint} Known {kind}s: {', '.join(known) or '(none)'}")


def close_hint(names: Iterable[str], known: Iterable[str]) -> str:
    """" (did you mean 'base'?)" for the first of `names` (misspelt keys) that is close to one of `known`, else ""."""
    known = list(known)
    for name in names:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            return f" (did you mean '{close[0]}'?)"
    return ""


def not_utf8(where: str, exc: UnicodeDecodeError, offset: int = 0, advice: str = "save it as UTF-8") -> UserError:
    """The one error for a file that is not UTF-8 text (a Latin-1 or binary file): `where` names the file (and
    line), the message the first bad byte and its offset in the file; `offset` is where the bytes that `exc`
    decoded start in the file (a line's start when decoding line by line)."""
    byte = exc.object[exc.start]
    return UserError(f"{where}: not UTF-8 text (byte {byte:#04x} at offset {offset + exc.start}); {advice}")


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm's time limit, `docker stop`, `kill`): the CLI turns it into this, so every command stops
    the way Ctrl-C stops it (finished work saved, temporary state cleaned up) instead of dying mid-write."""
