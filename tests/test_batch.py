"""Batch mode end to end: OpenAI Batch and Anthropic Message Batches against real local servers."""

from __future__ import annotations

import pytest
from fake_llm_servers import FakeLLMServer, Fault, prompt_text

from harness.errors import UserError
from harness.providers import BatchPending, ChatRequest, ProviderUnavailable, make_client
from harness.providers.cache import LLMCache

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

ROUTES = {
    "openai": {"submit": "POST /v1/batches", "upload": "POST /v1/files", "poll": "GET /v1/batches/{id}"},
    "anthropic": {"submit": "POST /v1/messages/batches", "upload": None, "poll": "GET /v1/messages/batches/{id}"},
}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-anthropic-key")


@pytest.fixture
def server():
    with FakeLLMServer(reply=lambda body: "graded: " + prompt_text(body).splitlines()[-1]) as srv:
        yield srv


def batch_client(srv: FakeLLMServer, provider: str, **settings):
    url = srv.anthropic_base_url if provider == "anthropic" else srv.openai_base_url
    model = "gpt-4o" if provider == "openai" else "claude"
    return make_client({"model": model, "provider": provider, "base_url": url, "batch": True,
                        "batch_poll_interval": 0.02, "retry_base_delay": 0.01, **settings})


def requests(n: int) -> list[ChatRequest]:
    return [ChatRequest(messages=[{"role": "system", "content": "Grade."}, {"role": "user", "content": f"item {i}"}],
                        max_tokens=5) for i in range(n)]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_batch_end_to_end(server, provider):
    server.batch_polls = 3
    # the third item (in the batch's own order) fails inside the batch
    server.fault_fn = lambda body, index: Fault(status=500, message="item failed") if index == 2 else None
    reqs = requests(8)
    results = batch_client(server, provider).run(reqs, progress=False)
    assert server.chat_calls == 0  # everything went through the batch API
    assert server.counts[ROUTES[provider]["submit"]] == 1
    assert server.counts[ROUTES[provider]["poll"]] >= 3
    failed = [r for r in results if r.text is None]
    assert len(failed) == 1 and "item failed" in failed[0].error
    good = [(i, r) for i, r in enumerate(results) if r.text is not None]
    assert all(r.text == f"graded: item {i}" for i, r in good)
    # batch calls cost half the list price at the provider's own API (test_pricing.py); the fake is a custom
    # base URL, where no list price applies
    _, first = good[0]
    assert first.input_tokens > 0 and first.cost_usd == 0.0
    # what the batch carried is each provider's request format
    if provider == "openai":
        assert server.counts["POST /v1/files"] == 1
    else:
        params = server.batches[next(iter(server.batches))]["_requests"][0]["params"]
        assert params["system"] == "Grade." and "temperature" not in params
    # rerun: the 7 successes come from the cache, the failed one goes into a new batch of one
    server.fault_fn = None
    again = batch_client(server, provider).run(reqs, progress=False)
    assert [r.text for r in again] == [f"graded: item {i}" for i in range(8)]
    assert sum(r.cached for r in again) == 7
    assert server.counts[ROUTES[provider]["submit"]] == 2
    with LLMCache() as cache:
        assert cache.stats()["pending_batches"] == 0
    # and a third run makes no request at all
    before = sum(server.counts.values())
    batch_client(server, provider).run(reqs, progress=False)
    assert sum(server.counts.values()) == before


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_batch_resumes_after_restart(server, provider):
    server.hold_batches = True  # the provider is slow: the batch is still running when the run gives up
    reqs = requests(5)
    with pytest.raises(BatchPending) as info:
        batch_client(server, provider, batch_max_wait=0.1).run(reqs, progress=False)
    batch_id = next(iter(server.batches))
    assert batch_id in str(info.value) and "run the same command again" in str(info.value)
    with LLMCache() as cache:
        assert cache.stats()["pending_batches"] == 1
    # a new process (a new client) with the same requests collects the same batch: nothing is paid twice
    server.hold_batches = False
    results = batch_client(server, provider).run(list(reversed(reqs)), progress=False)
    assert [r.text for r in results] == [f"graded: item {i}" for i in reversed(range(5))]
    assert server.counts[ROUTES[provider]["submit"]] == 1
    if ROUTES[provider]["upload"]:
        assert server.counts[ROUTES[provider]["upload"]] == 1
    assert len(server.batches) == 1
    with LLMCache() as cache:
        assert cache.stats()["pending_batches"] == 0


def test_batch_creation_retries_then_reports_auth_failure(server):
    server.api_key = "the-right-key"
    with pytest.raises(ProviderUnavailable, match="HTTP 401.*OPENAI_API_KEY"):
        batch_client(server, "openai").run(requests(2), progress=False)
    assert server.counts["POST /v1/files"] == 1 and server.counts["POST /v1/batches"] == 0


def test_batch_needs_a_batch_api():
    with pytest.raises(UserError, match="batch API needs provider openai or anthropic"):
        make_client({"model": "local-vlm", "base_url": "http://127.0.0.1:9/v1", "batch": "true"})


def test_resume_with_other_requests_pays_nothing_twice(server):
    server.hold_batches = True
    reqs = requests(7)
    with pytest.raises(BatchPending):
        batch_client(server, "anthropic", batch_max_wait=0.05).run(reqs[:5], progress=False)
    server.hold_batches = False
    # the next run wants items 3..6: it collects the stored batch (0..4) and submits only 5 and 6
    results = batch_client(server, "anthropic").run(reqs[3:], progress=False)
    assert [r.text for r in results] == [f"graded: item {i}" for i in range(3, 7)]
    submitted = [len(b["_requests"]) for b in server.batches.values()]
    assert submitted == [5, 2]
    # items 0..2 came with the first batch and were cached although that run did not ask for them: paid, and
    # counted by no run yet, so the run that uses them counts them (not `cached`); asked again, all are cached
    before = sum(server.counts.values())
    again = batch_client(server, "anthropic").run(reqs, progress=False)
    assert [r.cached for r in again] == [False] * 3 + [True] * 4 and sum(server.counts.values()) == before
    assert all(r.cached for r in batch_client(server, "anthropic").run(reqs, progress=False))
    first = again[0]  # cached by the run that did not ask for it, with its usage (a custom base URL: cost 0)
    assert first.input_tokens > 0 and first.output_tokens > 0 and first.cost_usd == 0.0
