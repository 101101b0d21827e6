"""Batch mode end to end: OpenAI Batch and Anthropic Message Batches against real local servers."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

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


# creation made safe to repeat: a create call whose reply is lost, or a process killed during it, pays once --------
@pytest.mark.parametrize("provider, fault", [
    ("openai", Fault(delay=2.0)),  # the batch is made, its reply comes after the client's timeout (0.5 s)
    ("openai", Fault(status=500)),  # the batch is made, then the server answers 500
    ("anthropic", Fault(status=500)),
    ("anthropic", Fault(status=529, message="overloaded")),
])
def test_a_lost_create_reply_pays_for_one_batch(server, provider, fault, caplog):
    server.add_create_faults(fault)
    results = batch_client(server, provider, timeout=0.5).run(requests(4), progress=False)
    assert [r.text for r in results] == [f"graded: item {i}" for i in range(4)]
    assert len(server.batches) == 1 and server.counts[ROUTES[provider]["submit"]] == 1
    assert f"batch {next(iter(server.batches))}" in caplog.text  # the adopted batch is named
    with LLMCache() as cache:
        assert cache.stats()["pending_batches"] == 0


_JUDGE = """
import json, sys
from harness.providers import ChatRequest, make_client
provider, url, messages = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = make_client({"model": "gpt-4o" if provider == "openai" else "claude", "provider": provider,
                      "base_url": url, "batch": True, "batch_poll_interval": 0.02})
client.run([ChatRequest(messages=m, max_tokens=5) for m in messages], progress=False)
"""


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_run_killed_during_batch_creation_is_collected_next_run(server, provider):
    # the server makes the batch and holds its reply; the judging process is SIGKILLed before it hears the id
    server.add_create_faults(Fault(delay=60))
    reqs = requests(4)
    url = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
    proc = subprocess.Popen([sys.executable, "-c", _JUDGE, provider, url, json.dumps([r.messages for r in reqs])])
    try:
        deadline = time.monotonic() + 60
        while not server.batches and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.batches, f"the judging process made no batch (exit code {proc.poll()})"
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
    ours = next(iter(server.batches))
    # others made newer batches meanwhile, and the list comes one batch per page: ours is on the third
    for i in range(2):
        if provider == "openai":
            server.new_openai_batch({"endpoint": "/v1/chat/completions", "input_file_id": f"file-other{i}",
                                     "completion_window": "24h", "metadata": {"created_by": "another tool"}})
        else:
            server.new_anthropic_batch([{"custom_id": "other", "params": {}}])
    server.list_limit = 1
    results = batch_client(server, provider).run(reqs, progress=False)
    assert [r.text for r in results] == [f"graded: item {i}" for i in range(4)]
    assert server.counts[ROUTES[provider]["submit"]] == 1 and len(server.batches) == 3
    assert server.batches[ours].get("_done")  # the results came from the batch the killed run paid for
    with LLMCache() as cache:
        assert cache.stats()["pending_batches"] == 0


@pytest.mark.parametrize("others", [1, 2])
def test_anthropic_never_uses_results_of_a_batch_it_guessed_wrong(server, others, caplog):
    # Message Batches carry no metadata: a lost create call's batch is recognised by its size and time only. Here
    # the create call failed before making one, and someone else made batches of the same size just before.
    other_ids = [server.new_anthropic_batch([
        {"custom_id": f"other-{i}", "params": {"model": "claude", "max_tokens": 5,
                                                "messages": [{"role": "user", "content": f"other {i}"}]}}
        for i in range(4)])["id"] for _ in range(others)]
    server.add_create_faults(Fault(status=500, creates=False))
    reqs = requests(4)
    with caplog.at_level(logging.WARNING, logger="harness.providers"):
        results = batch_client(server, "anthropic").run(reqs, progress=False)
    assert all(r.text in (None, f"graded: item {i}") for i, r in enumerate(results))  # never another's answer
    if others == 1:  # taken for ours, its results are refused, said in one line; nothing is cached
        assert all(r.text is None and "missing" in r.error for r in results)
        assert f"batch {other_ids[0]} holds 4 results of requests this run never sent" in caplog.text
    else:  # which one? none is taken; the line names both, and a new batch is made
        assert [r.text for r in results] == [f"graded: item {i}" for i in range(4)]
        assert f"batches {', '.join(reversed(other_ids))} each hold 4 requests" in caplog.text  # newest first
    again = batch_client(server, "anthropic").run(reqs, progress=False)
    assert [r.text for r in again] == [f"graded: item {i}" for i in range(4)]
