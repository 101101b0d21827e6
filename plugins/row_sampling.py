"""Sampling that gives each sample its own random stream, so a sampled answer does not depend on the batch.

With `--temperature > 0` a sample's draws come from a torch generator seeded from `--seed` and the sample's id
(`row_seed`): the same sample gets the same answer whatever batch, micro-batch or order it is generated in (as
with vLLM's per-request seed), and an out-of-memory retry draws the same again. Temperature, then top-p (the
smallest set of tokens whose probability reaches it), then one uniform draw per sample and step (inverse CDF;
the generators are on the CPU, so a seed draws the same numbers on any device). The hf
backend uses it as a logits processor in transformers' `generate` (which then takes the drawn token greedily);
PeFoMed's decoder calls `draw` directly. torch is imported by the callers' code paths only.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: how a run records its sampling (model.json's `sampling_seed`)
SAMPLING_SEED = ("one CPU torch generator per sample, seeded from --seed and the sample id, inverse-CDF draws: "
                 "independent of the batch")


def row_seed(seed: int, sample_id: str) -> int:
    """A 63-bit seed of (`seed`, `sample_id`)."""
    digest = hashlib.sha256(f"{seed}\0{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def row_generators(seed: int, sample_ids: list[str]) -> list[torch.Generator]:
    """One seeded CPU generator per sample: its uniform draws are the same on every device (`draw` moves them to
    the logits in one copy per step)."""
    import torch

    generators = []
    for sample_id in sample_ids:
        generator = torch.Generator()
        generator.manual_seed(row_seed(seed, sample_id))
        generators.append(generator)
    return generators


def warp(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Logits [B, V] divided by the temperature, with the tokens outside each row's top-p set at -inf."""
    import torch

    logits = logits.to(torch.float32) / max(temperature, 1e-5)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def draw(logits: torch.Tensor, temperature: float, top_p: float, generators: list[torch.Generator]) -> torch.Tensor:
    """One token per row [B], row i drawn with generators[i] only: one uniform number per row (on the CPU), then
    inverse-CDF sampling of all rows at once where the logits are (no kernel launches per row on a GPU)."""
    import torch

    probs = warp(logits, temperature, top_p).softmax(-1)
    wide = torch.float64 if probs.device.type in ("cpu", "cuda") else torch.float32  # MPS has no float64
    uniform = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators]).to(wide)
    cdf = probs.to(wide).cumsum(-1)
    target = uniform.to(cdf.device) * cdf[:, -1]
    # the first token whose cumulative probability exceeds the target: never one of probability 0
    token = torch.searchsorted(cdf, target.unsqueeze(-1), right=True).squeeze(-1)
    return token.clamp(max=probs.shape[-1] - 1)


def logits_processor(temperature: float, top_p: float, generators: list[torch.Generator]) -> Any:
    """A transformers logits processor that draws each row's next token and leaves only it possible (to be used
    with greedy decoding; transformers applies it after its own processors, e.g. min_new_tokens)."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class DrawPerRow(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            token = draw(scores, temperature, top_p, generators)
            chosen = torch.full_like(scores, float("-inf"))
            return chosen.scatter_(1, token[:, None], 0.0)

    return LogitsProcessorList([DrawPerRow()])
