"""Batch mode (half price): OpenAI Batch (JSONL upload, /v1/batches) and Anthropic Message Batches.

Requests are sorted by cache key and cut into chunks; each chunk's batch id and request keys are stored in the
cache database before polling starts, so a run that is interrupted (or that stops after `batch_max_wait` with
BatchPending) picks up the same batches next time, even with more or fewer requests, instead of paying again.
Creation is made safe to repeat: before the create call the chunk is stored as being created (batch id ""), and
after a create call that got no reply (a timeout, a 5xx, a connection error), and on the next run after a process
died during one, the provider's batch list is searched first and a batch found is collected instead of paying for
another. OpenAI batches carry the chunk's batch key in their metadata (`find` matches it); Anthropic's carry no
metadata, so `find` takes the one batch of the same size created since (none when several), and `collect` uses
no result whose custom_id is not a request of the chunk. Results go into the cache as they are collected; failed
items are not cached and go into a new batch on the next run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from harness.providers.base import BatchPending, CallError, ChatRequest, ChatResult, ProviderUnavailable
from harness.providers.batch_calls import PAGE, listed_since, retrying
from harness.providers.cache import LLMCache, batch_key
from harness.providers.scheduler import ProviderDown
from harness.providers.wire import origin

log = logging.getLogger("harness.providers")

MAX_REQUESTS = 10_000  # per batch (OpenAI allows 50,000, Anthropic 100,000)
MAX_BYTES = 100 * 1024 * 1024  # per batch (OpenAI: 200 MB input file, Anthropic: 256 MB)
TRANSFER_TIMEOUT = 900.0  # seconds for uploading a batch or downloading its results

MARKER = "harness_batch_key"  # the OpenAI batch metadata key naming the chunk (its batch key)

OnResult = Callable[[str, ChatResult], None]


def _dict(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else {} (result files of odd shapes are failures, not crashes)."""
    return value if isinstance(value, dict) else {}


def _message(error: dict[str, Any]) -> str:
    """The message of a batch item's error object; the client redacts every error text it records."""
    message = error.get("message")
    return " ".join(message.split())[:300] if isinstance(message, str) and message.strip() else "no details"


def _say_others(provider: str, batch_id: str, others: int, missing: int) -> None:
    """One line when a batch holds results of requests it was not stored with: a batch that a lost create call
    was taken to have made (by its size, Anthropic) but someone else made. None of those results is used."""
    if others:
        log.warning("%s batch %s holds %d results of requests this run never sent (taken by mistake for the batch "
                    "of a create call that got no reply): they are not used, and the %d requests missing from it go "
                    "into a new batch on the next run", provider, batch_id, others, missing)


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
            if not stored["keys"] & left:
                continue
            bkey, batch_id = stored["batch_key"], stored["batch_id"]
            if not batch_id:  # a run died (or gave up) during its create call: did that call make the batch?
                batch_id = await api.find(sdk, bkey, len(stored["keys"]), stored["submitted_at"], cache.batch_ids())
                if batch_id is None:
                    cache.delete_batch(bkey)  # never made: its requests are submitted below
                    continue
                cache.put_batch(bkey, client.provider, client.model, client.base_url, batch_id, stored["keys"])
            left -= stored["keys"]
            running.append((bkey, batch_id, stored["keys"]))
            log.info("resuming %s batch %s (%d requests)", client.provider, batch_id, len(stored["keys"]))
        bodies = sorted((key, client.backend.body(request)) for key, request in todo if key in left)
        for chunk in _chunks(bodies):
            keys = [key for key, _ in chunk]
            bkey = batch_key(client.provider, client.model, client.base_url, keys)
            batch_id = await _create(api, sdk, chunk, bkey, lambda k=bkey, ks=keys: cache.put_batch(
                k, client.provider, client.model, client.base_url, "", ks), cache.batch_ids)
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


async def _create(api: OpenAIBatches | AnthropicBatches, sdk: Any, chunk: list[tuple[str, dict[str, Any]]],
                  bkey: str, mark: Callable[[], None], known_ids: Callable[[], set[str]]) -> str:
    """Create one chunk's batch and return its id, at most once: `mark` stores the chunk as being created before
    the create call (a run that dies during it finds the mark), and a create call that fails is retried only
    after the provider's batch list shows no batch it made."""
    payload = await api.prepare(sdk, chunk)
    since = time.time()
    mark()
    return await retrying(api.client, "batch creation", lambda: api.create(sdk, payload, bkey), api.create_timeout,
                          before_retry=lambda: api.find(sdk, bkey, len(chunk), since, known_ids()))


class OpenAIBatches:
    """Upload JSONL to /v1/files, create /v1/batches, poll, download the output and error files."""

    create_timeout: float | None = None  # the client's timeout

    def __init__(self, client: Any) -> None:
        self.client = client
        self.last_detail = ""
        self._files: tuple[str | None, str | None] = (None, None)  # of the batch polled last

    async def prepare(self, sdk: Any, chunk: list[tuple[str, dict[str, Any]]]) -> str:
        """Upload the chunk as a JSONL file; its file id. (A retried upload may leave an unused file: free.)"""
        lines = [{"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}
                 for key, body in chunk]
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
        upload = await retrying(self.client, "batch file upload", lambda: sdk.files.create(
            file=("harness-batch.jsonl", data, "application/jsonl"), purpose="batch", timeout=TRANSFER_TIMEOUT),
            TRANSFER_TIMEOUT)
        return str(upload.id)

    async def create(self, sdk: Any, file_id: str, bkey: str) -> str:
        batch = await sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                         completion_window="24h",
                                         metadata={"created_by": "medvlm-harness", MARKER: bkey})
        return str(batch.id)

    async def find(self, sdk: Any, bkey: str, n_requests: int, since: float, known: set[str]) -> str | None:
        """The id of the batch a create call for `bkey` made (its metadata carries the key), if any: batches are
        listed newest first back to `since` (less the clock slack); failed, expired or cancelled ones are not
        taken."""
        listed = listed_since(self.client, lambda after: sdk.batches.list(
            limit=PAGE, **({"after": after} if after else {})), since, lambda batch: float(batch.created_at))
        async for batch in listed:
            if (batch.metadata or {}).get(MARKER) == bkey and batch.id not in known \
                    and batch.status not in ("failed", "expired", "cancelling", "cancelled"):
                log.warning("%s batch %s was created though its create call got no reply: collecting it instead "
                            "of paying for another", self.client.provider, batch.id)
                return str(batch.id)
        return None

    async def poll(self, sdk: Any, batch_id: str) -> str:
        batch = await retrying(self.client, f"batch {batch_id} status", lambda: sdk.batches.retrieve(batch_id))
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
        others = 0  # results of requests this batch was not sent with (a batch taken by mistake)
        for file_id in self._files:
            if not file_id:
                continue
            content = await retrying(self.client, f"batch {batch_id} results",
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
                if key not in keys:
                    others += 1
                if key not in keys or key in seen:
                    continue
                seen.add(key)
                on_result(key, self._result(row))
        _say_others(self.client.provider, batch_id, others, len(keys - seen))
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

    create_timeout = TRANSFER_TIMEOUT  # the requests go with the create call

    def __init__(self, client: Any) -> None:
        self.client = client
        self.last_detail = ""

    async def prepare(self, sdk: Any, chunk: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        return [{"custom_id": key, "params": body} for key, body in chunk]

    async def create(self, sdk: Any, requests: list[dict[str, Any]], bkey: str) -> str:
        batch = await sdk.messages.batches.create(requests=requests, timeout=TRANSFER_TIMEOUT)
        return str(batch.id)

    async def find(self, sdk: Any, bkey: str, n_requests: int, since: float, known: set[str]) -> str | None:
        """The batch a create call of `n_requests` requests may have made, if exactly one such batch was created
        since `since` (less the clock slack) that the cache does not know and nobody cancelled. Message Batches
        carry no metadata, so this is a guess by size and time: `collect` checks the custom_ids and uses none of
        another's results."""
        found: list[str] = []
        listed = listed_since(self.client, lambda after: sdk.messages.batches.list(
            limit=PAGE, **({"after_id": after} if after else {})), since, lambda batch: batch.created_at.timestamp())
        async for batch in listed:
            counts = batch.request_counts
            size = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
            if size == n_requests and batch.id not in known and batch.cancel_initiated_at is None:
                found.append(str(batch.id))
        if len(found) == 1:
            log.warning("%s batch %s (%d requests, created since the create call that got no reply) is taken as that "
                        "call's batch; its results are checked against the requests sent", self.client.provider,
                        found[0], n_requests)
            return found[0]
        if found:
            log.warning("%s batches %s each hold %d requests and were created since a create call that got no "
                        "reply: not knowing which (if any) it made, a new batch is created; cancel the duplicate "
                        "if it is yours", self.client.provider, ", ".join(found), n_requests)
        return None

    async def poll(self, sdk: Any, batch_id: str) -> str:
        batch = await retrying(self.client, f"batch {batch_id} status",
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

        await retrying(self.client, f"batch {batch_id} results", read, TRANSFER_TIMEOUT)
        seen: set[str] = set()
        others = sum(1 for row in rows if row.get("custom_id") not in keys)
        _say_others(self.client.provider, batch_id, others, len(keys - {row.get("custom_id") for row in rows}))
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

