"""Redaction of API keys from provider error texts (the one place that knows what a leaked key looks like).

Providers and proxies echo keys in many shapes: whole, masked ("sk-QA-SE****7890", "sk-QA-SE...7890"), as
separate prefix and suffix tokens, after "Bearer" or "x-api-key". `redact(text, *keys)` removes all of these for
the given keys and for every key in the provider key variables of the environment. It is applied to provider
error texts only (CallError, ProviderUnavailable, a failed call's ChatResult.error); a model or judge reply gets
`redact_reply` (the environment's keys, whole and as fragments of CREDENTIAL_MIN+ characters), which leaves
ordinary words alone; `redact_env` (keys whole) is for user errors that echo a value. `key_in_arguments` finds a key
typed on the command line, which the CLI refuses before anything can record it.

It must not eat ordinary words of those texts either ("Missing bearer or basic authentication in header",
"invalid x-api-key (check ANTHROPIC_API_KEY)", "localhost" while the key is "local"), hence three rules:

- a key of LONG_KEY or more characters (real provider keys have 40+) is removed wherever it appears, and so are
  its prefixes/suffixes of MIN_FRAGMENT+ characters that touch a masking character or stand as a token;
- a shorter key (a local placeholder such as "local" or "tok42xy") is removed only where it stands as a whole
  token, and its fragments only where they touch '*' or '…' at a token's edge ("tok42***");
- after Bearer / x-api-key / api_key= / Authorization:, a value is removed only when it looks like a credential
  (CREDENTIAL_MIN+ characters of [A-Za-z0-9_-.*…] with a digit or a masking character: keys, masked keys, JWTs;
  never "header", "or", "(check"), and anything shaped like an OpenAI/Anthropic key ("sk-...") always is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable

#: every environment variable that may hold a provider key (aliases.API_KEY_ENV names the same ones)
KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_COMPATIBLE_API_KEY")
#: placeholder keys that protect nothing (what local servers accept)
NOT_SECRET = frozenset({"", "EMPTY"})
MASK = "***"
MIN_FRAGMENT = 4  # shorter prefixes/suffixes of a key are too common to mean anything
LONG_KEY = 16  # keys this long are removed anywhere, fragments included; shorter ones only as whole tokens
CREDENTIAL_MIN = 8  # the shortest value after Bearer / x-api-key / ... that is taken for a credential

_MASKING = "*.\u2026"  # characters providers put between the visible parts of a masked key
_WORD = r"A-Za-z0-9_\-"  # the characters of a token (a key, a word, a hyphenated name)
_TOKEN = re.compile(f"[{_WORD}]+")
_VALUE = f"[{_WORD}{re.escape(_MASKING)}]+"  # what a credential value after a label may be made of
_SEP = r"[\"']?(?:\s*[:=]\s*|\s+)[\"']?"  # 'Bearer X', 'x-api-key: X', '"x-api-key": "X"', 'api_key=X'
_LABELLED = (
    re.compile(rf"(?i)\b(bearer|x-api-key)({_SEP})({_VALUE})"),
    re.compile(rf"(?i)\b(api[_-]?key|authorization)([\"']?\s*[:=]\s*[\"']?)({_VALUE})"),
)
_SK = re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_*.\u2026\-]{4,}")


def env_keys() -> list[str]:
    """The provider keys set in the environment now (placeholders such as 'EMPTY' left out)."""
    keys = (os.environ.get(name, "").strip() for name in KEY_VARIABLES)
    return [key for key in keys if key not in NOT_SECRET]


def _keys(extra: Iterable[str | None]) -> list[str]:
    found = {k.strip() for k in extra if k and k.strip() not in NOT_SECRET}
    found.update(env_keys())
    return sorted(found, key=len, reverse=True)  # longest first: a key inside another one goes with it


def looks_like_credential(value: str) -> bool:
    """Whether a value after a label (Bearer, x-api-key, ...) is a key or a masked key, not an ordinary word."""
    return len(value) >= CREDENTIAL_MIN and any(c.isdigit() or c in _MASKING for c in value)


def _whole_token(text: str, key: str) -> str:
    """`text` without `key` where it stands alone: not inside a longer token ('local' stays in 'localhost',
    'local.example.org' and 'my-local'), but removed before punctuation ('Bearer local.', '(local)')."""
    before = rf"(?<![{_WORD}])(?<![{_WORD}]\.)"
    after = rf"(?![{_WORD}])(?!\.[{_WORD}])"
    return re.sub(before + re.escape(key) + after, MASK, text)


def _fragments(text: str, key: str, shortest: int = MIN_FRAGMENT,
               standalone: Callable[[str], bool] = lambda word: True) -> str:
    """Remove prefixes/suffixes (>= `shortest` chars) of a long `key` that touch a masking character or stand
    alone as a token (those for which `standalone(word)` holds)."""
    if key[:shortest] not in text and key[-shortest:] not in text:
        return text  # every such prefix starts with key[:shortest], every suffix ends with key[-shortest:]
    masking = re.escape(_MASKING)
    for length in range(len(key) - 1, shortest - 1, -1):
        head, tail = re.escape(key[:length]), re.escape(key[-length:])
        text = re.sub(f"{head}(?=[{masking}])", MASK, text)
        text = re.sub(f"(?<=[{masking}]){tail}", MASK, text)

    def token(match: re.Match[str]) -> str:
        word = match.group(0)
        if len(word) >= shortest and (key.startswith(word) or key.endswith(word)) and standalone(word):
            return MASK
        return word

    return _TOKEN.sub(token, text)


def _masked_fragments(text: str, key: str) -> str:
    """Remove prefixes/suffixes (>= MIN_FRAGMENT chars) of a short `key` echoed masked: a prefix that starts a
    token and runs into '*' or '…' ('tok42***'), a suffix that follows one and ends a token ('***42xy')."""
    if key[:MIN_FRAGMENT] not in text and key[-MIN_FRAGMENT:] not in text:
        return text
    for length in range(len(key) - 1, MIN_FRAGMENT - 1, -1):
        head, tail = re.escape(key[:length]), re.escape(key[-length:])
        text = re.sub(rf"(?<![{_WORD}]){head}(?=[*\u2026])", MASK, text)
        text = re.sub(rf"(?<=[*\u2026]){tail}(?![{_WORD}])", MASK, text)
    return text


def _labelled(match: re.Match[str]) -> str:
    label, separator, value = match.groups()
    return f"{label}{separator}{MASK}" if looks_like_credential(value) else match.group(0)


def redact(text: str, *keys: str | None) -> str:
    """`text` without the given keys and the environment's provider keys (see the module's rules), without a
    credential after 'Bearer' / 'x-api-key' / 'api_key=' / 'Authorization:' and without 'sk-...' tokens."""
    if not text:
        return text
    for key in _keys(keys):
        if len(key) >= LONG_KEY:
            text = _fragments(text.replace(key, MASK), key)
        else:  # a local placeholder: only where it stands alone, or masked at a token's edge
            text = _masked_fragments(_whole_token(text, key), key)
    for pattern in _LABELLED:
        text = pattern.sub(_labelled, text)
    return _SK.sub(MASK, text)


def redact_env(text: str) -> str:
    """`text` with any environment provider key removed, whole only (for user errors that echo a value); a short
    key only where it stands as a whole token."""
    for key in _keys(()):
        text = text.replace(key, MASK) if len(key) >= LONG_KEY else _whole_token(text, key)
    return text


def _not_a_word(token: str) -> bool:
    """Whether a token is unlike a word of prose: a digit, or a capital after its first letter ('567890abcdef',
    'FAKEKEY-compat'; not 'required' or 'Follow-up')."""
    return any(c.isdigit() for c in token) or any(c.isupper() for c in token[1:])


def redact_reply(text: str) -> str:
    """A model's or judge's reply without the environment's provider keys: a key whole; a long key's prefixes and
    suffixes of CREDENTIAL_MIN+ characters touching a masking character, or standing as a token unlike a word of
    prose (a proxy echoing part of the key; the key 'sk-no-key-required' leaves "required" alone); a short key as a
    whole token; credentials after Bearer / x-api-key / ...; 'sk-...' tokens. Shorter fragments stay: they are
    ordinary words of a reply more often than leaks."""
    if not text:
        return text
    for key in _keys(()):
        if len(key) >= LONG_KEY:
            text = _fragments(text.replace(key, MASK), key, shortest=CREDENTIAL_MIN, standalone=_not_a_word)
        else:
            text = _masked_fragments(_whole_token(text, key), key)
    for pattern in _LABELLED:
        text = pattern.sub(_labelled, text)
    return _SK.sub(MASK, text)


def key_in_arguments(argv: list[str]) -> tuple[str, str] | None:
    """(the environment variable, where) of a provider key from the environment found in a command-line argument
    (a key of CREDENTIAL_MIN+ characters: anywhere when long, as a whole token when short), or None. `where` names
    the option the argument belongs to, never the argument itself."""
    for variable in KEY_VARIABLES:
        key = os.environ.get(variable, "").strip()
        if key in NOT_SECRET or len(key) < CREDENTIAL_MIN:
            continue
        for index, arg in enumerate(argv):
            found = key in arg if len(key) >= LONG_KEY else _whole_token(arg, key) != arg
            if found:
                if arg.startswith("--"):
                    return variable, arg.split("=", 1)[0]
                before = argv[index - 1] if index > 0 else ""
                return variable, (f"the value of {before}" if before.startswith("-") else f"argument {index + 1}")
    return None
