"""A tiny PeFoMed on disk, in the published file layouts, for offline tests and the CPU benchmark.

- `eva_vit_tiny.pth`: an EVA ViT in LAVIS' `eva_vit_g.pth` key layout (a position grid half as wide as the
  encoder's, as the real 224-px file is for 448 px; q_bias/v_bias; one block more than the encoder uses),
  made by `LavisEvaViT`, an independent transcription of LAVIS' EVA ViT forward pass that tests use as the
  reference for the key mapping;
- `llm/`: a tiny LlamaForCausalLM with a BPE tokenizer trained here with `tokenizers` (LLaMA-style metaspace);
- `pefomed_tiny.pth`: a PeFoMed checkpoint {"model": state_dict, "epoch", "config"} with `llama_proj.*` and
  rank-64 LoRA on q_proj/v_proj under `llama_model.base_model.model.` (random, non-zero B).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

TINY_VISION = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 224,  # 16x16 patches -> 64 LLM tokens per image (the real model: 448 px -> 256 tokens)
    "patch_size": 14,
}
LLM_HIDDEN = 64
LORA_RANK = 64
CORPUS = [
    "[INST] <Img><ImageHere></Img> [vqa] based on the image, respond to this question with a short answer",
    "[/INST] [INST]",
    "[caption] briefly describe this medical image. [report] write the findings of the radiology report.",
    "is there a lesion in the left lung? how many lesions are there? which side is the lesion on?",
    "what organ is shown? what modality is this image? is the lesion large or small? is it bright or dark?",
    "chest head abdomen knee x-ray ct mri yes no left right one two three four none large small bright dark",
    "the heart size is normal. no pleural effusion or pneumothorax. lungs are clear. there is a nodule.",
]


class _EvaAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = (
            nn.functional.linear(x, self.qkv.weight, bias)
            .reshape(b, n, 3, self.heads, -1)
            .permute(2, 0, 3, 1, 4)
        )
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class _EvaBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _EvaAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, mlp)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(mlp, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class LavisEvaViT(nn.Module):
    """LAVIS `VisionTransformer.forward_features` (EVA ViT-g: absolute positions, no rel. bias, no gamma)."""

    def __init__(self, img_size: int, patch: int, dim: int, depth: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (img_size // patch) ** 2 + 1, dim))
        self.blocks = nn.ModuleList(_EvaBlock(dim, heads, mlp) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return x


def lavis_interpolate(pos: torch.Tensor, new_grid: int) -> torch.Tensor:
    """LAVIS `interpolate_pos_embed` for one extra (CLS) token."""
    old = int((pos.shape[-2] - 1) ** 0.5)
    tokens = pos[:, 1:].reshape(-1, old, old, pos.shape[-1]).permute(0, 3, 1, 2)
    tokens = nn.functional.interpolate(tokens, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    return torch.cat((pos[:, :1], tokens.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


def make_eva_state(seed: int = 0, extra_blocks: int = 1) -> dict[str, torch.Tensor]:
    """A random EVA state dict in the LAVIS layout at half the encoder's image size (8x8 position grid, as
    eva_vit_g.pth's 16x16 is for 448 px), with `extra_blocks` more blocks than TINY_VISION."""
    torch.manual_seed(seed)
    v = TINY_VISION
    model = LavisEvaViT(
        TINY_VISION["image_size"] // 2,
        v["patch_size"],
        v["hidden_size"],
        v["num_hidden_layers"] + extra_blocks,
        v["num_attention_heads"],
        v["intermediate_size"],
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm1.weight", "norm2.weight")):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 / math.sqrt(p.shape[-1] if p.dim() > 1 else 8)))
    return {k: v.clone() for k, v in model.state_dict().items()}


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    alphabet = list(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789[]<>/?.,:;'\"()-!*#~\u2581"
    )
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=alphabet
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def build_llm(out_dir: Path, seed: int = 0, heads: int = 4, chat_template: str | None = None) -> Path:
    """The tiny LLaMA (64 wide, 2 layers); `heads` 2 gives the head size 32 that vLLM's CPU attention needs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer()
    tokenizer.chat_template = chat_template
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=LLM_HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        initializer_range=0.2,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def make_checkpoint_state(
    seed: int = 1,
    lora_std: float = 0.2,
    projection: bool = True,
    zero_b: bool = False,
    peft_default: bool = False,
) -> dict[str, torch.Tensor]:
    """PeFoMed checkpoint tensors: llama_proj + rank-64 LoRA on q_proj/v_proj of both layers."""
    g = torch.Generator().manual_seed(seed)
    in_features = TINY_VISION["hidden_size"] * 4
    sd: dict[str, torch.Tensor] = {}
    if projection:
        sd["llama_proj.weight"] = torch.randn(LLM_HIDDEN, in_features, generator=g) * 0.3
        sd["llama_proj.bias"] = torch.randn(LLM_HIDDEN, generator=g) * 0.1
    name = ".default" if peft_default else ""
    for layer in range(2):
        for proj in ("q_proj", "v_proj"):
            base = f"llama_model.base_model.model.model.layers.{layer}.self_attn.{proj}"
            sd[f"{base}.lora_A{name}.weight"] = torch.randn(LORA_RANK, LLM_HIDDEN, generator=g) * lora_std
            b = torch.randn(LLM_HIDDEN, LORA_RANK, generator=g) * lora_std
            sd[f"{base}.lora_B{name}.weight"] = torch.zeros_like(b) if zero_b else b
    return sd


def save_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """As MiniGPT-4 / PeFoMed's runner saves: {"model": trainable tensors, "epoch": ..., "config": {...}}."""
    torch.save(
        {"model": state, "epoch": 3, "config": {"model": {"arch": "pefomed", "lora_r": LORA_RANK}}}, path
    )
    return path


@dataclass
class TinyPeFoMed:
    root: Path
    llm_dir: Path
    vision_path: Path
    vision_config_path: Path
    checkpoint_path: Path

    def model_args(self, **extra: str) -> dict[str, str]:
        args = {
            "llm": str(self.llm_dir),
            "vision": str(self.vision_path),
            "vision_config": str(self.vision_config_path),
            "checkpoint": str(self.checkpoint_path),
        }
        args.update(extra)
        return {k: v for k, v in args.items() if v}

    def args_string(self, **extra: str) -> str:
        return ",".join(f"{k}={v}" for k, v in self.model_args(**extra).items())


def build_tiny(root: Path, heads: int = 4, chat_template: str | None = None) -> TinyPeFoMed:
    root.mkdir(parents=True, exist_ok=True)
    vision_path = root / "eva_vit_tiny.pth"
    torch.save(make_eva_state(), vision_path)
    config_path = root / "vision_config.json"
    config_path.write_text(json.dumps(TINY_VISION))
    llm_dir = build_llm(root / "llm", heads=heads, chat_template=chat_template)
    ckpt = save_checkpoint(root / "pefomed_tiny.pth", make_checkpoint_state())
    return TinyPeFoMed(root, llm_dir, vision_path, config_path, ckpt)


def convert(*argv: str) -> int:
    """`harness convert pefomed-checkpoint ...` through the command's own parser."""
    import argparse

    from harness.commands import convert as convert_cmd

    parser = argparse.ArgumentParser(prog="harness")
    convert_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", "pefomed-checkpoint", *argv])
    return args.func(args)
