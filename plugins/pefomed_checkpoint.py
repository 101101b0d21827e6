"""PeFoMed weights: the LAVIS EVA-ViT-g file, PeFoMed / MiniGPT-v2 checkpoints, and their conversion to PEFT.

EVA-ViT-g (LAVIS `eva_vit_g.pth`, keys with or without a `visual_encoder.` prefix) -> Blip2VisionModel names:

    cls_token                          -> embeddings.class_embedding
    pos_embed [1, 1+16*16, W] (224 px) -> embeddings.position_embedding [1, 1+32*32, W]: the patch part is
                                          resized bicubically (align_corners=False), as LAVIS'
                                          `interpolate_pos_embed` does
    patch_embed.proj.{weight,bias}     -> embeddings.patch_embedding.{weight,bias}
    blocks.N.norm1.* / norm2.*         -> encoder.layers.N.layer_norm1.* / layer_norm2.*
    blocks.N.attn.qkv.weight           -> encoder.layers.N.self_attn.qkv.weight
    blocks.N.attn.q_bias, v_bias       -> encoder.layers.N.self_attn.qkv.bias = cat(q_bias, zeros, v_bias)
    blocks.N.attn.proj.*               -> encoder.layers.N.self_attn.projection.*
    blocks.N.mlp.fc1.* / fc2.*         -> encoder.layers.N.mlp.fc1.* / fc2.*
    ln_vision.* (if a checkpoint has it) -> post_layernorm.*; otherwise ones/zeros: MiniGPT-v2 creates
                                          ln_vision fresh and freezes it, so its checkpoints do not carry it
    blocks.N for N >= depth (39), norm.*, fc_norm.*, head.*: not used (LAVIS loads with strict=False)

PeFoMed / MiniGPT-v2 checkpoint: a `.pth` holding {"model": state_dict} with the trainable parameters only:
`llama_proj.{weight,bias}` and the LoRA matrices
`llama_model.base_model.model.<module>.lora_{A,B}[.default].weight`.
Converted form (`harness convert pefomed-checkpoint`): a standard PEFT LoRA adapter directory
(`adapter_config.json` + `adapter_model.safetensors`, keys `base_model.model.<module>.lora_{A,B}.weight`, no
modules_to_save: loadable by PeftModel.from_pretrained on the plain LlamaForCausalLM and by vLLM) plus
`projection.safetensors` (`llama_proj.*` and `ln_vision.*` if present).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import UserError
from harness.file_digests import file_sha256
from harness.fingerprint import ADAPTER_WEIGHTS as ADAPTER_WEIGHTS
from harness.io import read_json_object
from harness.plugins.pefomed_lora_checks import check_layers_complete, check_projection_fits, lora_rank
from harness.plugins.safetensors_files import check_finite, load_safetensors, sorted_safetensors

if TYPE_CHECKING:
    import torch

PROJECTION_KEYS = ("llama_proj.weight", "llama_proj.bias")
LN_VISION_KEYS = ("ln_vision.weight", "ln_vision.bias")
PROJECTION_FILE = "projection.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
#: LoRA alpha and dropout of PeFoMed and MiniGPT-v2 (not stored in their checkpoints)
DEFAULT_LORA_ALPHA = 16
DEFAULT_LORA_DROPOUT = 0.05
_LORA_KEY = re.compile(
    r"^llama_model\.base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$"
)
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")
_EVA_UNUSED = ("norm.", "fc_norm.", "head.", "lm_head.", "mask_token")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def short_list(names: list[str], n: int = 6) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" (and {len(names) - n} more)" if len(names) > n else "")


def read_state_dict(path: Path | str, trust_pickle: bool = False, what: str = "checkpoint") -> dict[str, Any]:
    """Tensors of a .pth/.pt/.bin (unwrapping {"model": ...} or {"state_dict": ...}) or .safetensors."""
    import pickle

    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise UserError(f"{what} {path} {state} (expected a .pth file)")
    if path.suffix == ".safetensors":
        return load_safetensors(path, what)
    def load(mmap: bool) -> Any:
        return torch.load(str(path), map_location="cpu", weights_only=not trust_pickle, mmap=mmap)

    try:
        try:
            obj = load(mmap=True)
        except RuntimeError as exc:  # files in torch's legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            obj = load(mmap=False)
    except pickle.UnpicklingError as exc:
        if "unsupported global" in str(exc).lower():  # torch 2.4: "Unsupported global", 2.13: "unsupported GLOBAL"
            hint = "allow unpickling them (--trust-pickle, trust_pickle=true in --model-args)"
            raise UserError(f"{what} {path} holds Python objects besides tensors; if you trust the file, "
                            f"{hint}") from exc
        raise UserError(f"{what} {path} cannot be read by torch.load (not a PyTorch checkpoint?)") from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise UserError(f"{what} {path} cannot be read by torch.load ({_first_line(exc)})") from exc
    except (IndexError, KeyError, TypeError, AttributeError) as exc:  # bytes that parse as a pickle of nothing sane
        raise UserError(f"{what} {path} cannot be read by torch.load (not a PyTorch checkpoint? "
                        f"{type(exc).__name__}: {_first_line(exc)})") from exc
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{what} {path} is not a state dict (expected tensors, or {{'model': state_dict}})")
    return obj


# ---- EVA ViT-g ------------------------------------------------------------------------------------------


def interpolate_pos_embed(pos: torch.Tensor, num_patches: int) -> torch.Tensor:
    """[1, 1+n*n, W] -> [1, 1+m*m, W] with m*m = num_patches (LAVIS `interpolate_pos_embed`)."""
    import torch

    pos = pos.float()
    width = pos.shape[-1]
    old = int(round((pos.shape[-2] - 1) ** 0.5))
    new = int(round(num_patches**0.5))
    if old * old + 1 != pos.shape[-2] or new * new != num_patches:
        raise UserError(f"position embedding of shape {tuple(pos.shape)} is not a square grid plus CLS")
    if old == new:
        return pos
    grid = pos[:, 1:].reshape(1, old, old, width).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


def map_lavis_eva(
    sd: dict[str, torch.Tensor],
    config,
    ln_vision: dict[str, torch.Tensor] | None = None,
    source: str = "vision weights",
) -> dict[str, torch.Tensor]:
    """LAVIS EVA-ViT-g state dict -> Blip2VisionModel state dict for `config` (see the module docstring)."""
    import torch

    sd = {k.removeprefix("visual_encoder."): v for k, v in sd.items()}
    depth, width = config.num_hidden_layers, config.hidden_size
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    simple = {
        "cls_token": "embeddings.class_embedding",
        "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
        "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
    }
    block_names = {
        "norm1.weight": "layer_norm1.weight",
        "norm1.bias": "layer_norm1.bias",
        "norm2.weight": "layer_norm2.weight",
        "norm2.bias": "layer_norm2.bias",
        "attn.qkv.weight": "self_attn.qkv.weight",
        "attn.proj.weight": "self_attn.projection.weight",
        "attn.proj.bias": "self_attn.projection.bias",
        "mlp.fc1.weight": "mlp.fc1.weight",
        "mlp.fc1.bias": "mlp.fc1.bias",
        "mlp.fc2.weight": "mlp.fc2.weight",
        "mlp.fc2.bias": "mlp.fc2.bias",
    }
    biases: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key in simple:
            out[simple[key]] = value
        elif key == "pos_embed":
            num_patches = (config.image_size // config.patch_size) ** 2
            out["embeddings.position_embedding"] = interpolate_pos_embed(value, num_patches).to(value.dtype)
        elif m := _BLOCK_KEY.match(key):
            index, rest = int(m.group(1)), m.group(2)
            if index >= depth:
                continue
            if rest in block_names:
                out[f"encoder.layers.{index}.{block_names[rest]}"] = value
            elif rest in ("attn.q_bias", "attn.v_bias"):
                biases.setdefault(index, {})[rest] = value
            else:
                unknown.append(key)
        elif not key.startswith(_EVA_UNUSED):
            unknown.append(key)
    if unknown:
        raise UserError(f"{source}: keys that are not LAVIS EVA-ViT weights: {short_list(sorted(unknown))}")
    for index, pair in biases.items():
        q, v = pair.get("attn.q_bias"), pair.get("attn.v_bias")
        if q is None or v is None:
            raise UserError(f"{source}: block {index} has only one of attn.q_bias / attn.v_bias")
        out[f"encoder.layers.{index}.self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(v), v])
    ln = ln_vision or {}
    out["post_layernorm.weight"] = ln.get("ln_vision.weight", torch.ones(width))
    out["post_layernorm.bias"] = ln.get("ln_vision.bias", torch.zeros(width))
    expected = _blip2_vision_keys(depth, config.qkv_bias)
    missing = sorted(set(expected) - set(out))
    if missing:
        raise UserError(
            f"{source} lacks EVA-ViT weights for a {depth}-layer encoder of width {width}: missing "
            f"{short_list(missing)} (expected LAVIS eva_vit_g.pth keys)"
        )
    return out


def _blip2_vision_keys(depth: int, qkv_bias: bool) -> list[str]:
    keys = [
        "embeddings.class_embedding",
        "embeddings.position_embedding",
        "embeddings.patch_embedding.weight",
        "embeddings.patch_embedding.bias",
        "post_layernorm.weight",
        "post_layernorm.bias",
    ]
    for i in range(depth):
        p = f"encoder.layers.{i}."
        keys += [
            p + n
            for n in (
                "layer_norm1.weight",
                "layer_norm1.bias",
                "layer_norm2.weight",
                "layer_norm2.bias",
                "self_attn.qkv.weight",
                "self_attn.projection.weight",
                "self_attn.projection.bias",
                "mlp.fc1.weight",
                "mlp.fc1.bias",
                "mlp.fc2.weight",
                "mlp.fc2.bias",
            )
        ]
        if qkv_bias:
            keys.append(p + "self_attn.qkv.bias")
    return keys


# ---- PeFoMed / MiniGPT-v2 checkpoints -------------------------------------------------------------------


@dataclass
class PeFoMedWeights:
    """PeFoMed's trainable part: projection (+ ln_vision if trained) and LoRA (PEFT adapter-file names)."""

    projection: dict[str, Any]
    lora: dict[str, Any]
    rank: int
    targets: list[str]
    source: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def split_checkpoint(sd: dict[str, Any], source: str) -> PeFoMedWeights:
    """Validate a PeFoMed / MiniGPT-v2 state dict and split it into projection and PEFT-named LoRA weights."""
    missing = [k for k in PROJECTION_KEYS if k not in sd]
    if missing:
        raise UserError(
            f"checkpoint {source} lacks the projection: missing {', '.join(missing)} "
            "(expected a PeFoMed or MiniGPT-v2 checkpoint holding {'model': state_dict})"
        )
    projection = {k: sd[k] for k in PROJECTION_KEYS + LN_VISION_KEYS if k in sd}
    lora: dict[str, Any] = {}
    unknown = []
    for key, value in sd.items():
        if key in projection or key.endswith(".rotary_emb.inv_freq"):  # a buffer transformers 4.28 saved
            continue
        m = _LORA_KEY.match(key)
        if m is None:
            unknown.append(key)
            continue
        lora[f"base_model.model.{m.group('module')}.lora_{m.group('ab')}.weight"] = value
    if unknown:
        raise UserError(
            f"checkpoint {source} holds keys that are neither the projection nor LoRA: "
            f"{short_list(sorted(unknown))} (expected llama_proj.* and "
            "llama_model.base_model.model.*.lora_A/lora_B.weight)"
        )
    if not lora:
        raise UserError(
            f"checkpoint {source} holds no LoRA weights (expected keys like "
            "llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight)"
        )
    check_finite({**projection, **lora}, f"checkpoint {source}")
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in lora})
    rank = lora_rank(lora, modules, source)
    check_layers_complete(modules, source)
    check_projection_fits(projection, lora, source)
    targets = sorted({m.rsplit(".", 1)[-1] for m in modules})
    return PeFoMedWeights(projection=projection, lora=lora, rank=rank, targets=targets, source=source)


def lora_config(
    rank: int,
    targets: list[str],
    alpha: float = DEFAULT_LORA_ALPHA,
    dropout: float = DEFAULT_LORA_DROPOUT,
    base_model: str | None = None,
):
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=list(targets),
        base_model_name_or_path=base_model,
    )


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_converted(
    weights: PeFoMedWeights,
    out_dir: Path,
    alpha: float = DEFAULT_LORA_ALPHA,
    base_model: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write the PEFT adapter directory + projection.safetensors (each file replaced atomically)."""
    from safetensors.torch import save

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = lora_config(weights.rank, weights.targets, alpha=alpha, base_model=base_model).to_dict()
    cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}
    meta = {"format": "pt", "source": Path(weights.source).name, **weights.extra, **(metadata or {})}
    lora = {k: v.detach().contiguous() for k, v in sorted(weights.lora.items())}
    proj = {k: v.detach().contiguous() for k, v in sorted(weights.projection.items())}
    _atomic_write_bytes(out_dir / ADAPTER_WEIGHTS[0], sorted_safetensors(save(lora, metadata=meta)))
    _atomic_write_bytes(out_dir / PROJECTION_FILE, sorted_safetensors(save(proj, metadata=meta)))
    _atomic_write_bytes(out_dir / ADAPTER_CONFIG, (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode())
    return out_dir


def convert_checkpoint(
    checkpoint: Path,
    out_dir: Path,
    alpha: float = DEFAULT_LORA_ALPHA,
    base_model: str | None = None,
    trust_pickle: bool = False,
) -> PeFoMedWeights:
    """Read a PeFoMed / MiniGPT-v2 `.pth` and write its converted directory."""
    checkpoint = Path(checkpoint).expanduser()
    weights = split_checkpoint(read_state_dict(checkpoint, trust_pickle), str(checkpoint))
    weights.extra["source_sha256"] = file_sha256(checkpoint)
    save_converted(weights, out_dir, alpha=alpha, base_model=base_model)
    return weights


def read_converted(adapter_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(projection tensors, adapter_config) of a converted directory; one-line errors for what is missing."""

    adapter_dir = Path(adapter_dir).expanduser()
    if not adapter_dir.is_dir():
        raise UserError(f"--adapter {adapter_dir} is not a directory")
    missing = [n for n in (ADAPTER_CONFIG, PROJECTION_FILE) if not (adapter_dir / n).is_file()]
    if not any((adapter_dir / n).is_file() for n in ADAPTER_WEIGHTS):
        missing.append(ADAPTER_WEIGHTS[0])
    if missing:
        raise UserError(
            f"--adapter {adapter_dir} lacks {', '.join(missing)} (expected the output of "
            "`harness convert pefomed-checkpoint` or of `harness finetune --model pefomed`)"
        )
    projection = load_safetensors(adapter_dir / PROJECTION_FILE, "--adapter file")
    check_finite(projection, str(adapter_dir / PROJECTION_FILE))
    if (adapter_dir / ADAPTER_WEIGHTS[0]).is_file():
        lora_path = adapter_dir / ADAPTER_WEIGHTS[0]
        check_finite(load_safetensors(lora_path, "--adapter file"), str(lora_path))
    absent = [k for k in PROJECTION_KEYS if k not in projection]
    if absent:
        raise UserError(f"{adapter_dir / PROJECTION_FILE} lacks {', '.join(absent)}")
    config = read_json_object(adapter_dir / ADAPTER_CONFIG)
    if config.get("peft_type", "LORA") != "LORA":
        raise UserError(
            f"{adapter_dir / ADAPTER_CONFIG}: peft_type {config.get('peft_type')!r}, expected 'LORA'"
        )
    return projection, config
