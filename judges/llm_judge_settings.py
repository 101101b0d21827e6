"""Settings of the LLM judges (`gpt4`, `likert`): which keys they accept, their typed values after the
convention's defaults, and the judge setup (the resolved choices that change verdicts, a leaderboard row's
identity). The client's concurrency, timeouts, retries, cache and batch mode change no verdict and are left out
of the setup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.flags import SEED_MAX, parse_flag, parse_number
from harness.judges.llm_prompts import template_sha256

#: settings passed on to harness.providers.make_client, which checks them (the others are the judge's own)
CLIENT_KEYS = (
    "model", "provider", "base_url", "concurrency", "timeout", "batch", "max_retries", "cache",
    "retry_base_delay", "retry_max_delay", "down_after", "batch_poll_interval", "batch_max_wait",
)
ACCEPTED_SETTINGS = (*CLIENT_KEYS, "repeats", "allow_external", "temperature", "seed", "max_tokens",
                     "structured_output")


def _int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    return parse_number(value, f"judge setting {name}={value!r}", int, minimum, maximum)


def _float(name: str, value: Any, low: float, high: float) -> float:
    return parse_number(value, f"judge setting {name}={value!r}", float, low, high)


def _bool(name: str, value: Any) -> bool:
    return parse_flag(value, f"judge setting {name}={value!r}")


@dataclass
class LLMJudgeSettings:
    repeats: int
    temperature: float
    seed: int | None
    max_tokens: int
    structured_output: bool
    allow_external: bool
    client: dict[str, Any]


def resolve_settings(raw: dict[str, Any], convention: str) -> LLMJudgeSettings:
    """Typed judge settings from the CLI's (partly string) values, with the convention's defaults.

    pefomed: model gpt4 (pinned by the provider layer), max_tokens 100, temperature 1.0 (the API default
    PeFoMed used). default: model gpt-4o (structured output), max_tokens 200, temperature 0 for a single
    repeat and 1.0 when repeating (repeats of a greedy judge would be copies). Explicit settings win.
    """
    repeats = _int("repeats", raw.get("repeats", 1), 1)
    if raw.get("temperature") not in (None, ""):
        temperature = _float("temperature", raw["temperature"], 0.0, 2.0)
    else:
        temperature = 1.0 if convention == "pefomed" or repeats > 1 else 0.0
    seed = _int("seed", raw["seed"], 0, SEED_MAX) if raw.get("seed") not in (None, "") else None
    default_tokens = 100 if convention == "pefomed" else 200
    max_tokens = _int("max_tokens", raw.get("max_tokens", default_tokens), 1)
    structured = convention == "default" and _bool("structured_output", raw.get("structured_output", True))
    client = {k: raw[k] for k in CLIENT_KEYS if raw.get(k) is not None}
    client.setdefault("model", "gpt4" if convention == "pefomed" else "gpt-4o")
    allow_external = _bool("allow_external", raw.get("allow_external", False))
    return LLMJudgeSettings(repeats, temperature, seed, max_tokens, structured, allow_external, client)


def judge_setup(s: LLMJudgeSettings, provider: str, model: str, base_url: str, template: str) -> dict[str, Any]:
    """The number-moving choices of an LLM judge, resolved (one definition for describe() and old results). The
    Anthropic API takes no temperature or seed: both are None there (the provider's default sampling)."""
    sent = provider != "anthropic"
    return {"provider": provider, "model": model, "base_url": base_url, "prompt_sha256": template_sha256(template),
            "temperature": s.temperature if sent else None, "seed": s.seed if sent else None,
            "max_tokens": s.max_tokens, "repeats": s.repeats, "structured_output": s.structured_output}
