"""API model baselines refuse mistaken --model-args with one line each, before any call is made."""

from __future__ import annotations

import pytest

from harness.errors import UserError
from harness.model_api import ModelContext


def test_model_args_mistakes_are_one_line_errors(monkeypatch, tmp_path):
    from harness.plugins.api_vlm import ClaudeModel, GPT4oModel, OpenAICompatibleModel

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ctx = ModelContext()
    cases = [
        (OpenAICompatibleModel, {"model": "tiny"}, "needs the server's address"),
        (OpenAICompatibleModel, {"base_url": "http://127.0.0.1:8000/v1"}, "needs the served model's name"),
        (GPT4oModel, {"temperature": "0.2"}, "use --temperature"),
        (GPT4oModel, {"batch": "true"}, "unknown --model-args 'batch'"),
        (GPT4oModel, {"model": "claude"}, "use --model claude"),
        (ClaudeModel, {"model": "gpt-4o"}, "use --model gpt-4o"),
        (GPT4oModel, {"concurrency": "many"}, "concurrency='many': expected an integer from 1 to 65535"),
        (GPT4oModel, {"allow_external": "maybe"}, "allow_external='maybe': expected true or false"),
        (GPT4oModel, {}, "OPENAI_API_KEY is not set"),
    ]
    gateway = {"base_url": "https://gateway.example.org/v1"}  # any day: the pinned id's shutdown is not checked there
    cases = [(cls, {**gateway, **args} if cls is GPT4oModel else args, message) for cls, args, message in cases]
    for cls, args, message in cases:
        with pytest.raises(UserError, match=message.replace("(", r"\(")) as info:
            cls(args, ctx)
        assert "\n" not in str(info.value)
    assert GPT4oModel.run_identity(gateway, ctx) == {"provider": "openai", "model": "gpt-4o-2024-08-06",
                                                     "base_url": "https://gateway.example.org/v1",
                                                     "max_image_side": 2048}


def test_the_official_endpoint_serves_a_pinned_model_until_its_shutdown_date():
    """Written to hold on any day: before the date the identity is recorded, from it on the run is refused."""
    import time

    from harness.plugins.api_vlm import GPT4oModel
    from harness.providers.aliases import SHUTDOWN

    shutdown = SHUTDOWN["gpt-4o-2024-08-06"]
    if time.strftime("%Y-%m-%d", time.gmtime()) < shutdown:
        identity = GPT4oModel.run_identity({}, ModelContext())
        assert identity["base_url"] == "https://api.openai.com/v1" and identity["model"] == "gpt-4o-2024-08-06"
    else:
        with pytest.raises(UserError, match=f"gpt-4o-2024-08-06 was shut down by openai on {shutdown}"):
            GPT4oModel.run_identity({}, ModelContext())


def test_nan_infinite_and_absurd_numbers_are_refused_before_any_call(monkeypatch, tmp_path):
    """timeout=nan made every call fail as a 'malformed reply' after 7 attempts; retry_base_delay=inf printed
    'waiting nan s before retrying'; a 23-digit image side was taken silently. Each is one line now, naming
    the setting, and the server never hears of it."""
    from fake_llm_servers import FakeLLMServer

    from harness.plugins.api_vlm import OpenAICompatibleModel

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    with FakeLLMServer(reply=lambda body: "yes") as server:
        base = {"base_url": server.openai_base_url, "model": "tiny"}
        for key, value, expected in [
            ("timeout", "nan", "expected a finite number >= 0.001"),
            ("timeout", "-inf", "expected a finite number >= 0.001"),
            ("retry_base_delay", "inf", "expected a finite number >= 0"),
            ("retry_max_delay", "NaN", "expected a finite number >= 0"),
            ("max_image_side", "99999999999999999999999", "expected an integer from 0 to 65535"),
            ("concurrency", "100000", "expected an integer from 1 to 65535"),
        ]:
            with pytest.raises(UserError) as info:
                OpenAICompatibleModel({**base, key: value}, ModelContext())
            assert str(info.value) == f"model 'openai-compatible': --model-args {key}={value!r}: {expected}"
        assert server.chat_calls == 0


def test_the_highest_concurrency_opens_connections_for_the_calls_there_are(monkeypatch, tmp_path):
    """One connection pool per 8 concurrent calls was opened up front: concurrency=65535 spent minutes opening
    8,192 clients before sending 2 requests."""
    import time

    from fake_llm_servers import FakeLLMServer

    from harness.plugins.api_vlm import OpenAICompatibleModel
    from harness.types import GenerationRequest, GenerationSettings

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    requests = [GenerationRequest(id=str(i), images=[], prompt=f"question {i}", messages=[],
                                  generation=GenerationSettings(max_new_tokens=8), task_kind="vqa") for i in range(2)]
    with FakeLLMServer(reply=lambda body: "yes") as server:
        model = OpenAICompatibleModel({"base_url": server.openai_base_url, "model": "tiny", "concurrency": "65535"},
                                      ModelContext())
        start = time.monotonic()
        outputs = model.generate(requests)
        model.close()
    assert [out.text for out in outputs] == ["yes", "yes"] and server.chat_calls == 2
    assert time.monotonic() - start < 30


def test_a_model_without_a_list_price_at_the_providers_api_is_cost_unknown_not_free(monkeypatch, tmp_path):
    """Billed calls to a model the price table lacks printed "estimated cost $0.0000" and recorded no pricing note."""
    from harness.plugins.api_vlm import ClaudeModel, GPT4oModel
    from harness.providers import pricing

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    model = GPT4oModel({"model": "gpt-5-2025-08-07"}, ModelContext())  # the official endpoint; no call is made
    assert not pricing.has_price("gpt-5-2025-08-07")
    model.totals.update(requests=100, input_tokens=10**6, output_tokens=10**5)
    assert model.usage_line().endswith("cost unknown: no list price for gpt-5-2025-08-07 (recorded as $0, not an "
                                       "estimate)")
    assert model.identity()["pricing"] == pricing.NO_PRICE_NOTE
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    priced = ClaudeModel({"model": "claude-haiku-4-5"}, ModelContext())  # priced, no shutdown date: any day
    assert "estimated cost of the new calls $0.0000" in priced.usage_line() and "pricing" not in priced.identity()


def test_replies_an_interrupted_run_left_in_the_cache_count_as_from_the_cache(monkeypatch, tmp_path):
    """A resumed run took the replies a killed run had paid for (its own cost to count now) and said "0 from the
    cache" while the server saw fewer calls than requests."""
    from fake_llm_servers import FakeLLMServer

    from harness.plugins.api_vlm import OpenAICompatibleModel
    from harness.providers.base import ChatResult
    from harness.providers.cache import LLMCache
    from harness.types import GenerationRequest, GenerationSettings

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    requests = [GenerationRequest(id=str(i), images=[], prompt=f"question {i}", messages=[],
                                  generation=GenerationSettings(max_new_tokens=8), task_kind="vqa") for i in range(3)]
    with FakeLLMServer(reply=lambda body: "yes") as server:
        model = OpenAICompatibleModel({"base_url": server.openai_base_url, "model": "tiny"}, ModelContext())
        with LLMCache() as cache:  # what the killed run stored and never handed on (unclaimed)
            cache.put(model.client.key(model.chat_request(requests[0])), "openai-compatible", "tiny",
                      ChatResult(text="no", input_tokens=3, output_tokens=1))
        outputs = model.generate(requests)
    assert [out.text for out in outputs] == ["no", "yes", "yes"] and server.chat_calls == 2
    assert model.totals["from_cache"] == 1 and model.totals["requests"] == 3
    assert "3 requests, 1 from the cache" in model.usage_line()


def test_sampling_settings_claude_cannot_take_are_said_to_be_ignored(monkeypatch, tmp_path, capsys):
    """--temperature 0.5 --seed 9 on claude were recorded as the run's settings and never sent, without a word."""
    from harness.plugins.api_vlm import ClaudeModel
    from harness.types import GenerationSettings

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key")
    ClaudeModel({"model": "claude-haiku-4-5"}, ModelContext(generation=GenerationSettings()))
    assert capsys.readouterr().err == ""
    ClaudeModel({"model": "claude-haiku-4-5"},
                ModelContext(generation=GenerationSettings(temperature=0.5, do_sample=True, seed=9)))
    assert "warning: --temperature, --top-p and --seed are not sent: the Anthropic API takes none" in \
        capsys.readouterr().err
