"""Throughput of the `pefomed` model plugin (samples/s), next to plain transformers `generate`.

    python benchmarks/pefomed_generation.py                  # real PeFoMed shape on CUDA (random weights)
    python benchmarks/pefomed_generation.py --shape tiny     # tiny shape, runs on a CPU

Real shape: EVA ViT-g/14 at 448 px as Blip2VisionModel, 4-token grouping, Linear(5632, 4096), LLaMA-2-7B,
random weights built from the configs (nothing is downloaded); prompts of about 308 tokens (256 image
embeddings + the PeFoMed VQA instruction; the text is tokenized with a small BPE tokenizer trained on the
spot, so the wording is padded to the length LLaMA's tokenizer gives); 512x512 input images, so resizing
is part of the measurement; answers of exactly --new-tokens tokens (min_new_tokens = max_new_tokens). Every
row includes image preprocessing, the vision encoder and the prompt assembly; plugin rows call it as the runner
does (each next batch announced with `prefetch`, so its images are transformed while the current one
generates). Rows:

- plugin default: the plugin's own settings (CUDA: bfloat16, SDPA, batch 128, static cache, compiled
  decoding);
- plugin dynamic: the same without static cache and compilation;
- plugin vision (only with --rows ...,vision): the defaults plus `compile_vision=true`;
- plain generate: the plugin's embeddings fed to `llm.generate(inputs_embeds=..., attention_mask=...)` with
  its default settings (dynamic cache, no compilation);
each at batch 1 and at the plugin's default batch size, after --warmup full runs.
Reference on an H100 (same shape): plain generate 1.6 samples/s at batch 1, 56 at batch 128, 64 with a static
cache; the bf16 compute limit is about 130 samples/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_PROMPT_TOKENS = 308


def build(shape: str, device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_pefomed import TINY_VISION, train_tokenizer

    from harness.plugins import pefomed_arch as arch

    tokenizer = train_tokenizer()
    if shape == "real":
        vision_cfg = arch.vision_config()
        llm_cfg = LlamaConfig(
            vocab_size=32000,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
            attn_implementation="sdpa",
        )
    else:
        vision_cfg = arch.vision_config(TINY_VISION)
        llm_cfg = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=2048,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
            attn_implementation="sdpa",
        )
    torch.manual_seed(0)
    vision = arch.build_vision(vision_cfg, None, device=device, dtype=dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            llm = LlamaForCausalLM(llm_cfg)
            proj = torch.nn.Linear(vision_cfg.hidden_size * arch.GROUP, llm_cfg.hidden_size)
    finally:
        torch.set_default_dtype(previous)
    llm.eval().requires_grad_(False)
    proj.requires_grad_(False)
    return vision, proj, llm, tokenizer


def make_requests(n: int, tokenizer, new_tokens: int, seed: int = 0):
    import numpy as np
    from PIL import Image

    from harness.plugins import pefomed_arch as arch
    from harness.types import GenerationRequest, GenerationSettings

    rng = np.random.default_rng(seed)
    words = (
        "is there a lesion in the left lung how many lesions which side organ modality large small abnormality "
        "opacity mediastinum pneumothorax".split()
    )
    text_budget = TARGET_PROMPT_TOKENS - 1 - 256  # text tokens of a real PeFoMed VQA prompt (BOS, 256 image)
    requests = []
    settings = GenerationSettings(max_new_tokens=new_tokens)
    for i in range(n):
        question, target, instruction = "", text_budget + int(rng.integers(-6, 7)), None
        while True:  # grow the question until the text reaches about the LLaMA-tokenized length
            longer = (question + " " + words[int(rng.integers(len(words)))]).strip()
            prompt = f"[vqa] Based on the image, respond to this question with a short answer: {longer}?"
            processed = arch.instruction_for(prompt, "vqa")
            if processed == instruction:  # PeFoMed's text processing keeps 50 words: no longer prompt
                break
            segs = arch.prompt_segments(processed, 1)
            if sum(len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in segs) > target:
                break
            question, instruction = longer, processed
        image = Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
        requests.append(
            GenerationRequest(
                id=str(i),
                images=[image],
                prompt=f"[vqa] Based on the image, respond to this question with a short answer: {question}?",
                messages=[],
                generation=settings,
                task_kind="vqa",
            )
        )
    return requests


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_plugin(plugin, requests, batch: int, warmup: int, device: str) -> tuple[float, list]:
    for _ in range(warmup):
        plugin.generate(requests[:batch])
    sync(device)
    batches = [requests[i : i + batch] for i in range(0, len(requests), batch)]
    start = time.perf_counter()
    outputs = []
    for k, chunk in enumerate(batches):  # as the runner calls it: the next batch is announced first
        if k + 1 < len(batches):
            plugin.prefetch(batches[k + 1])
        outputs += plugin.generate(chunk)
    sync(device)
    return time.perf_counter() - start, outputs


def time_plain(plugin, requests, batch: int, warmup: int, device: str, new_tokens: int) -> tuple[float, list]:
    import torch

    def run(chunk):
        embeds = plugin.embed_requests(chunk)
        width = max(e.shape[0] for e in embeds)
        padded = embeds[0].new_zeros(len(embeds), width, embeds[0].shape[1])
        mask = torch.zeros(len(embeds), width, dtype=torch.long, device=padded.device)
        for i, e in enumerate(embeds):
            padded[i, width - e.shape[0] :], mask[i, width - e.shape[0] :] = e, 1
        with torch.no_grad():
            out = plugin.net.llm.generate(
                inputs_embeds=padded,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=2,
            )
        return [len(row) for row in out.tolist()]

    for _ in range(warmup):
        run(requests[:batch])
    sync(device)
    start = time.perf_counter()
    lengths = []
    for i in range(0, len(requests), batch):
        lengths += run(requests[i : i + batch])
    sync(device)
    return time.perf_counter() - start, lengths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=["real", "tiny"], default="real")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--batches", type=int, default=2, help="timed batches at the default batch size")
    parser.add_argument("--single", type=int, default=None, help="timed samples at batch 1 (default 8 / 4)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--rows",
        default="default,dynamic,plain",
        help="which of default,dynamic,plain,vision to time (vision: default + compiled vision encoder)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    known = ("default", "dynamic", "plain", "vision", "")
    unknown = [r.strip() for r in args.rows.split(",") if r.strip() not in known]
    if unknown:  # before minutes of building and timing the rows that are known
        parser.error(f"--rows {args.rows}: unknown row {unknown[0]!r}; expected default, dynamic, plain or vision")

    import torch
    import transformers

    from harness.plugins.pefomed import PeFoMedModel

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.shape == "real" and not device.startswith("cuda"):
        parser.error("the real PeFoMed shape needs a CUDA GPU (about 20 GB); use --shape tiny on a CPU")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    vision, proj, llm, tokenizer = build(args.shape, device, dtype)
    options = {"min_new_tokens": args.new_tokens}
    plugins = {"default": PeFoMedModel.from_parts(vision, proj, llm, tokenizer, options)}
    plugins["dynamic"] = PeFoMedModel.from_parts(
        vision, proj, llm, tokenizer, {**options, "cache": "dynamic", "compile": False}
    )
    if "vision" in args.rows:
        plugins["vision"] = PeFoMedModel.from_parts(
            vision, proj, llm, tokenizer, {**options, "compile_vision": True}
        )
    default_batch = plugins["default"].default_batch_size
    single = args.single or (8 if device.startswith("cuda") else 4)
    requests = make_requests(max(default_batch * args.batches, single), tokenizer, args.new_tokens)
    prompt_tokens = [e.shape[0] for e in plugins["default"].embed_requests(requests[:16])]
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    print(
        f"# pefomed generation, shape={args.shape}, device={name}, dtype={str(dtype)[6:]}, torch "
        f"{torch.__version__}, transformers {transformers.__version__}"
    )
    print(
        f"# prompt tokens: mean {sum(prompt_tokens) / len(prompt_tokens):.1f} (min {min(prompt_tokens)}, max "
        f"{max(prompt_tokens)}), {args.new_tokens} new tokens per answer, "
        f"plugin options {plugins['default'].options}"
    )
    print(f"{'row':<16}{'batch':>6}{'samples':>9}{'seconds':>10}{'samples/s':>11}")
    rows = []
    for row in [r.strip() for r in args.rows.split(",") if r.strip()]:
        for batch in (1, default_batch):
            chunk = requests[:single] if batch == 1 else requests[: default_batch * args.batches]
            if row == "plain":
                seconds, lengths = time_plain(
                    plugins["default"], chunk, batch, args.warmup, device, args.new_tokens
                )
            else:
                seconds, outputs = time_plugin(plugins[row], chunk, batch, args.warmup, device)
                lengths = [o.completion_tokens for o in outputs]
                decoder = plugins[row].decoder
                if plugins[row].options["compile"] and not decoder.compile:
                    print(f"# warning: {row}: compiled decoding failed, this row decoded in eager mode", flush=True)
            if set(lengths) != {args.new_tokens}:
                raise SystemExit(
                    f"{row}: answers of {sorted(set(lengths))} tokens, expected {args.new_tokens}"
                )
            rate = len(chunk) / seconds
            label = f"plugin {row}" if row != "plain" else "plain generate"
            print(f"{label:<16}{batch:>6}{len(chunk):>9}{seconds:>10.2f}{rate:>11.2f}", flush=True)
            rows.append(
                {
                    "row": label,
                    "batch": batch,
                    "samples": len(chunk),
                    "seconds": seconds,
                    "samples_per_s": rate,
                }
            )
    for plugin in plugins.values():  # after every row: a closed plugin transforms images without its threads
        plugin.close()
    if args.json:
        args.json.write_text(json.dumps({"shape": args.shape, "device": name, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
