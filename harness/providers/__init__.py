"""LLM providers (OpenAI, Anthropic, OpenAI-compatible servers) for LLM judges and API model baselines.

    from harness.providers import ChatRequest, make_client
    client = make_client({"model": "gpt-4o", "concurrency": 16})
    results = client.run([ChatRequest(messages=[{"role": "user", "content": "..."}])])

Calls go through the official SDKs (`openai` 3.x, `anthropic` 2.x) with their retries off, driven by
`scheduler` (adaptive concurrency, retries honouring retry-after, outage detection); every success is cached
in SQLite (`cache`), so reruns make no repeated calls; `batch` uses the providers' half-price batch APIs.
For throughput, chat calls use the SDKs' generic `post()` with a body we build (the typed `create()` re-walks
every body against its type hints: about 1.5 ms of CPU per call) and one connection pool per 8 concurrent
calls (httpcore scans every pooled connection on each request). Nothing heavy is imported here.
"""

from harness.providers.aliases import ALIASES, resolve_model
from harness.providers.base import BatchPending, ChatRequest, ChatResult, ProviderUnavailable
from harness.providers.client import ProviderClient, make_client

__all__ = [
    "ALIASES",
    "BatchPending",
    "ChatRequest",
    "ChatResult",
    "ProviderClient",
    "ProviderUnavailable",
    "make_client",
    "resolve_model",
]
