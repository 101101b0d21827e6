"""Built-in model plugins, registered through the same hook as third-party models.

Registration is cheap: each model's module (and torch, transformers) is imported only when used.
"""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.registry import ModelInfo


@hookimpl
def register_models(register) -> None:
    register(
        ModelInfo(
            id="prior",
            loader="harness.plugins.prior:PriorModel",
            description="No-weights baseline: the most frequent training answer per answer type "
            "(VQA) or the most typical training text (reports, captions)",
            aliases=["majority", "baseline"],
            capabilities={"task_kinds": ["vqa", "report", "caption"], "needs_weights": False},
        )
    )
