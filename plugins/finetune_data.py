"""Training data for `harness finetune`: a task's train split as supervised (prompt, answer) batches.

The prompt of a training example is exactly what `harness run` sends the model for that sample: the task's
prompt variant filled by `Task.build_request`, rendered by the `hf` backend's own conversation builder and the
processor's chat template. The answer follows as the assistant turn (with the model's end-of-sequence token),
and the loss covers the answer tokens only (labels are -100 on the prompt, the image tokens and the padding).
Captioners without a prompt (BLIP, ViT-GPT2) learn the answer text as their whole output.

The order of examples is a pure function of (seed, stage, epoch), so a resumed run sees the same batches as
an uninterrupted one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.image_decoding import IMAGE_DECODING, open_images
from harness.types import GenerationSettings, Sample

IGNORE = -100
CACHE_BYTES = 2 << 30  # encoded samples kept in memory across epochs
SEQUENCE_PAD = {"attention_mask": 0, "labels": IGNORE}


@dataclass
class StageData:
    """One training stage's data: a task's train split and the prompt it is asked with."""

    task: Any  # harness.task.Task
    split: str
    samples: list[Sample]
    variant: str
    template: str
    settings: GenerationSettings
    fingerprint: str

    def describe(self) -> dict[str, Any]:
        from harness.fingerprint import text_hash

        return {"id": self.task.id, "version": self.task.config.version, "kind": self.task.kind,
                "source": self.task.source.name, "split": self.split, "fingerprint": self.fingerprint,
                "n_samples": len(self.samples), "prompt_variant": self.variant,
                "prompt_hash": text_hash(self.template), "image_decoding": IMAGE_DECODING}


def load_stage_data(task_name: str, *, data_dir: Path | None = None, source: str | None = None,
                    prompt: str | None = None, limit: int | None = None) -> StageData:
    """The train split of a task (first `limit` samples), with its prompt variant and data fingerprint."""
    from harness import plugin_manager
    from harness.fingerprint import dataset_fingerprint
    from harness.runner import check_images_exist
    from harness.task import Task

    task = Task(plugin_manager.task_config(task_name), source=source, data_dir=data_dir)
    split = task.config.train_split
    if not split:
        raise UserError(f"task '{task.id}' has no train split to fine-tune on")
    samples = whole = task.train_samples()
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit must be at least 1, got {limit}")
        samples = samples[:limit]
    check_images_exist(task, samples, whole)  # not a training run on nothing (SLAKE's annotations without imgs/)
    variant, template = task.prompt_template(prompt)
    return StageData(task=task, split=split, samples=samples, variant=variant, template=template,
                     settings=task.generation_settings(), fingerprint=dataset_fingerprint(samples))


def epoch_order(n: int, seed: int, stage: int, epoch: int) -> list[int]:
    """The permutation of example indices for one epoch of one stage."""
    import numpy as np

    return [int(i) for i in np.random.default_rng([seed, stage, epoch]).permutation(n)]


def open_requests(data: StageData, samples: list[Sample], skipped: list[str]) -> list[tuple[Sample, Any]]:
    """(sample, GenerationRequest) per sample whose images open; unreadable ones are skipped and noted."""
    out = []
    for sample in samples:
        images, error = open_images(sample)
        if error is not None:
            if sample.id not in skipped:
                skipped.append(sample.id)
                print(f"warning: skipping training sample {sample.id}: {error}", file=sys.stderr)
            continue
        out.append((sample, data.task.build_request(sample, data.template, data.settings, images)))
    return out


class TrainEncoder:
    """Turns samples into model inputs with labels, prompting as the `hf` backend (`plugin`) does."""

    def __init__(self, plugin: Any) -> None:
        self.plugin = plugin
        self.family = plugin.family
        self.tokenizer = plugin.tokenizer
        self.processor = plugin.processor
        self._prompt_cache: dict[tuple[str, str], list[int]] = {}
        self._eos_in_template: bool | None = None
        self.prefix_mismatches = 0
        self.skipped: list[str] = []
        self._cache: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._cache_bytes = 0
        self._cache_ok: bool | None = None

    # ---- requests ---------------------------------------------------------------------------------------
    def requests(self, data: StageData, samples: list[Sample]) -> list[tuple[Sample, Any]]:
        return open_requests(data, samples, self.skipped)

    # ---- encoding ---------------------------------------------------------------------------------------
    def encode(self, data: StageData, samples: list[Sample]) -> dict[str, Any] | None:
        """A right-padded batch with `labels`; None if no sample of the batch could be read.

        Each sample is encoded once and kept (up to `CACHE_BYTES`), later batches are collated from the kept
        tensors; the first batch is also encoded whole and compared, and any difference turns the cache off.
        """
        if self._cache_ok is False:
            return self.encode_batch(data, samples)
        items = []
        for sample in samples:
            key = (data.task.id, sample.id)
            if key not in self._cache:
                one = self.encode_batch(data, [sample])
                self._cache[key] = one
                self._cache_bytes += sum(v.nbytes for v in (one or {}).values() if hasattr(v, "nbytes"))
            if self._cache[key] is not None:
                items.append(self._cache[key])
        batch = collate(items, self.tokenizer.pad_token_id) if items else None
        if self._cache_ok is None and len(items) > 1:
            whole = self.encode_batch(data, samples)
            self._cache_ok = batch is not None and same_batch(batch, whole)
            batch = whole
        if self._cache_bytes > CACHE_BYTES:
            self._cache_ok, self._cache = False, {}
        return batch

    def encode_batch(self, data: StageData, samples: list[Sample]) -> dict[str, Any] | None:
        pairs = self.requests(data, samples)
        if not pairs:
            return None
        if self.family in ("blip", "vision-encoder-decoder"):
            return self._encode_captioner(pairs)
        return self._encode_prompted(data, pairs)

    def _answer_text(self, answer: str) -> str:
        return answer.strip()

    def _encode_captioner(self, pairs: list[tuple[Sample, Any]]) -> dict[str, Any]:
        """BLIP / VisionEncoderDecoder: the caption is the whole decoder sequence (no prompt)."""
        images = [self.plugin._images(req)[0] for _, req in pairs]
        answers = [self._answer_text(s.answer) for s, _ in pairs]
        if self.family == "blip":
            enc = dict(self.processor(images=images, text=answers, padding=True, padding_side="right",
                                      return_tensors="pt"))
            # Generation starts from the decoder's BOS token ([DEC]), not the tokenizer's [CLS]: train so.
            enc["input_ids"][:, 0] = self.plugin.model.config.text_config.bos_token_id
            labels = enc["input_ids"].clone()
            labels[enc["attention_mask"] == 0] = IGNORE
            labels[:, 0] = IGNORE
            enc["labels"] = labels
            return enc
        eos = self.tokenizer.eos_token or ""
        tok = self.tokenizer([a + eos for a in answers], padding=True, padding_side="right",
                             return_tensors="pt", add_special_tokens=False)
        labels = tok["input_ids"].clone()
        labels[tok["attention_mask"] == 0] = IGNORE
        pixels = self.plugin.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": labels}

    def _conversations(self, req: Any, answer: str | None) -> list[dict[str, Any]]:
        conv = self.plugin._conversation(req)
        if answer is not None:
            conv = conv + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        return conv

    def _template_adds_eos(self, req: Any) -> bool:
        """Whether the chat template closes an assistant turn with the end-of-sequence token itself."""
        if self._eos_in_template is None:
            marker = "zq-answer-zq"
            text = self.processor.apply_chat_template(self._conversations(req, marker), tokenize=False)
            tail = text[text.rfind(marker) + len(marker):] if marker in text else ""
            eos_tokens = {self.tokenizer.convert_ids_to_tokens(i) for i in self.plugin.eos_ids}
            self._eos_in_template = any(t and t in tail for t in eos_tokens)
        return self._eos_in_template

    def _full_and_prompt_texts(self, req: Any, answer: str) -> tuple[Any, Any]:
        """Prompt-only and prompt+answer inputs (chat: conversations; BLIP-2/InstructBLIP: texts)."""
        if self.family == "chat":
            if not self._template_adds_eos(req):
                answer += self.tokenizer.eos_token or ""
            return self._conversations(req, None), self._conversations(req, answer)
        prompt = self.plugin._text(req) or ""
        full = f"{prompt} {answer}" if prompt else answer
        return prompt, full + (self.tokenizer.eos_token or "")

    def _tokenize(self, items: list[Any], reqs: list[Any], *, generation_prompt: bool) -> Any:
        if self.family == "chat":
            return self.processor.apply_chat_template(
                items, tokenize=True, add_generation_prompt=generation_prompt, return_dict=True,
                return_tensors="pt", processor_kwargs={"padding": True, "padding_side": "right"})
        images = [self.plugin._images(r)[0] for r in reqs]
        return self.processor(images=images, text=items, padding=True, padding_side="right",
                              return_tensors="pt")

    def _prompt_ids(self, data: StageData, sample: Sample, req: Any, prompt: Any) -> list[int]:
        key = (data.task.id, sample.id)
        if key not in self._prompt_cache:
            enc = self._tokenize([prompt], [req], generation_prompt=True)
            mask = enc["attention_mask"][0].bool()
            self._prompt_cache[key] = enc["input_ids"][0][mask].tolist()
        return self._prompt_cache[key]

    def _encode_prompted(self, data: StageData, pairs: list[tuple[Sample, Any]]) -> dict[str, Any]:
        prompts, fulls = zip(*(self._full_and_prompt_texts(req, self._answer_text(s.answer))
                               for s, req in pairs))
        reqs = [req for _, req in pairs]
        enc = dict(self._tokenize(list(fulls), reqs, generation_prompt=False))
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = IGNORE
        for row, ((sample, req), prompt) in enumerate(zip(pairs, prompts)):
            prompt_ids = self._prompt_ids(data, sample, req, prompt)
            n = len(prompt_ids)
            if enc["input_ids"][row, :n].tolist() != prompt_ids:
                self.prefix_mismatches += 1
            labels[row, :n] = IGNORE
        enc["labels"] = labels
        return enc


def collate(items: list[dict[str, Any]], pad_id: int | None) -> dict[str, Any] | None:
    """Right-pad per-sample encodings into one batch: token rows are padded, image tensors concatenated."""
    import torch

    keys = items[0].keys()
    if any(item.keys() != keys for item in items):
        return None
    batch: dict[str, Any] = {}
    for key in keys:
        values = [item[key] for item in items]
        ids = items[0].get("input_ids")
        token_row = ids is not None and values[0].dim() == 2 and values[0].shape == ids.shape
        if key in ("input_ids", "labels", "attention_mask") or token_row:
            width = max(v.shape[1] for v in values)
            fill = SEQUENCE_PAD.get(key, pad_id if key == "input_ids" else 0)
            out = torch.full((len(values), width), fill if fill is not None else 0, dtype=values[0].dtype)
            for row, v in enumerate(values):
                out[row, : v.shape[1]] = v[0]
            batch[key] = out
        else:
            try:
                batch[key] = torch.cat(values, dim=0)
            except RuntimeError:
                return None
    return batch


def same_batch(a: dict[str, Any], b: dict[str, Any] | None) -> bool:
    import torch

    return b is not None and a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def to_device(batch: dict[str, Any], device: str, dtype: Any) -> dict[str, Any]:
    """Move a batch to the model's device; floating inputs (pixels) take the model's dtype."""
    out = {}
    for key, value in batch.items():
        if hasattr(value, "to"):
            value = value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)
        out[key] = value
    return out


def answer_tokens(batch: dict[str, Any]) -> int:
    """How many label tokens of a batch enter the loss."""
    labels = batch["labels"]
    if "input_ids" in batch:  # labels aligned with the inputs: position t predicts label t+1
        labels = labels[:, 1:]
    return int((labels != IGNORE).sum())
