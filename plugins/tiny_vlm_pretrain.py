"""The pretraining that turns the random tiny-vlm into a base model worth fine-tuning with LoRA.

Real VLMs that researchers fine-tune with LoRA start from a language model pretrained on text and a vision
connector aligned on image captions (LLaVA's stage 1). A randomly initialised model has neither, and LoRA on
it does not learn to read the pixels in CPU minutes (the study in ARCHITECTURE.md, "Fine-tuning and the tiny
model": 0.51 closed accuracy against the prior's 0.43). So the `tiny-vlm` build trains its random model in
full, once, on both kinds of data, drawn from phantom cases of their own seed (`PRETRAIN_SEED`: none of them is
in any phantom task's train or test split):

- caption alignment: an image and the phantom-caption prompt, the case's caption as the answer;
- text only: a phantom question in phantom-vqa's default prompt and no image, its answer as the answer. This
  teaches the language and the answer format, not the image: without an image, answers can only follow the
  prior. Reading the pixels to answer questions is what the LoRA fine-tune must add.

The two alternate batch by batch, AdamW with cosine decay over all steps. Asked about an image, the pretrained
model often answers with caption words and scores below the answer prior on phantom-vqa's closed questions
(0.34 against 0.43), so an adapter is still needed.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

PRETRAIN_SEED = 7  # phantom generator seeds 14 (these cases); tasks use seed 0 (generator seeds 0 and 1)
PRETRAIN_CASES = 3000
STEPS = 1500  # per kind: 1,500 caption batches and 1,500 text batches
BATCH = 32
LR = 1e-3
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0


def describe() -> dict[str, Any]:
    """The pretraining recipe, as recorded next to the model (pretraining.json)."""
    return {"seed": PRETRAIN_SEED, "cases": PRETRAIN_CASES, "steps_per_kind": STEPS, "batch_size": BATCH,
            "lr": LR, "schedule": "cosine to 0", "weight_decay": WEIGHT_DECAY, "max_grad_norm": MAX_GRAD_NORM,
            "data": ["phantom-caption train prompt + image -> caption",
                     "phantom-vqa question, default prompt, no image -> answer"]}


def pretrain(random_folder: Path, out: Path) -> None:
    """Train the random model in `random_folder` as described above and save it, with its processor, to `out`."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from harness.model_api import ModelContext
    from harness.plugins.finetune_data import TrainEncoder, load_stage_data
    from harness.plugins.hf import HFModel

    captions = load_stage_data("phantom-caption")
    captions = dataclasses.replace(captions, samples=_pretraining_samples(captions.task, "caption"))
    vqa = load_stage_data("phantom-vqa")
    questions = [(vqa.template.replace("{question}", s.question), s.answer)
                 for s in _pretraining_samples(vqa.task, "vqa")]
    context = ModelContext(task=captions.task, device="cpu", dtype="float32", cache_dir=None)
    plugin = HFModel({"model": str(random_folder)}, context)
    model, tokenizer = plugin.model, plugin.tokenizer
    for param in model.parameters():
        param.requires_grad_(True)
    encoder = TrainEncoder(plugin)
    params = list(model.parameters())
    torch.manual_seed(PRETRAIN_SEED)
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
    total = 2 * STEPS
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))

    def batch_indices(n: int, stream: int, step: int) -> list[int]:
        epoch, k = divmod(step, math.ceil(n / BATCH))
        order = np.random.default_rng([PRETRAIN_SEED, stream, epoch]).permutation(n)
        return [int(i) for i in order[k * BATCH:(k + 1) * BATCH]]

    def update(batch: dict[str, Any]) -> float:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        return float(loss.item())

    model.train()
    bar = tqdm(range(STEPS), desc="pretraining tiny-vlm (once per cache)", unit="step", file=sys.stderr,
               dynamic_ncols=True)
    for step in bar:
        picked = [captions.samples[i] for i in batch_indices(len(captions.samples), 0, step)]
        caption_batch = encoder.encode(captions, picked)
        caption_loss = update(caption_batch) if caption_batch is not None else float("nan")
        text_loss = update(text_batch(tokenizer, [questions[i] for i in batch_indices(len(questions), 1, step)]))
        bar.set_postfix(caption_loss=f"{caption_loss:.3f}", text_loss=f"{text_loss:.3f}")
    model.eval()
    model.save_pretrained(out)
    plugin.processor.save_pretrained(out)


def _pretraining_samples(task: Any, kind: str) -> list[Any]:
    """The train split of `task`'s embedded phantom source, drawn with PRETRAIN_SEED and PRETRAIN_CASES."""
    from harness.loaders import phantom

    options = {"seed": PRETRAIN_SEED, "n_train": PRETRAIN_CASES, "n_test": 1}
    return phantom.load(dataclasses.replace(task.source, options=options), "train", None, kind)


def text_batch(tokenizer: Any, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Right-padded text-only chat turns `USER: {prompt} ASSISTANT: {answer}</s>` from (prompt, answer) pairs,
    with the loss on the answer and the end-of-sequence token only."""
    import torch

    rows = []
    for text, answer in pairs:
        turn = [{"role": "user", "content": text}]
        prompt = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(f" {answer}{tokenizer.eos_token}", add_special_tokens=False)["input_ids"]
        rows.append((prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(rows):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, :len(ids)] = torch.tensor(labs)
        mask[i, :len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
