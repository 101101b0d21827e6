"""Pluggy hook specifications: the whole plugin contract of the harness.

Each hook receives a `register` callback (the pattern of simonw/llm) so the host controls ordering,
aliases and duplicate ids. Registration must stay cheap: describe the plugin (id, aliases,
description, capabilities, and a lazy `loader`) and import heavy libraries only inside the loader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("harness")
hookimpl = pluggy.HookimplMarker("harness")


@hookspec
def register_models(register: Callable[[Any], None]) -> None:
    """Register model plugins: call `register(ModelInfo(...))` once per model."""


@hookspec
def register_tasks(register: Callable[[Any], None]) -> None:
    """Register tasks: call `register(path_to_task_yaml)` once per task file."""


@hookspec
def register_judges(register: Callable[[Any], None]) -> None:
    """Register judge plugins: call `register(JudgeInfo(...))` once per judge."""
