"""`--model-args` of the `pefomed` model: what it takes (ARGS), their checks, and the options they give.

Every check is a one-line UserError naming the argument and what was expected; nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import UserError, close_hint
from harness.flags import flag_setting, parse_number
from harness.plugins import pefomed_checkpoint as ckpt

EVA_URL = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth"
ARGS = {
    "llm": "LLaMA-2-chat in HF format: hub id or directory (default meta-llama/Llama-2-7b-chat-hf)",
    "llm_revision": "hub commit of llm= (default: a pinned commit for the default llm, main for other hub ids)",
    "vision": "LAVIS eva_vit_g.pth (required)",
    "vision_config": "JSON file of Blip2VisionConfig fields replacing the EVA ViT-g/14 shapes (test models)",
    "checkpoint": "PeFoMed or MiniGPT-v2 .pth (projection + LoRA); or use --adapter DIR",
    "lora_alpha": "LoRA alpha for checkpoint= (not stored in the .pth; default 16)",
    "trust_pickle": "true: let torch.load unpickle Python objects in checkpoint/vision files (default false)",
    "text_processor": "pefomed (default) or none",
    "cache": "static or dynamic KV cache (default static on CUDA)",
    "compile": "true/false: compile the decoding step (default true on CUDA with the static cache)",
    "compile_vision": "true/false: torch.compile the vision encoder (default false)",
    "attn": "attention implementation: sdpa (default), eager, flash_attention_2",
    "merge": "true/false: merge LoRA into the weights (default true)",
    "vision_batch": "images per vision-encoder pass (default 64)",
    "min_new_tokens": "generate at least this many tokens (default 0; for benchmarks)",
    "embed_only": "true: load only what embed_requests needs (for vLLM), no generation",
    "train": "true: keep LoRA unmerged and trainable (harness finetune)",
    "lora_r": "rank of a fresh LoRA when training from scratch (train=true; default 64)",
    "lora_dropout": "LoRA dropout while training (train=true; default 0.05)",
}
PATH_ARGS = ("llm", "vision", "checkpoint", "vision_config")  # llm may also be a hub id
_DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
           "half": "float16", "float32": "float32", "fp32": "float32", "float": "float32"}


def _flag(args: dict[str, str], key: str, default: bool) -> bool:
    return flag_setting(args, key, default, "--model-args")


def train_flag(args: dict[str, str]) -> bool:
    """train=true: a training load (harness finetune)."""
    return _flag(args, "train", False)


def _int(args: dict[str, str], key: str, default: int, minimum: int) -> int:
    if not args.get(key):
        return default
    return parse_number(args[key], f"--model-args {key}={args[key]}", int, minimum)


def _dropout(args: dict[str, str]) -> float:
    try:
        value = float(args.get("lora_dropout") or ckpt.DEFAULT_LORA_DROPOUT)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:  # NaN and inf too
        raise UserError(f"--model-args lora_dropout={args['lora_dropout']}: expected a number in [0, 1)")
    return value


def _alpha(args: dict[str, str]) -> float:
    if not args.get("lora_alpha"):
        return float(ckpt.DEFAULT_LORA_ALPHA)
    return parse_number(args["lora_alpha"], f"--model-args lora_alpha={args['lora_alpha']}", float, 0)


def default_options(on_cuda: bool) -> dict[str, Any]:
    return {"cache": "static" if on_cuda else "dynamic", "compile": on_cuda, "compile_vision": False,
            "attn": "sdpa", "merge": True, "vision_batch": 64, "min_new_tokens": 0,
            "lora_alpha": float(ckpt.DEFAULT_LORA_ALPHA), "trust_pickle": False, "embed_only": False}


def check_args(args: dict[str, str], adapter: Path | str | None) -> bool:
    """Refuse unknown or missing arguments; return whether this is a training load (train=true)."""
    unknown = sorted(set(args) - set(ARGS))
    if unknown:
        flags = [f"--{k} is a flag of harness run" for k in unknown if k in ("dtype", "device")]
        hint = f" ({'; '.join(flags)})" if flags else close_hint(unknown, ARGS)
        raise UserError(f"model 'pefomed' does not take --model-args {', '.join(unknown)}{hint}; it takes "
                        f"{', '.join(ARGS)} (the README's "
                        "PeFoMed section says what each does)")
    if not args.get("vision"):
        raise UserError("model 'pefomed' needs --model-args vision=PATH to LAVIS eva_vit_g.pth "
                        f"(download: {EVA_URL})")
    train_mode = train_flag(args)
    if args.get("checkpoint") and adapter:
        raise UserError(
            "model 'pefomed': give the trainable weights once, either checkpoint=... or --adapter")
    idle = [k for k in ("lora_r", "lora_dropout") if k in args and not train_mode]
    if "lora_alpha" in args and adapter and not train_mode:
        idle.append("lora_alpha")
    if idle:  # accepted silently, they named another run that was the same model
        raise UserError(f"model 'pefomed': --model-args {', '.join(idle)} would change nothing here (lora_r and "
                        "lora_dropout apply to training, train=true; with --adapter the alpha is its "
                        "adapter_config.json's); leave them out")
    if not args.get("checkpoint") and not adapter and not train_mode:
        raise UserError("model 'pefomed' needs its trained projection and LoRA: --model-args "
                        "checkpoint=X.pth (PeFoMed or MiniGPT-v2) or --adapter DIR (from "
                        "`harness convert pefomed-checkpoint`)")
    return train_mode


def dtype_name(requested: str | None, on_cuda: bool) -> str:
    """The torch dtype name for --dtype (default bfloat16 on CUDA, float32 elsewhere)."""
    name = _DTYPES.get((requested or ("bfloat16" if on_cuda else "float32")).lower())
    if name is None:
        raise UserError(f"--dtype {requested}: expected bfloat16, float16 or float32")
    return name


def process_text(args: dict[str, str]) -> bool:
    """Whether PeFoMed's text processing applies to the instruction (text_processor=pefomed, the default)."""
    if args.get("text_processor") not in (None, "", "pefomed", "none"):
        raise UserError(f"--model-args text_processor={args['text_processor']}: expected pefomed or none")
    return (args.get("text_processor") or "pefomed") != "none"


ATTN = ("sdpa", "eager", "flash_attention_2")


def _attn(args: dict[str, str]) -> str:
    attn = args.get("attn") or "sdpa"
    if attn not in ATTN:
        raise UserError(f"--model-args attn={attn}: expected {', '.join(ATTN)}")
    return attn


def parse_options(args: dict[str, str], on_cuda: bool, train_mode: bool) -> dict[str, Any]:
    """The loading and decoding options: the device's defaults overridden by the arguments."""
    cache = args.get("cache") or ("static" if on_cuda else "dynamic")
    if cache not in ("static", "dynamic"):
        raise UserError(f"--model-args cache={cache}: expected static or dynamic")
    return {
        **default_options(on_cuda),
        "cache": cache,
        "compile": _flag(args, "compile", on_cuda) and cache == "static",
        "compile_vision": _flag(args, "compile_vision", False),
        "attn": _attn(args),
        "merge": _flag(args, "merge", True) and not train_mode,
        "vision_batch": _int(args, "vision_batch", 64, 1),
        "min_new_tokens": _int(args, "min_new_tokens", 0, 0),
        "lora_alpha": _alpha(args),
        "lora_r": _int(args, "lora_r", 64, 1),
        "lora_dropout": _dropout(args),
        "trust_pickle": _flag(args, "trust_pickle", False),
        "embed_only": _flag(args, "embed_only", False),
    }
