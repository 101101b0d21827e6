"""The grep test: whole runs (an API model, an LLM judge live and in batch mode, a refused key) against a server
that echoes the API key in every error shape it can, then no file of the run and cache directories, no stdout,
stderr or log record holds the key or any of its prefixes and suffixes of 4 or more characters."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fake_llm_servers import FakeLLMServer, Fault

from harness.cli import main as cli_main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OPENAI_KEY = "sk-LeakZq7-Wx93-PLMNB-vT5r"
ANTHROPIC_KEY = "sk-ant-LkQ8-Yu27-ZXCV-pR4m"
OK, AK = OPENAI_KEY, ANTHROPIC_KEY

#: every way the fake server echoes a key ("{key}": the key it received), in turn; None answers normally
SHAPES: list[Fault | None] = [
    None,
    Fault(status=400, message=f"Incorrect API key provided: {OK[:8]}****{OK[-4:]} / {AK[:8]}****{AK[-4:]}"),
    Fault(status=500, message="upstream rejected Bearer {key}"),
    Fault(status=502, body=b"<html><h1>502 Bad Gateway</h1><p>invalid Authorization: Bearer {key}</p></html>"),
    Fault(status=400, message=f"key prefix {OK[:10]} suffix {OK[-6:]} / prefix {AK[:10]} suffix {AK[-6:]}"),
    None,
    Fault(status=429, retry_after="0", message="slow down, {key}"),
    Fault(status=200, body=b'{"choices": [{"message": {"content": 5}}], "content": 5, "echo": "{key}"}'),
    Fault(status=400, message=f"Key {OK[:8]}...{OK[-4:]} is not allowed; x-api-key: {{key}}"),
    Fault(status=400, message=f"short {OK[:6]}\u2026{OK[-4:]} {AK[:6]}\u2026{AK[-4:]} and {{key}} again"),
    None,
]


def fragments(key: str) -> set[str]:
    return {key[:n] for n in range(4, len(key) + 1)} | {key[-n:] for n in range(4, len(key) + 1)}


FRAGMENTS = sorted(fragments(OPENAI_KEY) | fragments(ANTHROPIC_KEY), key=len)


def leaks(text: str) -> list[str]:
    return [fragment for fragment in FRAGMENTS if fragment in text]


@pytest.fixture
def env(own_llm_cache, monkeypatch) -> Path:
    """Its own LLM cache (the session's phantom data linked in) and the two fake keys; returns the cache dir."""
    cache = own_llm_cache
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.delenv("OPENAI_COMPATIBLE_API_KEY", raising=False)
    return cache


def files_under(*folders: Path) -> list[Path]:
    out = []
    for folder in folders:
        for path in folder.rglob("*"):
            if "phantom" not in path.relative_to(folder).parts and path.is_file():
                out.append(path)
    return out


def test_no_key_fragment_anywhere_after_runs_against_a_key_echoing_server(env, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    runs = tmp_path / "runs"
    fast = "retry_base_delay=0.01,retry_max_delay=0.02"
    outputs: list[str] = []
    with FakeLLMServer(reply=lambda body: "Correctness: 1") as server:
        server.fault_fn = lambda body, index: SHAPES[index % len(SHAPES)]
        # an API model (OPENAI_API_KEY) judged live by claude (ANTHROPIC_API_KEY)
        code = cli_main(["run", "--model", "gpt-4o", "--model-args",
                         f"base_url={server.openai_base_url},concurrency=2,{fast}", "--task", "phantom-vqa",
                         "--limit", "16", "--judge", "gpt4", "--judge-model", "claude", "--judge-base-url",
                         server.anthropic_base_url, "--judge-arg", "retry_base_delay=0.01",
                         "--judge-arg", "retry_max_delay=0.02", "--runs-dir", str(runs), "--no-progress"])
        captured = capsys.readouterr()
        outputs.append(captured.out + captured.err)
        assert code == 0, outputs[-1]
        (run_dir,) = list(runs.iterdir())
        # the same predictions judged again through both batch APIs
        for model, url in (("gpt-4o", server.openai_base_url), ("claude", server.anthropic_base_url)):
            code = cli_main(["score", str(run_dir), "--judge", "gpt4", "--judge-model", model, "--judge-base-url",
                             url, "--judge-batch", "--judge-arg", "batch_poll_interval=0.01", "--convention",
                             "pefomed"])
            captured = capsys.readouterr()
            outputs.append(captured.out + captured.err)
            assert code == 0, outputs[-1]
        # a refused key, echoed whole by the server (401 stops the run)
        server.api_key = "the-right-key"
        code = cli_main(["run", "--model", "claude", "--model-args", f"base_url={server.anthropic_base_url},{fast}",
                         "--task", "phantom-vqa", "--limit", "4", "--judge", "exact", "--runs-dir", str(runs),
                         "--no-progress"])
        captured = capsys.readouterr()
        outputs.append(captured.out + captured.err)
        assert code == 2 and "HTTP 401" in outputs[-1]
    every_error = "\n".join(outputs)
    assert "Traceback" not in every_error
    # the echoes did arrive and were recorded (redacted) where errors are kept
    scores = (run_dir / "scores.jsonl").read_text()
    assert "HTTP 400" in scores or "HTTP 400" in (run_dir / "predictions.jsonl").read_text()
    for text in [*outputs, caplog.text]:
        assert leaks(text) == [], leaks(text)
    checked = files_under(runs, env)
    assert any(p.name == "llm-cache.sqlite" for p in checked) and any(p.name == "scores.jsonl" for p in checked)
    for path in checked:
        found = leaks(path.read_bytes().decode("utf-8", "replace"))
        assert found == [], (path, found)


def test_a_batch_whose_results_are_named_elsewhere_is_refused_not_fetched_with_the_key(env, monkeypatch):
    """The Anthropic SDK fetches the `results_url` a batch status names with the request's key: a server (or
    gateway) naming another host there received ANTHROPIC_API_KEY."""
    from harness.providers import ChatRequest, make_client
    from harness.providers.base import ProviderUnavailable

    with FakeLLMServer(reply=lambda body: "Correctness: 1") as server:
        finish = server._finish_anthropic_batch

        def elsewhere(batch):
            finish(batch)
            batch["results_url"] = f"http://127.0.0.2:9/exfil/{batch['id']}"

        monkeypatch.setattr(server, "_finish_anthropic_batch", elsewhere)
        client = make_client({"model": "claude", "base_url": server.anthropic_base_url, "batch": True,
                              "batch_poll_interval": 0.01})
        with pytest.raises(ProviderUnavailable, match="names its results at http://127.0.0.2:9, not at "
                                                      "http://127.0.0.1:"):
            client.run([ChatRequest(messages=[{"role": "user", "content": "Score it"}])], progress=False)


def test_the_sdk_clients_send_nothing_to_another_origin_than_the_base_url():
    """The Anthropic SDK fetches a batch's results at the `results_url` a second status answer names (after the
    harness checked the first): every request of the SDKs' clients is now held to the base URL's origin."""
    import asyncio

    import httpx2
    import openai

    from harness.providers.wire import http_client

    async def fetch(url: str) -> None:
        client = http_client(openai, 5.0, "http://127.0.0.1:9/v1")
        try:
            await client.get(url, headers={"Authorization": "Bearer sk-secret"})
        finally:
            await client.aclose()

    with pytest.raises(httpx2.RequestError, match="refusing to send the request \\(and API key\\) to "
                                                  "http://127.0.0.2:9, not the base URL's http://127.0.0.1:9"):
        asyncio.run(fetch("http://127.0.0.2:9/exfil"))
    with pytest.raises(httpx2.ConnectError):  # the base URL's origin: sent (nothing listens there)
        asyncio.run(fetch("http://127.0.0.1:9/v1/models"))
