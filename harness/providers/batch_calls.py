"""Calls to the batch APIs made safe to repeat: the retry policy around one call, and the walk through a provider's
batch list (newest first) with which a create call that got no reply is checked before it is made again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from harness.providers.base import CallError
from harness.providers.scheduler import OutageState, ProviderDown, announce_wait

log = logging.getLogger("harness.providers")

CLOCK_SLACK = 60.0  # seconds a provider's clock may be behind ours when a batch's created_at is compared
PAGE = 100  # batches per list call (OpenAI allows 1-100, Anthropic 1-1000)


async def retrying(client: Any, what: str, make: Callable[[], Awaitable[Any]], timeout: float | None = None, *,
                   before_retry: Callable[[], Awaitable[Any]] | None = None, tolerate: tuple[int, ...] = ()) -> Any:
    """One batch API call with the client's retry policy (retryable errors), ProviderDown on fatal ones.

    `before_retry` runs before each new attempt after an error that may have left the call done (any but a 429,
    where the server refused it): what it returns, when not None, is taken as the call's result (a creation that
    reached the server though its reply never came). An error of an HTTP status in `tolerate` returns None.
    """
    policy = client.policy
    timeout = timeout or client.timeout
    attempt = 0
    while True:
        try:
            return await asyncio.wait_for(make(), timeout)
        except asyncio.TimeoutError:
            err = CallError("retry", f"{what}: no reply within {timeout:g} s")
        except Exception as exc:
            err = client.backend.classify(exc)
        if err.status is not None and err.status in tolerate:
            return None
        if err.kind != "retry" or attempt >= policy.max_retries:
            raise ProviderDown(f"{what} failed: {err.message}")
        wait = policy.delay(attempt, err.retry_after)
        announce_wait(getattr(client, "outage", None) or OutageState(), wait, f"{what}: {err.message}")
        await asyncio.sleep(wait)
        attempt += 1
        if before_retry is not None and err.status != 429:
            found = await before_retry()
            if found is not None:
                return found


async def _first_page(paginator: Any) -> Any:
    return await paginator  # an SDK list call gives an awaitable paginator, not a coroutine


async def listed_since(client: Any, list_page: Callable[[str | None], Any], since: float,
                       created: Callable[[Any], float]) -> AsyncIterator[Any]:
    """The provider's batches newest first, back to the first one created before `since` less CLOCK_SLACK.

    `list_page(after)`: the SDK list call for the page after the batch id `after` (None: the first page);
    `created(batch)`: its creation time (Unix seconds). A server with no batch list (404, 405) yields nothing and
    says so in one line.
    """
    after: str | None = None
    while True:
        page = await retrying(client, "batch list", lambda a=after: _first_page(list_page(a)), tolerate=(404, 405))
        if page is None:
            log.warning("%s at %s lists no batches: cannot check whether a create call that got no reply made a "
                        "batch, so it may be paid twice", client.provider, client.base_url)
            return
        for batch in page.data:
            if created(batch) < since - CLOCK_SLACK:
                return
            yield batch
        if not page.data or page.has_more is False:
            return
        after = page.data[-1].id
