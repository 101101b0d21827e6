"""Anthropic Messages through the official `anthropic` SDK (its retries off).

System messages become the `system` field; images go inline as base64 image blocks. `json_schema` (an object
schema) becomes one forced tool whose input is the structured reply, returned as JSON text.
Sampling settings are not sent: the SDK 2.x speaks API version 2026-10-21, which rejects temperature, top_p
and top_k (HTTP 400, even at their defaults) and has no seed; `temperature` and `seed` still separate cache
entries, and `describe()` records that the provider's default sampling was used.
"""

from __future__ import annotations

import json
from typing import Any

from harness.providers.base import CallError, ChatRequest, ChatResult
from harness.providers.wire import (
    b64,
    http_client,
    image_media_type,
    malformed,
    redact,
    status_error,
    system_and_rest,
    token_count,
)

TOOL_NAME = "reply"


def _content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    blocks = []
    for part in content:
        if part["type"] == "text":
            blocks.append({"type": "text", "text": part["text"]})
        elif part["type"] == "image":
            blocks.append({"type": "image", "source": {
                "type": "base64", "media_type": image_media_type(part["data"]), "data": b64(part["data"])}})
        else:
            raise ValueError(f"ChatRequest: unknown content part type {part['type']!r}")
    return blocks


class AnthropicBackend:
    """Wire format and error mapping for provider "anthropic"."""

    provider = "anthropic"

    def __init__(self, model: str, base_url: str, api_key: str, timeout: float) -> None:
        self.model = model
        self.base_url = base_url
        self._api_key = api_key
        self.timeout = timeout

    def redact(self, text: str) -> str:
        """`text` without this backend's key (and the environment's keys), whole or in fragments."""
        return redact(text, self._api_key)

    def open(self) -> Any:
        import anthropic

        return anthropic.AsyncAnthropic(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                        timeout=self.timeout + 5,
                                        http_client=http_client(anthropic, self.timeout + 5, self.base_url))

    def body(self, request: ChatRequest) -> dict[str, Any]:
        system, rest = system_and_rest(request.messages)
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": m["role"], "content": _content(m["content"])} for m in rest],
        }
        if system:
            body["system"] = system
        schema = request.json_schema
        if schema is not None and schema.get("type", "object") == "object":
            body["tools"] = [{"name": TOOL_NAME, "description": "Give the reply in this structure.",
                              "input_schema": {"type": "object", **schema}}]
            body["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
        return body

    async def send(self, sdk: Any, request: ChatRequest) -> ChatResult:
        import httpx2

        body = self.body(request)
        try:
            # the SDK's plain request method (auth, version header, error types) with our own JSON body
            response = await sdk.post("/v1/messages", body=body, cast_to=httpx2.Response)
            data = json.loads(response.content)
        except Exception as exc:
            raise self.classify(exc) from None
        if not isinstance(data, dict):
            raise malformed("anthropic", "not a JSON object")
        return self.parse(data)

    def parse(self, data: Any) -> ChatResult:
        """A ChatResult from a Message object (also the `message` of a batch result line).

        Anything but a list of block objects with string texts and int token counts >= 0 is a malformed
        (retryable) reply.
        """
        blocks = data.get("content") if isinstance(data, dict) else None
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise malformed("anthropic", "no content blocks")
        usage = data.get("usage")
        served = data.get("model")
        result = ChatResult(text=None, input_tokens=token_count("anthropic", usage, "input_tokens"),
                            output_tokens=token_count("anthropic", usage, "output_tokens"),
                            served_model=served if isinstance(served, str) and served else None)
        if data.get("stop_reason") == "refusal":  # declined: no answer to score (nor to cache), billed all the same
            result.error = "anthropic refused to answer (stop_reason refusal)"
            return result
        tool = next((b for b in blocks if b.get("type") == "tool_use"), None)
        if tool is not None:
            if not isinstance(tool.get("input"), dict):
                raise malformed("anthropic", "tool_use input is not an object")
            text = json.dumps(tool["input"], ensure_ascii=False)
        else:
            texts = [b.get("text", "") for b in blocks if b.get("type") == "text"]
            if not all(isinstance(t, str) for t in texts):
                raise malformed("anthropic", "a text block's text is not text")
            text = "".join(texts)
        result.text = text
        result.truncated = data.get("stop_reason") == "max_tokens"  # cut at max_tokens: kept, and recorded
        if not text.strip():  # nothing to score, and not cached: the same command asks again (its tokens count)
            result.text, result.truncated = None, False
            result.error = f"anthropic: the reply has no text (stop_reason {data.get('stop_reason')})"
        return result

    def classify(self, exc: BaseException) -> CallError:
        import anthropic

        if isinstance(exc, CallError):
            return exc
        if isinstance(exc, anthropic.APITimeoutError):
            return CallError("retry", f"anthropic: no reply within {self.timeout:g} s")
        if isinstance(exc, anthropic.APIConnectionError):
            return CallError("retry", redact(f"anthropic: connection error ({exc.__cause__ or exc})",
                                             self._api_key))
        if isinstance(exc, anthropic.APIStatusError):
            return status_error("anthropic", exc.status_code, exc.body, exc.response.headers, self._api_key,
                                "ANTHROPIC_API_KEY")
        if isinstance(exc, (json.JSONDecodeError, anthropic.APIResponseValidationError, ValueError)):
            return CallError("retry", "malformed reply from anthropic (not the expected JSON)")
        raise exc
