"""The pretraining that turns the random tiny-vlm into a base model worth fine-tuning with LoRA.

Real VLMs that researchers fine-tune with LoRA start from a language model pretrained on text and a vision
connector aligned on image captions (LLaVA's stage 1). A randomly initialised model has neither, and LoRA on
it does not learn to read the pixels in CPU minutes (the study in ARCHITECTURE.md, "Fine-tuning and the tiny
model": 0.51 closed accuracy against the prior's 0.43). So the `tiny-vlm` build trains its random model in
full, once, on both kinds of data, drawn from phantom cases of their own seed (none of them is
in any phantom task's train or test split; `Recipe`):

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
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """The pretraining settings. `steps` counts batches per kind (as many caption as text batches)."""

    seed: int = 7  # phantom generator seed 14 for these cases; the tasks use seed 0 (generator seeds 0 and 1)
    cases: int = 3000
    steps: int = 1500
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0

    def describe(self) -> dict[str, Any]:
        """The recipe as recorded next to the model (pretraining.json) and in checkpoints."""
        return {**asdict(self), "schedule": "cosine to 0 over all batches",
                "data": ["phantom-caption train prompt + image -> caption",
                         "phantom-vqa question, default prompt, no image -> answer"]}


def pretrain(random_folder: Path, out: Path, checkpoint: Path, recipe: Recipe = Recipe(), *,
             save_every: int = 100) -> None:
    """Train the random model in `random_folder` as described above and save it, with its processor, to `out`.

    Every `save_every` steps the model, optimizer and scheduler go atomically to `checkpoint`; a later call with
    the same recipe continues from there (the data order is a function of the step), so an interrupted build
    loses at most `save_every` steps. The caller deletes `checkpoint` once `out` is in place.
    """
    import numpy as np
    import torch
    from tqdm import tqdm

    from harness.model_api import ModelContext
    from harness.plugins.finetune_data import TrainEncoder, load_stage_data
    from harness.plugins.finetune_lora import lr_factor
    from harness.plugins.hf import HFModel
    from harness.progress import bar_pacing, bars_disabled

    captions = load_stage_data("phantom-caption")
    captions = dataclasses.replace(captions, samples=_pretraining_samples(captions.task, "caption", recipe))
    vqa = load_stage_data("phantom-vqa")
    questions = [(vqa.template.replace("{question}", s.question), s.answer)
                 for s in _pretraining_samples(vqa.task, "vqa", recipe)]
    context = ModelContext(task=captions.task, device="cpu", dtype="float32", cache_dir=None)
    plugin = HFModel({"model": str(random_folder)}, context)
    model, tokenizer = plugin.model, plugin.tokenizer
    for param in model.parameters():
        param.requires_grad_(True)
    encoder = TrainEncoder(plugin)
    params = list(model.parameters())
    torch.manual_seed(recipe.seed)
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    total = 2 * recipe.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, 0, recipe.lr, 0.0, "cosine"))
    first = _resume(checkpoint, recipe, model, optimizer, scheduler)

    def batch_indices(n: int, stream: int, step: int) -> list[int]:
        epoch, k = divmod(step, math.ceil(n / recipe.batch))
        order = np.random.default_rng([recipe.seed, stream, epoch]).permutation(n)
        return [int(i) for i in order[k * recipe.batch:(k + 1) * recipe.batch]]

    def update(batch: dict[str, Any]) -> float:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        return float(loss.item())

    model.train()
    # counted by update(), not by iterating the bar: tqdm's monitor thread (the log pacing's maxinterval) prints
    # the bar's count, which an iterating bar only brings up to date when it prints itself (stale log lines)
    bar = tqdm(desc="pretraining tiny-vlm (once per cache)", unit="step", file=sys.stderr, dynamic_ncols=True,
               initial=first, total=recipe.steps, disable=bars_disabled(), **bar_pacing(terminal_interval=1.0))
    for step in range(first, recipe.steps):
        picked = [captions.samples[i] for i in batch_indices(len(captions.samples), 0, step)]
        caption_batch = encoder.encode(captions, picked)
        caption_loss = update(caption_batch) if caption_batch is not None else float("nan")
        text_loss = update(text_batch(tokenizer, [questions[i] for i in batch_indices(len(questions), 1, step)]))
        bar.set_postfix(caption_loss=f"{caption_loss:.3f}", text_loss=f"{text_loss:.3f}", refresh=False)
        bar.update(1)
        if (step + 1) % save_every == 0 and step + 1 < recipe.steps:
            _save_checkpoint(checkpoint, recipe, step + 1, model, optimizer, scheduler)
    bar.close()
    model.eval()
    model.save_pretrained(out)
    plugin.processor.save_pretrained(out)


def _save_checkpoint(path: Path, recipe: Recipe, step: int, model: Any, optimizer: Any, scheduler: Any) -> None:
    import torch

    from harness.plugins.tiny_vlm import temp_tag

    state = {"recipe": recipe.describe(), "step": step, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    # two builds at once never share a temporary file; one a kill leaves names its owner, for the next build
    # to remove (tiny_vlm.remove_stale_temporaries)
    tmp = path.with_name(f"{path.name}.{temp_tag()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _resume(path: Path, recipe: Recipe, model: Any, optimizer: Any, scheduler: Any) -> int:
    """Load a checkpoint of this recipe into the model, optimizer and scheduler; the step to go on from (0 if
    there is none, or it is unreadable or from another recipe)."""
    import torch

    if not path.is_file():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a checkpoint cut short is only lost time
        return 0
    if state.get("recipe") != recipe.describe():
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    print(f"resuming the tiny-vlm pretraining at step {state['step']} of {recipe.steps}", file=sys.stderr)
    return int(state["step"])


def _pretraining_samples(task: Any, kind: str, recipe: Recipe) -> list[Any]:
    """The train split of `task`'s embedded phantom source, drawn with the recipe's seed and number of cases."""
    from harness.loaders import phantom

    options = {"seed": recipe.seed, "n_train": recipe.cases, "n_test": 1}
    return phantom.load(dataclasses.replace(task.source, options=options), "train", None, kind)


def text_batch(tokenizer: Any, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Right-padded text-only chat turns `USER: {prompt} ASSISTANT: {answer}</s>` from (prompt, answer) pairs,
    with the loss on the answer and the end-of-sequence token only."""
    import torch

    from harness.plugins.finetune_data import IGNORE, collate

    rows = []
    for text, answer in pairs:
        turn = [{"role": "user", "content": text}]
        prompt = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(f" {answer}{tokenizer.eos_token}", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + answer_ids])
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                     "labels": torch.tensor([[IGNORE] * len(prompt_ids) + answer_ids])})
    return collate(rows, tokenizer.pad_token_id)
