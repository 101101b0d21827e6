"""Built-in plugin that registers every task YAML shipped in the `harness.tasks` package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from harness.hookspecs import hookimpl


@hookimpl
def register_tasks(register) -> None:
    folder = Path(str(resources.files("harness.tasks")))
    for path in sorted(folder.glob("*.yaml")):
        register(path)
