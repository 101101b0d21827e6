"""Redaction of API keys from provider error texts (the one place that knows what a leaked key looks like).

Providers and proxies echo keys in many shapes: whole, masked ("sk-QA-SE****7890", "sk-QA-SE...7890"), as
separate prefix and suffix tokens, after "Bearer" or "x-api-key". `redact(text, *keys)` removes all of these for
the given keys and for every key in the provider key variables of the environment. It is applied to provider
error texts only (CallError, ProviderUnavailable, a failed call's ChatResult.error), never to model replies,
so a short key cannot blank ordinary words of an answer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

#: every environment variable that may hold a provider key (aliases.API_KEY_ENV names the same ones)
KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_COMPATIBLE_API_KEY")
#: placeholder keys that protect nothing (what local servers accept)
NOT_SECRET = frozenset({"", "EMPTY"})
MASK = "***"
MIN_FRAGMENT = 4  # shorter prefixes/suffixes of a key are too common to mean anything

_MASKING = "*.\u2026"  # characters providers put between the visible parts of a masked key
_TOKEN = re.compile(r"[A-Za-z0-9_\-]+")
_PATTERNS = (
    re.compile(r"(?i)\b(bearer)\s+[^\s\"',;<>)}\]]+"),
    re.compile(r"(?i)\b(x-api-key)([\"']?\s*[:=]?\s*[\"']?)[^\s\"',;<>)}\]]+"),
    re.compile(r"(?i)\b(api[_-]?key|authorization)([\"']?\s*[:=]\s*[\"']?)[^\s\"',;<>)}\]]+"),
    re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_*.\u2026\-]{4,}"),
)


def env_keys() -> list[str]:
    """The provider keys set in the environment now (placeholders such as 'EMPTY' left out)."""
    keys = (os.environ.get(name, "").strip() for name in KEY_VARIABLES)
    return [key for key in keys if key not in NOT_SECRET]


def _keys(extra: Iterable[str | None]) -> list[str]:
    found = {k.strip() for k in extra if k and k.strip() not in NOT_SECRET}
    found.update(env_keys())
    return sorted(found, key=len, reverse=True)  # longest first: a key inside another one goes with it


def _fragments(text: str, key: str) -> str:
    """Remove prefixes/suffixes (>= MIN_FRAGMENT chars) of `key` that touch a masking character or stand alone."""
    masking = re.escape(_MASKING)
    for length in range(len(key) - 1, MIN_FRAGMENT - 1, -1):
        head, tail = re.escape(key[:length]), re.escape(key[-length:])
        text = re.sub(f"{head}(?=[{masking}])", MASK, text)
        text = re.sub(f"(?<=[{masking}]){tail}", MASK, text)

    def token(match: re.Match[str]) -> str:
        word = match.group(0)
        if len(word) >= MIN_FRAGMENT and (key.startswith(word) or key.endswith(word)):
            return MASK
        return word

    return _TOKEN.sub(token, text)


def redact(text: str, *keys: str | None) -> str:
    """`text` without the given keys and the environment's provider keys, whole or in fragments, and without
    anything after 'Bearer' / 'x-api-key:' or shaped like an OpenAI/Anthropic key ('sk-...')."""
    if not text:
        return text
    for key in _keys(keys):
        if len(key) >= MIN_FRAGMENT:
            text = text.replace(key, MASK)
        else:  # a very short key: only where it stands alone
            text = re.sub(rf"(?<![A-Za-z0-9_\-]){re.escape(key)}(?![A-Za-z0-9_\-])", MASK, text)
        text = _fragments(text, key)
    text = _PATTERNS[0].sub(lambda m: f"{m.group(1)} {MASK}", text)
    for pattern in _PATTERNS[1:3]:
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return _PATTERNS[3].sub(MASK, text)


def redact_env(text: str) -> str:
    """`text` with any environment provider key removed, whole only (for user errors that echo a value)."""
    for key in _keys(()):
        text = text.replace(key, MASK)
    return text
