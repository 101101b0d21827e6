"""Batch mode (half price): OpenAI Batch (JSONL upload, /v1/batches) and Anthropic Message Batches.

Requests are sorted by cache key and cut into chunks; each chunk's batch id and request keys are stored in the
cache database before polling starts, so a run that is interrupted (or that stops after `batch_max_wait` with
BatchPending) picks up the same batches next time, even with more or fewer requests, instead of paying again.
Results go into the cache as they are collected; failed items are not cached and go into a new batch on the
next run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from harness.providers.base import BatchPending, CallError, ChatRequest, ChatResult, ProviderUnavailable
from harness.providers.cache import LLMCache, batch_key
from harness.providers.scheduler import OutageState, ProviderDown, announce_wait
from harness.providers.wire import origin

log = logging.getLogger("harness.providers")

MAX_REQUESTS = 10_000  # per batch (OpenAI allows 50,000, Anthropic 100,000)
MAX_BYTES = 100 * 1024 * 1024  # per batch (OpenAI: 200 MB input file, Anthropic: 256 MB)
TRANSFER_TIMEOUT = 900.0  # seconds for uploading a batch or downloading its results

OnResult = Callable[[str, ChatResult], None]


def _dict(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else {} (result files of odd shapes are failures, not crashes)."""
    return value if isinstance(value, dict) else {}


def _message(error: dict[str, Any]) -> str:
    """The message of a batch item's error object; the client redacts every error text it records."""
    message = error.get("message")
    return " ".join(message.split())[:300] if isinstance(message, str) and message.strip() else "no details"


async def _retrying(client: Any, what: str, make: Callable[[], Awaitable[Any]], timeout: float | None = None) -> Any:
    """One batch API call with the client's retry policy (retryable errors), ProviderDown on fatal ones."""
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
        if err.kind != "retry" or attempt >= policy.max_retries:
            raise ProviderDown(f"{what} failed: {err.message}")
        wait = policy.delay(attempt, err.retry_after)
        announce_wait(getattr(client, "outage", None) or OutageState(), wait, f"{what}: {err.message}")
        await asyncio.sleep(wait)
        attempt += 1


def _chunks(bodies: list[tuple[str, dict[str, Any]]]) -> list[list[tuple[str, dict[str, Any]]]]:
    chunks: list[list[tuple[str, dict[str, Any]]]] = []
    size = 0
    for key, body in bodies:
        n = len(json.dumps(body))
        if not chunks or len(chunks[-1]) >= MAX_REQUESTS or size + n > MAX_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append((key, body))
        size += n
    return chunks


async def run_batch(client: Any, todo: list[tuple[str, ChatRequest]], on_result: OnResult,
                    cache: LLMCache | None) -> None:
    """Resume stored batches that hold any of `todo`, submit the rest in chunks, poll, collect.

    Each wanted result goes to `on_result`; results of a resumed batch that this run does not need (a
    previous run asked for more) go straight into the cache, since they are paid for.
    """
    if cache is None:
        raise ProviderDown("batch mode needs the cache (it keeps the batch id between runs); do not turn it off")
    api = OpenAIBatches(client) if client.provider == "openai" else AnthropicBatches(client)
    wanted = {key for key, _ in todo}

    def deliver(key: str, result: ChatResult) -> None:
        if key in wanted:
            on_result(key, result)
        elif result.text is not None:
            result.cost_usd = client.cost_usd(result)
            cache.put(key, client.provider, client.model, result, batch=True, base_url=client.base_url)

    sdk = client.backend.open()
    try:
        running: list[tuple[str, str, set[str]]] = []  # (batch key, batch id, request keys)
        left = set(wanted)
        for stored in cache.batches_for(client.provider, client.model, client.base_url):
            if stored["keys"] & left:
                left -= stored["keys"]
                running.append((stored["batch_key"], stored["batch_id"], stored["keys"]))
                log.info("resuming %s batch %s (%d requests)", client.provider, stored["batch_id"],
                         len(stored["keys"]))
        bodies = sorted((key, client.backend.body(request)) for key, request in todo if key in left)
        for chunk in _chunks(bodies):
            keys = [key for key, _ in chunk]
            bkey = batch_key(client.provider, client.model, client.base_url, keys)
            batch_id = await api.submit(sdk, chunk)
            cache.put_batch(bkey, client.provider, client.model, client.base_url, batch_id, keys)
            log.info("submitted %s batch %s (%d requests)", client.provider, batch_id, len(keys))
            running.append((bkey, batch_id, set(keys)))
        started = time.monotonic()
        while running:
            still: list[tuple[str, str, set[str]]] = []
            for bkey, batch_id, keys in running:
                state = await api.poll(sdk, batch_id)
                if state == "running":
                    still.append((bkey, batch_id, keys))
                    continue
                if state == "gone":
                    cache.delete_batch(bkey)
                    raise ProviderDown(f"batch {batch_id} ended without results ({api.last_detail}); "
                                       "run again to submit a new one")
                await api.collect(sdk, batch_id, keys, deliver)
                cache.delete_batch(bkey)
            running = still
            if not running:
                break
            waited = time.monotonic() - started
            if client.batch_max_wait is not None and waited >= client.batch_max_wait:
                ids = ", ".join(batch_id for _, batch_id, _ in running)
                raise BatchPending(
                    f"{client.provider} batch {ids} is still running after {waited:.0f} s ({api.last_detail}); "
                    "its id is saved in the cache: run the same command again later to collect the results "
                    "(batches finish within 24 h)")
            await asyncio.sleep(client.batch_poll_interval)
    finally:
        await sdk.close()


class OpenAIBatches:
    """Upload JSONL to /v1/files, create /v1/batches, poll, download the output and error files."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.last_detail = ""
        self._files: tuple[str | None, str | None] = (None, None)  # of the batch polled last

    async def submit(self, sdk: Any, chunk: list[tuple[str, dict[str, Any]]]) -> str:
        lines = [{"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}
                 for key, body in chunk]
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
        upload = await _retrying(self.client, "batch file upload", lambda: sdk.files.create(
            file=("harness-batch.jsonl", data, "application/jsonl"), purpose="batch", timeout=TRANSFER_TIMEOUT),
            TRANSFER_TIMEOUT)
        batch = await _retrying(self.client, "batch creation", lambda: sdk.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
            metadata={"created_by": "medvlm-harness"}))
        return batch.id

    async def poll(self, sdk: Any, batch_id: str) -> str:
        batch = await _retrying(self.client, f"batch {batch_id} status", lambda: sdk.batches.retrieve(batch_id))
        counts = batch.request_counts
        self.last_detail = f"status {batch.status}" + (
            f", {counts.completed} of {counts.total} done" if counts is not None else "")
        self._files = (batch.output_file_id, batch.error_file_id)
        if batch.status in ("validating", "in_progress", "finalizing", "cancelling"):
            return "running"
        if batch.status in ("completed", "expired", "cancelled") and any(self._files):
            return "done"  # expired/cancelled batches still return what they finished
        if batch.status == "failed" and batch.errors is not None and batch.errors.data:
            detail = "; ".join(str(e.message) for e in batch.errors.data[:3])
            self.last_detail += ": " + self.client.backend.redact(detail)
        return "gone"

    async def collect(self, sdk: Any, batch_id: str, keys: set[str], on_result: OnResult) -> None:
        seen: set[str] = set()
        for file_id in self._files:
            if not file_id:
                continue
            content = await _retrying(self.client, f"batch {batch_id} results",
                                      lambda fid=file_id: sdk.files.content(fid, timeout=TRANSFER_TIMEOUT),
                                      TRANSFER_TIMEOUT)
            for line in content.content.decode("utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    row = _dict(json.loads(line))
                except ValueError:
                    continue  # a damaged line: its request counts as missing and goes into the next batch
                key = row.get("custom_id")
                if key not in keys or key in seen:
                    continue
                seen.add(key)
                on_result(key, self._result(row))
        for key in sorted(keys - seen):
            on_result(key, ChatResult(text=None, error=f"missing from the output of batch {batch_id}"))

    def _result(self, row: dict[str, Any]) -> ChatResult:
        response = _dict(row.get("response"))
        body = _dict(response.get("body"))
        if response.get("status_code") == 200:
            try:
                return self.client.backend.parse(body)
            except CallError as err:
                return ChatResult(text=None, error=err.message)
        error = _dict(row.get("error")) or _dict(body.get("error"))
        return ChatResult(text=None, error=f"batch item failed (HTTP {response.get('status_code')}): "
                                           f"{_message(error)}")


class AnthropicBatches:
    """Create /v1/messages/batches, poll, read the results JSONL."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.last_detail = ""

    async def submit(self, sdk: Any, chunk: list[tuple[str, dict[str, Any]]]) -> str:
        requests = [{"custom_id": key, "params": body} for key, body in chunk]
        batch = await _retrying(self.client, "batch creation", lambda: sdk.messages.batches.create(
            requests=requests, timeout=TRANSFER_TIMEOUT), TRANSFER_TIMEOUT)
        return batch.id

    async def poll(self, sdk: Any, batch_id: str) -> str:
        batch = await _retrying(self.client, f"batch {batch_id} status",
                                lambda: sdk.messages.batches.retrieve(batch_id))
        counts = batch.request_counts
        self.last_detail = (f"status {batch.processing_status}, {counts.processing} processing, "
                            f"{counts.succeeded} succeeded, {counts.errored} errored")
        if batch.processing_status != "ended":
            return "running"
        named = batch.results_url
        if named and urlsplit(named).netloc and origin(named) != origin(self.client.base_url):
            # the SDK would fetch it with the key: only from where the key already goes
            raise ProviderUnavailable(f"batch {batch_id}: the server names its results at "
                                      f"{origin(named)}, not at {origin(self.client.base_url)} (its base "
                                      "URL); refusing to send the API key there")
        return "done" if batch.results_url else "gone"

    async def collect(self, sdk: Any, batch_id: str, keys: set[str], on_result: OnResult) -> None:
        rows: list[dict[str, Any]] = []

        async def read() -> None:
            rows.clear()
            decoder = await sdk.messages.batches.results(batch_id, timeout=TRANSFER_TIMEOUT)
            async for item in decoder:
                rows.append(item.model_dump())

        await _retrying(self.client, f"batch {batch_id} results", read, TRANSFER_TIMEOUT)
        seen: set[str] = set()
        for row in rows:
            key = row.get("custom_id")
            if key not in keys or key in seen:
                continue
            seen.add(key)
            result = _dict(row.get("result"))
            if result.get("type") == "succeeded":
                try:
                    on_result(key, self.client.backend.parse(_dict(result.get("message"))))
                except CallError as err:
                    on_result(key, ChatResult(text=None, error=err.message))
                continue
            error = _message(_dict(_dict(result.get("error")).get("error")))
            on_result(key, ChatResult(text=None, error=f"batch item {result.get('type')}: {error}"))
        for key in sorted(keys - seen):
            on_result(key, ChatResult(text=None, error=f"missing from the results of batch {batch_id}"))

