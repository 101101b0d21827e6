"""Provider-neutral chat requests and results, and the errors of the provider layer.

A `ChatRequest` is OpenAI-shaped (role/content messages; content is a string or a list of text and image
parts, images as raw PNG/JPEG bytes); each provider module translates it to its own wire format.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import UserError
from harness.secrets import redact


@dataclass
class ChatRequest:
    # [{"role": "system"|"user"|"assistant", "content": str | list[part]}]; parts are
    # {"type": "text", "text": str} or {"type": "image", "data": <PNG/JPEG/GIF/WebP bytes>}
    messages: list[dict]
    max_tokens: int = 100
    temperature: float = 0.0
    seed: int | None = None
    top_p: float | None = None  # nucleus sampling (None: the provider's default, not sent)
    # structured output: OpenAI response_format json_schema; Anthropic a forced tool; openai-compatible
    # servers get response_format and, if they reject it, the request again without it
    json_schema: dict | None = None
    repeat: int = 0  # repeat index (asking the same question N times); part of the cache key
    # the k-th identical request of one sampling run (two samples with the same question, answer and prediction,
    # at temperature > 0): its own draw, not a copy of the first's reply; in the cache key when not 0
    draw: int = 0


@dataclass
class ChatResult:
    text: str | None  # None when the call failed for good, or the reply has no answer (refused, filtered, empty)
    error: str | None = None  # why text is None; a reply that was billed keeps its token counts (and cost)
    input_tokens: int = 0
    output_tokens: int = 0
    # the cost is not this run's to count: served from the cache (a reply another run used or will count), or
    # by the identical request's call in the same run; tokens and cost are those of the original call
    cached: bool = False
    cost_usd: float = 0.0  # estimated from pricing.py; 0 for unknown models and custom base URLs
    served_model: str | None = None  # the model the reply says answered (cached with it; None: it is not known)
    from_cache: bool = False  # read from the cache, whoever counts its cost (an interrupted run's reply: this run)
    # the reply stopped at max_tokens (OpenAI finish_reason "length", Anthropic stop_reason "max_tokens"): its
    # text is kept (the limit is part of the protocol), and the cut is recorded (cached with the reply)
    truncated: bool = False


class _RedactedError(UserError):
    """A user-facing provider error whose text never carries an API key (redacted when it is made)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(str(message)))


class ProviderUnavailable(_RedactedError):
    """The provider stays down, or refuses our credentials: the run stops, finished results are cached."""


class BatchPending(_RedactedError):
    """A submitted batch is still running after the wait allowed; its id is stored, the next run collects it."""


@dataclass
class CallError(Exception):
    """One failed provider call, classified for the scheduler (never carries the API key).

    kind: "retry" (429, 5xx, 529, timeouts, connection errors, malformed bodies), "fail" (this request is bad:
    400, 413, 422: no retry, the others go on) or "fatal" (401, 403, 404: every request would fail; stop).
    """

    kind: str
    message: str
    status: int | None = None
    retry_after: float | None = None  # seconds, from the retry-after / retry-after-ms headers

    def __post_init__(self) -> None:
        # the choke point of every provider error text: whatever built it, no key survives
        self.message = redact(str(self.message))

    def __str__(self) -> str:
        return self.message

    @property
    def throttled(self) -> bool:
        return self.status in (429, 529)


RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
FATAL_STATUS = frozenset({401, 403, 404})


def classify_status(status: int) -> str:
    if status in RETRYABLE_STATUS or status >= 500:
        return "retry"
    if status in FATAL_STATUS:
        return "fatal"
    return "fail"
