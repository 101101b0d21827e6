"""`harness convert`: turn published checkpoints into standard formats.

`harness convert pefomed-checkpoint CKPT.pth --out DIR` reads a PeFoMed or MiniGPT-v2 checkpoint
({"model": state_dict} with `llama_proj.*` and LoRA weights) and writes DIR with a standard PEFT LoRA adapter
(adapter_config.json + adapter_model.safetensors: loadable by PeftModel.from_pretrained on the plain
LlamaForCausalLM and by vLLM) and projection.safetensors. `harness run --model pefomed --adapter DIR` uses it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert published checkpoints to standard formats",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    c = kinds.add_parser(
        "pefomed-checkpoint",
        help="PeFoMed / MiniGPT-v2 .pth -> PEFT adapter + projection",
        description="Convert a PeFoMed or MiniGPT-v2 checkpoint (.pth holding {'model': "
        "state_dict} with llama_proj.* and LoRA weights) into a PEFT adapter "
        "directory plus projection.safetensors.",
    )
    c.add_argument("checkpoint", type=Path, help="the .pth checkpoint")
    c.add_argument("--out", type=Path, required=True, help="output directory")
    c.add_argument(
        "--base-model",
        default="meta-llama/Llama-2-7b-chat-hf",
        help="recorded as base_model_name_or_path in adapter_config.json",
    )
    c.add_argument(
        "--lora-alpha",
        type=float,
        default=16.0,
        help="LoRA alpha (not stored in the checkpoint; PeFoMed and MiniGPT-v2 use 16)",
    )
    c.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow torch.load to unpickle Python objects in the file (only for files you trust)",
    )
    c.add_argument(
        "--force", action="store_true", help="replace the files of an existing conversion in --out"
    )
    c.set_defaults(func=convert_pefomed)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 1


def convert_pefomed(args: argparse.Namespace) -> int:
    from harness.plugins.pefomed_checkpoint import (
        ADAPTER_CONFIG,
        ADAPTER_WEIGHTS,
        PROJECTION_FILE,
        convert_checkpoint,
    )

    out = Path(args.out).expanduser()
    _check_out(out, args.force, {ADAPTER_CONFIG, PROJECTION_FILE, *ADAPTER_WEIGHTS})
    if not 0 < args.lora_alpha < float("inf"):  # NaN too
        raise UserError(f"--lora-alpha {args.lora_alpha}: must be a finite number > 0")
    weights = convert_checkpoint(
        args.checkpoint,
        out,
        alpha=args.lora_alpha,
        base_model=args.base_model,
        trust_pickle=args.trust_pickle,
    )
    n_modules = len(weights.lora) // 2
    print(
        f"converted {args.checkpoint} -> {out}: LoRA rank {weights.rank} on {', '.join(weights.targets)} "
        f"({n_modules} modules, alpha {args.lora_alpha:g}), projection "
        f"{tuple(weights.projection['llama_proj.weight'].shape)}"
    )
    print(
        f"use it with: harness run --model pefomed --adapter {out} --model-args llm=...,vision=eva_vit_g.pth"
    )
    return 0


def _check_out(out: Path, force: bool, conversion_files: set[str]) -> None:
    """--out must be new, empty, or an earlier conversion (replaced only with --force): never a folder that holds
    anything else (a fine-tuned adapter, a model), whose files a conversion would overwrite or mix with."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if not out.is_dir():
        return
    names = [p.name for p in out.iterdir() if not p.name.startswith(".")]  # hidden: our temp files, .DS_Store
    others = sorted(n for n in names if n not in conversion_files)
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise UserError(f"--out {out} holds files that are not a converted checkpoint ({shown}): "
                        "choose a new or empty directory")
    if names and not force:
        raise UserError(f"--out {out} already holds a converted checkpoint: pass --force to replace it")
