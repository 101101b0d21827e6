"""API model baselines: `gpt-4o`, `claude` and `openai-compatible` (vLLM serve, SGLang, TGI, ...).

One plugin class serves the three registered ids through the provider layer shared with the LLM judges
(harness.providers: concurrency, retries with back-off, SQLite cache, cost). Each request becomes one user
message: the request's images as PNG bytes (sent inline: data URLs for OpenAI, base64 blocks for Anthropic),
then its `prompt`. Decoding comes from the task's generation settings: `max_new_tokens` -> max_tokens,
temperature (0 unless sampling), top_p when sampling below 1, seed (OpenAI only; Anthropic's API takes none of
them, which `run_identity` records). Stop strings, which chat APIs do not all take, are applied to the reply text.

    harness run --model gpt-4o --task vqa-rad                      # OPENAI_API_KEY, pinned gpt-4o-2024-08-06
    harness run --model claude --task slake                        # ANTHROPIC_API_KEY, pinned Claude id
    harness run --model openai-compatible --task phantom-vqa \\
        --model-args base_url=http://127.0.0.1:8000/v1,model=<served model name>

--model-args: model (alias or id), base_url, concurrency (16), timeout (s per call, 120), max_retries (6),
retry_base_delay, retry_max_delay, down_after, cache (true), allow_external (false), max_image_side (pixels of an
image's long side; larger images are downscaled before sending: 2048 for OpenAI and 1568 for Anthropic, the long
sides those APIs scale to themselves at most; 0 = send as is, the openai-compatible default). A grayscale image
stored as RGB (most radiographs), once downscaled or above a megapixel, is sent as a grayscale PNG: the same pixels in a
third of the bytes.
Keys come from
OPENAI_API_KEY / ANTHROPIC_API_KEY / OPENAI_COMPATIBLE_API_KEY only (a loopback or openai-compatible server may
go without: it is sent "EMPTY") and are never recorded; the first two go only over https or to this machine
(a plain-http base_url on another host, or any base_url with a query string or fragment, is refused before any
call).

Credentialed tasks (MIMIC-CXR-like data use agreements) are refused unless `allow_external=true`; only an
openai-compatible server on this machine (loopback) may see them without it. `gpt-4o`/`claude` are external
APIs even behind a loopback base URL (usually a proxy that forwards to the provider).

Every reply is cached as it arrives, so a rerun (or a new run over the same requests) makes no repeated calls.
An OpenAI-compatible server's account of the weights behind the model name (vLLM's `root` and `parent` at
/v1/models) is part of the run id and of the cache keys: other weights served under the same name are another run
(a server that cannot be asked is a one-line error, not a run id without them).
If the provider stays down or refuses the key, ProviderUnavailable ends the run with one line; the runner has
already saved the earlier batches (the default batch size keeps them small) and a rerun resumes. Token counts
go into each GenerationOutput (predictions.jsonl: prompt_tokens, completion_tokens); the estimated cost (list
prices of harness.providers.pricing) is summed in `identity()` and printed when the model closes. The model name a
reply gives (cached with it) goes on its line as `generation_details.served_model`, which `served_models` counts.
"""

from __future__ import annotations

import io
import sys
from dataclasses import fields
from typing import Any, ClassVar

from harness.errors import UserError, close_hint
from harness.flags import MAX_CONCURRENCY, parse_flag, parse_number
from harness.model_api import ModelContext, ModelPlugin
from harness.providers.aliases import same_model
from harness.types import GenerationOutput, GenerationRequest, GenerationSettings

# flavour -> (provider, default model alias)
FLAVOURS: dict[str, tuple[str, str | None]] = {
    "gpt-4o": ("openai", "gpt-4o"),
    "claude": ("anthropic", "claude"),
    "openai-compatible": ("openai-compatible", None),
}
ACCEPTED_ARGS = ("model", "base_url", "concurrency", "timeout", "max_retries", "retry_base_delay",
                 "retry_max_delay", "down_after", "cache", "allow_external", "max_image_side")
# the long side the provider's API scales a larger image down to itself (OpenAI high detail: within 2048 x 2048;
# Anthropic: long edge 1568): sending more costs upload time and memory (a 3000 x 2500 X-ray is a 7 MB PNG, above
# Anthropic's 5 MB per image) for nothing the model sees. 0: as is (a server of your own decides).
MAX_IMAGE_SIDE = {"openai": 2048, "anthropic": 1568, "openai-compatible": 0}
MOVED_ARGS = {"temperature": "--temperature", "max_tokens": "--max-new-tokens",
              "max_new_tokens": "--max-new-tokens", "seed": "--seed", "top_p": "--top-p"}
# (name, kind, minimum, maximum); an image side of at most 65535 pixels (JPEG's limit, far above any provider's)
NUMBER_ARGS = (("concurrency", int, 1, MAX_CONCURRENCY), ("timeout", float, 0.001, None),
               ("max_retries", int, 0, None), ("retry_base_delay", float, 0, None), ("retry_max_delay", float, 0, None),
               ("down_after", int, 1, None), ("max_image_side", int, 0, 65535))
DEFAULT_TIMEOUT = 120.0  # seconds per call: requests carry images
_HAS_COST_FIELD = "cost_usd" in {f.name for f in fields(GenerationOutput)}


def _flag(flavour: str, name: str, value: str) -> bool:
    return parse_flag(value, f"model '{flavour}': --model-args {name}={value!r}")


def _number(flavour: str, args: dict[str, str], name: str, kind: type, minimum: float, maximum: float | None) -> Any:
    if name not in args:
        return None
    return parse_number(args[name], f"model '{flavour}': --model-args {name}={args[name]!r}", kind, minimum, maximum)


def resolve(flavour: str, args: dict[str, str]) -> dict[str, Any]:
    """Check the model args and resolve provider, pinned model id and endpoint (cheap: no call, no key)."""
    from harness.providers.aliases import (
        ALIASES,
        DEFAULT_BASE_URLS,
        SHUTDOWN,
        normalise_base_url,
        resolve_model,
    )

    provider, default_model = FLAVOURS[flavour]
    for name in args:
        if name in MOVED_ARGS:
            raise UserError(f"model '{flavour}': '{name}' comes from the generation settings: use "
                            f"{MOVED_ARGS[name]} instead of --model-args {name}=...")
        if name not in ACCEPTED_ARGS:
            raise UserError(f"model '{flavour}': unknown --model-args '{name}'{close_hint([name], ACCEPTED_ARGS)}; "
                            f"accepted: {', '.join(ACCEPTED_ARGS)}")
    base_url = args.get("base_url", "").strip() or None
    requested = args.get("model", "").strip() or default_model
    if provider == "openai-compatible":
        if base_url is None:
            raise UserError(f"model '{flavour}' needs the server's address (vLLM serve, SGLang, TGI): "
                            "--model-args base_url=http://HOST:PORT/v1,model=<served model name>")
        if requested is None:
            raise UserError(f"model '{flavour}' needs the served model's name: --model-args model=NAME "
                            "(what the server lists at GET /v1/models)")
    assert requested is not None
    alias = ALIASES.get(requested.lower())
    if alias is not None and provider != "openai-compatible" and alias[0] != provider:
        other = "claude" if alias[0] == "anthropic" else "gpt-4o"
        raise UserError(f"model '{flavour}' serves {provider} models; model={requested} is an {alias[0]} "
                        f"model: use --model {other} --model-args model={requested}")
    provider, model = resolve_model(requested, provider, base_url)
    base_url = normalise_base_url(provider, base_url)
    shutdown = SHUTDOWN.get(model)
    if shutdown and base_url == DEFAULT_BASE_URLS.get(provider):
        import time

        if time.strftime("%Y-%m-%d", time.gmtime()) >= shutdown:
            raise UserError(f"model '{flavour}': {model} was shut down by {provider} on {shutdown}; give "
                            "--model-args model=<a current model id> (recorded under the new id), or a "
                            "base_url that still serves it")
    resolved: dict[str, Any] = {"provider": provider, "model": model, "base_url": base_url,
                                "requested": requested, "timeout": DEFAULT_TIMEOUT,
                                "max_image_side": MAX_IMAGE_SIDE.get(provider, 0)}
    for name, kind, minimum, maximum in NUMBER_ARGS:
        value = _number(flavour, args, name, kind, minimum, maximum)
        if value is not None:
            resolved[name] = value
    resolved["cache"] = _flag(flavour, "cache", args.get("cache", "true"))
    resolved["allow_external"] = _flag(flavour, "allow_external", args.get("allow_external", "false"))
    return resolved


def check_credentialed(flavour: str, resolved: dict[str, Any], context: ModelContext) -> None:
    """Refuse to send a credentialed task's data to an external API unless the user allows it explicitly."""
    from harness.providers.aliases import is_loopback

    task = context.task
    if task is None or not task.config.credentialed:
        return
    if resolved["allow_external"]:
        return
    if resolved["provider"] == "openai-compatible" and is_loopback(resolved["base_url"]):
        return
    raise UserError(
        f"model '{flavour}': task '{task.id}' holds credentialed data and {resolved['model']} is an external "
        f"API ({resolved['provider']} at {resolved['base_url']}); refusing to send it. Serve a model on this "
        "machine (--model openai-compatible --model-args base_url=http://127.0.0.1:PORT/v1,...) or, if your "
        "data use agreement allows it, add --model-args allow_external=true")


def _client(resolved: dict[str, Any]) -> Any:
    """The provider client of resolved model args (checks the SDK and the key; makes no call)."""
    from harness.providers import make_client

    settings = {k: v for k, v in resolved.items() if k not in ("requested", "allow_external", "max_image_side")}
    settings["model"] = resolved["requested"]  # the alias as given: recorded with its note and pinned id
    return make_client(settings)


def _served_weights(client: Any) -> dict[str, str] | None:
    """The weights the server says it serves under the model name (None: it does not say); a server that cannot be
    asked (down, failing) is a UserError: the run id and the cache keys would name no weights, another run."""
    served = client.served_weights()
    why = client.backend.models_unanswered
    if why is not None:
        raise UserError(f"model 'openai-compatible': no answer from {client.base_url} to GET /models ({why}), which "
                        f"says which weights it serves as '{client.model}' (part of the run id): start the server "
                        "and run again (to re-judge saved predictions without it: harness score RUN_FOLDER)")
    return served


GRAY_ABOVE_PIXELS = 1_000_000  # a grayscale image stored as RGB and larger than this is sent as grayscale


def png_bytes(image: Any, max_side: int = 0) -> bytes:
    """Lossless PNG bytes of one request image (a PIL image; bytes pass through unchanged), its long side
    downscaled (Lanczos) to `max_side` pixels when longer (0: as is). A downscaled image, or one of more than
    GRAY_ABOVE_PIXELS pixels, is written as grayscale when its three channels are equal (the same pixels in a third
    of the bytes); smaller images keep the bytes earlier versions sent, so their cached replies still serve."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    width, height = image.size
    downscaled = bool(max_side) and max(width, height) > max_side
    if downscaled:
        from PIL import Image

        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    if image.mode == "RGB" and (downscaled or width * height > GRAY_ABOVE_PIXELS):
        gray = _gray_channel(image)
        if gray is not None:
            return _png(gray)
    return _png(image)


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _gray_channel(image: Any) -> Any:
    """The one channel of an RGB image whose three channels are equal, else None."""
    from PIL import ImageChops

    red, green, blue = image.split()
    if ImageChops.difference(red, green).getbbox() is None and ImageChops.difference(red, blue).getbbox() is None:
        return red
    return None


class APIVisionModel(ModelPlugin):
    """A zero-shot VLM behind a chat API; subclasses pick the flavour (the registered id)."""

    flavour: ClassVar[str] = "openai-compatible"
    default_batch_size = 32  # the runner saves progress per batch; __init__ raises it with the concurrency
    transport_args = ("concurrency", "timeout", "max_retries", "retry_base_delay", "retry_max_delay", "down_after",
                      "cache", "allow_external")  # allow_external: a permission, the same outputs

    def __init__(self, args: dict[str, str], context: ModelContext) -> None:
        super().__init__(args, context)
        self.resolved = resolve(self.flavour, self.args)
        check_credentialed(self.flavour, self.resolved, context)
        self.client = _client(self.resolved)
        g = context.generation
        if self.client.provider == "anthropic" and g is not None and (g.do_sample or g.seed != 0):
            print("warning: --temperature, --top-p and --seed are not sent: the Anthropic API takes none of them "
                  "(the provider's default sampling answers; run identity: sampling)", file=sys.stderr)
        if self.client.provider == "openai-compatible":
            self.client.served_in_key = True
            _served_weights(self.client)  # asked now, as for the run id: a server down is one line, not a miss
        self.default_batch_size = max(32, 2 * self.resolved.get("concurrency", 16))
        # tokens of every output (cached ones: those of the original call); cost of the calls made now
        self._draws: dict[str, dict[str, int]] = {}  # request key -> sample id -> its draw (see own_draws)
        self.totals = {"requests": 0, "from_cache": 0, "failed": 0, "truncated": 0, "input_tokens": 0,
                       "output_tokens": 0, "cost_usd": 0.0}
        # the model names this invocation's replies gave (live or cached); model.json's and results.json's
        # served_models are counted over every predictions line (harness/served_models.py)
        self.served: dict[str, int] = {}

    @classmethod
    def run_identity(cls, args: dict[str, str], context: ModelContext) -> dict[str, Any]:
        """Provider, pinned model id and endpoint (never a key); refuses credentialed tasks early."""
        resolved = resolve(cls.flavour, dict(args))
        check_credentialed(cls.flavour, resolved, context)
        identity = {k: resolved[k] for k in ("provider", "model", "base_url")}
        if resolved["max_image_side"]:  # what is sent; left out when 0 (as is), as runs made before it recorded
            identity["max_image_side"] = resolved["max_image_side"]
        if resolved["provider"] == "anthropic":
            identity["sampling"] = "provider default: the Anthropic API takes no temperature or seed"
        if resolved["provider"] == "openai-compatible":  # the weights behind the name, as the server says
            served = _served_weights(_client(resolved))
            if served:
                identity["served"] = served
        return identity

    @classmethod
    def canonical_args(cls, args: dict[str, str], context: ModelContext) -> dict[str, str]:
        """The args as given, checked first (before the task's data is read): names, values, credentialed tasks;
        a base URL in its one spelling (no trailing slash, lower-case scheme and host)."""
        resolved = resolve(cls.flavour, dict(args))
        check_credentialed(cls.flavour, resolved, context)
        return {k: resolved["base_url"] if k == "base_url" and v.strip() else v for k, v in args.items()}

    def chat_request(self, request: GenerationRequest) -> Any:
        from harness.providers import ChatRequest

        g: GenerationSettings = request.generation
        side = self.resolved["max_image_side"]
        content: list[dict[str, Any]] = [{"type": "image", "data": png_bytes(img, side)} for img in request.images]
        content.append({"type": "text", "text": request.prompt})
        return ChatRequest(messages=[{"role": "user", "content": content}], max_tokens=g.max_new_tokens,
                           temperature=g.temperature if g.do_sample else 0.0, seed=g.seed,
                           top_p=g.top_p if g.do_sample and g.top_p < 1.0 else None)

    def own_draws(self, requests: list[GenerationRequest], chats: list[Any]) -> list[Any]:
        """When the model samples (temperature > 0, or Anthropic, which takes no temperature), identical requests
        of different samples (the same image and question twice in a split) are separate draws, as a model asked
        once per sample answers them; at temperature 0 one call serves them all. Counted over this run's batches,
        a sample keeping its draw; a resumed run counts again from its first pending sample."""
        from dataclasses import replace

        out = []
        for request, chat in zip(requests, chats):
            if not (chat.temperature > 0 or self.resolved["provider"] == "anthropic"):
                out.append(chat)
                continue
            draws = self._draws.setdefault(self.client.key(chat), {})
            draw = draws.setdefault(request.id, len(draws))
            # a draw of its own: its own seed too (a server honouring the seed, as vLLM does, gave copies)
            seed = chat.seed + draw if chat.seed is not None else None
            out.append(replace(chat, draw=draw, seed=seed) if draw else chat)
        return out

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        """One output per request. Interrupted (SIGINT, SIGTERM), the calls already sent finish first and the
        KeyboardInterrupt carries `partial_outputs` (an output or None per request), which the runner saves."""
        chats = self.own_draws(requests, [self.chat_request(r) for r in requests])
        try:
            results = self.client.run(chats, progress=False, keep_partial=True)  # the runner shows progress
        except KeyboardInterrupt as exc:
            partial = getattr(exc, "partial_results", None) or []
            exc.partial_outputs = [None if result is None else self._output(request, result)  # type: ignore
                                   for request, result in zip(requests, partial)]
            raise
        return [self._output(request, result) for request, result in zip(requests, results)]

    def _output(self, request: GenerationRequest, result: Any) -> GenerationOutput:
        """The output of one reply (counted in `totals`)."""
        t = self.totals
        t["requests"] += 1
        t["from_cache"] += int(result.cached or result.from_cache)  # an interrupted run's reply: paid here
        t["input_tokens"] += result.input_tokens
        t["output_tokens"] += result.output_tokens
        t["cost_usd"] += 0.0 if result.cached else result.cost_usd
        # which model the reply says answered, on the sample's line (served_models counts the lines)
        served = {"served_model": result.served_model} if result.served_model else {}
        if result.served_model:
            self._note_served(result.served_model)
        if result.text is None:  # a reply without text was billed too: its tokens and cost stay on its line
            t["failed"] += 1
            failed = GenerationOutput(text="", error=result.error or "no reply",
                                      prompt_tokens=result.input_tokens or None,
                                      completion_tokens=result.output_tokens or None, details=served or None)
            if _HAS_COST_FIELD and (result.input_tokens or result.output_tokens):
                failed.cost_usd = 0.0 if result.cached else result.cost_usd  # type: ignore[attr-defined]
            return failed
        # cut here too: chat APIs differ in whether they take stop strings, and how many; stripped as the
        # local backends' texts are (" yes" before a stop string is "yes" there)
        out = GenerationOutput(text=request.generation.cut_at_stop(result.text).strip(),
                               prompt_tokens=result.input_tokens, completion_tokens=result.output_tokens)
        if _HAS_COST_FIELD:
            # what this call cost this run: an answer from the cache was paid for before (summing the
            # costs of several runs sharing a cache must not count it twice)
            out.cost_usd = 0.0 if result.cached else result.cost_usd  # type: ignore[attr-defined]
        if result.truncated:  # cut at --max-new-tokens: kept as the protocol's answer, and recorded
            t["truncated"] += 1
        out.details = {**({"truncated": True} if result.truncated else {}), **served} or None
        return out

    def _note_served(self, served: str) -> None:
        """Count the model a reply names; one note the first time it is not the model asked for (a proxy or
        server answering with another model)."""
        if served not in self.served and not same_model(served, self.client.model):
            print(f"note: {self.client.base_url} answered as model '{served}', not '{self.client.model}' (recorded "
                  "in model.json as served_models)", file=sys.stderr)
        self.served[served] = self.served.get(served, 0) + 1

    def identity(self) -> dict[str, Any]:
        info = dict(self.client.describe())
        info["usage"] = dict(self.totals, cost_usd=round(self.totals["cost_usd"], 6))
        info["priced"] = self.client.priced
        info["served_models"] = dict(sorted(self.served.items()))  # the runner counts it over predictions lines
        # which weights or adapter (vLLM's root / parent) and server version answered
        return {**info, **self.client.server_description()}

    def usage_line(self) -> str:
        from harness.providers import pricing

        t = self.totals
        cut = f", {t['truncated']} cut at the token limit" if t["truncated"] else ""
        line = (f"{self.flavour} ({self.client.provider} {self.client.model}): {t['requests']} requests, "
                f"{t['from_cache']} from the cache, {t['failed']} failed{cut}; {t['input_tokens']} input + "
                f"{t['output_tokens']} output tokens; ")
        if not self.client.priced:
            line += f"no API fees counted (not the provider's own endpoint: {self.client.base_url})"
        elif pricing.has_price(self.client.model):
            line += (f"estimated cost of the new calls ${t['cost_usd']:.4f} (list prices as of "
                     f"{pricing.PRICES_AS_OF})")
        else:  # billed by the provider at a price not known here: never shown as $0
            line += f"cost unknown: no list price for {self.client.model} (recorded as $0, not an estimate)"
        return line

    def close(self) -> None:
        if getattr(self, "totals", None) and self.totals["requests"]:
            print(self.usage_line(), file=sys.stderr)


class GPT4oModel(APIVisionModel):
    flavour = "gpt-4o"


class ClaudeModel(APIVisionModel):
    flavour = "claude"


class OpenAICompatibleModel(APIVisionModel):
    flavour = "openai-compatible"
