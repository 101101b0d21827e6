"""Batched decoding of a causal LM from left-padded inputs_embeds: greedy or sampled, dynamic or static cache.

The same computation as transformers' `generate(inputs_embeds=..., attention_mask=...)` (position ids from the
padding mask, logits of the last position only), written out so that the static cache can be sized in buckets
and kept between batches: with `cache="static"` and `compile=True` the one-token decoding step is compiled
once per (batch size, cache length) with CUDA graphs (transformers' `get_compiled_call`, i.e. torch.compile
with mode="reduce-overhead") instead of once per prompt length. If compilation fails, decoding falls back to
eager mode with a warning (out of memory is raised, for the caller to retry in smaller batches). A kept cache
that is long enough is reused for shorter batches, so prompts either side of a bucket boundary share one.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.plugins import row_sampling
from harness.plugins.hf_generation import is_out_of_memory

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class DecodeResult:
    tokens: list[list[int]]  # generated ids per row, cut after the first stop id (which is not included)
    finished: list[bool]  # whether the row stopped on a stop id


class Decoder:
    def __init__(self, llm: Any, cache: str = "dynamic", compile: bool = False, bucket: int = 64) -> None:
        if cache not in ("dynamic", "static"):
            raise ValueError(f"cache must be 'dynamic' or 'static', not {cache!r}")
        self.llm = llm
        self.cache = cache
        self.compile = compile and cache == "static"
        self.bucket = max(1, bucket)
        self._static: tuple[int, int, Any, Any] | None = None  # (batch, length, StaticCache, mask buffer)
        self._step = None

    def _step_fn(self):
        if self._step is None:
            if self.compile:
                import torch

                if hasattr(self.llm, "get_compiled_call"):  # transformers' own decoding-step compilation
                    self._step = self.llm.get_compiled_call(None)
                else:
                    self._step = torch.compile(self.llm.__call__, mode="reduce-overhead")
            else:
                self._step = self.llm.__call__
        return self._step

    def _static_cache(self, batch: int, needed: int, device: torch.device) -> tuple[Any, torch.Tensor]:
        import torch
        from transformers import StaticCache

        length = -(-needed // self.bucket) * self.bucket
        if self._static is not None and self._static[0] == batch and self._static[1] >= length:
            # a kept cache that is long enough serves shorter batches too (the mask covers its whole length),
            # so prompts straddling a bucket boundary do not re-allocate it and recompile the decoding step
            _, _, cache, mask = self._static
            cache.reset()
            mask.fill_(1)
            return cache, mask
        self._static = None
        cache = StaticCache(config=self.llm.config, max_cache_len=length)
        mask = torch.ones(batch, length, dtype=torch.long, device=device)
        self._static = (batch, length, cache, mask)
        return cache, mask

    def release(self) -> None:
        """Drop the kept static cache (frees its memory; the next batch allocates a new one)."""
        self._static = None

    def _decode_step(self, **inputs):
        step = self._step_fn()
        try:
            return step(**inputs)
        except Exception as exc:  # noqa: BLE001 - a compiler failure must not lose the run
            if not self.compile or is_out_of_memory(exc):  # out of memory is the caller's to handle (halving)
                raise
            warnings.warn(
                f"compiled decoding failed ({type(exc).__name__}: {exc}); decoding in eager mode",
                stacklevel=2,
            )
            self.compile = False
            self._step = self.llm.__call__
            return self._step(**inputs)

    def generate(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        *,
        max_new_tokens: int,
        stop_ids: list[int],
        min_new_tokens: int = 0,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int = 0,
        sample_ids: list[str] | None = None,
    ) -> DecodeResult:
        """embeds [B, T, H] left-padded, mask [B, T] (1 = token, 0 = padding). Sampling draws row i from its own
        generator seeded from `seed` and sample_ids[i] (default: the row number), so it is batch-independent."""
        import torch
        from transformers import DynamicCache

        batch, length = mask.shape
        device = embeds.device
        mask = mask.to(device=device, dtype=torch.long)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        if self.cache == "static":
            cache, full_mask = self._static_cache(batch, length + max_new_tokens, device)
            full_mask[:, :length] = mask
            prefill_mask = full_mask
        else:
            cache, full_mask = DynamicCache(config=self.llm.config), None
            prefill_mask = mask
        generators = (row_sampling.row_generators(seed, sample_ids or [str(i) for i in range(batch)])
                      if do_sample else None)
        stop = torch.tensor(sorted(set(stop_ids)), device=device, dtype=torch.long)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        out: list[torch.Tensor] = []
        with torch.no_grad():
            result = self.llm(
                inputs_embeds=embeds,
                attention_mask=prefill_mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
                cache_position=torch.arange(length, device=device),
            )
            last_pos = positions[:, -1:]
            # decoding positions made once: a tensor built from a Python int each step would copy host-to-device
            steps = torch.arange(length, length + max_new_tokens, device=device)
            for step in range(max_new_tokens):
                # a copy: the outputs of a CUDA-graph step are overwritten by the next step
                logits = result.logits[:, -1, :].to(torch.float32, copy=True)
                if step < min_new_tokens and stop.numel():
                    logits[:, stop] = float("-inf")
                token = (row_sampling.draw(logits, temperature, top_p, generators) if generators is not None
                         else logits.argmax(dim=-1))
                token = torch.where(finished, stop[0] if stop.numel() else token, token)
                out.append(token)
                if stop.numel():
                    finished |= torch.isin(token, stop)
                if step + 1 == max_new_tokens or (step + 1 >= min_new_tokens and bool(finished.all())):
                    break
                last_pos = last_pos + 1
                if full_mask is not None:
                    step_mask = full_mask
                else:
                    mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype, device=device)], dim=1)
                    step_mask = mask
                result = self._decode_step(
                    input_ids=token[:, None].clone(),
                    attention_mask=step_mask,
                    position_ids=last_pos,
                    past_key_values=cache,
                    use_cache=True,
                    cache_position=steps[step:step + 1],
                )
        ids = torch.stack(out, dim=1).tolist() if out else [[] for _ in range(batch)]
        stop_set = set(stop_ids)
        tokens, done = [], []
        for row in ids:
            cut = next((i for i, t in enumerate(row) if t in stop_set), None)
            tokens.append(row if cut is None else row[:cut])
            done.append(cut is not None)
        return DecodeResult(tokens=tokens, finished=done)
