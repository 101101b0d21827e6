"""The LLM cache entries this process claimed (`LLMCache.claim`: this run counts what they cost) since a mark.

A judge claims its replies once its calls are done, before its rows and results entry are written. Interrupted
(Ctrl-C, SIGTERM) or failing before results.json records it, the command records nothing that counts them;
`give_back` then marks those entries `unclaimed` again, so the run that uses them next (the same command, run
again) counts them, as it counts the replies of calls an interrupted run made and never used. Killed outright
(SIGKILL, the machine lost) it gives nothing back, so a claim made inside `counted_when_recorded` is first only
pending (`LLMCache.claim` marks it with this process as owner) and final once results.json records it (`settle`):
a pending claim whose owner is gone is free again for the next run to count.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

_claimed: list[tuple[Path, str]] = []  # (cache file, key) in the order claimed, inside counted_when_recorded
_open_scopes = 0  # counted_when_recorded blocks running: claims outside them (a model's replies) are not kept


def pending() -> bool:
    """Whether a claim made now is pending (inside counted_when_recorded: final once results.json records it)."""
    return _open_scopes > 0


def note(path: Path, keys: Iterable[str]) -> None:
    """Called by LLMCache.claim with the keys it claimed."""
    if _open_scopes:
        _claimed.extend((path, key) for key in keys)


def mark() -> int:
    """A position to settle or give back from."""
    return len(_claimed)


def settle(since: int) -> None:
    """The claims made since `since` are counted by results now in hand: make them final and forget them (best
    effort: a cache that cannot be written leaves them pending, and a later run counts them again)."""
    for path, keys in _by_path(_claimed[since:]).items():
        _with_cache(path, lambda cache, k=keys: cache.finalize(k), "mark as counted")
    del _claimed[since:]


def _by_path(taken: list[tuple[Path, str]]) -> dict[Path, list[str]]:
    by_path: dict[Path, list[str]] = {}
    for path, key in taken:
        by_path.setdefault(path, []).append(key)
    return by_path


def _with_cache(path: Path, act: Callable[..., None], what: str) -> None:
    from harness.errors import UserError
    from harness.providers.cache import LLMCache

    try:
        with LLMCache(path) as cache:
            act(cache)
    except (sqlite3.Error, UserError, OSError) as exc:
        print(f"note: LLM cache: could not {what} the replies this command used ({exc})", file=sys.stderr)


def give_back(since: int) -> None:
    """Mark the entries claimed since `since` unclaimed again (best effort: a cache that cannot be written leaves
    them pending, free again for a later run once this process has ended)."""
    taken = _claimed[since:]
    del _claimed[since:]
    for path, keys in _by_path(taken).items():
        _with_cache(path, lambda cache, k=keys: cache.unclaim(k), "give back")


@contextmanager
def counted_when_recorded() -> Iterator[Callable[[], None]]:
    """Around judging and writing results.json: the claims made inside are given back when it ends with an
    exception, except those made before a call of the function it yields (results.json records them now)."""
    global _open_scopes
    since = mark()
    _open_scopes += 1
    try:
        yield lambda: settle(since)
    except BaseException:
        give_back(since)
        raise
    finally:
        _open_scopes -= 1
    settle(since)
