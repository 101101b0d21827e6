"""A minimal model plugin: the batch-first interface in a dozen lines."""

from __future__ import annotations

from harness.model_api import ModelPlugin
from harness.types import GenerationOutput, GenerationRequest


class ConstantModel(ModelPlugin):
    default_batch_size = 64
    accepted_args = ("answer",)  # harness run refuses any other --model-args key (answr=2: did you mean 'answer'?)

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        answer = self.args.get("answer", "yes")
        return [GenerationOutput(text=answer, completion_tokens=1) for _ in requests]
