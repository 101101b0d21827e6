"""Helpers shared by the provider modules: image media types, retry-after parsing, error wording, redaction."""

from __future__ import annotations

import base64
import email.utils
import functools
import time
from collections.abc import Mapping
from typing import Any

from harness import secrets
from harness.providers.base import CallError, classify_status

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


@functools.lru_cache(maxsize=1)
def shared_ssl_context() -> Any:
    """One TLS context for every HTTP client of this process (building one costs ~0.1 s: certificate loading)."""
    import httpx2

    return httpx2.create_ssl_context()


def http_client(sdk_module: Any, timeout: float, base_url: str) -> Any:
    """An httpx2 AsyncClient with the SDK's defaults (limits, redirects) and the shared TLS context, which sends
    nothing (the key least of all) to another origin than `base_url`'s: not a redirect, nor a URL a reply names
    (the Anthropic SDK fetches the `results_url` of a batch with the key)."""
    import httpx2

    allowed = origin(base_url)

    async def same_origin(request: Any) -> None:
        if origin(str(request.url)) != allowed:
            raise httpx2.RequestError(f"refusing to send the request (and API key) to {origin(str(request.url))}, "
                                      f"not the base URL's {allowed}", request=request)

    return sdk_module.DefaultAsyncHttpxClient(verify=shared_ssl_context(), event_hooks={"request": [same_origin]},
                                              timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)))


def origin(url: str) -> str:
    """scheme://host:port of a URL (the port the scheme implies when none is written)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def image_media_type(data: bytes) -> str:
    """The media type of PNG/JPEG/GIF/WebP bytes (what both providers accept inline)."""
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ValueError("ChatRequest image part: expected PNG, JPEG, GIF or WebP bytes")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def system_and_rest(messages: list[dict]) -> tuple[str | None, list[dict]]:
    """Split the system messages (joined by blank lines) from the conversation."""
    system = [m["content"] if isinstance(m["content"], str) else
              "\n".join(p["text"] for p in m["content"] if p.get("type") == "text")
              for m in messages if m["role"] == "system"]
    rest = [m for m in messages if m["role"] != "system"]
    return ("\n\n".join(system) if system else None), rest


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` given in seconds or as an HTTP date."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def redact(text: str, secret: str | None) -> str:
    """Remove the API key (whole or in fragments) and every key of the environment from an error text."""
    return secrets.redact(text, secret)


def malformed(provider: str, what: str) -> CallError:
    """The retryable error of a reply that is JSON but not of the expected shape (never cached)."""
    return CallError("retry", f"malformed reply from {provider}: {what}")


def token_count(provider: str, usage: Any, name: str) -> int:
    """A token count of a reply's usage object: absent/null is 0; anything but an int >= 0 is malformed."""
    if usage is None:
        return 0
    if not isinstance(usage, dict):
        raise malformed(provider, "usage is not an object")
    value = usage.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise malformed(provider, f"usage.{name} is not a count")
    return value


def error_message(body: Any, fallback: str) -> str:
    """The human message inside an error body of either provider."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            inner = inner.get("error", inner) if isinstance(inner.get("error"), dict) else inner
            if isinstance(inner.get("message"), str):
                return inner["message"]
    if isinstance(body, str) and body.strip():
        text = body.strip()
        if text.startswith("<"):  # an HTML error page (a proxy's, a web server's): its words, not its markup
            import html
            import re

            text = html.unescape(re.sub(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", " ", text, flags=re.S | re.I))
        return " ".join(text.split()) or fallback
    return fallback


def status_error(provider: str, status: int, body: Any, headers: Mapping[str, str] | None,
                 secret: str | None, key_env: str) -> CallError:
    # redacted before it is cut, so a key cut in two still matches
    message = redact(" ".join(error_message(body, "no details").split()), secret)[:300]
    hint = ""
    if status in (401, 403):
        hint = f" (check {key_env})"
    elif status == 404:
        hint = " (is the model id or base URL right?)"
    return CallError(classify_status(status), redact(f"HTTP {status} from {provider}: {message}{hint}", secret),
                     status=status, retry_after=parse_retry_after(headers))


def strict_schema_ok(schema: Any) -> bool:
    """Whether OpenAI's strict structured output accepts this schema: every object closed and fully required."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            props = schema.get("properties", {})
            if schema.get("additionalProperties") is not False or set(schema.get("required", [])) != set(props):
                return False
        return all(strict_schema_ok(v) for v in schema.values())
    if isinstance(schema, list):
        return all(strict_schema_ok(v) for v in schema)
    return True
