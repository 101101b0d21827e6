"""Several processes opening one new LLM cache at the same moment (parallel `harness run`s sharing a cache): none
may fail. A schema statement that reads and then writes met another process's write and SQLite answered "database
is locked" without waiting: 11 of 30 rounds of six openers had a failure."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path


def _open(path: str, barrier, results) -> None:
    from harness.providers.cache import LLMCache

    barrier.wait()
    try:
        cache = LLMCache(Path(path))
        cache._db()
        cache.close()
        results.put("ok")
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        results.put(repr(exc)[:200])


def test_openers_of_a_new_cache_at_once_all_succeed(tmp_path):
    context = mp.get_context("fork")
    failures = []
    for round_ in range(20):
        path = str(tmp_path / f"cache-{round_}.sqlite")
        barrier, results = context.Barrier(6), context.Queue()
        procs = [context.Process(target=_open, args=(path, barrier, results)) for _ in range(6)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=120)
        failures += [o for o in outcomes if o != "ok"]
    assert not failures, failures[:3]
