"""How the `hf` backend turns generation requests into processor inputs: the images a family takes, the
optional modality prefix, the chat conversation or BLIP-2/InstructBLIP text, the length key that micro-batches
are sorted by, and the left-padded encoding of a micro-batch.

A mixin of `HFModel` (plugins/hf.py). Every method that tokenizes takes the processor to use, because the
preprocessing threads each own a copy (a tokenizer must not be used by two threads at once).
"""

from __future__ import annotations

import copy
import math
import sys
from typing import Any

from harness.errors import UserError
from harness.plugins.modality_classifier import label_of
from harness.types import GenerationOutput, GenerationRequest

PROBE_ID = "__adapter_probe__"


class HFPrompting:
    """Prompt building and encoding of `HFModel` (needs `family`, `opts`, `context`, `processor`,
    `tokenizer`, `image_processor` and `cache` set by the model)."""

    family: str
    opts: dict[str, Any]
    context: Any
    processor: Any
    tokenizer: Any
    image_processor: Any
    cache: str
    prefill_chunk: int
    modality_classifier: Any = None  # prepend_modality=predicted: plugins/modality_classifier.py
    modality_labels: dict[str, str]  # request id -> the label its prompt was given (until its output is returned)

    def _images(self, req: GenerationRequest) -> list[Any]:
        if self.family == "chat":
            return list(req.images)
        if len(req.images) > 1 and not getattr(self, "_said_first_image", False):
            self._said_first_image = True  # once per run: every multi-view sample is cut the same way
            print(f"warning: {self.opts['model']} is a {self.family} model, which takes one image: samples with "
                  f"several (the first: {req.id}, {len(req.images)} images) are generated from their first only",
                  file=sys.stderr)
        return list(req.images[:1])

    def _prefix(self, req: GenerationRequest) -> str:
        """"Imaging modality: <label>. " with prepend_modality=true (the sample's label) or =predicted (the
        modality classifier's, from the first image), else ""."""
        if not self.opts["prepend_modality"] or req.id == PROBE_ID:
            return ""
        if self.opts["prepend_modality"] == "predicted":
            if self.modality_classifier is None:
                raise UserError("prepend_modality=predicted needs the model built for a task (its train split fits "
                                "the classifier)")
            if not req.images:
                return ""
            label = self.modality_labels.get(req.id) or self.modality_classifier.predict(req.images[0])
        else:
            field = self.opts["modality_field"]
            label = label_of(req.metadata.get(field))
            if label is None:  # asked without the prefix, as its predictions line says (one sample, not the run)
                if not getattr(self, "_said_no_modality", False):
                    self._said_no_modality = True
                    print(f"warning: prepend_modality=true: sample '{req.id}' has no modality in field '{field}' and "
                          "is asked without the prefix, as is any other such sample (its predictions line has "
                          "modality_label null); another field: --model-args modality_field=<field>", file=sys.stderr)
                self.modality_labels[req.id] = ""
                return ""
        self.modality_labels[req.id] = label  # recorded with the sample's output (generation_details)
        return f"Imaging modality: {label}. "

    def _record_modality(self, requests: list[GenerationRequest], outputs: list[GenerationOutput]) -> None:
        """Each output gets the label its prompt was given (`details`: the sample's predictions line), and whether
        it came from the classifier or from the sample's field."""
        predicted = self.opts["prepend_modality"] == "predicted"
        for request, out in zip(requests, outputs):
            label = self.modality_labels.pop(request.id, None)
            if label is not None:
                out.details = {**(out.details or {}), "modality_label": label or None,  # truncated stays
                               "modality_from": "classifier" if predicted else f"field {self.opts['modality_field']}"}

    def _prompt(self, req: GenerationRequest) -> str:
        return self._prefix(req) + req.prompt

    def _conversation(self, req: GenerationRequest) -> list[dict[str, Any]]:
        messages = copy.deepcopy(req.messages)
        images, prompt = iter(self._images(req)), self._prompt(req)
        for message in messages:
            if isinstance(message.get("content"), list):
                for part in message["content"]:
                    if part.get("type") == "image":
                        part["image"] = next(images)
                    elif part.get("type") == "text" and message is messages[-1]:
                        part["text"] = prompt
        return messages

    def warn_unread_prompt(self) -> None:
        """A --prompt variant other than the task's default, for a family that never reads the template (BLIP-2
        asks "Question: ... Answer:", BLIP and ViT-GPT2 caption unconditionally): said, since the results record it."""
        context = self.context
        if self.family not in ("blip2", "blip", "vision-encoder-decoder") or context.task is None:
            return
        if context.prompt_template is not None and context.prompt_template != context.task.prompt_template(None)[1]:
            print(f"warning: the prompt template is not read by {self.family} models (it records the variant asked "
                  "for; the model is asked as with the default)", file=sys.stderr)

    def _text(self, req: GenerationRequest) -> str | None:
        """Text input of the BLIP-2 family (None: unconditional captioners)."""
        if self.family == "blip2":
            question = req.metadata.get("question") if req.task_kind == "vqa" else None
            return self._prefix(req) + (f"Question: {question} Answer:" if question else "")
        return self._prompt(req) if self.family == "instructblip" else None

    def _sort_key(self, req: GenerationRequest, processor: Any) -> tuple[int, int, int]:
        """(images, pixels, text tokens): micro-batches of similar keys pad little."""
        images = self._images(req)
        if self.family == "chat":
            text = processor.apply_chat_template(self._conversation(req), add_generation_prompt=True,
                                                 tokenize=False)
        else:
            text = self._text(req) or ""
        pixels = sum(getattr(im, "width", 0) * getattr(im, "height", 0) for im in images)
        tokens = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
        return len(images), pixels, tokens

    def _encode(self, reqs: list[GenerationRequest], processor: Any = None) -> Any:
        """Processor inputs for a micro-batch (left-padded, on the CPU). `processor`: the copy owned by the
        calling thread (default: the main thread's)."""
        processor = processor or self.processor
        if self.family == "chat":
            kwargs: dict[str, Any] = {"padding": True, "padding_side": "left"}
            if self.cache == "static":  # few distinct cache lengths (and prefill chunks): few recompilations
                kwargs["pad_to_multiple_of"] = math.lcm(64, self.prefill_chunk or 64)
            enc = processor.apply_chat_template([self._conversation(r) for r in reqs], tokenize=True,
                                                add_generation_prompt=True, return_dict=True,
                                                return_tensors="pt", processor_kwargs=kwargs)
        elif self.family == "vision-encoder-decoder":
            enc = self.image_processor(images=[self._images(r)[0] for r in reqs], return_tensors="pt")
        elif self.family == "blip":
            enc = processor(images=[self._images(r)[0] for r in reqs], return_tensors="pt")
        else:
            enc = processor(images=[self._images(r)[0] for r in reqs], text=[self._text(r) for r in reqs],
                            padding=True, return_tensors="pt")
        return enc
