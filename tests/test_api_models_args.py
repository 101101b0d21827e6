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
        (GPT4oModel, {"concurrency": "many"}, "concurrency='many': expected an integer >= 1"),
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
