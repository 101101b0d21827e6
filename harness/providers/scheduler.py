"""Concurrent provider calls: an adaptive concurrency limit (AIMD), retries with back-off, outage detection.

- At most `concurrency` calls in flight; a 429/529 halves the allowed number (once per round of calls) and each
  success grows it back by 1/limit (about one slot per round), up to `concurrency`.
- A `retry-after` on 429/503/529 pauses every new call until then and is the wait before that call's retry;
  otherwise the wait is exponential (base * 2**attempt, capped) with jitter.
- Retryable failures (429, 5xx, 529, timeouts, connection and malformed replies) are retried up to
  `max_retries` times; "fail" errors (400, 422 ...) end that request only; "fatal" ones (401, 403, 404) and
  `down_after` requests in a row running out of retries stop the run with `ProviderDown`. The count lives in an
  `OutageState` that the client keeps across runs (a model plugin runs one small batch at a time), and only a
  success resets it.
- SIGINT (Ctrl-C) or SIGTERM while calls run on the main thread sends no new call; the calls already sent (paid
  for) finish, each within its timeout, and their results reach `on_result` (cached, saved) before
  `CallsInterrupted` ends the run; a second signal abandons them (harness/providers/interrupts.py).
- A wait of `ANNOUNCE_AFTER` seconds or more (retry-after, back-off) is announced in one warning line, once per
  pause, so a long wait is not silent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from harness.providers.base import CallError, ChatResult
from harness.providers.interrupts import CallsInterrupted, deferred_signals, say

log = logging.getLogger("harness.providers")
T = TypeVar("T")
ANNOUNCE_AFTER = 10.0  # seconds: a longer wait is announced


@dataclass
class OutageState:
    """Failures in a row (requests that ran out of retries) across runs of one client; a success resets it."""

    failures_in_row: int = 0
    quiet_until: float = 0.0  # monotonic time until which a wait was already announced


def announce_wait(state: OutageState, wait: float, what: str) -> None:
    """One warning line for a long wait (not one per concurrent call waiting for the same pause)."""
    now = time.monotonic()
    if wait < ANNOUNCE_AFTER:
        return
    announced = now < state.quiet_until  # this pause (of several calls at once) was already announced
    state.quiet_until = max(state.quiet_until, now + wait)
    if announced:
        return
    log.warning("waiting %.0f s before retrying (%s)", wait, what)


class ProviderDown(Exception):
    """Internal: the run must stop (auth failure, or the provider stays down). The client words the error."""


@dataclass
class RetryPolicy:
    max_retries: int = 6
    base_delay: float = 1.0  # seconds before the first retry (doubles each time)
    max_delay: float = 60.0
    retry_after_cap: float = 600.0  # a longer retry-after is cut to this
    down_after: int = 3  # requests in a row that ran out of retries: the provider is down

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            wait = min(max(retry_after, 0.0), self.retry_after_cap)
            return wait + random.uniform(0.0, min(1.0, 0.1 * wait + 0.01))
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)


class AdaptiveLimiter:
    """Concurrency slots whose number shrinks on throttling and grows back slowly (AIMD)."""

    def __init__(self, max_limit: int) -> None:
        self.max_limit = max(1, int(max_limit))
        self.limit = float(self.max_limit)
        self.min_seen = self.max_limit
        self.in_flight = 0
        self._epoch = 0
        self._pause_until = 0.0
        self._cond = asyncio.Condition()

    @property
    def allowed(self) -> int:
        return max(1, int(self.limit))

    async def acquire(self) -> int:
        loop = asyncio.get_running_loop()
        while True:
            pause = self._pause_until - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            async with self._cond:
                if self.in_flight < self.allowed and loop.time() >= self._pause_until:
                    self.in_flight += 1
                    return self._epoch
                await self._cond.wait()

    async def release(self, epoch: int, *, ok: bool, throttled: bool = False,
                      pause_for: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        async with self._cond:
            self.in_flight -= 1
            if throttled and epoch == self._epoch:
                # one cut per round: the other calls started in the same round do not cut again
                self.limit = max(1.0, self.limit / 2)
                self._epoch += 1
                self.min_seen = min(self.min_seen, self.allowed)
                log.info("rate limited: concurrency now %d", self.allowed)
            elif ok:
                self.limit = min(float(self.max_limit), self.limit + 1.0 / self.limit)
            if pause_for:
                self._pause_until = max(self._pause_until, loop.time() + pause_for)
            self._cond.notify_all()


async def run_calls(
    jobs: list[tuple[Any, Any]],
    send: Callable[[Any], Awaitable[ChatResult]],
    on_result: Callable[[Any, ChatResult], None],
    *,
    concurrency: int,
    timeout: float,
    policy: RetryPolicy,
    limiter: AdaptiveLimiter | None = None,
    outage: OutageState | None = None,
) -> None:
    """Call `send(body)` for every (id, body) job and hand each final result to `on_result(id, result)` as it
    arrives (the caller caches it there, so an interrupted run loses nothing it paid for).

    Raises ProviderDown (after cancelling the calls in flight) when the run must stop, CallsInterrupted after a
    SIGINT or SIGTERM (the calls already sent were let finish and handed on first, unless a second signal
    abandoned them). `outage` carries the failures in a row over from earlier runs of the same client.
    """
    limiter = limiter or AdaptiveLimiter(concurrency)
    state = outage if outage is not None else OutageState()
    queue = deque(jobs)
    sending: set[asyncio.Task[Any]] = set()  # workers whose request is sent and not answered yet
    stop: list[int] = []  # the signal that stops the run

    async def one(body: Any) -> ChatResult | None:
        attempt = 0
        while True:
            epoch = await limiter.acquire()
            me = asyncio.current_task()
            assert me is not None
            sending.add(me)
            try:
                result = await asyncio.wait_for(send(body), timeout)
            except asyncio.TimeoutError:
                err = CallError("retry", f"no reply within {timeout:g} s")
            except CallError as exc:
                err = exc
            except BaseException:
                await limiter.release(epoch, ok=False)
                raise
            else:
                await limiter.release(epoch, ok=True)
                state.failures_in_row = 0
                return result
            finally:
                sending.discard(me)
            honour = err.retry_after if err.status in (429, 503, 529) else None
            await limiter.release(epoch, ok=False, throttled=err.throttled, pause_for=honour)
            if err.kind == "fatal":
                raise ProviderDown(err.message)
            if err.kind == "fail":
                return ChatResult(text=None, error=err.message)
            if stop:  # interrupted: no retry (no reply came, so none was paid for); the sample stays to do
                return None
            if attempt >= policy.max_retries:
                state.failures_in_row += 1
                if state.failures_in_row >= policy.down_after:
                    retries = "1 retry" if policy.max_retries == 1 else f"{policy.max_retries} retries"
                    raise ProviderDown(f"{state.failures_in_row} requests in a row failed after {retries} "
                                       f"(last error: {err.message})")
                tries = "1 attempt" if attempt == 0 else f"{attempt + 1} attempts"
                return ChatResult(text=None, error=f"failed after {tries}: {err.message}")
            wait = policy.delay(attempt, err.retry_after)
            log.debug("retrying in %.2f s after: %s", wait, err.message)
            announce_wait(state, wait, "retry-after from the provider" if err.retry_after is not None
                          else f"back-off after: {err.message}")
            await asyncio.sleep(wait)
            attempt += 1

    async def worker() -> None:
        while queue and not stop:
            index, body = queue.popleft()
            result = await one(body)
            if result is not None:
                on_result(index, result)

    workers = [asyncio.create_task(worker()) for _ in range(min(max(1, concurrency), len(jobs)))]
    if not workers:
        return

    def on_signal(signum: int, count: int) -> None:
        """First signal: no new call; the calls already sent finish. A second: abandon them too."""
        name = "interrupted" if signum == signal.SIGINT else "terminated"
        again = "Ctrl-C" if signum == signal.SIGINT else "the signal"
        if count == 1:
            stop.append(signum)
            for task in workers:
                if task not in sending:
                    task.cancel()  # waiting for a slot or a retry: nothing sent, nothing paid
            if sending:
                say(f"{name}: waiting for the {len(sending)} API call(s) already sent (paid for) to finish, at most "
                    f"{timeout:g} s, so that their replies are kept and not paid for again; {again} again to "
                    "abandon them")
            return
        if not stop:
            stop.append(signum)
        live = [task for task in workers if not task.done()]
        for task in live:
            task.cancel()
        if live:
            say(f"{name} again: abandoning the API calls in flight (their replies are lost; a rerun pays for them "
                "again)")

    try:
        with deferred_signals(asyncio.get_running_loop(), on_signal):
            done, pending = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if stop:
                raise CallsInterrupted(stop[0])
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


def run_sync(make_coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code, also when this thread already runs an event loop
    (a notebook): then it runs on a fresh loop in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make_coro())
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="harness-llm-calls")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
