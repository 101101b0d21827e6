"""Model aliases -> (provider, pinned model id, dated where the provider dates ids), provider inference, endpoints.

The resolved, pinned id is what gets recorded, so a number can always be traced to the exact judge model.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from harness.errors import UserError

PROVIDERS = ("openai", "anthropic", "openai-compatible")

BASE_URL_ENV = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}  # the SDKs' own variables
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}

# The key variable of each provider. A provider key (OPENAI_API_KEY, ANTHROPIC_API_KEY) is sent only over https or
# to this machine (loopback): normalise_base_url refuses plain http to another host for those providers. It does go
# to any https base URL given for them (a proxy, a cloud deployment of the same API). OPENAI_COMPATIBLE_API_KEY
# goes wherever the user points provider openai-compatible, http included: that server is the user's own choice.
API_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY",
               "openai-compatible": "OPENAI_COMPATIBLE_API_KEY"}

# alias -> (provider, pinned id)
ALIASES: dict[str, tuple[str, str]] = {
    "gpt4": ("openai", "gpt-4-0613"),
    "gpt-4": ("openai", "gpt-4-0613"),
    "gpt-4o": ("openai", "gpt-4o-2024-08-06"),
    "gpt-4o-mini": ("openai", "gpt-4o-mini-2024-07-18"),
    "gpt-4-turbo": ("openai", "gpt-4-turbo-2024-04-09"),
    "gpt-4.1": ("openai", "gpt-4.1-2025-04-14"),
    "gpt-4.1-mini": ("openai", "gpt-4.1-mini-2025-04-14"),
    "claude": ("anthropic", "claude-sonnet-4-6"),
    "claude-sonnet-4-6": ("anthropic", "claude-sonnet-4-6"),  # from 4.6 on, Anthropic's ids carry no date
    "claude-sonnet-4-5": ("anthropic", "claude-sonnet-4-5-20250929"),
    "claude-haiku-4-5": ("anthropic", "claude-haiku-4-5-20251001"),
}

# why an alias points where it does (recorded next to the resolved id)
ALIAS_NOTES: dict[str, str] = {
    "gpt4": "PeFoMed's GPT-4 judge: 'gpt-4' pointed to gpt-4-0613 during its evaluation (2023-2024); "
            "OpenAI shut gpt-4-0613 down on 2026-10-23",
    "gpt-4": "'gpt-4' pointed to gpt-4-0613 from June 2023 until its shutdown on 2026-10-23",
    "claude": "'claude' resolved to claude-sonnet-4-5-20250929 (shut down 2026-11-30) in results recorded before "
              "2026-11-23, to claude-sonnet-4-6 since",
}

# announced shutdown dates of pinned ids (from the deprecation notes in openai 3.54 and anthropic 2.12)
SHUTDOWN: dict[str, str] = {
    "gpt-4-0613": "2026-10-23",
    "gpt-4-turbo-2024-04-09": "2026-10-23",
    "gpt-4o-2024-05-13": "2026-10-23",
    "gpt-4o-2024-08-06": "2027-01-14",
    "gpt-4o-2024-11-20": "2027-01-14",
    "gpt-4o-mini-2024-07-18": "2027-01-14",
    "gpt-4.1-2025-04-14": "2027-01-14",
    "gpt-4.1-mini-2025-04-14": "2027-01-14",
    "claude-sonnet-4-5-20250929": "2026-11-30",
    "claude-3-5-haiku-20241022": "2026-02-19",
}


def resolve_model(name: str, provider: str | None, base_url: str | None) -> tuple[str, str]:
    """(provider, model id) for a model name or alias; `provider` disambiguates, `base_url` implies a server.

    An alias resolves to its pinned id (also behind a base URL: a proxy of the same provider); with
    provider "openai-compatible" the name is sent verbatim. An unknown name with a base URL is
    openai-compatible; without one, "claude-*" is Anthropic and "gpt-*"/"o1"/"o3"/"o4" are OpenAI.
    Errors never echo a key of the environment (a key pasted where the model name goes).
    """
    from harness.secrets import redact_env

    try:
        return _resolve_model(name, provider, base_url)
    except UserError as exc:
        raise UserError(redact_env(str(exc))) from None


def _resolve_model(name: str, provider: str | None, base_url: str | None) -> tuple[str, str]:
    if not name or not name.strip():
        raise UserError("LLM model: empty name; give --judge-model (e.g. gpt-4o, claude, or a model id)")
    name = name.strip()
    if provider is not None and provider not in PROVIDERS:
        raise UserError(f"LLM provider '{provider}': expected one of {', '.join(PROVIDERS)}")
    if provider == "openai-compatible":
        if not base_url:
            raise UserError(f"LLM model '{name}': provider openai-compatible needs a base URL (--judge-base-url)")
        return provider, name
    alias = ALIASES.get(name.lower())
    if alias is not None:
        alias_provider, pinned = alias
        if provider is not None and provider != alias_provider:
            raise UserError(f"LLM model '{name}' is an {alias_provider} model, not {provider}; "
                            f"drop --judge-provider or give an {provider} model id")
        return alias_provider, pinned
    if provider is not None:
        return provider, name
    if base_url:
        return "openai-compatible", name
    lowered = name.lower()
    if lowered.startswith("claude"):
        return "anthropic", name
    if lowered.startswith(("gpt-", "o1", "o3", "o4", "chatgpt")):
        return "openai", name
    raise UserError(f"LLM model '{name}': unknown model; give --judge-provider (openai, anthropic) or "
                    f"--judge-base-url for an OpenAI-compatible server. Aliases: {', '.join(sorted(ALIASES))}")


def check_not_shut_down(provider: str, model: str, base_url: str, requested: str, today: str) -> None:
    """A pinned id past its shutdown date cannot be called at the provider itself: say so before any call.

    Behind another base URL (a proxy, a cloud deployment that still serves it) the call is allowed.
    """
    date = SHUTDOWN.get(model)
    if date is None or today < date or base_url != DEFAULT_BASE_URLS.get(provider):
        return
    alias = f" ('{requested}')" if requested != model else ""
    raise UserError(f"LLM model {model}{alias} was shut down by {provider} on {date}: it cannot judge any more. "
                    "Choose another --judge-model (results will differ from those of the retired model and are "
                    "recorded under the new id), or a --judge-base-url that still serves it")


@contextmanager
def ignoring_base_url_variables() -> Iterator[None]:
    """Within: OPENAI_BASE_URL / ANTHROPIC_BASE_URL are not read (setups of results recorded before they were
    honoured: those calls went to the default endpoint whatever the publishing shell sets)."""
    saved = {name: os.environ.pop(name) for name in BASE_URL_ENV.values() if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def normalise_base_url(provider: str, base_url: str | None) -> str:
    """The endpoint to call and to record, no trailing slash: the one given, else the provider SDK's own variable
    (OPENAI_BASE_URL, ANTHROPIC_BASE_URL: a proxy set there must not be bypassed), else the provider's default.

    Refused before any call: credentials, a query string or a fragment in the URL (keys belong in the key
    variable; the URL is recorded everywhere), and plain http to another host for a provider key.
    The messages never echo what came after '?' or '#', nor any key of the environment.
    """
    from_env = os.environ.get(BASE_URL_ENV.get(provider, ""), "").strip() if not base_url else ""
    url = (base_url or from_env or DEFAULT_BASE_URLS.get(provider, "")).strip().rstrip("/")
    try:
        return _checked_url(provider, url)
    except UserError as exc:
        if from_env:  # say where it came from: the user gave no base URL on the command line
            raise UserError(f"{BASE_URL_ENV[provider]} in the environment: {exc}") from None
        raise


def _checked_url(provider: str, url: str) -> str:
    from harness.secrets import key_in_arguments, redact_env

    if not url:
        raise UserError(f"LLM provider '{provider}': needs a base URL (--judge-base-url)")
    key_vars = f"{API_KEY_ENV['openai']}, {API_KEY_ENV['anthropic']} or {API_KEY_ENV['openai-compatible']}"
    if "@" in url:  # user:password@ (a password may hold / ? #): before any message that shows the URL
        raise UserError(f"LLM base URL: credentials in the URL are not accepted; put the key in the environment "
                        f"variable ({key_vars}); an @ in a path is written %40")
    if "?" in url or "#" in url:
        cut = min(i for i in (url.find("?"), url.find("#")) if i != -1)
        shown = redact_env(url[:cut]) + url[cut] + "..."
        raise UserError(f"LLM base URL {shown}: a query string or fragment is not accepted (it would be "
                        f"recorded with the results); put API keys in the environment variable ({key_vars})")
    leaked = key_in_arguments([url])  # a key in the path (.../sk-.../v1): the URL is recorded everywhere
    if leaked:
        raise UserError(f"LLM base URL: it holds the API key of ${leaked[0]} (the URL is recorded with the results "
                        f"and caches); keys go in the key variable only ({key_vars}): remove it from the URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        parts, host = urlsplit(""), None
    if parts.scheme not in ("http", "https") or not host:
        raise UserError(redact_env(f"LLM base URL '{url}': expected http(s)://host[:port]/path"))
    if parts.scheme == "http" and provider in ("openai", "anthropic") and not is_loopback(url):
        raise UserError(redact_env(
            f"LLM base URL {url}: plain http to another host; {API_KEY_ENV[provider]} is sent only over https or "
            "to this machine. Use https, or for your own server provider openai-compatible (--judge-provider "
            "openai-compatible, or --model openai-compatible) with its key in OPENAI_COMPATIBLE_API_KEY"))
    if provider == "anthropic" and parts.path.rstrip("/").endswith("/v1"):  # the SDK adds /v1/messages itself
        root = url[: url.rstrip("/").rfind("/v1")]
        raise UserError(redact_env(f"LLM base URL {url}: an Anthropic base URL is the server's root, without /v1 "
                                   f"(the API adds /v1/messages, so this would call .../v1/v1/messages); use {root}"))
    return parts._replace(netloc=parts.netloc.lower()).geturl()  # HTTP://Host/v1: http://host/v1


def is_loopback(base_url: str) -> bool:
    """True when the URL's host is this machine (localhost, 127.0.0.0/8, ::1)."""
    host = (urlsplit(base_url).hostname or "").lower()
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def same_model(served: str, asked: str) -> bool:
    """Whether a reply's model name is the model asked for (or its dated snapshot: gpt-4o-mini ->
    gpt-4o-mini-2024-07-18)."""
    return served == asked or served.startswith(asked + "-")
