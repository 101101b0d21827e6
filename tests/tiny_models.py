"""Tiny random checkpoints for tests of the `hf` backend, built offline and saved with `save_pretrained`.

- `tiny_llava(folder)`: the tiny-vlm architecture and tokenizer with larger random weights, so that greedy
  outputs differ from prompt to prompt and react to any change of positions, padding or adapter weights.
- `tiny_vision_encoder_decoder(folder)`: a ViT encoder + GPT-2 decoder (`VisionEncoderDecoderModel`), the
  ViT-GPT2 captioner's architecture.
- `tiny_blip(folder)`: a BLIP captioning model (`BlipForConditionalGeneration`).
- `lora_adapter(model_folder, out, ...)`: a PEFT LoRA adapter with random non-zero B weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.plugins.tiny_vlm import ensure_tiny_vlm

SEED = 1234


def tiny_llava(folder: Path, init_std: float = 0.25) -> Path:
    import torch
    from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration

    base = ensure_tiny_vlm(base="random")
    config = AutoConfig.from_pretrained(base)
    config.text_config.initializer_range = init_std
    config.vision_config.initializer_range = init_std
    config.vision_config.initializer_factor = init_std / 0.02
    torch.manual_seed(SEED)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.save_pretrained(folder)
    AutoProcessor.from_pretrained(base).save_pretrained(folder)
    return folder


def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ensure_tiny_vlm(base="random"))


def tiny_vision_encoder_decoder(folder: Path) -> Path:
    import torch
    from transformers import GPT2Config, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    tok = _tokenizer()
    encoder = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=128, initializer_range=0.2)
    decoder = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=128,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, initializer_range=0.2)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tok.bos_token_id
    config.pad_token_id = tok.pad_token_id
    config.eos_token_id = tok.eos_token_id
    torch.manual_seed(SEED)
    model = VisionEncoderDecoderModel(config=config).eval()
    model.generation_config.decoder_start_token_id = tok.bos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def tiny_blip(folder: Path) -> Path:
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    tok = _tokenizer()
    config = BlipConfig(
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8, "initializer_range": 0.2},
        text_config={"vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "encoder_hidden_size": 64,
                     "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                     "sep_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
                     "initializer_range": 0.2, "max_position_embeddings": 128},
        projection_dim=64)
    torch.manual_seed(SEED)
    model = BlipForConditionalGeneration(config).eval()
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    image_processor = BlipImageProcessorPil(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(folder)
    return folder


def lora_adapter(model_folder: Path, out: Path, target_modules: str | list[str] | None = None,
                 b_std: float = 0.5, **lora_options: object) -> Path:
    """A LoRA adapter on the language model's q/v projections (a regex: a plain list would also hit the vision
    tower), with random non-zero B weights so that it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_folder)
    targets = target_modules or r".*language_model.*\.(q_proj|v_proj)"
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, **lora_options))
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * b_std)
    peft_model.save_pretrained(out)
    return out


QWEN_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
                 "{{ message['content'] }}{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}"
                 "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
                 "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")


def tiny_qwen2_vl(folder: Path) -> Path:
    """A Qwen2-VL checkpoint saved as a hub folder holds it: weights, image processor, tokenizer, chat template
    (its processor, which in transformers 5 includes a video processor, is built when loaded)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = _tokenizer()
    special = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in special}
    text = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2,
                rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=ids["<|im_end|>"])
    vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(SEED)
    Qwen2VLForConditionalGeneration(config).save_pretrained(folder)
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config_file = folder / "tokenizer_config.json"  # the processor is the model type's, as in a Qwen hub folder
    config_file.write_text(json.dumps({k: v for k, v in json.loads(config_file.read_text()).items()
                                       if k != "processor_class"}))
    (folder / "chat_template.jinja").write_text(QWEN_TEMPLATE)
    return folder
