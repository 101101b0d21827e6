"""Estimated cost of LLM calls: list prices per million tokens for the pinned model ids.

Prices are the providers' published standard rates (USD per 1M tokens) as of PRICES_AS_OF; the batch APIs of
both providers cost half. They apply only to calls to the provider's own API (`priced_endpoint`): a model
behind any other base URL (a self-hosted vLLM/SGLang server, a proxy, another cloud) costs nothing in
OpenAI/Anthropic API fees, so its calls are recorded at 0, as are models without a known price (reported as
such, not guessed).
"""

from __future__ import annotations

from harness.providers.aliases import DEFAULT_BASE_URLS

PRICES_AS_OF = "2025-10"

# model id -> (input USD / 1M tokens, output USD / 1M tokens)
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4-0613": (30.00, 60.00),
    "gpt-4-turbo-2024-04-09": (10.00, 30.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o-2024-08-06": (2.50, 10.00),
    "gpt-4o-2024-11-20": (2.50, 10.00),
    "gpt-4o-mini-2024-07-18": (0.15, 0.60),
    "gpt-4.1-2025-04-14": (2.00, 8.00),
    "gpt-4.1-mini-2025-04-14": (0.40, 1.60),
    "claude-sonnet-4-6": (3.00, 15.00),  # as published at its release (2026-02-17)
    "claude-sonnet-4-5-20250929": (3.00, 15.00),
    "claude-haiku-4-5-20251001": (1.00, 5.00),
    "claude-opus-4-1-20250805": (15.00, 75.00),
    "claude-3-5-sonnet-20241022": (3.00, 15.00),
    "claude-3-5-haiku-20241022": (0.80, 4.00),
}

BATCH_DISCOUNT = 0.5


def cost_usd(model: str, input_tokens: int, output_tokens: int, *, batch: bool = False) -> float:
    """Estimated USD for one call; 0.0 when the model has no known price."""
    price = PRICES.get(model)
    if price is None:
        return 0.0
    cost = (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000
    return cost * BATCH_DISCOUNT if batch else cost


def has_price(model: str) -> bool:
    return model in PRICES


def priced_endpoint(provider: str, base_url: str | None) -> bool:
    """True when the calls go to the provider's official API, the only endpoint its list prices describe."""
    official = DEFAULT_BASE_URLS.get(provider)
    return official is not None and (base_url or "").strip().rstrip("/") == official


UNPRICED_NOTE = "no list price applied: custom base URL (self-hosted server or proxy), cost recorded as 0"
NO_PRICE_NOTE = "no list price known for this model: its cost is unknown, recorded as 0 (not an estimate)"
