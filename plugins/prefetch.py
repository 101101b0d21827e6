"""Work prepared ahead for a model's next `generate` call (see `ModelPlugin.prefetch`): the runner announces
the next batch's requests while the current one generates, and a model plugin starts their CPU work
(ordering, image preprocessing) on a thread of its own. Used by the `hf` and `pefomed` plugins.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Prefetcher:
    """Work started for a later call, on one worker thread: `start(items, fn)` runs `fn()`; `take(items)`,
    called later with the very same item objects, returns its result. `take` returns None when nothing was
    started for these items or when the work failed (the caller then does it itself, and meets the error
    there). At most `keep` results are kept; `start` may be called from another thread than `take`."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._pool: Any = None
        self._lock = threading.Lock()
        self._jobs: OrderedDict[tuple[int, ...], tuple[list[Any], Any]] = OrderedDict()

    def start(self, items: list[Any], fn: Callable[[], Any]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
            # the items are kept with the job, so their ids stay unique while it is kept
            self._jobs[tuple(map(id, items))] = (list(items), self._pool.submit(fn))
            while len(self._jobs) > self.keep:
                self._jobs.popitem(last=False)[1][1].cancel()

    def take(self, items: list[Any]) -> Any:
        with self._lock:
            job = self._jobs.pop(tuple(map(id, items)), None)
        if job is None:
            return None
        try:
            return job[1].result()
        except Exception as exc:  # noqa: BLE001 - the caller redoes the work and meets a real error there
            log.debug("prefetched work failed (%s: %s); preparing again", type(exc).__name__, exc)
            return None

    def close(self) -> None:
        with self._lock:
            self._jobs.clear()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
