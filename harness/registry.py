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
        """The plugin's class. A third-party plugin whose loader fails (a module it forgot to ship, a renamed
        class) is one line naming it; a missing optional extra is left to the CLI's install hint."""
        try:
            found = resolve_loader(self.loader)
            if not isinstance(found, type):  # called as Cls(...) later: "'int' object is not callable" named no one
                raise TypeError(f"it names {type(found).__name__} {str(found)[:60]!r}, not a class")
            return found
        except Exception as exc:
            from harness.extras import missing_extra_message
            from harness.plugin_manager import BUILTIN_PLUGINS

            if isinstance(exc, UserError) or not self.plugin or self.plugin in BUILTIN_PLUGINS:
                raise
            if isinstance(exc, ModuleNotFoundError) and missing_extra_message(exc.name):
                raise
            kind = type(self).__name__.removesuffix("Info").lower()
            first = (str(exc).strip().splitlines() or [""])[0]
            raise UserError(f"{kind} '{self.id}' of plugin '{self.plugin}' cannot be loaded from {self.loader!r}: "
                            f"{type(exc).__name__}: {first} (fix or reinstall that plugin)") from exc

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
    `local_device: False` (API models, the prior) makes `harness run` warn that --device and --dtype are ignored.
    """


@dataclass
class JudgeInfo(PluginInfo):
    """A judge plugin. `loader` yields a class `Cls(options: JudgeOptions)`.

    `capabilities` should say `task_kinds` (list of vqa/report/caption) and `conventions`.
    """


class NameClash(UserError):
    """An id or alias registered twice; `field` ("id" or "aliases") says which field of the second item."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class Registry:
    """Items of one kind (models, judges, tasks), addressable by id or alias."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}
        self.notes: list[str] = []  # third-party registrations that were skipped, and why
        self.left_out: list[str] = []  # installed third-party plugins HARNESS_PLUGINS leaves out
        self.skipped_ids: dict[str, str] = {}  # id a skipped (broken) task file states -> its note

    def add(self, item_id: str, item: Any, aliases: list[str] | tuple[str, ...] = ()) -> None:
        """Register `item`; an id or alias already taken (as an id or an alias) raises `NameClash`, registering
        nothing, like a repeated id: a silently dropped alias would make `--task ALIAS` reach another item."""
        if item_id in self._items or item_id in self._aliases:
            raise NameClash(f"the {self.kind} id '{item_id}' {self._taken(item_id)}", "id")
        new_aliases = [a for a in dict.fromkeys(aliases) if a != item_id]
        for alias in new_aliases:
            if alias in self._items or alias in self._aliases:
                raise NameClash(f"the alias '{alias}' of {self.kind} '{item_id}' clashes: '{alias}' "
                                f"{self._taken(alias)}", "aliases")
        self._items[item_id] = item
        for alias in new_aliases:
            self._aliases[alias] = item_id

    def _taken(self, name: str) -> str:
        """How `name` is already taken: "is already registered by plugin 'p' (file)" or as an alias of an id."""
        owner_id = self._aliases.get(name, name)
        first = self._items.get(owner_id)
        where = f"plugin '{first.plugin}'" if getattr(first, "plugin", "") else "another plugin"
        if getattr(first, "path", None):
            where += f" ({first.path})"
        if name in self._aliases:
            return f"is already an alias of {self.kind} '{owner_id}', registered by {where}"
        return f"is already registered by {where}"

    def get(self, name: str) -> Any:
        key = self._aliases.get(name, name)
        if key not in self._items:
            if name in self.skipped_ids:  # the broken file that states this very id
                raise UserError(f"{self.kind} '{name}' was skipped because broken: {self.skipped_ids[name]}")
            error = unknown_name(self.kind, name, list(self._items) + list(self._aliases))
            if self.notes:
                error = UserError(f"{error} (skipped because broken: {'; '.join(self.notes)})")
            if self.left_out:
                error = UserError(f"{error} (HARNESS_PLUGINS leaves out the installed plugin(s) "
                                  f"{', '.join(self.left_out)}: it may come from one of them)")
            raise error
        return self._items[key]

    def ids(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, Any]]:
        return sorted(self._items.items())

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._aliases
