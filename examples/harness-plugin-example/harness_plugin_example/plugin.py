"""Hook implementations: register the `constant` model and the `example-mini-vqa` and `example-local-vqa` tasks.

Registration is cheap: the model class is named by a "module:attribute" string and imported only when used.
"""

from __future__ import annotations

from pathlib import Path

from harness.hookspecs import hookimpl
from harness.registry import ModelInfo


@hookimpl
def register_models(register) -> None:
    register(
        ModelInfo(
            id="constant",
            loader="harness_plugin_example.model:ConstantModel",
            description="Answers every request with the same text (--model-args answer=...)",
            capabilities={"task_kinds": ["vqa", "report", "caption"]},
        )
    )


@hookimpl
def register_tasks(register) -> None:
    register(Path(__file__).with_name("example-mini-vqa.yaml"))
    register(Path(__file__).with_name("example-local-vqa.yaml"))
