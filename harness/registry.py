"""Descriptions of registered plugins, and lookup by id or alias with helpful errors.

A `ModelInfo`/`JudgeInfo` is cheap to build: `loader` is either a "module:attribute" string or a
zero-argument callable, resolved only when the plugin is actually used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UserError, unknown_name


def resolve_loader(loader: str | Callable[[], Any]) -> Any:
    """Import the object a plugin points to ("pkg.module:Attr") or call its factory."""
    if callable(loader):
        return loader()
    module_name, _, attr = loader.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


@dataclass
class PluginInfo:
    id: str
    loader: str | Callable[[], Any]
    description: str = ""
    aliases: list[str] = field(default_factory=list)
    capabilities: dict[str, Any] = field(default_factory=dict)
    plugin: str = ""  # name of the pluggy plugin that registered it (filled in by the host)

    def load(self) -> Any:
        return resolve_loader(self.loader)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "aliases": list(self.aliases),
            "description": self.description,
            "capabilities": dict(self.capabilities),
            "plugin": self.plugin,
        }


@dataclass
class ModelInfo(PluginInfo):
    """A model plugin. `loader` yields a class `Cls(args: dict[str, str], context: ModelContext)`.

    `capabilities` should say `task_kinds` (which task kinds it answers) and `adapters: True` when it loads
    `--adapter DIR` (context.adapter); `harness run --adapter` refuses a model that does not say so.
    """


@dataclass
class JudgeInfo(PluginInfo):
    """A judge plugin. `loader` yields a class `Cls(options: JudgeOptions)`.

    `capabilities` should say `task_kinds` (list of vqa/report/caption) and `conventions`.
    """


class Registry:
    """Items of one kind (models, judges, tasks), addressable by id or alias."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}
        self.notes: list[str] = []  # third-party registrations that were skipped, and why

    def add(self, item_id: str, item: Any, aliases: list[str] | tuple[str, ...] = ()) -> None:
        if item_id in self._items or item_id in self._aliases:
            first = self._items.get(self._aliases.get(item_id, item_id))
            where = f"plugin '{first.plugin}'" if getattr(first, "plugin", "") else "another plugin"
            if getattr(first, "path", None):
                where += f" ({first.path})"
            raise UserError(f"the {self.kind} id '{item_id}' is already registered by {where}")
        self._items[item_id] = item
        for alias in aliases:
            if alias not in self._items:
                self._aliases.setdefault(alias, item_id)

    def get(self, name: str) -> Any:
        key = self._aliases.get(name, name)
        if key not in self._items:
            error = unknown_name(self.kind, name, list(self._items) + list(self._aliases))
            if self.notes:
                error = UserError(f"{error} (skipped because broken: {'; '.join(self.notes)})")
            raise error
        return self._items[key]

    def ids(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, Any]]:
        return sorted(self._items.items())

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._aliases
