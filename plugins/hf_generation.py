"""Generation helpers of the `hf` backend: length-sorted micro-batches, halving on out-of-memory, batch
sizing, the generation config, reading generated token ids back into text and token counts, and the fixed
probe input of the adapter check.

Nothing here imports torch at module level; the functions that need it import it when called.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from harness.errors import UserError

R = TypeVar("R")
log = logging.getLogger(__name__)

MAX_DEFAULT_BATCH = 128
PROMPT_TOKENS_GUESS = 768  # image + text tokens of a typical single-image prompt (LLaVA-1.5: 576 + ~50)
GPU_RESERVE = 0.06  # share of the card's memory the batch size leaves free
ACTIVATION_WIDTHS = 16  # prefill activations per prompt token, in hidden-size vectors (eager LLaMA: about 12)


def length_sorted(keys: Sequence[Any]) -> list[int]:
    """Indices ordered by key, longest first (stable), so that each micro-batch pads little."""
    return sorted(range(len(keys)), key=lambda i: keys[i], reverse=True)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors often span many lines)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def is_image_token_mismatch(exc: BaseException) -> bool:
    """A processor's or model's refusal of inputs whose image tokens and images disagree: a sample (LLaVA-NeXT at
    some image sizes, a literal <image> in a question) or, for every sample, a hand-converted checkpoint."""
    return isinstance(exc, ValueError) and ("image tokens" in str(exc) or "<image> tokens" in str(exc))


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class AdaptiveBatcher:
    """Runs items in micro-batches of at most `limit` (None: all at once).

    `prepare(chunk)` (preprocessing, on the CPU) runs in a worker thread: while `generate(chunk, prepared)`
    runs on the GPU, the next micro-batch is already being prepared. An out-of-memory error halves the limit
    for this and every later call and retries; an item that fails alone at batch size 1 gets
    `on_error(item, exc)`.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.halvings = 0

    def _size(self, start: int, total: int) -> int:
        return min(self.limit or total, total - start)

    def run(self, items: list[Any], prepare: Callable[[list[Any]], Any],
            generate: Callable[[list[Any], Any], list[R]],
            on_error: Callable[[Any, BaseException], R], first: tuple[int, Any] | None = None) -> list[R]:
        """`first`: (size, prepared) of the first micro-batch when it was prepared before this call; used only
        if the micro-batch size has not changed since."""
        from concurrent.futures import Future, ThreadPoolExecutor

        results: list[R] = []
        start = 0
        ahead: tuple[int, int, Any] | None = None  # (start, size, future) of the micro-batch prepared ahead
        if first is not None:
            done: Future[Any] = Future()
            done.set_result(first[1])
            ahead = (0, first[0], done)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-prepare") as pool:
            while start < len(items):
                size = self._size(start, len(items))
                chunk = items[start:start + size]
                if ahead is not None and ahead[:2] == (start, size):
                    future = ahead[2]
                else:
                    future = pool.submit(prepare, chunk)
                ahead, out_of_memory, refused = None, False, False
                try:
                    prepared = future.result()
                    nxt = start + size
                    if nxt < len(items):
                        ahead = (nxt, self._size(nxt, len(items)),
                                 pool.submit(prepare, items[nxt:nxt + self._size(nxt, len(items))]))
                    results.extend(generate(chunk, prepared))
                except Exception as exc:  # noqa: BLE001 - out-of-memory and refused inputs handled, the rest re-raised
                    refused = is_image_token_mismatch(exc)
                    if not refused and not is_out_of_memory(exc):
                        raise
                    out_of_memory = not refused  # handled after the `except`: its traceback holds the batch's tensors
                if refused:  # the samples alone: those refused fail, the others go on
                    prepared = future = None
                    results.extend(self._one_by_one(chunk, prepare, generate, on_error))
                    start += size
                    continue
                if out_of_memory:
                    prepared = future = None
                    free_memory()
                    if size == 1:
                        results.append(on_error(chunk[0], MemoryError("out of memory at batch size 1")))
                        start += 1
                        continue
                    self.limit = max(1, size // 2)
                    self.halvings += 1
                    log.warning("out of memory at batch size %d: going on with %d", size, self.limit)
                    continue
                start += size
        return results

    @staticmethod
    def _one_by_one(chunk: list[Any], prepare: Callable[[list[Any]], Any],
                    generate: Callable[[list[Any], Any], list[R]],
                    on_error: Callable[[Any, BaseException], R]) -> list[R]:
        """Each item of a micro-batch the processor or model refused over image tokens, alone: an item refused
        alone fails with the reason (a hand-converted checkpoint refuses every one)."""
        results: list[R] = []
        for item in chunk:
            try:
                results.extend(generate([item], prepare([item])))
            except ValueError as exc:
                if not is_image_token_mismatch(exc):
                    raise
                results.append(on_error(item, ValueError(
                    f"{first_line(exc)} (the processor's image tokens and the model's image features disagree for "
                    "this sample: a hand-converted checkpoint's chat template must write the image placeholder, "
                    "and its processor count the model's image tokens)")))
        return results


def kv_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """Key/value cache bytes per token of the language model described by `config` (0 if unknown)."""
    text = getattr(config, "text_config", None) or getattr(config, "decoder", None) or config
    try:
        layers = int(text.num_hidden_layers)
        heads = int(text.num_attention_heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    except (AttributeError, TypeError, ValueError):
        return 0
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def pick_batch_size(*, n_params: int, dtype_bytes: int, kv_per_token: int, new_tokens: int,
                    gpu_free: int | None, gpu_total: int | None = None, prompt_tokens: int | None = None,
                    images_per_sample: int = 1, hidden_size: int = 0) -> int:
    """Default (micro-)batch size.

    On GPU: as many samples as the memory free after loading (`gpu_free`, less a reserve of 6% of the card
    for CUDA graphs, workspaces and fragmentation) holds, each taking its KV cache for the prompt plus the new
    tokens and the prefill's activations (about 16 hidden-size vectors per prompt token); rounded down to a
    multiple of 16, at most 128. `prompt_tokens` is the task's measured (padded) prompt length; without it a
    typical single-image prompt per image is assumed. On the CPU: a small batch (large ones only add padding)."""
    if not gpu_free:
        return 16 if n_params < 50e6 else (4 if n_params < 1e9 else 1)
    prompt = prompt_tokens or PROMPT_TOKENS_GUESS * max(1, images_per_sample)
    budget = gpu_free - GPU_RESERVE * (gpu_total or gpu_free)
    per_sample = max(kv_per_token, 1) * (prompt + new_tokens) + ACTIVATION_WIDTHS * hidden_size * dtype_bytes * prompt
    batch = int(budget // per_sample) if budget > 0 else 1
    if batch >= 16:
        batch -= batch % 16
    return max(1, min(MAX_DEFAULT_BATCH, batch))


def measure_prompt_tokens(task: Any, encode: Callable[[list[Any]], Any], n: int = 16, *, split: str | None = None,
                          template: str | None = None, settings: Any = None) -> int | None:
    """The longest prompt (image and text tokens, padded as generation pads it) among the first `n` samples of
    the run's split, with the run's prompt template and settings (the task's defaults when not given),
    encoded by `encode`; None when it cannot be measured (images or split files missing, no samples)."""

    try:
        if template is None:
            _, template = task.prompt_template(None)
        settings = settings or task.generation_settings()
        lengths = []
        for sample in task.samples(split)[:n]:
            images = [ref.open() for ref in sample.images]
            enc = encode([task.build_request(sample, template, settings, images)])
            lengths.append(int(enc["input_ids"].shape[-1]))
    except (OSError, ValueError, KeyError, TypeError, UserError) as exc:
        log.info("prompt length not measured (%s): assuming %d tokens per image", first_line(exc),
                 PROMPT_TOKENS_GUESS)
        return None
    return max(lengths, default=None)


def static_batch_size(n: int, limit: int | None) -> int:
    """`n` rounded up to a power of two, but not above `limit` (nor below `n`)."""
    size = 1 << max(0, n - 1).bit_length()
    return max(n, min(size, limit or size))


def completion_ids(row: Sequence[int], *, prompt: Sequence[int] | None, skip_leading: set[int],
                   eos: set[int]) -> list[int]:
    """The generated token ids of one output row: without the echoed prompt (decoder-only models return it),
    without leading decoder-start/bos ids (encoder-decoder models), cut at the first end-of-sequence id."""
    ids = list(row)
    if prompt is not None and len(ids) >= len(prompt) and ids[:len(prompt)] == list(prompt):
        ids = ids[len(prompt):]
    while ids and ids[0] in skip_leading:
        ids = ids[1:]
    for i, token in enumerate(ids):
        if token in eos:
            return ids[:i]
    return ids


def leading_ids(config: Any, generation_config: Any, family: str) -> set[int]:
    """Token ids an output row starts with that the model did not generate as its answer: the decoder-start and bos
    ids of BLIP and VisionEncoderDecoder captioners, and the decoder-start id of any encoder-decoder language model
    (BLIP-2 and InstructBLIP with Flan-T5: left in, it was counted as an answer token, so an answer ending exactly
    at the limit was marked truncated)."""
    gc = generation_config
    ids = {t for t in (gc.decoder_start_token_id, gc.bos_token_id) if t is not None} \
        if family in ("blip", "vision-encoder-decoder") else set()
    text = getattr(config, "text_config", None)
    if getattr(config, "is_encoder_decoder", False) or getattr(text, "is_encoder_decoder", False):
        ids |= {t for t in (gc.decoder_start_token_id, getattr(text, "decoder_start_token_id", None))
                if isinstance(t, int)}
    return ids


def decoded_outputs(sequences: Any, enc: Any, tokenizer: Any, settings: Any, *, skip_leading: set[int],
                    eos: set[int]) -> list[Any]:
    """One GenerationOutput per row of `generate`'s sequences: the answer text (cut at a stop string), its token
    counts, and `details.truncated` when it stopped at max_new_tokens (as many tokens as allowed, no end of sequence
    and no stop string: an answer cut short, which the run's summary counts)."""
    from harness.types import GenerationOutput

    input_ids, mask = enc.get("input_ids"), enc.get("attention_mask")
    outputs = []
    for i, row in enumerate(sequences.tolist()):
        prompt = input_ids[i].tolist() if input_ids is not None else None
        ids = completion_ids(row, prompt=prompt, skip_leading=skip_leading, eos=eos)
        raw = tokenizer.decode(ids, skip_special_tokens=True)
        text = settings.cut_at_stop(raw)
        cut = len(ids) >= settings.max_new_tokens and text == raw
        outputs.append(GenerationOutput(text=text.strip(), completion_tokens=len(ids),
                                        prompt_tokens=int(mask[i].sum()) if mask is not None else 0,
                                        details={"truncated": True} if cut else None))
    return outputs


#: what the harness keeps of a checkpoint's generation_config.json
TOKEN_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def tokens_only(config: Any) -> tuple[Any, dict[str, Any]]:
    """(a GenerationConfig holding only the special token ids of `config`, the checkpoint's other settings it
    drops). To be the model's own config: transformers' generate fills every setting the harness leaves at
    transformers' default (repetition_penalty 1.0, top_k 50, ...) from the model's, so a checkpoint's
    repetition_penalty 1.05 (Qwen2-VL) or num_beams would otherwise reach runs that ask for plain greedy decoding."""
    from transformers import GenerationConfig

    dropped = {k: v for k, v in config.to_diff_dict().items()
               if k not in TOKEN_KEYS and k != "transformers_version" and not k.startswith("_")}
    kept = {k: getattr(config, k) for k in TOKEN_KEYS if getattr(config, k, None) is not None}
    return GenerationConfig(**kept), dropped


def _generation_configs(model: Any) -> list[tuple[Any, Any]]:
    """(module, its GenerationConfig) for the model and every submodule that has one of its own (BLIP's text
    decoder, BLIP-2's and InstructBLIP's language model generate with theirs)."""
    from transformers import GenerationConfig

    return [(m, m.generation_config) for m in model.modules()
            if isinstance(getattr(m, "generation_config", None), GenerationConfig)]


def ignored_generation_settings(model: Any) -> dict[str, Any]:
    """The settings of the model's generation configs that `token_ids_only` keeps out of generation:
    repetition_penalty, num_beams, top_k, ..."""
    dropped: dict[str, Any] = {}
    for _, config in _generation_configs(model):
        dropped.update(tokens_only(config)[1])
    return dropped


@contextmanager
def token_ids_only(model: Any) -> Iterator[None]:
    """During generation the model and every submodule with a generation config of its own have a tokens-only
    config; the checkpoint's configs are put back afterwards (a model saved later keeps them)."""
    saved = _generation_configs(model)
    for module, config in saved:
        module.generation_config = tokens_only(config)[0]
    try:
        yield
    finally:
        for module, config in saved:
            module.generation_config = config


def generation_config(base: Any, settings: Any, *, eos_ids: set[int], pad_id: int | None, min_new_tokens: int,
                      static_cache: bool, prefill_chunk: int = 0) -> Any:
    """A fresh GenerationConfig from the harness's settings: greedy unless sampling is asked for; of the
    checkpoint's own generation config only the special token ids are used (not its sampling or penalties)."""
    from transformers import GenerationConfig

    config = GenerationConfig(  # sampled answers are drawn by row_sampling's logits processor, then taken greedily
        max_new_tokens=settings.max_new_tokens, min_new_tokens=min_new_tokens or None,
        do_sample=False, num_beams=1, eos_token_id=sorted(eos_ids) or None, pad_token_id=pad_id,
        bos_token_id=base.bos_token_id, decoder_start_token_id=base.decoder_start_token_id)
    if static_cache:
        config.cache_implementation = "static"
    if prefill_chunk:  # the prompt in chunks of this many tokens (compiled like decoding steps on CUDA)
        config.prefill_chunk_size = prefill_chunk
    return config


def probe_request(request_id: str) -> Any:
    """A fixed input (a deterministic gradient image and a short prompt) for checking that an adapter acts."""
    import numpy as np
    from PIL import Image

    from harness.types import GenerationRequest, GenerationSettings

    prompt = "Describe the image."
    ramp = np.linspace(0, 255, 96, dtype=np.float64)
    pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, 255 - ramp) / 2,
                       np.full((96, 96), 128.0)], axis=-1).astype(np.uint8)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return GenerationRequest(id=request_id, images=[Image.fromarray(pixels, "RGB")], prompt=prompt,
                             messages=messages, generation=GenerationSettings(), task_kind="caption")
