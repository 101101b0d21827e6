"""`ProviderClient`: one (provider, model, base URL); cache first, then concurrent calls or a batch.

`make_client(settings)` builds one from the CLI's judge settings (model, provider, base_url, concurrency, timeout,
batch, max_retries, cache; tuning: retry_base_delay, retry_max_delay, down_after, batch_poll_interval,
batch_max_wait). The API key comes from OPENAI_API_KEY / ANTHROPIC_API_KEY / OPENAI_COMPATIBLE_API_KEY only
(a provider key goes only over https or to this machine: aliases.normalise_base_url) and never leaves this object
except in the request headers. Every result passes `_record`, which redacts the error text of a failed call and
turns a reply that is not text into a failure, before anything is cached or handed back.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import sys
import time
from dataclasses import replace
from typing import Any

from harness.errors import UserError
from harness.flags import MAX_CONCURRENCY, parse_flag, parse_number
from harness.providers import pricing
from harness.providers.aliases import (
    ALIAS_NOTES,
    API_KEY_ENV,
    SHUTDOWN,
    check_not_shut_down,
    is_loopback,
    normalise_base_url,
    resolve_model,
)
from harness.providers.base import ChatRequest, ChatResult, ProviderUnavailable
from harness.providers.cache import LLMCache, request_key
from harness.providers.interrupts import CallsInterrupted, reraise
from harness.providers.scheduler import OutageState, ProviderDown, RetryPolicy, run_calls, run_sync
from harness.secrets import redact_reply

POOL_SIZE = 8  # concurrent calls per HTTP connection pool
LOCAL_DUMMY_KEY = "EMPTY"  # what local OpenAI-compatible servers (vLLM, llama.cpp, Ollama) accept


def folder_content(path: str) -> str | None:
    """The content hash of a served folder on this machine (an adapter: `adapter_hash`, the files vLLM loads; a model
    folder: its checkpoint files), None when `path` is not a folder here (a hub id, another machine's path)."""
    from pathlib import Path

    folder = Path(path)
    try:
        if not folder.is_absolute() or not folder.is_dir():
            return None
        if (folder / "adapter_config.json").is_file():
            from harness.fingerprint import adapter_hash

            return adapter_hash(folder)
        from harness.file_digests import folder_fingerprint

        return folder_fingerprint(folder)
    except OSError:
        return None


class ProviderClient:
    """Calls one model at one endpoint. Results come back in request order; successes are cached on arrival."""

    def __init__(self, provider: str, model: str, base_url: str, api_key: str, *, requested: str | None = None,
                 concurrency: int = 16, timeout: float = 60.0, batch: bool = False, max_retries: int = 6,
                 cache: bool = True, retry_base_delay: float = 1.0, retry_max_delay: float = 60.0,
                 down_after: int = 3, batch_poll_interval: float = 30.0,
                 batch_max_wait: float | None = None) -> None:
        self.provider = provider
        self.model = model
        self.base_url = base_url
        self.requested = requested or model
        self.concurrency = concurrency
        self.timeout = timeout
        self.batch = batch
        self.use_cache = cache
        self.policy = RetryPolicy(max_retries=max_retries, base_delay=retry_base_delay,
                                  max_delay=retry_max_delay, down_after=down_after)
        self.batch_poll_interval = batch_poll_interval
        self.batch_max_wait = batch_max_wait
        self.outage = OutageState()  # failures in a row across run() calls (a model runs small batches)
        self._server: dict[str, Any] | None = None  # what an OpenAI-compatible server says of itself, asked once
        self.served_in_key = False  # API models set it (their run id names the served weights too)
        self._contents: dict[str, str] | None = None  # served_weights' folder digests, taken once
        if provider == "anthropic":
            from harness.providers.anthropic_client import AnthropicBackend

            self.backend: Any = AnthropicBackend(model, base_url, api_key, timeout)
        else:
            from harness.providers.openai_client import OpenAIBackend

            self.backend = OpenAIBackend(provider, model, base_url, api_key, timeout)

    def __repr__(self) -> str:
        return f"ProviderClient({self.provider}, {self.model}, {self.base_url})"

    @property
    def is_local(self) -> bool:
        return is_loopback(self.base_url)

    @property
    def priced(self) -> bool:
        """Whether list prices apply: the provider's official API (a custom base URL costs no API fees)."""
        return pricing.priced_endpoint(self.provider, self.base_url)

    def cost_usd(self, result: ChatResult) -> float:
        """Estimated cost of one call: list price at the provider's own API, 0 behind a custom base URL."""
        if not self.priced:
            return 0.0
        return pricing.cost_usd(self.model, result.input_tokens, result.output_tokens, batch=self.batch)

    def describe(self) -> dict[str, Any]:
        """What to record about the judge model (never the API key)."""
        info: dict[str, Any] = {"provider": self.provider, "model": self.model, "base_url": self.base_url,
                                "is_local": self.is_local, "requested": self.requested, "batch": self.batch}
        note = ALIAS_NOTES.get(self.requested.lower())
        if note:
            info["alias_note"] = note
        if not self.priced:
            info["pricing"] = pricing.UNPRICED_NOTE
        elif pricing.has_price(self.model):
            info["prices_as_of"] = pricing.PRICES_AS_OF
        else:  # the provider's own API bills it, at a price this harness does not know
            info["pricing"] = pricing.NO_PRICE_NOTE
        if self.model in SHUTDOWN:
            info["shutdown_date"] = SHUTDOWN[self.model]
        if self.provider == "anthropic":
            info["sampling"] = "provider default (API 2026-10-21 accepts no temperature or seed)"
        dropped = sorted(getattr(self.backend, "dropped", ()))
        if dropped:
            info["rejected_parameters"] = dropped  # the model/server refused these; requests went without them
        return info

    def server_description(self) -> dict[str, Any]:
        """What an OpenAI-compatible server reports of the served model and itself ({} for the providers' APIs);
        asked once per client."""
        if self.provider != "openai-compatible":
            return {}
        if self._server is None:
            self._server = self.backend.server_description()
        return self._server

    def served_weights(self) -> dict[str, str] | None:
        """The weights an OpenAI-compatible server says answer under this model name (vLLM: `root`, the weights' or
        adapter's folder, and an adapter's `parent`); None when it does not say. Part of an API model's run id and,
        with `served_in_key`, of its cache keys: an adapter retrained and served again under the same name is
        another model. (LLM judges leave it out of theirs: a re-score from the cache needs no server.)"""
        card = self.server_description().get("model_card") or {}
        weights = {k: card[k] for k in ("root", "parent") if isinstance(card.get(k), str) and card[k]}
        if self.is_local:  # folders on this machine by content: an adapter retrained into the same folder is another
            if self._contents is None:
                self._contents = {f"{k}_content": digest for k, v in weights.items()
                                  if (digest := folder_content(v)) is not None}
            weights.update(self._contents)
        return weights or None

    def key(self, request: ChatRequest) -> str:
        served = self.served_weights() if self.served_in_key else None
        return request_key(self.provider, self.model, self.base_url, request, served=served)

    def run(self, requests: list[ChatRequest], progress: bool = True, keep_partial: bool = False) -> list[ChatResult]:
        """One result per request, same order: cached ones first, then calls (or one batch) for the rest.

        Raises ProviderUnavailable when the provider refuses the key or stays down, BatchPending when a batch
        is still running after `batch_max_wait`; results that arrived before are in the cache either way.
        Interrupted (SIGINT, SIGTERM), it lets the calls already sent finish (scheduler.run_calls) and raises
        KeyboardInterrupt (Terminated): their replies are in the cache, unclaimed, so the run that uses them counts
        them; with `keep_partial` the caller saves them itself: they are claimed now (this run counts them) and
        the exception carries `partial_results`, one ChatResult or None (no reply) per request.
        """
        if not requests:
            return []
        keys = [self.key(r) for r in requests]
        results: list[ChatResult | None] = [None] * len(requests)
        where: dict[str, list[int]] = {}
        for index, key in enumerate(keys):
            where.setdefault(key, []).append(index)
        cache = LLMCache() if self.use_cache else None
        try:
            if cache is not None:
                hits = cache.get_many(list(where))
                if hits:
                    # entries stored before the cache kept endpoints may carry a list price wrongly applied to a
                    # custom base URL: record where they came from (the key includes the URL) and correct them
                    cache.note_endpoint(list(hits), self.base_url, priced=self.priced)
                for key, hit in hits.items():
                    if not self.priced:
                        hit.cost_usd = 0.0
                    if hit.text:  # an entry stored before replies were checked for echoed keys
                        hit.text = redact_reply(hit.text)
                    first, *others = where.pop(key)
                    results[first] = replace(hit)  # an unclaimed entry (not `cached`) is paid by this run
                    for index in others:
                        results[index] = replace(hit, cached=True)
            todo = [(key, requests[indices[0]]) for key, indices in where.items()]
            if todo:
                try:
                    self._call(todo, where, results, cache, progress)
                except KeyboardInterrupt as exc:
                    if keep_partial:
                        if cache is not None:
                            self._claim(cache, keys, results, {key for key, hit in hits.items() if not hit.cached})
                        exc.partial_results = list(results)  # type: ignore[attr-defined]
                    raise
            if cache is not None:  # unclaimed hits, and batch results (another run may collect the same batch),
                # are counted by whichever run claims them; a live call this run made is counted here regardless
                paid_once = {key for key, hit in hits.items() if not hit.cached}
                self._claim(cache, keys, results, paid_once | (set(where) if self.batch else set()))
        finally:
            if cache is not None:
                cache.close()
        return [r if r is not None else ChatResult(text=None, error="no result") for r in results]

    def _claim(self, cache: LLMCache, keys: list[str], results: list[ChatResult | None],
               decided_by_claim: set[str]) -> None:
        """The results reach the caller now: claim the entries this run counts (marking them used). For the
        keys in `decided_by_claim` (a reply paid once that several runs could take: an interrupted run's, a
        batch's), one another process claimed first is counted there, so it becomes `cached` here. Best effort:
        a busy cache only risks a reply being counted again later."""
        counted = [key for key, res in zip(keys, results) if res is not None and res.text is not None
                   and not res.cached]
        try:  # a live call's key claims only the entry this process stored (counted here regardless)
            claimed = cache.claim(list(dict.fromkeys(counted)), stored_here=set(counted) - decided_by_claim)
        except (sqlite3.Error, UserError) as exc:
            print(f"note: LLM cache: could not record which replies this run used, so a later run may count them "
                  f"again ({exc})", file=sys.stderr)
            return
        for index, (key, res) in enumerate(zip(keys, results)):
            if (res is not None and res.text is not None and not res.cached and key in decided_by_claim
                    and key not in claimed):
                results[index] = replace(res, cached=True)

    def _record(self, result: ChatResult) -> ChatResult:
        """The choke point of every new result: a failed call's error text is redacted; a reply that is not
        text (it cannot be parsed or cached) becomes a failure; a reply that echoes a key of the environment (a
        proxy or debug server repeating the request's headers) has it masked before it is cached or recorded."""
        if result.text is not None and not isinstance(result.text, str):
            result = ChatResult(text=None, error=f"malformed reply from {self.provider}: the reply is not text")
        if result.text:
            result.text = redact_reply(result.text)
        if result.served_model:  # a proxy may name itself with the request's key in it
            result.served_model = redact_reply(result.served_model)
        if result.error is not None:
            result.error = self.backend.redact(str(result.error))
        return result

    def _call(self, todo: list[tuple[str, ChatRequest]], where: dict[str, list[int]],
              results: list[ChatResult | None], cache: LLMCache | None, progress: bool) -> None:
        from tqdm import tqdm

        from harness.progress import bar_pacing

        bar = tqdm(total=len(todo), disable=not progress, desc=f"{self.provider}:{self.model}", unit="call",
                   leave=False, **bar_pacing())
        saved = 0

        def on_result(key: str, result: ChatResult) -> None:
            nonlocal saved
            result = self._record(result)
            result.cost_usd = self.cost_usd(result)  # a reply without text is paid for too
            if result.text is not None:
                saved += 1
                if cache is not None:
                    cache.put(key, self.provider, self.model, result, batch=self.batch, base_url=self.base_url)
            elif cache is not None:  # billed, but no answer: never served again, counted by `harness cache`
                cache.put_billed_failure(key, self.provider, self.model, result, batch=self.batch,
                                         base_url=self.base_url)
            first, *others = where[key]
            results[first] = replace(result)
            for index in others:  # the same request again: served by that one call, its cost counted once
                results[index] = replace(result, cached=True)  # a billed refusal too: one call, one cost
            bar.update(1)

        try:
            if self.batch:
                from harness.providers.batch import run_batch

                run_sync(lambda: run_batch(self, todo, on_result, cache))
            else:
                run_sync(lambda: self._live(todo, on_result))
        except CallsInterrupted as exc:
            bar.leave = True
            reraise(exc)
        except ProviderDown as exc:
            bar.leave = True  # keep the bar's line: the error that follows starts on a line of its own
            raise ProviderUnavailable(
                f"{self.provider} model {self.model} at {self.base_url} is unavailable: {exc}. "
                f"{saved} of {len(todo)} new results were saved{' in the cache' if cache else ''}; run the same "
                "command again to resume") from None
        except BaseException:
            bar.leave = True
            raise
        finally:
            bar.close()

    async def _live(self, todo: list[tuple[str, ChatRequest]], on_result: Any) -> None:
        # one SDK client (one connection pool) per POOL_SIZE concurrent calls: the pool scans all its connections
        # for every request, which costs more than the rest of a call beyond a few dozen connections
        sdks = [self.backend.open() for _ in range(-(-min(self.concurrency, len(todo)) // POOL_SIZE))]
        turn = itertools.count()

        async def send(request: ChatRequest) -> ChatResult:
            return await self.backend.send(sdks[next(turn) % len(sdks)], request)

        try:
            await run_calls(todo, send, on_result, concurrency=self.concurrency, timeout=self.timeout,
                            policy=self.policy, outage=self.outage)
        finally:
            for sdk in sdks:
                await sdk.close()


_JUDGE_FLAGS = {"concurrency": "--judge-concurrency or ", "timeout": "--judge-timeout or "}


def _number(settings: dict[str, Any], name: str, kind: type, default: Any, minimum: float,
            maximum: float | None = None) -> Any:
    value = settings.get(name)
    if value is None or value == "":
        return default
    where = f"LLM setting {name}={value!r} ({_JUDGE_FLAGS.get(name, '')}--judge-arg {name})"
    return parse_number(value, where, kind, minimum, maximum)


def _flag(settings: dict[str, Any], name: str, default: bool) -> bool:
    value = settings.get(name)
    if value is None:
        return default
    return parse_flag(value, f"LLM setting {name}={value!r}")


def _check_sdk(provider: str) -> None:
    """The provider's SDK is installed (the llm extra), or the CLI's one line naming the extra, before a missing key
    or a first call would be reported instead."""
    import importlib.util

    sdk = "anthropic" if provider == "anthropic" else "openai"
    if sys.modules.get(sdk) is not None:
        return
    if sdk in sys.modules or importlib.util.find_spec(sdk) is None:  # (None in sys.modules: blocked on purpose)
        raise ModuleNotFoundError(f"No module named '{sdk}'", name=sdk)


def _api_key(provider: str, model: str, base_url: str) -> str:
    env = API_KEY_ENV[provider]
    key = os.environ.get(env, "").strip()
    if key:
        return key
    if is_loopback(base_url) or provider == "openai-compatible":
        # a server of the user's own may need no key; one that does answers 401 "(check OPENAI_COMPATIBLE_API_KEY)"
        return LOCAL_DUMMY_KEY
    raise UserError(f"{env} is not set: the {provider} model {model} at {base_url} needs an API key in the "
                    f"environment variable {env}")


def make_client(settings: dict[str, Any]) -> ProviderClient:
    """A ProviderClient from judge/model settings; unknown keys are ignored (they belong to the caller)."""
    name = settings.get("model")
    if not name:
        raise UserError("LLM model: none given; use --judge-model (e.g. gpt-4o, gpt4, claude, or a model id)")
    provider, model = resolve_model(str(name), settings.get("provider"), settings.get("base_url"))
    _check_sdk(provider)
    base_url = normalise_base_url(provider, settings.get("base_url"))
    check_not_shut_down(provider, model, base_url, str(name), time.strftime("%Y-%m-%d", time.gmtime()))
    batch = _flag(settings, "batch", False)
    if batch and provider == "openai-compatible":
        raise UserError(f"--judge-batch: the batch API needs provider openai or anthropic, not {provider} "
                        f"({base_url})")
    max_wait = settings.get("batch_max_wait")
    return ProviderClient(
        provider, model, base_url, _api_key(provider, model, base_url), requested=str(name),
        concurrency=_number(settings, "concurrency", int, 16, 1, MAX_CONCURRENCY),
        timeout=_number(settings, "timeout", float, 60.0, 0.001),
        batch=batch,
        max_retries=_number(settings, "max_retries", int, 6, 0),
        cache=_flag(settings, "cache", True),
        retry_base_delay=_number(settings, "retry_base_delay", float, 1.0, 0),
        retry_max_delay=_number(settings, "retry_max_delay", float, 60.0, 0),
        down_after=_number(settings, "down_after", int, 3, 1),
        batch_poll_interval=_number(settings, "batch_poll_interval", float, 30.0, 0),
        batch_max_wait=None if max_wait is None else _number(settings, "batch_max_wait", float, None, 0),
    )
