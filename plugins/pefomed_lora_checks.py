"""Consistency checks of a PeFoMed / MiniGPT-v2 checkpoint's LoRA and projection, made when it is converted.

Conversion has no base model to compare with, so these checks use what the checkpoint says of itself: every LoRA
module has both matrices of one rank; every targeted module is adapted in every layer from 0 to the last one present
(a checkpoint saved half-way through a layer loop, or with some tensors dropped, is refused here rather than at
`harness run`); and the projection's output width is the LLM's hidden size that the LoRA matrices adapt (a
projection from another LLM size is refused here rather than failing at the first sample).
"""

from __future__ import annotations

import re
from typing import Any

from harness.errors import UserError

_LAYER = re.compile(r"^(?P<stem>.*\blayers)\.(?P<n>\d+)\.(?P<rest>.+)$")
#: modules whose input is the LLM's hidden state (lora_A's second dimension is the hidden size)
_HIDDEN_IN = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
#: modules whose output is the LLM's hidden state (lora_B's first dimension is the hidden size)
_HIDDEN_OUT = ("q_proj", "o_proj", "down_proj")


def _few(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def lora_rank(lora: dict[str, Any], modules: list[str], source: str) -> int:
    """The one rank of the LoRA pairs of `modules` (PEFT-named `<module>.lora_{A,B}.weight` keys in `lora`)."""
    ranks = set()
    for module in modules:
        a, b = lora.get(f"{module}.lora_A.weight"), lora.get(f"{module}.lora_B.weight")
        if a is None or b is None:
            raise UserError(f"checkpoint {source}: {module} has only one of lora_A / lora_B")
        if a.shape[0] != b.shape[1]:
            raise UserError(
                f"checkpoint {source}: {module} lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} "
                "have different ranks"
            )
        ranks.add(int(a.shape[0]))
    if len(ranks) != 1:
        raise UserError(f"checkpoint {source}: LoRA ranks differ between modules ({sorted(ranks)})")
    return ranks.pop()


def check_layers_complete(modules: list[str], source: str) -> None:
    """Every adapted module kind (e.g. self_attn.q_proj) in every layer 0..last of its stack."""
    layers: dict[tuple[str, str], set[int]] = {}
    for module in modules:
        m = _LAYER.match(module.removeprefix("base_model.model."))
        if m:
            layers.setdefault((m["stem"], m["rest"]), set()).add(int(m["n"]))
    by_stack: dict[str, int] = {}
    for (stem, _), found in layers.items():
        by_stack[stem] = max(by_stack.get(stem, -1), max(found))
    gaps = []
    for (stem, rest), found in sorted(layers.items()):
        lacking = sorted(set(range(by_stack[stem] + 1)) - found)
        gaps += [f"{stem}.{n}.{rest}" for n in lacking]
    if gaps:
        raise UserError(
            f"checkpoint {source} lacks the LoRA of {len(gaps)} module(s) that the other layers have: "
            f"{_few(gaps)} (a partial or truncated checkpoint; convert the complete one)"
        )


def check_projection_fits(projection: dict[str, Any], lora: dict[str, Any], source: str) -> None:
    """llama_proj maps into the hidden size that the LoRA matrices adapt; its bias matches its weight."""
    weight, bias = projection["llama_proj.weight"], projection["llama_proj.bias"]
    if len(weight.shape) != 2 or tuple(bias.shape) != (weight.shape[0],):
        raise UserError(
            f"checkpoint {source}: llama_proj.weight {tuple(weight.shape)} and llama_proj.bias "
            f"{tuple(bias.shape)} do not form a linear layer (expected [hidden, in] and [hidden])"
        )
    hidden = int(weight.shape[0])
    for key, value in sorted(lora.items()):
        module, ab = key.rsplit(".lora_", 1)
        kind = module.rsplit(".", 1)[-1]
        width = (int(value.shape[1]) if ab.startswith("A") and kind in _HIDDEN_IN
                 else int(value.shape[0]) if ab.startswith("B") and kind in _HIDDEN_OUT else None)
        if width is not None and width != hidden:
            raise UserError(
                f"checkpoint {source}: llama_proj.weight maps to {hidden} features but the LoRA of {module} "
                f"adapts a hidden size of {width} (the projection and the LoRA come from different LLM sizes)"
            )
