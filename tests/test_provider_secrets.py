"""API keys never reach an error text, a results file, the cache or the terminal; keys go only where allowed.

Covers the redaction of every echo shape providers use (whole, masked, prefix/suffix tokens, Bearer, x-api-key),
base URLs with a query string or fragment, the https-or-loopback rule for provider keys, settings errors that
would echo a key, and batch results whose item errors echo the key. Servers are real local HTTP servers
(tests/fake_llm_servers.py) that echo the key they received ("{key}" in a fault message).
"""

from __future__ import annotations

import json

import pytest
from fake_llm_servers import FakeLLMServer, Fault

from harness.cli import main as cli_main
from harness.errors import UserError
from harness.providers import ChatRequest, ProviderUnavailable, make_client
from harness.providers.base import CallError
from harness.secrets import redact

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

KEY = "sk-QA-SECRET-1234567890"
ANT_KEY = "sk-ant-QA-SECRET-0987"
SHORT = "tok42xy"
VQA = [{"id": f"q{i}", "question": f"Is there a lesion ({i})?", "answer": "yes", "prediction": "yes",
        "answer_type": "CLOSED"} for i in range(4)]


@pytest.fixture(autouse=True)
def _keys(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANT_KEY)
    monkeypatch.delenv("OPENAI_COMPATIBLE_API_KEY", raising=False)


def fragments(key: str) -> list[str]:
    """The key and each of its prefixes and suffixes of 4 or more characters."""
    return sorted({key[:n] for n in range(4, len(key) + 1)} | {key[-n:] for n in range(4, len(key) + 1)})


def assert_no_key(text: str, *keys: str) -> None:
    for key in keys or (KEY, ANT_KEY):
        for fragment in fragments(key):
            assert fragment not in text, (fragment, text)


# ------------------------------------------------------------------------------------------------ redact
@pytest.mark.parametrize("text", [
    f"Incorrect API key provided: {KEY[:8]}****{KEY[-4:]}. You can find your API key at https://x.",
    f"Key {KEY[:8]}...{KEY[-4:]} is not allowed in your region",
    f"Invalid header Authorization: Bearer {KEY}; key prefix {KEY[:10]} suffix {KEY[-6:]}",
    f"bad request for key {KEY[:6]}...{KEY[-4:]}",
    f"key {KEY[:12]}\u2026 / {ANT_KEY[:12]} rejected: Bearer {KEY} x-api-key {ANT_KEY}",
    f"<p>upstream said: invalid Authorization: Bearer {KEY}</p>",
    f'{{"headers": {{"x-api-key": "{ANT_KEY}"}}}}',
])
def test_redact_removes_every_echo_shape_of_the_environment_keys(text):
    assert_no_key(redact(text))


def test_redact_short_keys_and_keys_not_in_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", SHORT)
    assert redact(f"Bearer {SHORT}") == "Bearer ***"
    assert SHORT not in redact(f"key {SHORT} refused") and "tok42" not in redact("key tok42*** refused")
    other = "proxy-token-ABCDEFGHIJ"
    assert_no_key(redact(f"token {other[:9]}...{other[-5:]} and {other}", other), other)
    # ordinary words stay (redaction is only ever applied to provider error texts)
    assert redact("HTTP 401 from openai: invalid request (check OPENAI_API_KEY)") == \
        "HTTP 401 from openai: invalid request (check OPENAI_API_KEY)"
    assert redact("a token is fine") == "a token is fine"


def test_every_provider_error_is_redacted_where_it_is_made():
    assert_no_key(str(CallError("retry", f"boom {KEY[:9]}**** {ANT_KEY}")))
    assert_no_key(str(ProviderUnavailable(f"down: Bearer {KEY[-7:]} {KEY}")))


# ---------------------------------------------------------------------------------------- where keys go
@pytest.mark.parametrize("url", ["http://127.0.0.1:9/v1?api_key=" + KEY, "https://api.example.com/v1?key=VALUE1",
                                 "http://127.0.0.1:9/v1#" + KEY, "https://h/v1?"])
def test_a_base_url_with_a_query_or_fragment_is_refused_without_echoing_it(url):
    with pytest.raises(UserError) as info:
        make_client({"model": "gpt-4o", "base_url": url})
    message = str(info.value)
    assert "query string or fragment" in message and "environment variable" in message
    assert_no_key(message)
    assert "VALUE1" not in message and "\n" not in message


@pytest.mark.parametrize("url", ["http://user:hunter2pass@127.0.0.1:9/v1", "http://user:hunter2pass@127.0.0.1:x/v1",
                                 "ftp://user:hunter2pass@127.0.0.1/v1", "https://user:hunter2pass@h:99999/v1",
                                 "https://hunter2pass@h/v1?x=1", "http://[::1:hunter2pass@h/v1",
                                 "https://user:pa/hunter2pass@h/v1", "http://user:pa#hunter2pass@h/v1"])
def test_a_base_url_with_credentials_is_refused_without_echoing_them(url):
    """Malformed ones too: the port or scheme check echoed the whole URL, password included."""
    with pytest.raises(UserError) as info:
        make_client({"model": "gpt-4o", "base_url": url})
    message = str(info.value)
    assert "credentials in the URL are not accepted" in message and "hunter2pass" not in message


def test_an_anthropic_base_url_with_v1_is_refused_naming_the_root():
    """Written like the OpenAI example (`.../v1`), it called /v1/v1/messages: a real proxy answers 404."""
    with pytest.raises(UserError) as info:
        make_client({"model": "claude", "base_url": "https://proxy.example.org/anthropic/v1/"})
    assert str(info.value) == ("LLM base URL https://proxy.example.org/anthropic/v1: an Anthropic base URL is the "
                               "server's root, without /v1 (the API adds /v1/messages, so this would call "
                               ".../v1/v1/messages); use https://proxy.example.org/anthropic")
    assert make_client({"model": "claude", "base_url": "https://proxy.example.org/anthropic"}).base_url == (
        "https://proxy.example.org/anthropic")


@pytest.mark.parametrize("model, provider", [("gpt-4o", None), ("claude", None), ("my-model", "openai")])
def test_a_provider_key_never_goes_over_plain_http_to_another_host(model, provider):
    path = "" if model == "claude" else "/v1"  # an Anthropic base URL is the server's root
    settings = {"model": model, "base_url": f"http://judge.example.org:8000{path}", "provider": provider}
    with pytest.raises(UserError) as info:
        make_client(settings)
    message = str(info.value)
    assert "https" in message and "openai-compatible" in message and "OPENAI_COMPATIBLE_API_KEY" in message
    # https elsewhere, and plain http on this machine, are fine
    assert make_client({**settings, "base_url": f"https://judge.example.org{path}"}).base_url.startswith("https")
    assert make_client({**settings, "base_url": f"http://localhost:8000{path}"}).is_local


def test_an_openai_compatible_key_goes_where_the_user_points_it(monkeypatch):
    with FakeLLMServer(api_key=SHORT) as server:
        monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", SHORT)
        client = make_client({"model": "local", "provider": "openai-compatible", "base_url": server.openai_base_url})
        assert client.run([ChatRequest(messages=[{"role": "user", "content": "hi"}])], progress=False)[0].text
        assert server.last_key == SHORT
    remote = make_client({"model": "m", "provider": "openai-compatible", "base_url": "http://10.1.2.3:8000/v1"})
    assert remote.base_url == "http://10.1.2.3:8000/v1"


def test_only_an_openai_compatible_server_may_go_without_a_key(monkeypatch):
    for env in ("OPENAI_API_KEY", "OPENAI_COMPATIBLE_API_KEY"):
        monkeypatch.delenv(env, raising=False)
    make_client({"model": "m", "provider": "openai-compatible", "base_url": "http://10.1.2.3:8000/v1"})  # no key
    with pytest.raises(UserError, match="OPENAI_API_KEY is not set"):
        make_client({"model": "gpt-4o", "base_url": "https://gateway.example.org/v1"})


def test_cli_refusals_never_echo_a_key(tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in VQA))
    score = ["score", str(preds), "--task-type", "vqa", "--output", str(tmp_path / "out")]
    cases = [["--judge", "gpt4", "--judge-arg", f"api_key={KEY}"],
             ["--judge", "exact", "--judge-arg", f"token={SHORT}"],
             ["--judge", "gpt4", "--judge-base-url", KEY],
             ["--judge", "gpt4", "--judge-base-url", f"http://127.0.0.1:1/v1?key={KEY}"],
             ["--judge", "gpt4", "--judge-model", KEY],
             ["--judge", "exact", "--judge-model", KEY]]
    for extra in cases:
        assert cli_main(score + extra) == 2, extra
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
        assert_no_key(err)
        assert SHORT not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.json"))


# ------------------------------------------------------------------------------------------------ batches
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_batch_item_errors_that_echo_the_key_are_redacted(provider, tmp_path):
    shapes = "key {key} rejected; Bearer {key}; prefix %s**** suffix ...%s"
    with FakeLLMServer(reply=lambda body: "Correctness: 1") as server:
        key = KEY if provider == "openai" else ANT_KEY
        server.fault_fn = lambda body, i: Fault(status=400, message=shapes % (key[:9], key[-6:])) if i % 2 else None
        url = server.openai_base_url if provider == "openai" else server.anthropic_base_url
        client = make_client({"model": "gpt-4o" if provider == "openai" else "claude", "base_url": url,
                              "batch": True, "batch_poll_interval": 0.01})
        results = client.run([ChatRequest(messages=[{"role": "user", "content": f"q{i}"}]) for i in range(4)],
                             progress=False)
    failed = [r for r in results if r.text is None]  # a batch is sent in cache-key order
    assert len(failed) == 2 and all("rejected" in r.error for r in failed)
    for result in results:
        assert_no_key(str(result.error))


def test_a_failed_batch_whose_errors_echo_the_key_stops_without_it():
    with FakeLLMServer() as server:
        server.batch_failure = "line 1: invalid key {key}; Authorization: Bearer {key}"
        client = make_client({"model": "gpt-4o", "base_url": server.openai_base_url, "batch": True,
                              "batch_poll_interval": 0.01})
        with pytest.raises(ProviderUnavailable) as info:
            client.run([ChatRequest(messages=[{"role": "user", "content": "q"}])], progress=False)
    assert "invalid key" in str(info.value)
    assert_no_key(str(info.value))


def test_judge_batch_run_writes_no_key_anywhere(tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in VQA))
    with FakeLLMServer(reply=lambda body: '{"correct": 1}') as server:
        server.fault_fn = lambda body, i: Fault(status=400, message=(
            f"key {KEY[:12]}... / {ANT_KEY[:12]} rejected: Bearer {{key}} x-api-key {ANT_KEY}")) if i % 2 else None
        for model, url in (("gpt-4o", server.openai_base_url), ("claude", server.anthropic_base_url)):
            code = cli_main(["score", str(preds), "--task-type", "vqa", "--judge", "gpt4", "--judge-model", model,
                             "--judge-base-url", url, "--judge-batch", "--judge-arg", "batch_poll_interval=0.01",
                             "--output", str(tmp_path / model)])
            assert code == 0
    captured = capsys.readouterr()
    assert "rejected" in (tmp_path / "gpt-4o" / "scores.jsonl").read_text()
    assert_no_key(captured.out + captured.err)
    for path in [*tmp_path.rglob("*")]:
        if path.is_file() and path != preds:
            assert_no_key(path.read_bytes().decode("utf-8", "replace"))


def test_api_models_follow_the_same_url_and_key_rules():
    from harness.plugins.api_vlm import resolve

    with pytest.raises(UserError, match="plain http to another host"):
        resolve("gpt-4o", {"base_url": "http://example.org/v1"})
    with pytest.raises(UserError, match="query string or fragment") as info:
        resolve("openai-compatible", {"base_url": f"http://127.0.0.1:1/v1?key={KEY}", "model": "m"})
    assert_no_key(str(info.value))
    assert resolve("openai-compatible", {"base_url": "http://example.org/v1", "model": "m"})["base_url"] == \
        "http://example.org/v1"


def test_the_sdks_base_url_variable_is_honoured_not_bypassed(monkeypatch, tmp_path):
    """OPENAI_BASE_URL (a proxy, a gateway) was ignored: the calls, with the key, went to api.openai.com."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-env-base-url")
    with FakeLLMServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url + "/")
        client = make_client({"model": "gpt-4o"})
        assert client.base_url == server.openai_base_url and not client.priced
        reply = client.run([ChatRequest(messages=[{"role": "user", "content": "hi"}])], progress=False)[0]
    assert reply.text == "echo: hi" and server.chat_calls == 1
    explicit = make_client({"model": "gpt-4o", "base_url": "https://gateway.example.org/v1"})
    assert explicit.base_url == "https://gateway.example.org/v1"  # a base URL given wins over the variable
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://10.1.2.3:8080")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-env-base-url-ant")
    with pytest.raises(UserError, match="^ANTHROPIC_BASE_URL in the environment: LLM base URL http://10.1.2.3:8080: "
                                        "plain http to another host"):
        make_client({"model": "claude"})


def test_a_key_inside_the_sdks_base_url_variable_is_refused_not_recorded(monkeypatch, tmp_path, capsys):
    """OPENAI_BASE_URL=http://host/<key>/v1 (a gateway that takes the key in its path) was recorded verbatim in
    run.json, results.json, scores.jsonl, the LLM cache and a stderr note; the same URL typed was refused."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:9/{KEY}/v1")
    with pytest.raises(UserError) as info:
        make_client({"model": "gpt-4o"})
    message = str(info.value)
    assert message.startswith("OPENAI_BASE_URL in the environment: LLM base URL: it holds the API key of "
                              "$OPENAI_API_KEY") and "remove it from the URL" in message
    assert_no_key(message)
    run = ["run", "--model", "gpt-4o", "--task", "phantom-vqa", "--limit", "2", "--output", str(tmp_path / "run"),
           "--no-progress", "--judge", "exact"]
    assert cli_main(run) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds the API key of $OPENAI_API_KEY" in err
    assert_no_key(err)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert_no_key(path.read_bytes().decode("utf-8", "replace"))


# ------------------------------------------------------------------------------------------------ keys as values
def test_a_key_typed_on_the_command_line_is_refused_before_anything_records_it(tmp_path, capsys):
    """A key pasted where a model name goes would be written to results, the cache and leaderboards."""
    run = ["run", "--task", "phantom-vqa", "--limit", "2", "--output", str(tmp_path / "run"), "--no-progress"]
    cases = {"the value of --model-args": ["--model", "openai-compatible", "--model-args",
                              f"base_url=http://127.0.0.1:1/v1,model={KEY}"],
             "the value of --task": ["--model", "prior", "--task", ANT_KEY],
             "--judge-model": ["--model", "prior", f"--judge-model={KEY}"]}
    for where, extra in cases.items():
        assert cli_main([*run, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {where} holds the API key of $"), err
        assert_no_key(err)
    assert not (tmp_path / "run").exists()


def test_a_reply_that_echoes_the_key_is_recorded_and_cached_without_it(tmp_path):
    with FakeLLMServer(reply=lambda body: f"Correctness: 1 (debug: you sent Bearer {KEY} and {ANT_KEY})") as server:
        client = make_client({"model": "gpt-4o", "base_url": server.openai_base_url})
        [result] = client.run([ChatRequest(messages=[{"role": "user", "content": "q"}])], progress=False)
        [again] = client.run([ChatRequest(messages=[{"role": "user", "content": "q"}])], progress=False)
    assert result.text.startswith("Correctness: 1 (debug: you sent Bearer ***")
    assert again.text == result.text  # from the cache
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data and ANT_KEY.encode() not in data, path
