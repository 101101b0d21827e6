"""Throughput of the `hf` backend (samples/s) next to plain `generate` with default settings, in one run.

The model is built from a config with random weights (no download). `--shape llava-7b` has LLaVA-1.5-7B's
shapes (CLIP ViT-L/14 at 336 px: 576 image tokens; a 2-layer MLP projector; a 32-layer, 4096-wide Llama);
`--shape tiny` has the tiny-vlm shapes, for a CPU. Prompts are one phantom image plus a VQA question (16 new
tokens) or a report instruction (128 new tokens); every sample produces exactly that many tokens
(min_new_tokens = max_new_tokens). Each setting is warmed up with `--warmup` full batches (default 1) before it
is timed; each row is printed when it is done, and a row that fails prints its error and the others go on.

Rows: `harness b=1` (the backend at batch size 1); `harness default` (the batch size, micro-batches, cache and
compilation the backend picks by itself, fed batch by batch as the runner does: the next batch is announced
with `prefetch` while the current one generates); `harness +<args>` (the same with `--variant` model args, e.g.
`prefill_chunk=64`, at the batch and micro-batch that backend picks for itself); `generate b=1` and
`generate b=<micro>` (processor + `model.generate` with transformers' defaults: dynamic cache, no compilation,
at batch 1 and at the backend's micro-batch size). Batch-1 rows time 8 samples. The backend sizes its
micro-batch for a task: phantom-vqa for the 16-token rows, phantom-caption (also one image per sample, like
these prompts) for the 128-token report rows.

    .venv/bin/python benchmarks/generation.py --shape tiny --samples 32           # CPU
    .venv/bin/python benchmarks/generation.py --shape llava-7b                    # GPU (bf16)
    .venv/bin/python benchmarks/generation.py --shape llava-7b --new-tokens 16 --variant prefill_chunk=64
(one token count per process keeps each run within a few minutes and its compiled graphs apart)
"""

from __future__ import annotations

import argparse
import functools
import time
from dataclasses import replace
from typing import Any

REPORT_PROMPT = "Write the findings section of a radiology report for this image."


def build(shape: str, device: str, dtype: str) -> tuple[Any, Any]:
    """A random-weight LLaVA model of the given shape and a processor for it (tiny-vlm's tokenizer)."""
    import torch
    from transformers import (
        AutoConfig,
        AutoProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from harness.plugins.tiny_vlm import CHAT_TEMPLATE, ensure_tiny_vlm

    tiny = ensure_tiny_vlm(base="random")  # its tokenizer, processor and shapes; the weights are random anyway
    processor = AutoProcessor.from_pretrained(tiny)
    if shape == "tiny":
        config = AutoConfig.from_pretrained(tiny)
    else:
        tok = processor.tokenizer
        images = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
        processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=14,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=CHAT_TEMPLATE)
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                  num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768)
        text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                           num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
        config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-2,
                             vision_feature_select_strategy="default",
                             image_token_id=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=getattr(torch, dtype))
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return model.eval(), processor


def requests(n: int, new_tokens: int, report: bool) -> list[Any]:
    """`n` single-image requests from phantom-vqa (repeated if needed), with a report prompt if `report`."""
    from harness import plugin_manager
    from harness.task import Task

    task = Task(plugin_manager.tasks().get("phantom-vqa"))
    _, template = task.prompt_template(None)
    settings = task.generation_settings({"max_new_tokens": new_tokens})
    samples = (task.samples() * (n // len(task.samples()) + 1))[:n]
    reqs = []
    for s in samples:
        req = task.build_request(s, template, settings, [s.images[0].open()])
        if report:
            req = replace(req, prompt=REPORT_PROMPT, task_kind="report", messages=[
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": REPORT_PROMPT}]}])
        reqs.append(req)
    return reqs


def timed(fn, batches: list[list[Any]], warmup: int) -> float:
    for batch in batches[:1] * warmup:  # full warm-up batches (compilation, CUDA graphs, allocator)
        fn(batch)
    sync()
    started = time.perf_counter()
    for batch in batches:
        fn(batch)
    sync()
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items) - size + 1, size)] or [items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["tiny", "llava-7b"], default="llava-7b")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--samples", type=int, default=None,
                        help="timed samples per row (default: two default batches)")
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--warmup", type=int, default=1, help="untimed full batches before each row (default 1)")
    parser.add_argument("--variant", nargs="*", default=[],
                        help="extra `harness default` rows with these model args (k=v[;k=v]), e.g. prefill_chunk=64")
    args = parser.parse_args()
    for variant in args.variant:
        if any("=" not in kv for kv in variant.split(";")):
            parser.error(f"--variant {variant}: expected model args as k=v[;k=v], e.g. prefill_chunk=64")

    import torch
    import transformers

    from harness.model_api import ModelContext
    from harness.plugin_manager import tasks
    from harness.plugins.hf import HFModel
    from harness.plugins.hf_generation import free_memory
    from harness.plugins.hf_presets import resolve_device_dtype
    from harness.task import Task

    device, dtype = resolve_device_dtype(ModelContext(device=args.device, dtype=args.dtype))
    if args.shape == "llava-7b" and not device.startswith("cuda"):
        parser.error("the llava-7b shape needs a CUDA GPU (7 billion parameters: about 28 GB in float32); use "
                     "--shape tiny on a CPU")
    model, processor = build(args.shape, device, dtype)
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    params = sum(p.numel() for p in model.parameters()) / 1e9
    print(f"# shape={args.shape} device={device} ({gpu}) dtype={dtype} params={params:.3f}B "
          f"transformers={transformers.__version__} torch={torch.__version__}")
    header = ("new tok", "setting", "batch", "micro", "cache", "samples/s", "prompt")
    print("{:>7} {:<30} {:>5} {:>5} {:<8} {:>9} {:>6}".format(*header))
    backends: list[Any] = []  # for the count of out-of-memory halvings
    for new_tokens in args.new_tokens:
        report = new_tokens > 32
        task = Task(tasks().get("phantom-caption" if report else "phantom-vqa"))  # one image, like the prompts
        context = ModelContext(task=task, device=device, dtype=dtype,
                               generation=task.generation_settings({"max_new_tokens": new_tokens}))

        def backend(extra: dict[str, str], context: ModelContext = context, new_tokens: int = new_tokens) -> Any:
            free_memory()  # each backend sizes its micro-batch from the memory free now, as after loading
            made = HFModel.from_components(model, processor, context, {"min_new_tokens": str(new_tokens), **extra})
            backends.append(made)
            return made

        harness = backend({})
        default = harness.default_batch_size
        n = args.samples or max(2 * default, 8)
        reqs = requests(n, new_tokens, report)
        check = harness.generate(reqs[:1])[0]
        assert check.completion_tokens == new_tokens, check
        micro = harness.batcher.limit or default
        plain = functools.partial(plain_generate, model, processor, harness, new_tokens=new_tokens)
        # (label, the runner or the model args of a backend built for the row, batch size or None: its default)
        settings: list[tuple[str, Any, int | None]] = [("harness b=1", harness, 1), ("harness default", harness, None)]
        settings += [(f"harness +{variant}", dict(kv.split("=", 1) for kv in variant.split(";")), None)
                     for variant in args.variant]
        settings += [("generate b=1", plain, 1), (f"generate b={micro}", plain, micro)]
        for label, spec, batch in settings:  # each row printed when done; a failing row does not stop the rest
            try:
                runner = backend(spec) if isinstance(spec, dict) else spec
                if isinstance(runner, HFModel):
                    batch = batch or runner.default_batch_size
                    micro_batch, cache = min(batch, runner.batcher.limit or batch), runner.cache
                else:
                    micro_batch, cache = batch, "dynamic"
                # at least two batches of the row's size (the runner's prefetch works across calls); batch 1 is
                # slow: fewer samples
                count = max(n, 2 * batch) if batch > 1 else min(n, 8)
                row_reqs = reqs if count <= len(reqs) else requests(count, new_tokens, report)
                batches = chunks(row_reqs[:count], batch)
                fn = as_the_runner_calls(runner, batches) if isinstance(runner, HFModel) else runner
                rate = timed(fn, batches, args.warmup)
            except Exception as exc:  # noqa: BLE001 - report the row and go on with the next
                print(f"{new_tokens:>7} {label:<30} failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                continue
            print(f"{new_tokens:>7} {label:<30} {batch:>5} {micro_batch:>5} {cache:<8} {rate:>9.2f} "
                  f"{check.prompt_tokens:>6}", flush=True)
    print(f"# OOM halvings during the run: {sum(b.batcher.halvings for b in backends)}")


def as_the_runner_calls(harness: Any, batches: list[list[Any]]) -> Any:
    """`harness.generate(batch)`, announcing the batch after it with `prefetch` first, as the runner does."""
    following = {id(b): batches[i + 1] for i, b in enumerate(batches[:-1])}

    def step(batch: list[Any]) -> Any:
        if id(batch) in following:
            harness.prefetch(following[id(batch)])
        return harness.generate(batch)

    return step


def plain_generate(model: Any, processor: Any, harness: Any, batch: list[Any], *, new_tokens: int) -> None:
    """What a user would write: processor + generate with default settings (same prompts, left padding)."""
    import torch

    conversations = [harness._conversation(r) for r in batch]
    enc = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True,
                                        return_dict=True, return_tensors="pt",
                                        processor_kwargs={"padding": True, "padding_side": "left"})
    with torch.inference_mode():
        model.generate(**enc.to(model.device), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       do_sample=False)


if __name__ == "__main__":
    main()
