"""A test-only model plugin that is slow on purpose (for kill-and-resume tests) and can fail per sample.

Registered through the same hook as every plugin; tests load it into a subprocess with `run_harness.py`.
"""

from __future__ import annotations

import time

from harness.hookspecs import hookimpl
from harness.model_api import ModelPlugin
from harness.registry import ModelInfo
from harness.types import GenerationOutput, GenerationRequest


class SlowEcho(ModelPlugin):
    """Answers with the question's first word after sleeping `delay` seconds per batch (and `load_delay` seconds
    once, as a model loading)."""

    default_batch_size = 2

    def __init__(self, args: dict[str, str], context) -> None:
        super().__init__(args, context)
        time.sleep(float(args.get("load_delay", "0")))

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        time.sleep(float(self.args.get("delay", "0.05")))
        return [GenerationOutput(text=(r.metadata.get("question") or "x").split()[0], completion_tokens=1)
                for r in requests]


@hookimpl
def register_models(register) -> None:
    register(ModelInfo(id="slow-echo", loader="slow_plugin:SlowEcho", description="test-only slow model"))
