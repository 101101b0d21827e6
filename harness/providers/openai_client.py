"""OpenAI and OpenAI-compatible chat completions through the official `openai` SDK (its retries off).

Images go inline as data URLs. `json_schema` becomes `response_format` (strict when the schema allows it). A
request rejected (400/422) because of `response_format`, `temperature` or `seed` (an OpenAI-compatible server
without structured output; gpt-5-class models that take no temperature) is sent again without that parameter,
later requests skip it, and `describe()` records it. Requests go through the SDK's plain `post` method.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from harness.providers.aliases import API_KEY_ENV
from harness.providers.base import CallError, ChatRequest, ChatResult
from harness.providers.wire import (
    b64,
    http_client,
    image_media_type,
    malformed,
    redact,
    shared_ssl_context,
    status_error,
    strict_schema_ok,
    token_count,
)
from harness.secrets import redact_reply

log = logging.getLogger("harness.providers")

# parameters a model or server may reject; dropped (and recorded) instead of failing every request
OPTIONAL_PARAMS = ("response_format", "temperature", "seed", "top_p")
# what a server's 400 about structured output says (a 400 naming none of these, such as a prompt over the context
# length, is the call's own failure: retrying without response_format, and then never sending it, was wrong)
STRUCTURED_OUTPUT_WORDS = re.compile(  # letter boundaries: "guided_json", "xgrammar" count, "information" not
    r"(?<![a-z])(json_schema|json schema|structured|guided|x?grammar|schema|format)(?![a-z])")


def _content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part["type"] == "text":
            parts.append({"type": "text", "text": part["text"]})
        elif part["type"] == "image":
            url = f"data:{image_media_type(part['data'])};base64,{b64(part['data'])}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            raise ValueError(f"ChatRequest: unknown content part type {part['type']!r}")
    return parts


class OpenAIBackend:
    """Wire format and error mapping for provider "openai" and "openai-compatible"."""

    def __init__(self, provider: str, model: str, base_url: str, api_key: str, timeout: float) -> None:
        self.provider = provider
        self.model = model
        self.base_url = base_url
        self._api_key = api_key
        self.timeout = timeout
        self.dropped: set[str] = set()  # parameters this model/server rejected (see send)
        # why GET /models had no answer to go by (a connection error, a timeout, a 5xx); None: it answered
        self.models_unanswered: str | None = None

    def server_description(self) -> dict[str, Any]:
        """What an OpenAI-compatible server says of the model it serves under this name and of itself: the model's
        entry at GET /v1/models (vLLM: `root`, the weights' or adapter's folder; `parent`, an adapter's base model)
        and GET /version (vLLM's version, asked without the key); {} for what it does not answer. No redirect is
        followed (the key would go with it). The card's `root` and `parent` enter an API model's run id and cache
        keys (ProviderClient.served_weights); the rest is for the record. `models_unanswered` says why GET /models
        had no answer to go by (the server down or failing), as opposed to one without a card (a server that does
        not list its models: a 404, an empty list)."""
        import httpx2

        found: dict[str, Any] = {}
        with httpx2.Client(verify=shared_ssl_context(), timeout=httpx2.Timeout(min(self.timeout, 10.0)),
                           follow_redirects=False) as client:
            def get(url: str, headers: dict[str, str], models: bool = False) -> Any:
                try:
                    response = client.get(url, headers=headers)
                except httpx2.HTTPError as exc:
                    if models:
                        self.models_unanswered = redact(f"{type(exc).__name__}: {exc}"[:200], self._api_key)
                    return None
                if models:
                    self.models_unanswered = f"HTTP {response.status_code}" if response.status_code >= 500 else None
                try:
                    return response.json() if response.status_code == 200 else None
                except ValueError:
                    return None

            listed = get(self.base_url.rstrip("/") + "/models", {"Authorization": f"Bearer {self._api_key}"},
                         models=True)
            version = get(self.base_url.rstrip("/").removesuffix("/v1") + "/version", {})
        cards = listed.get("data") if isinstance(listed, dict) else None
        for card in cards if isinstance(cards, list) else []:
            if isinstance(card, dict) and card.get("id") == self.model:
                found["model_card"] = {k: redact_reply(card[k]) if isinstance(card[k], str) else card[k]
                                       for k in ("id", "root", "parent", "owned_by", "max_model_len") if k in card}
        if isinstance(version, dict) and isinstance(version.get("version"), str):
            found["server_version"] = version["version"][:100]
        return found

    def redact(self, text: str) -> str:
        """`text` without this backend's key (and the environment's keys), whole or in fragments."""
        return redact(text, self._api_key)

    def open(self) -> Any:
        """The SDK's async client (made inside the running event loop; closed by the caller)."""
        import openai

        return openai.AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                  timeout=self.timeout + 5,
                                  http_client=http_client(openai, self.timeout + 5, self.base_url))

    def body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": _content(m["content"])} for m in request.messages],
            "temperature": request.temperature,
        }
        # OpenAI's current name for the limit; servers that mimic the API know the older one
        body["max_completion_tokens" if self.provider == "openai" else "max_tokens"] = request.max_tokens
        if request.seed is not None:
            body["seed"] = request.seed
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "reply", "schema": request.json_schema, "strict": strict_schema_ok(request.json_schema)}}
        for param in self.dropped:
            body.pop(param, None)
        return body

    async def send(self, sdk: Any, request: ChatRequest) -> ChatResult:
        body = self.body(request)
        without: list[str] = []
        while True:
            try:
                result = await self._post(sdk, body)
                break
            except CallError as err:
                param = self._unsupported(err, body)
                if param is None:
                    raise
            # the model or server rejects this parameter (gpt-5-class models take no temperature; many
            # OpenAI-compatible servers have no structured output): ask again without it
            body.pop(param)
            without.append(param)
        for param in without:  # it worked without: leave it out from now on
            if param not in self.dropped:
                self.dropped.add(param)
                log.warning("%s model %s rejects '%s': sending requests without it", self.provider, self.model,
                            param)
        return result

    def _unsupported(self, err: CallError, body: dict[str, Any]) -> str | None:
        if err.kind != "fail" or err.status not in (400, 422):
            return None
        for param in OPTIONAL_PARAMS:
            if param in body and param in err.message:
                return param
        message = err.message.lower()
        if self.provider == "openai-compatible" and "response_format" in body \
                and STRUCTURED_OUTPUT_WORDS.search(message):
            return "response_format"  # a server without structured output (named otherwise: "json_schema" ...)
        return None

    async def _post(self, sdk: Any, body: dict[str, Any]) -> ChatResult:
        import httpx2

        try:
            # the SDK's plain request method (its auth, headers and error types) with our own JSON body:
            # `chat.completions.create` re-walks the body against its type hints, which halves throughput
            response = await sdk.post("/chat/completions", body=body, cast_to=httpx2.Response)
            data = json.loads(response.content)
        except Exception as exc:
            raise self.classify(exc) from None
        if not isinstance(data, dict):
            raise malformed(self.provider, "not a JSON object")
        return self.parse(data)

    def parse(self, data: Any) -> ChatResult:
        """A ChatResult from a chat.completion object (also one line of a batch output file).

        Anything but a string text and int token counts >= 0 is a malformed (retryable) reply.
        """
        choices = data.get("choices") if isinstance(data, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise malformed(self.provider, "no choices[0].message")
        usage = data.get("usage")
        served = data.get("model")
        result = ChatResult(text=None, input_tokens=token_count(self.provider, usage, "prompt_tokens"),
                            output_tokens=token_count(self.provider, usage, "completion_tokens"),
                            served_model=served if isinstance(served, str) and served else None)
        # a refused or content-filtered reply is a failed sample (no answer to score, nor to cache), billed all the
        # same: its usage stays on the result
        text = message.get("content")
        if message.get("refusal") and not text:
            result.error = f"{self.provider} refused: {str(message['refusal'])[:200]}"
            return result
        if choice.get("finish_reason") == "content_filter":  # withheld or cut
            result.error = (f"{self.provider}: the reply was stopped by the content filter "
                            "(finish_reason content_filter)")
            return result
        if text is None:
            text = ""
        if isinstance(text, list) and text and all(isinstance(part, dict) and part.get("type") == "text"
                                                   and isinstance(part.get("text"), str) for part in text):
            text = "".join(part["text"] for part in text)  # content as a list of text parts (some servers, proxies)
        if not isinstance(text, str):
            raise malformed(self.provider, "choices[0].message.content is not text")
        result.text = text
        if not text.strip():  # nothing to score, and not cached: the same command asks again (its tokens count)
            reasoning = next((k for k in ("reasoning_content", "reasoning") if message.get(k)), None)
            finish = choice.get("finish_reason")
            hint = (f"; its message.{reasoning} has text: a reasoning parser on the server keeps the answer out of "
                    "content" if reasoning else "")
            if finish == "length":
                hint += "; a reasoning model may need more output tokens (--max-new-tokens for a model)"
            result.text, result.error = None, f"{self.provider}: the reply has no text (finish_reason {finish}{hint})"
        result.truncated = result.text is not None and choice.get("finish_reason") == "length"  # cut at max_tokens
        return result

    def classify(self, exc: BaseException) -> CallError:
        import openai

        if isinstance(exc, CallError):
            return exc
        if isinstance(exc, openai.APITimeoutError):
            return CallError("retry", f"{self.provider}: no reply within {self.timeout:g} s")
        if isinstance(exc, openai.APIConnectionError):
            return CallError("retry", redact(f"{self.provider}: connection error ({exc.__cause__ or exc})",
                                             self._api_key))
        if isinstance(exc, openai.APIStatusError):
            return status_error(self.provider, exc.status_code, exc.body, exc.response.headers, self._api_key,
                                API_KEY_ENV[self.provider])
        if isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError, ValueError)):
            return CallError("retry", f"malformed reply from {self.provider} (not the expected JSON)")
        raise exc
