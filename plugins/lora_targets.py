"""Which modules a fine-tune trains: target presets, the model's parts, LoRA rank rules.

Presets (`harness finetune --targets`):
- `llm-attn`: LoRA on the language model's query/value projections only (q_proj/v_proj, or the model's
  equivalent), selected by a regex on the language-model path: a plain list of names would also hit the vision
  tower's q_proj/v_proj. Under 1% of the parameters of a 7B model at rank 64 (PeFoMed's setting).
- `llm-all-linear`: LoRA on every linear layer of the language model (not the output head).
- `decoder-only`, `encoder-only`, `full`: the BLIP-on-ROCO ablation for encoder-decoder captioners. They train
  the text decoder, the vision encoder, or the whole model (for LLaVA-style models: the language model, the
  vision tower, or everything), with LoRA on all their linear layers (`--method lora`) or all their weights
  (`--method full`).
- `re:<regex>`: LoRA on the modules whose full name matches the regex (PEFT's `re.fullmatch`).

The output head is never a LoRA target and no `modules_to_save` is used, so adapters also load in vLLM, whose
LoRA ranks are limited to `VLLM_RANKS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UserError

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
PRESETS = ("llm-attn", "llm-all-linear", "decoder-only", "encoder-only", "full")
METHODS = ("lora", "full")
# Names of the parts of vision-language models, shallowest match wins (transformers 5 module names).
VISION_NAMES = ("vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder", "vpm", "encoder")
LANGUAGE_NAMES = ("language_model", "text_model", "text_decoder", "llm", "decoder")
# Query/value projections of the language model, by architecture; the first group present is used.
ATTENTION_GROUPS = (("q_proj", "v_proj"), ("query", "value"), ("q", "v"), ("qkv_proj",), ("c_attn",),
                    ("query_key_value",), ("Wqkv",))


@dataclass
class TargetPlan:
    """What to train: `regex` + `modules` for LoRA, or `parameters` (names) for full fine-tuning."""

    preset: str
    method: str
    modules: list[str] = field(default_factory=list)
    regex: str | None = None
    parameters: list[str] = field(default_factory=list)
    parts: dict[str, str | None] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"preset": self.preset, "method": self.method, "parts": dict(self.parts)}
        if self.method == "lora":
            out.update(target_modules=self.regex, n_modules=len(self.modules), first_modules=self.modules[:4])
        else:
            out.update(n_parameter_tensors=len(self.parameters), first_parameters=self.parameters[:4])
        return out


def check_rank(rank: int) -> int:
    """LoRA ranks vLLM serves; anything else is refused so every adapter stays servable."""
    if rank not in VLLM_RANKS:
        raise UserError(f"--rank {rank}: LoRA rank must be one vLLM accepts: "
                        f"{', '.join(str(r) for r in VLLM_RANKS)}")
    return rank


def check_preset(preset: str, method: str) -> None:
    if method not in METHODS:
        raise UserError(f"--method {method}: expected one of {', '.join(METHODS)}")
    if preset.startswith("re:"):
        try:
            re.compile(preset[3:])
        except re.error as exc:
            raise UserError(f"--targets {preset}: not a valid regular expression ({exc})") from None
        return
    if preset not in PRESETS:
        raise UserError(f"--targets {preset}: expected one of {', '.join(PRESETS)} or re:<regex>")


def _depth(name: str) -> int:
    return name.count(".") + 1


def find_part(model: Any, names: tuple[str, ...]) -> str | None:
    """Module path of a model part (the shallowest module whose own name is in `names`), or None."""
    best: tuple[int, int, str] | None = None
    for path, module in model.named_modules():
        leaf = path.rsplit(".", 1)[-1]
        if leaf in names and any(True for _ in module.parameters()):
            key = (_depth(path), names.index(leaf), path)
            if best is None or key < best:
                best = key
    return best[2] if best else None


def model_parts(model: Any) -> dict[str, str | None]:
    """{"vision": path, "language": path} of a vision-language model (None where not found)."""
    vision = find_part(model, VISION_NAMES)
    language = find_part(model, LANGUAGE_NAMES)
    if vision is not None and language is not None and (
            language.startswith(vision + ".") or vision.startswith(language + ".")):
        vision = None  # one part inside the other: the names did not identify two parts
    return {"vision": vision, "language": language}


def _is_linear(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2 style


def _output_heads(model: Any) -> list[Any]:
    """The output (vocabulary) layers of the model and of its sub-models (BLIP's text decoder has its own)."""
    heads = []
    for module in model.modules():
        getter = getattr(module, "get_output_embeddings", None)
        if getter is None:
            continue
        try:
            head = getter()
        except (AttributeError, NotImplementedError, TypeError):
            continue
        if head is not None and not any(head is h for h in heads):
            heads.append(head)
    return heads


def linear_modules(model: Any, prefix: str | None) -> list[str]:
    """Names of the linear layers under `prefix` ("" = the whole model), without the output head."""
    heads = _output_heads(model)
    names = []
    for path, module in model.named_modules():
        if prefix and not path.startswith(prefix + "."):
            continue
        if _is_linear(module) and not any(module is h for h in heads):
            names.append(path)
    return names


def _under(prefix: str) -> str:
    return re.escape(prefix) + r"\..*\." if prefix else r"(.*\.)?"


def _regex_for(modules: list[str], prefix: str, model: Any) -> str:
    """A readable regex (`<prefix>\\..*\\.(leaf|leaf)`) if it selects exactly `modules`, else their names."""
    leaves = sorted({m.rsplit(".", 1)[-1] for m in modules})
    regex = _under(prefix) + "(" + "|".join(re.escape(leaf) for leaf in leaves) + ")"
    pattern = re.compile(regex)
    if sorted(n for n, _ in model.named_modules() if n and pattern.fullmatch(n)) == sorted(modules):
        return regex
    return "(" + "|".join(re.escape(m) for m in modules) + ")"


def _need(part: str | None, what: str, preset: str, model: Any) -> str:
    if part is None:
        names = ", ".join(VISION_NAMES if what == "vision encoder" else LANGUAGE_NAMES)
        raise UserError(f"--targets {preset}: cannot find the {what} of {type(model).__name__} (looked for "
                        f"modules named {names}); use --targets re:<regex>")
    return part


def plan_targets(model: Any, preset: str, method: str = "lora") -> TargetPlan:
    """Resolve a preset on a loaded (not yet wrapped) model into module and parameter names."""
    check_preset(preset, method)
    parts = model_parts(model)
    plan = TargetPlan(preset=preset, method=method, parts=parts)
    if preset.startswith("re:"):
        if method != "lora":
            raise UserError(f"--targets {preset}: a regex selects LoRA targets; use --method lora")
        pattern = re.compile(preset[3:])
        heads = _output_heads(model)
        matched = [n for n, m in model.named_modules() if n and pattern.fullmatch(n)]
        plan.modules = [n for n, m in model.named_modules() if n in set(matched) and _is_linear(m)
                        and not any(m is head for head in heads)]  # never the output head: vLLM loads no LoRA there
        if not plan.modules and any(m is head for n, m in model.named_modules() if n in set(matched) for head in heads):
            raise UserError(f"--targets {preset} selects only the output head, which is never a LoRA target (vLLM "
                            "loads no LoRA there); choose other layers")
        # LoRA wraps linear layers only: keep the user's regex if that is all it matches, else name them.
        plan.regex = preset[3:] if len(plan.modules) == len(matched) else (
            "(" + "|".join(re.escape(m) for m in plan.modules) + ")")
    elif preset == "llm-attn":
        language = _need(parts["language"], "language model", preset, model)
        present = linear_modules(model, language)
        for group in ATTENTION_GROUPS:
            chosen = [m for m in present if m.rsplit(".", 1)[-1] in group]
            if chosen:
                plan.modules = chosen
                break
        plan.regex = _regex_for(plan.modules, language, model) if plan.modules else None
    else:
        parts_of = {"llm-all-linear": "language", "decoder-only": "language", "encoder-only": "vision"}
        prefix = parts_of.get(preset)
        where = _need(parts[prefix], "language model" if prefix == "language" else "vision encoder", preset,
                      model) if prefix else ""
        plan.modules = linear_modules(model, where)
        if method == "full" and preset != "llm-all-linear":
            plan.parameters = [n for n, _ in model.named_parameters()
                               if not where or n.startswith(where + ".")]
        plan.regex = _regex_for(plan.modules, where, model) if plan.modules else None
    if method == "full" and not plan.parameters:
        wanted = set(plan.modules)
        plan.parameters = [n for n, _ in model.named_parameters() if n.rsplit(".", 1)[0] in wanted]
    if not plan.modules and not plan.parameters:
        raise UserError(f"--targets {preset} selects no layer of {type(model).__name__}")
    return plan


def apply_plan(model: Any, plan: TargetPlan, rank: int, alpha: float, dropout: float) -> Any:
    """Freeze the model and make the planned parts trainable: a PEFT LoRA wrapper, or unfrozen weights."""
    for p in model.parameters():
        p.requires_grad_(False)
    if plan.method == "full":
        wanted = set(plan.parameters)
        for name, p in model.named_parameters():
            if name in wanted:
                p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=check_rank(rank), lora_alpha=alpha, lora_dropout=dropout, bias="none",
                        target_modules=plan.regex, modules_to_save=None)
    return get_peft_model(model, config)


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts; total includes the frozen base and any adapter weights."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
