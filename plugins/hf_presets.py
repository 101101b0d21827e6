"""Named Hugging Face checkpoints of the `hf` backend, its model args, and their `ModelInfo` registrations.

Each preset is registered as its own model id (`harness run --model llava-1.5-7b ...`); `harness list models`
shows its hub id and revision. This module imports nothing heavy (torch only inside `resolve_device_dtype`):
plugins/builtin.py imports it to register the presets, and `harness list` must stay fast.

Revisions: each preset pins a full commit sha of its hub repository, so that a run loads the same files
whenever it runs. This machine cannot reach the hub: every sha was taken from public code that loaded that
repository (Hugging Face cache snapshot folders `models--<org>--<name>/snapshots/<sha>`, `revision=` pins),
seen in at least three public projects, the most recent where several were seen (2026-11). A sha that the hub
no longer serves fails to load with a one-line error naming it; `--model-args revision=<sha or main>`
overrides it. A branch or tag (`main`) is recorded with a `pin_note`, and the sha a run actually loaded is
recorded in its model.json (identity `commit`). The `family` says how a checkpoint is prompted:
- `chat`: `AutoModelForImageTextToText` + `AutoProcessor` and the processor's chat template (LLaVA, Qwen-VL);
- `blip`: BLIP captioning (`BlipForConditionalGeneration`): unconditional captions, the task prompt is unused;
- `blip2`: BLIP-2: "Question: {question} Answer:" for VQA, no text for captions and reports;
- `instructblip`: InstructBLIP: the task prompt is the instruction;
- `vision-encoder-decoder`: `VisionEncoderDecoderModel` captioners such as ViT-GPT2 (no prompt).
Single-image families use the first image of multi-view samples (IU-Xray: the frontal view).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import UserError, close_hint
from harness.flags import parse_flag
from harness.registry import ModelInfo

if TYPE_CHECKING:
    from harness.model_api import ModelContext

ALL_KINDS = ("vqa", "report", "caption")
CAPTION_KINDS = ("caption", "report")
FIRST_IMAGE = "single-image model: multi-view samples use their first image"


@dataclass(frozen=True)
class HFPreset:
    id: str
    hub_id: str
    revision: str  # full commit sha on the hub
    family: str
    description: str
    params_b: float  # parameters in billions (shown in `harness list`)
    task_kinds: tuple[str, ...] = ALL_KINDS
    aliases: tuple[str, ...] = ()
    notes: str = ""


def is_commit(revision: str) -> bool:
    """A full 40-hex commit sha (a branch or tag such as `main` can move)."""
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision.lower())


def pin_note(revision: str) -> str | None:
    """The warning recorded with a hub checkpoint loaded by a branch or tag instead of a commit."""
    if is_commit(revision):
        return None
    return (f"revision '{revision}' is not a commit sha and can move; pin one with --model-args "
            "revision=<40-hex sha> for a reproducible run (identity 'commit' records what was loaded)")


PRESETS: tuple[HFPreset, ...] = (
    HFPreset("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf",
             "b234b804b114d9e37bb655e11cbbb5f5e971b7a9", "chat",
             "LLaVA-1.5 7B (Vicuna-7B, CLIP ViT-L/14-336)", 7.1, aliases=("llava-1.5",)),
    HFPreset("llava-1.5-13b", "llava-hf/llava-1.5-13b-hf",
             "5dda2880bda009266dda7c4baff660b95ca64540", "chat",
             "LLaVA-1.5 13B (Vicuna-13B, CLIP ViT-L/14-336)", 13.4),
    HFPreset("llava-next-mistral-7b", "llava-hf/llava-v1.6-mistral-7b-hf",
             "2424fdd47412fccc66d91719126b420e9fbd7065", "chat",
             "LLaVA-NeXT (v1.6) Mistral-7B, any-resolution tiles", 7.6, aliases=("llava-mistral-7b",)),
    HFPreset("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct",
             "895c3a49bc3fa70a340399125c650a463535e71c", "chat", "Qwen2-VL 2B Instruct", 2.2),
    HFPreset("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct",
             "66285546d2b821cf421d4f5eb2576359d3770cd3", "chat", "Qwen2.5-VL 3B Instruct", 3.8),
    HFPreset("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct",
             "cc594898137f460bfe9f0759e9844b3ce807cfb5", "chat", "Qwen2.5-VL 7B Instruct", 8.3),
    HFPreset("smolvlm", "HuggingFaceTB/SmolVLM-Instruct",
             "81cd9a775a4d644f2faf4e7becff4559b46b14c7", "chat",
             "SmolVLM Instruct (2.2B, Idefics3 architecture)", 2.2, aliases=("smolvlm-2b",)),
    HFPreset("smolvlm-256m", "HuggingFaceTB/SmolVLM-256M-Instruct",
             "7e3e67edbbed1bf9888184d9df282b700a323964", "chat", "SmolVLM 256M Instruct", 0.26),
    HFPreset("idefics3-8b", "HuggingFaceM4/Idefics3-8B-Llama3",
             "fddb4ff79181e55a994674777e06cd5456ce3dc3", "chat",
             "Idefics3 8B (Llama-3.1-8B, SigLIP)", 8.5),
    HFPreset("blip-caption", "Salesforce/blip-image-captioning-base",
             "82a37760796d32b1411fe092ab5d4e227313294b", "blip",
             "BLIP captioning, base (ViT-B); captions only, the task prompt is not used", 0.25,
             task_kinds=CAPTION_KINDS, aliases=("blip",), notes=FIRST_IMAGE),
    HFPreset("blip-caption-large", "Salesforce/blip-image-captioning-large",
             "353689b859fcf0523410b1806dace5fb46ecdf41", "blip",
             "BLIP captioning, large (ViT-L); captions only, the task prompt is not used", 0.47,
             task_kinds=CAPTION_KINDS, notes=FIRST_IMAGE),
    HFPreset("blip2-opt-2.7b", "Salesforce/blip2-opt-2.7b",
             "59a1ef6c1e5117b3f65523d1c6066825bcf315e3", "blip2",
             "BLIP-2 OPT-2.7B ('Question: ... Answer:' for VQA, plain captions otherwise)", 3.9,
             aliases=("blip2",), notes=FIRST_IMAGE),
    HFPreset("instructblip-vicuna-7b", "Salesforce/instructblip-vicuna-7b",
             "19103d0c5b5263c8a7891012e08573439fb6607f", "instructblip",
             "InstructBLIP Vicuna-7B (BLIP-2 Instruct); the task prompt is the instruction", 7.9,
             notes=FIRST_IMAGE),
    HFPreset("vit-gpt2", "nlpconnect/vit-gpt2-image-captioning",
             "dc68f91c06a1ba6f15268e5b9c13ae7a7c514084", "vision-encoder-decoder",
             "ViT-GPT2 captioner (VisionEncoderDecoderModel); captions only, no prompt", 0.24,
             task_kinds=CAPTION_KINDS, aliases=("vit-gpt2-captioning",), notes=FIRST_IMAGE),
)
_BY_ID = {p.id: p for p in PRESETS}

ARGS = ("model", "revision", "family", "prepend_modality", "modality_field", "attn", "cache", "merge_adapter",
        "image_backend", "min_new_tokens", "prefill_chunk")
FAMILIES = ("chat", "blip", "blip2", "instructblip", "vision-encoder-decoder")
FAMILY_OF_MODEL_TYPE = {"blip": "blip", "blip-2": "blip2", "instructblip": "instructblip",
                        "vision-encoder-decoder": "vision-encoder-decoder"}
DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
          "half": "float16", "float32": "float32", "fp32": "float32", "float": "float32"}
CHOICES = {"attn": ("auto", "sdpa", "eager", "flash_attention_2"), "cache": ("auto", "static", "dynamic"),
           "image_backend": ("pil", "torchvision")}


def get_preset(preset_id: str) -> HFPreset:
    return _BY_ID[preset_id]


def _bool(name: str, value: str) -> bool:
    return parse_flag(value, f"--model-args {name}={value}")


def _modality_option(value: str) -> str | bool:
    """prepend_modality: False, "known" (the sample's label) or "predicted" (plugins/modality_classifier.py)."""
    if value.strip().lower() in ("predicted", "known"):  # known: the same as true
        return value.strip().lower()
    try:
        return "known" if parse_flag(value, "") else False
    except UserError:
        raise UserError(f"--model-args prepend_modality={value}: expected true (or known), false or predicted"
                        ) from None


def parse_options(preset: HFPreset | None, args: dict[str, str]) -> dict[str, Any]:
    """Validate the `--model-args` of the hf backend (for `preset`, or for model id `hf` when None)."""
    unknown = sorted(set(args) - set(ARGS))
    if unknown:
        raise UserError(f"model args {', '.join(unknown)} unknown to the hf backend{close_hint(unknown, ARGS)}; "
                        f"known: {', '.join(ARGS)}")
    if preset is not None and "model" in args:
        raise UserError(f"model '{preset.id}' is {preset.hub_id}; for another checkpoint use "
                        "--model hf --model-args model=<hub id or path>")
    model = preset.hub_id if preset else args.get("model", "").strip()
    if not model:
        raise UserError("model 'hf' needs --model-args model=<hub id or local folder>")
    for key, allowed in CHOICES.items():
        if key in args and args[key] not in allowed:
            raise UserError(f"--model-args {key}={args[key]}: expected one of {', '.join(allowed)}")
    family = args.get("family", preset.family if preset else "auto")
    if family not in (*FAMILIES, "auto"):
        raise UserError(f"--model-args family={family}: expected auto or one of {', '.join(FAMILIES)}")
    for key in ("min_new_tokens", "prefill_chunk"):
        if not args.get(key, "0").isdigit():
            raise UserError(f"--model-args {key}={args[key]}: expected a whole number (0: off)")
    local = Path(model).expanduser()
    if model.startswith(("/", "./", "../", "~")) and not local.is_dir():
        raise UserError(f"--model-args model={model}: no such folder (expected a folder saved with "
                        "save_pretrained, or a hub id such as llava-hf/llava-1.5-7b-hf)")
    # settings that would change nothing but the run id (another run, and leaderboard row, of the same outputs)
    if local.is_dir() and "revision" in args:
        raise UserError(f"--model-args revision={args['revision']}: model={model} is a local folder, which has no "
                        "hub revisions; drop revision")
    if "modality_field" in args and _modality_option(args.get("prepend_modality", "false")) is False:
        raise UserError(f"--model-args modality_field={args['modality_field']} is read only with "
                        "prepend_modality=true or predicted")
    return {"model": str(local.resolve()) if local.is_dir() else model, "local": local.is_dir(),
            "revision": args.get("revision", preset.revision if preset else "main"), "family": family,
            "prepend_modality": _modality_option(args.get("prepend_modality", "false")),
            "modality_field": args.get("modality_field", "modality"), "attn": args.get("attn", "auto"),
            "cache": args.get("cache", "auto"), "image_backend": args.get("image_backend", "pil"),
            "merge_adapter": _bool("merge_adapter", args.get("merge_adapter", "true")),
            "min_new_tokens": int(args.get("min_new_tokens", "0")),
            "prefill_chunk": int(args.get("prefill_chunk", "0"))}


def resolve_device(requested: str | None) -> str:
    """`--device` (default: cuda when available, else cpu), checked: a torch device that this machine has."""
    import torch

    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"--device {device}: not a torch device (cpu, cuda, cuda:1, mps)") from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available (torch {torch.__version__})")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {device}: no Apple MPS device is available (torch {torch.__version__})")
    if parsed.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise UserError(f"--device {device}: no Intel XPU device is available (torch {torch.__version__})")
    if parsed.type not in ("cpu", "cuda", "mps", "xpu"):  # meta, ipu, ...: no device to generate on
        raise UserError(f"--device {device}: expected cpu, cuda, cuda:N or mps")
    return device


def resolve_device_dtype(context: ModelContext) -> tuple[str, str]:
    """`--device` (see resolve_device) and `--dtype` (default: bfloat16 on a GPU, float32 on the CPU)."""
    device = resolve_device(context.device)
    dtype = context.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    if dtype.lower() not in DTYPES:
        raise UserError(f"--dtype {dtype}: expected one of bfloat16, float16, float32")
    return device, DTYPES[dtype.lower()]


def _load_preset_class(preset_id: str) -> Any:
    from harness.plugins.hf import HFModel

    return HFModel.for_preset(get_preset(preset_id))


def preset_capabilities(preset: HFPreset) -> dict[str, Any]:
    caps: dict[str, Any] = {"task_kinds": list(preset.task_kinds), "needs_weights": True, "backend": "hf",
                            "adapters": True, "hub_id": preset.hub_id, "revision": preset.revision,
                            "greedy_ignores": ["seed", "top_p"],
                            "family": preset.family, "params_b": preset.params_b}
    if preset.notes:
        caps["notes"] = preset.notes
    return caps


def model_infos() -> list[ModelInfo]:
    """Registrations of `hf`, `tiny-vlm` and every preset (plugins/builtin.py registers them)."""
    infos = [
        ModelInfo(
            id="hf",
            loader="harness.plugins.hf:HFModel",
            description="Any Hugging Face image-text-to-text checkpoint: --model-args "
            "model=<hub id or path>[,revision=<sha>]",
            aliases=["transformers", "huggingface"],
            capabilities={"task_kinds": list(ALL_KINDS), "needs_weights": True, "backend": "hf", "adapters": True,
                          "greedy_ignores": ["seed", "top_p"]},
        ),
        ModelInfo(
            id="tiny-vlm",
            loader="harness.plugins.tiny_vlm:TinyVLM",
            description="Tiny LLaVA-architecture model built and pretrained offline on phantom data (the fine-tuning "
            "demo; --model-args base=random for the untrained one)",
            capabilities={"task_kinds": list(ALL_KINDS), "needs_weights": False, "backend": "hf", "adapters": True,
                          "hub_id": "(built locally)", "revision": "local", "greedy_ignores": ["seed", "top_p"]},
        ),
    ]
    for preset in PRESETS:
        infos.append(ModelInfo(id=preset.id, loader=functools.partial(_load_preset_class, preset.id),
                               description=preset.description, aliases=list(preset.aliases),
                               capabilities=preset_capabilities(preset)))
    return infos
