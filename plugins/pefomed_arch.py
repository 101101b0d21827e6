"""PeFoMed / MiniGPT-v2 architecture: modules, image transform, text processing and prompt layout.

image 448x448 -> EVA ViT-g/14 (transformers' Blip2VisionModel with the EVA shapes: width 1408, depth 39,
16 heads, MLP 6144, patch 14, LayerNorm eps 1e-6; frozen) -> `ln_vision` LayerNorm(1408) (held as the
encoder's `post_layernorm`, eps 1e-5 like LAVIS' LayerNorm) -> drop CLS -> 1024 tokens -> concatenate 4
consecutive tokens (view to 256 x 5632) -> `llama_proj` Linear(5632, 4096) -> spliced into the LLaMA-2-chat
prompt `<s>[INST] <Img><ImageHere></Img> [vqa] ... [/INST]` in place of `<ImageHere>`.

Evaluation transform: resize to 448x448 (PIL bicubic), scale to [0, 1], normalize with the EVA/CLIP mean and
std. It is deterministic. The published PeFoMed code evaluated with its *training* transform
(`blip2_image_train`: random resized crop with scale 0.5-1 and random horizontal flip), so its published
numbers vary from run to run and cannot be reproduced exactly; this transform is that of its
`blip_image_eval` processor.

Text: PeFoMed's evaluation text processor (`blip_caption`) lowercases the instruction, replaces each of
.!"()*#:;~ by a space, squeezes spaces and keeps the first 50 words; it is applied to the whole instruction
(task tag + instruction + question), as PeFoMed's evaluation datasets do. The image tags are added afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

#: EVA ViT-g/14 as MiniGPT-v2 builds it (LAVIS `create_eva_vit_g(448)`), in Blip2VisionConfig terms
EVA_VIT_G: dict[str, Any] = {
    "hidden_size": 1408,
    "num_hidden_layers": 39,
    "num_attention_heads": 16,
    "intermediate_size": 6144,
    "patch_size": 14,
    "image_size": 448,
    "layer_norm_eps": 1e-6,
    "qkv_bias": True,
    "hidden_act": "gelu",
}
#: LAVIS `LayerNorm(num_features)` default eps, used for `ln_vision`
LN_VISION_EPS = 1e-5
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: consecutive visual tokens concatenated into one LLM token
GROUP = 4
IMAGE_PLACEHOLDER = "<ImageHere>"
IMAGE_BLOCK = "<Img><ImageHere></Img>"
TASK_TAGS = {"vqa": "[vqa]", "report": "[report]", "caption": "[caption]"}
#: MiniGPT-v2 / PeFoMed task identifiers: a prompt starting with one is used as given
KNOWN_TAGS = ("[vqa]", "[caption]", "[report]", "[grounding]", "[refer]", "[detection]", "[identify]")

_PUNCT = re.compile(r"([.!\"()*#:;~])")
_SPACES = re.compile(r"\s{2,}")


def pefomed_text(text: str, max_words: int = 50) -> str:
    """PeFoMed's evaluation text processor (LAVIS `BlipCaptionProcessor.pre_caption`)."""
    text = _PUNCT.sub(" ", text.lower())
    text = _SPACES.sub(" ", text).rstrip("\n").strip(" ")
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


def instruction_for(prompt: str, task_kind: str, process_text: bool = True) -> str:
    """The instruction after the image: the prompt, with the task tag of `task_kind` put in front unless the
    prompt already starts with a task tag (the tasks' `pefomed` variants do); then PeFoMed's text
    processing."""
    text = prompt.strip()
    if not text.lower().startswith(KNOWN_TAGS):
        text = f"{TASK_TAGS.get(task_kind, '[vqa]')} {text}"
    return pefomed_text(text) if process_text else text


def prompt_text(instruction: str, n_images: int) -> str:
    """`[INST] <Img><ImageHere></Img> {instruction} [/INST]`: one block per image; BOS is a token."""
    blocks = " ".join([IMAGE_BLOCK] * n_images)
    return f"[INST] {blocks} {instruction} [/INST]" if blocks else f"[INST] {instruction} [/INST]"


def prompt_segments(instruction: str, n_images: int) -> list[str]:
    """The text around the images: n_images + 1 segments, the image embeddings go between them."""
    return prompt_text(instruction, n_images).split(IMAGE_PLACEHOLDER)


def vision_config(overrides: dict[str, Any] | None = None, attn: str = "sdpa"):
    """Blip2VisionConfig with the EVA ViT-g/14 shapes at 448 px, or the given overrides (test models)."""
    from transformers import Blip2VisionConfig

    values = {**EVA_VIT_G, **(overrides or {})}
    return Blip2VisionConfig(**values, attn_implementation=attn)


def build_vision(
    config,
    state_dict: dict[str, torch.Tensor] | None = None,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """The frozen EVA encoder as a Blip2VisionModel whose `post_layernorm` is `ln_vision` (eps 1e-5).

    With `state_dict` (Blip2VisionModel names, see pefomed_checkpoint.map_lavis_eva) the module is built
    on the meta device and takes the tensors as they are (no random init); without it, random weights."""
    import torch
    from torch import nn
    from transformers import Blip2VisionModel

    dtype = dtype or torch.float32
    if state_dict is None:
        with torch.device(device):
            model = Blip2VisionModel(config)
            model.post_layernorm = nn.LayerNorm(config.hidden_size, eps=LN_VISION_EPS)
        model = model.to(dtype=dtype)
    else:
        with torch.device("meta"):
            model = Blip2VisionModel(config)
            model.post_layernorm = nn.LayerNorm(config.hidden_size, eps=LN_VISION_EPS)
        model.load_state_dict(state_dict, strict=True, assign=True)
        model = model.to(device=device, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


class PeFoMedNet:
    """The three parts wired together: vision encoder (+ ln_vision), projection, LLM (plain or with PEFT)."""

    def __init__(self, vision: nn.Module, llama_proj: nn.Module, llm: nn.Module) -> None:
        self.vision = vision
        self.llama_proj = llama_proj
        self.llm = llm

    @property
    def device(self) -> torch.device:
        return self.llama_proj.weight.device

    def embedding_layer(self) -> nn.Module:
        return self.llm.get_input_embeddings()

    def encode_images(self, pixel_values: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """[N, 3, S, S] -> [N, tokens/4, hidden]: vision (no grad), drop CLS, group 4 tokens, project."""
        import torch

        outs = []
        for start in range(0, pixel_values.shape[0], max(1, chunk)):
            with torch.no_grad():
                feats = self.vision(pixel_values=pixel_values[start : start + chunk]).last_hidden_state
            feats = feats[:, 1:, :]
            n, p, w = feats.shape
            if p % GROUP:
                raise ValueError(f"{p} visual tokens cannot be grouped by {GROUP}")
            feats = feats.reshape(n, p // GROUP, w * GROUP).to(self.llama_proj.weight.dtype)
            outs.append(self.llama_proj(feats))
        return torch.cat(outs, dim=0)


def image_to_array(image: Any, size: int):
    """PIL image -> uint8 array [size, size, 3] (RGB, PIL bicubic resize, as torchvision's Resize on PIL)."""
    import numpy as np
    from PIL import Image

    img = image if getattr(image, "mode", None) == "RGB" else image.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def pixel_batch(arrays: Sequence[Any], device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """uint8 HWC arrays -> normalized float [N, 3, S, S] on `device` (ToTensor + Normalize, in fp32)."""
    import numpy as np
    import torch

    batch = torch.from_numpy(np.stack(arrays)).to(device)
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).to(dtype)
