"""The LLM provider layer against real local HTTP servers speaking the OpenAI and Anthropic wire formats."""

from __future__ import annotations

import base64
import email.utils
import io
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_llm_servers import FakeLLMServer, Fault, prompt_text

from harness.cli import main as cli_main
from harness.errors import UserError
from harness.providers import ChatRequest, ProviderUnavailable, make_client, resolve_model
from harness.providers.cache import LLMCache, cache_path
from harness.providers.wire import parse_retry_after

FAST = {"retry_base_delay": 0.01, "retry_max_delay": 0.05}
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-anthropic-key")


@pytest.fixture
def server():
    with FakeLLMServer() as srv:
        yield srv


def client_for(srv: FakeLLMServer, provider: str = "openai", **settings):
    model = {"openai": "gpt-4o", "anthropic": "claude", "openai-compatible": "local-vlm"}[provider]
    url = srv.anthropic_base_url if provider == "anthropic" else srv.openai_base_url
    return make_client({"model": model, "provider": provider, "base_url": url, **FAST, **settings})


def ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=[{"role": "system", "content": "You grade answers."},
                                 {"role": "user", "content": text}], **kw)


def grade(body: dict) -> str:
    """A judge-like reply: correct when the prediction equals the reference."""
    text = prompt_text(body)
    pred = text.split("prediction=")[1].split(";")[0]
    ref = text.split("reference=")[1].split(";")[0]
    return f"Correctness: {int(pred == ref)}"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_replies_in_order_with_usage_and_cost(server, provider):
    server.reply = grade
    pairs = [("yes", "yes"), ("no", "yes"), ("left lung", "left lung"), ("liver", "spleen")] * 5
    requests = [ask(f"item {i}: prediction={p}; reference={r};") for i, (p, r) in enumerate(pairs)]
    results = make_and_run(server, provider, requests, concurrency=8)
    assert [r.text for r in results] == [f"Correctness: {int(p == r)}" for p, r in pairs]
    assert all(r.error is None and not r.cached for r in results)
    # the fake counts prompt words as input tokens and reply words as output tokens
    body = next(b for b in server.requests if "item 0:" in prompt_text(b))  # 8 at a time: any order
    n_in = len(prompt_text(body).split())
    assert results[0].input_tokens == n_in and results[0].output_tokens == 2
    # the fake is a custom base URL, not the provider's own API: no list price applies (test_pricing.py)
    assert all(r.cost_usd == 0.0 for r in results)
    assert server.chat_calls == len(pairs)
    assert [r.text for r in make_and_run(server, provider, requests[:4] * 2)] == [r.text for r in results[:4]] * 2
    assert server.chat_calls == len(pairs)  # identical requests: one call (here: the cache)


def make_and_run(srv, provider, requests, **settings):
    return client_for(srv, provider, **settings).run(requests, progress=False)


def test_openai_wire_format(server):
    make_and_run(server, "openai", [ask("hello", max_tokens=7, temperature=0.2, seed=3)])
    body = server.requests[0]
    assert body["model"] == "gpt-4o-2024-08-06"
    assert body["messages"][0] == {"role": "system", "content": "You grade answers."}
    assert body["max_completion_tokens"] == 7 and body["temperature"] == 0.2 and body["seed"] == 3


def test_anthropic_wire_format(server):
    # the fake rejects what API version 2026-10-21 rejects (temperature, system messages in the list)
    results = make_and_run(server, "anthropic", [ask("hello", max_tokens=9, temperature=0.0, seed=1)])
    assert results[0].text == "echo: hello"
    body = server.requests[0]
    assert body["model"] == "claude-sonnet-4-6"
    assert body["system"] == "You grade answers."
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["max_tokens"] == 9 and "temperature" not in body


def test_images_inline(server, shared_data):
    from PIL import Image

    jpeg = (shared_data / "vqa-rad" / "VQA_RAD Image Folder" / "synpic42182.jpg").read_bytes()
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).convert("L").save(buf, format="PNG")
    png = buf.getvalue()
    request = ChatRequest(messages=[{"role": "user", "content": [
        {"type": "image", "data": jpeg}, {"type": "image", "data": png}, {"type": "text", "text": "Organ?"}]}])
    make_and_run(server, "openai", [request])
    parts = server.requests[-1]["messages"][0]["content"]
    assert parts[0]["image_url"]["url"] == "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    assert parts[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(png).decode()
    assert parts[2] == {"type": "text", "text": "Organ?"}
    make_and_run(server, "anthropic", [request])
    blocks = server.requests[-1]["messages"][0]["content"]
    assert blocks[0]["source"] == {"type": "base64", "media_type": "image/jpeg",
                                   "data": base64.b64encode(jpeg).decode()}
    assert blocks[1]["source"]["media_type"] == "image/png"
    with pytest.raises(ValueError, match="PNG, JPEG"):
        make_and_run(server, "openai", [ChatRequest(messages=[{"role": "user", "content": [
            {"type": "image", "data": b"not an image"}]}])])


def test_429_retry_after_is_honoured(server):
    make_and_run(server, "openai", [ask("warm-up")])  # SDK imported, so the timing below is the wait
    server.add_faults(Fault(status=429, retry_after="1"))
    start = time.monotonic()
    results = make_and_run(server, "openai", [ask("a")])
    elapsed = time.monotonic() - start
    assert results[0].text == "echo: a"
    assert server.chat_calls == 3
    assert 1.0 <= elapsed < 4


def test_retry_after_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after({"retry-after": when}) <= 30
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "garbage"}) is None


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_500_and_malformed_bodies_are_retried(server, provider):
    server.add_faults(Fault(status=500), Fault(status=200, body=b'{"choices": [tru'), Fault(status=529))
    results = make_and_run(server, provider, [ask("a")])
    assert results[0].text == "echo: a"
    assert server.chat_calls == 4


def test_timeouts_are_retried(server):
    make_and_run(server, "openai", [ask("warm-up")])
    server.add_faults(Fault(delay=1.5))
    start = time.monotonic()
    results = make_and_run(server, "openai", [ask("slow")], timeout=0.3)
    assert results[0].text == "echo: slow"
    assert server.chat_calls == 3
    assert time.monotonic() - start < 1.5


def test_400_fails_that_request_only(server):
    server.fault_fn = lambda body, i: Fault(status=400, message="prompt too long") if "bad" in prompt_text(body) \
        else None
    results = make_and_run(server, "openai", [ask("good 1"), ask("bad"), ask("good 2")], concurrency=1)
    assert [r.text for r in results] == ["echo: good 1", None, "echo: good 2"]
    assert "HTTP 400" in results[1].error and "prompt too long" in results[1].error
    assert server.chat_calls == 3  # not retried


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_401_stops_at_once_with_a_clear_message(server, provider):
    server.api_key = "the-right-key"
    with pytest.raises(ProviderUnavailable) as info:
        make_and_run(server, provider, [ask(f"q{i}") for i in range(10)], concurrency=1)
    message = str(info.value)
    env = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
    assert "HTTP 401" in message and env in message and "unavailable" in message
    assert server.chat_calls == 1


def test_provider_down_stops_and_keeps_finished_results(server):
    server.fault_fn = lambda body, i: Fault(status=503) if i >= 5 else None
    requests = [ask(f"q{i}") for i in range(12)]
    with pytest.raises(ProviderUnavailable) as info:
        make_and_run(server, "openai", requests, concurrency=1, max_retries=2, down_after=2)
    assert "503" in str(info.value) and "5 of 12 new results were saved" in str(info.value)
    assert server.chat_calls == 5 + 2 * 3  # two requests, each tried 1 + 2 times
    # the provider is back: the rerun asks only for what is missing
    server.fault_fn = None
    server.reset_counters()
    results = make_and_run(server, "openai", requests, concurrency=1)
    assert [r.text for r in results] == [f"echo: q{i}" for i in range(12)]
    assert server.chat_calls == 7
    # the 5 replies the stopped run paid for but never used are this run's to count (not `cached`): once
    assert [r.cached for r in results] == [False] * 12
    again = make_and_run(server, "openai", requests, concurrency=1)
    assert all(r.cached for r in again) and server.chat_calls == 7


def test_concurrency_shrinks_on_429(server):
    server.latency = 0.03
    seen: list[int] = []

    def capacity(body, index):
        seen.append(server.in_flight)
        return Fault(status=429) if server.in_flight > 4 else None

    server.fault_fn = capacity
    results = make_and_run(server, "openai", [ask(f"q{i}") for i in range(200)], concurrency=16,
                           max_retries=20)
    assert all(r.text is not None for r in results)
    assert max(seen[:32]) >= 12  # it starts wide
    assert max(seen[-100:]) <= 8  # and settles near what the server allows


def test_concurrency_is_used(server):
    server.latency = 0.1
    make_and_run(server, "openai", [ask(f"q{i}") for i in range(32)], concurrency=16)
    assert server.max_in_flight == 16


def test_cache_hit_makes_no_calls(server):
    requests = [ask(f"q{i}") for i in range(6)] + [ask("q0", repeat=1)]
    first = make_and_run(server, "openai", requests)
    assert server.chat_calls == 7  # another repeat index is another call
    second = make_and_run(server, "openai", requests + [ask("q0")])  # a new client, a duplicate request
    assert server.chat_calls == 7
    assert [r.text for r in second[:7]] == [r.text for r in first] and second[7].text == "echo: q0"
    assert all(r.cached for r in second)
    assert (second[0].input_tokens, second[0].output_tokens) == (first[0].input_tokens, first[0].output_tokens)
    assert second[0].input_tokens > 0 and second[0].cost_usd == 0.0  # a custom base URL: no list price
    # another model or endpoint is another cache entry; cache=False always calls
    make_and_run(server, "openai", requests[:1], cache=False)
    assert server.chat_calls == 8
    with LLMCache() as cache:
        assert cache.stats()["entries"] == 7


def test_a_cached_reply_without_text_is_asked_again(server):
    """An entry with no text (an older harness stored empty replies) is a failure, not an answer to keep."""
    import sqlite3

    make_and_run(server, "openai", [ask("q0"), ask("q1")])
    with sqlite3.connect(cache_path()) as db:
        db.execute("UPDATE results SET text = char(10, 9) WHERE text = 'echo: q0'")  # a newline and a tab
    again = make_and_run(server, "openai", [ask("q0"), ask("q1")])
    assert server.chat_calls == 3 and [r.text for r in again] == ["echo: q0", "echo: q1"]
    assert [r.cached for r in again] == [False, True]
    make_and_run(server, "openai", [ask("q0")])  # the new reply replaced the empty entry
    assert server.chat_calls == 3


def test_cache_command(server, capsys):
    make_and_run(server, "openai", [ask("a"), ask("b")])
    assert cli_main(["cache"]) == 0
    out = capsys.readouterr().out
    assert str(cache_path()) in out and "entries: 2" in out and "gpt-4o-2024-08-06" in out
    assert cli_main(["cache", "--clear"]) == 0
    assert "cleared 2 entries" in capsys.readouterr().out
    make_and_run(server, "openai", [ask("a")])
    assert server.chat_calls == 3
    with LLMCache() as cache:  # a batch submitted and not collected yet: clearing would pay for it again
        cache.put_batch("bkey", "openai", "gpt-4o-2024-08-06", server.openai_base_url, "batch_1", ["k1", "k2"])
    assert cli_main(["cache", "--clear"]) == 2
    err = capsys.readouterr().err
    assert "holds 1 submitted batch(es) not yet collected" in err and "--clear --force" in err
    with LLMCache() as cache:
        assert cache.stats()["entries"] == 1 and cache.stats()["pending_batches"] == 1
    assert cli_main(["cache", "--force"]) == 2 and "--force only goes with --clear" in capsys.readouterr().err
    assert cli_main(["cache", "--clear", "--force"]) == 0
    assert "cleared 1 entries; forgot 1 unfinished batch id(s)" in capsys.readouterr().out


_WRITER = """
import sys
from pathlib import Path
from harness.providers.base import ChatResult
from harness.providers.cache import LLMCache
start = int(sys.argv[2])
with LLMCache(Path(sys.argv[1])) as cache:
    for i in range(start, start + 150):
        cache.put(f"key{i}", "openai", "m", ChatResult(text=str(i), input_tokens=1, output_tokens=1))
"""


def test_cache_safe_with_concurrent_writers(tmp_path):
    path = str(tmp_path / "llm-cache.sqlite")
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, path, str(k * 1000)]) for k in range(3)]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    with LLMCache(Path(path)) as cache:
        assert cache.stats()["entries"] == 450
        assert cache.get_many(["key1007"])["key1007"].text == "1007"


def test_a_damaged_cache_is_a_clear_error(server, tmp_path):
    path = tmp_path / "cache" / "llm-cache.sqlite"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(UserError, match="llm-cache.sqlite: cannot open it .* delete the file"):
        make_and_run(server, "openai", [ask("a")])
    assert server.chat_calls == 0


def test_secret_never_leaks(server, monkeypatch, capsys, caplog, tmp_path):
    secret = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    caplog.set_level(logging.DEBUG)
    server.api_key = "another-key"  # answers 401 and echoes the key it received
    client = client_for(server, "openai")
    with pytest.raises(ProviderUnavailable) as info:
        client.run([ask("a")], progress=True)
    texts = [str(info.value), repr(info.value), json.dumps(client.describe()), repr(client)]
    # a server that stays down, with retries logged at debug level
    server.api_key = None
    server.fault_fn = lambda body, i: Fault(status=500, message=f"boom {secret}")
    with pytest.raises(ProviderUnavailable) as info2:
        client_for(server, "openai", max_retries=1, down_after=1).run([ask("b")])
    texts += [str(info2.value), repr(info2.value)]
    server.fault_fn = None
    client_for(server, "openai").run([ask("c")])  # a success in the cache
    captured = capsys.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    for text in texts:
        assert secret not in text and secret[-8:] not in text
    files = list((tmp_path / "cache").rglob("*"))
    assert any(f.name == "llm-cache.sqlite" for f in files)
    for f in files:
        if f.is_file():
            assert secret.encode() not in f.read_bytes()


def test_json_schema(server):
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"],
              "additionalProperties": False}
    server.reply = lambda body: '{"score": 1}'
    make_and_run(server, "openai", [ask("a", json_schema=schema)])
    fmt = server.requests[-1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == schema
    assert fmt["json_schema"]["strict"] is True
    results = make_and_run(server, "anthropic", [ask("a", json_schema=schema)])
    assert json.loads(results[0].text) == {"score": 1}
    assert server.requests[-1]["tool_choice"] == {"type": "tool", "name": "reply"}


@pytest.mark.parametrize("message", ["response_format not supported", "guided_json is not supported here",
                                     "xgrammar could not compile it", "structured_outputs: backend unavailable"])
def test_openai_compatible_falls_back_without_response_format(server, message):
    server.fault_fn = lambda body, i: Fault(status=400, message=message) if "response_format" in body else None
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}}
    client = client_for(server, "openai-compatible", concurrency=1)
    results = client.run([ask("a", json_schema=schema), ask("b", json_schema=schema)], progress=False)
    assert [r.text for r in results] == ["echo: a", "echo: b"]
    assert ["response_format" in b for b in server.requests] == [True, False, False]
    assert server.requests[0]["model"] == "local-vlm" and "max_tokens" in server.requests[0]


def test_a_400_about_something_else_keeps_response_format(server):
    """A prompt over the context length is that call's failure, sent once: not a sign the server has no structured
    output (a retry without it doubled the calls, and one that passed dropped it for the rest of the run)."""
    server.fault_fn = lambda body, i: Fault(status=400, message="This model's maximum context length is 4096 "
                                            "tokens; for more information see the docs") if "long" in json.dumps(
        body) else None
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}}
    client = client_for(server, "openai-compatible", concurrency=1)
    results = client.run([ask("long a", json_schema=schema), ask("b", json_schema=schema)], progress=False)
    assert results[0].text is None and "maximum context length" in results[0].error
    assert results[1].text == "echo: b"
    assert ["response_format" in b for b in server.requests] == [True, True]
    assert "rejected_parameters" not in client.describe()


def test_a_rejected_temperature_is_dropped_and_recorded(server):
    server.fault_fn = lambda body, i: Fault(status=400, message="Unsupported value: 'temperature' does not "
                                            "support 0.0 with this model") if "temperature" in body else None
    client = client_for(server, "openai", concurrency=1)
    results = client.run([ask("a"), ask("b")], progress=False)
    assert [r.text for r in results] == ["echo: a", "echo: b"]
    assert ["temperature" in b for b in server.requests] == [True, False, False]
    assert client.describe()["rejected_parameters"] == ["temperature"]


def test_resolve_model_and_settings(monkeypatch):
    assert resolve_model("gpt4", None, None) == ("openai", "gpt-4-0613")
    assert resolve_model("gpt-4", None, None) == ("openai", "gpt-4-0613")
    assert resolve_model("gpt-4o", None, None) == ("openai", "gpt-4o-2024-08-06")
    assert resolve_model("claude", None, None)[0] == "anthropic"
    assert resolve_model("llava-med-7b", None, "http://localhost:8000/v1") == ("openai-compatible", "llava-med-7b")
    assert resolve_model("gpt-4o", "openai-compatible", "http://h:1/v1") == ("openai-compatible", "gpt-4o")
    with pytest.raises(UserError, match="judge-provider"):
        resolve_model("mystery-model", None, None)
    with pytest.raises(UserError, match="anthropic"):
        resolve_model("gpt-4o", "anthropic", None)
    # keys come from the environment; a missing one is named
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        make_client({"model": "gpt-4o", "base_url": "https://gateway.example.org/v1"})
    local = make_client({"model": "local-vlm", "base_url": "http://127.0.0.1:9/v1"})  # no key needed
    assert local.is_local and local.provider == "openai-compatible"
    assert make_client({"model": "claude"}).describe() == {
        "provider": "anthropic", "model": "claude-sonnet-4-6", "base_url": "https://api.anthropic.com",
        "is_local": False, "requested": "claude", "batch": False, "prices_as_of": "2025-10",
        "alias_note": "'claude' resolved to claude-sonnet-4-5-20250929 (shut down 2026-11-30) in results recorded "
                      "before 2026-11-23, to claude-sonnet-4-6 since",
        "sampling": "provider default (API 2026-10-21 accepts no temperature or seed)"}
    proxied = make_client({"model": "claude-sonnet-4-5", "base_url": "https://gateway.example.org"})  # any date
    assert proxied.describe()["shutdown_date"] == "2026-11-30"
    # PeFoMed's judge model is retired at OpenAI: say so before any call; a proxy that serves it is fine
    with pytest.raises(UserError, match="gpt-4-0613 .'gpt4'. was shut down by openai on 2026-10-23"):
        make_client({"model": "gpt4"})
    proxy = make_client({"model": "gpt4", "base_url": "http://localhost:1/v1"}).describe()
    assert proxy["model"] == "gpt-4-0613" and "PeFoMed" in proxy["alias_note"]
    with pytest.raises(UserError, match="concurrency"):
        make_client({"model": "claude", "concurrency": "many"})
    with pytest.raises(UserError, match="batch"):
        make_client({"model": "x", "base_url": "http://localhost:1/v1", "batch": True})
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    monkeypatch.delenv("OPENAI_COMPATIBLE_API_KEY", raising=False)
    elsewhere = make_client({"model": "m", "base_url": "https://api.example.com/v1"})  # the OpenAI key stays home
    assert elsewhere.provider == "openai-compatible" and elsewhere.backend._api_key == "EMPTY"
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", "sk-test-compatible-key")
    for url, local in [("http://[::1]:8000/v1", True), ("http://127.8.0.1/v1", True),
                       ("http://localhost:1/v1", True), ("https://api.example.com/v1", False),
                       ("http://10.0.0.5:8000/v1", False)]:
        assert make_client({"model": "m", "base_url": url}).is_local is local
