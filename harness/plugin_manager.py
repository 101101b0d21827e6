"""The single pluggy PluginManager: built-in plugins and third-party entry points (group `harness`).

Built-in plugins are registered through the same hook implementations as third-party ones.
`HARNESS_PLUGINS` (comma-separated entry-point names of group `harness`, e.g. `example`, not the package name
`harness-plugin-example`) restricts which third-party plugins load, like llm's LLM_LOAD_PLUGINS; set it to an
empty string to load only the built-ins. A name that matches no installed entry point is an error.
"""

from __future__ import annotations

import importlib
import os
from functools import cache
from pathlib import Path
from typing import Any

import pluggy

from harness import hookspecs
from harness.errors import UserError
from harness.registry import JudgeInfo, ModelInfo, Registry

ENTRY_POINT_GROUP = "harness"
BUILTIN_PLUGINS = (
    "harness.plugins.builtin",
    "harness.judges.builtin",
    "harness.builtin_tasks",
)


@cache
def get_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("harness")
    pm.add_hookspecs(hookspecs)
    for module_name in BUILTIN_PLUGINS:
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
    allow = os.environ.get("HARNESS_PLUGINS")
    if allow is None:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    else:
        _load_allowed_entrypoints(pm, {n.strip() for n in allow.split(",") if n.strip()})
    return pm


def _load_allowed_entrypoints(pm: pluggy.PluginManager, allowed: set[str]) -> None:
    from importlib.metadata import entry_points

    available = list(entry_points(group=ENTRY_POINT_GROUP))
    unknown = sorted(allowed - {ep.name for ep in available} - set(BUILTIN_PLUGINS))
    if unknown:
        raise _unknown_plugins_error(unknown, available)
    for ep in available:
        if ep.name in allowed and pm.get_plugin(ep.name) is None:
            pm.register(ep.load(), name=ep.name)


def _unknown_plugins_error(unknown: list[str], available: list[Any]) -> UserError:
    """HARNESS_PLUGINS names no installed entry point: name it, and the entry points there are."""
    import difflib

    names = sorted({ep.name for ep in available})
    by_package: dict[str, list[str]] = {}
    for ep in available:
        dist = getattr(ep, "dist", None)
        if dist is not None and dist.name:
            package = dist.name.lower().replace("_", "-")
            by_package.setdefault(package, []).append(ep.name)
    hints = []
    for name in unknown:
        package = by_package.get(name.lower().replace("_", "-"))
        if package:
            points = ", ".join(f"'{n}'" for n in sorted(set(package)))
            hints.append(f"'{name}' is the package name; its entry point is {points}")
            continue
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        if close:
            hints.append(f"'{name}': did you mean '{close[0]}'?")
    hint = f" ({'; '.join(hints)})" if hints else ""
    return UserError(
        f"HARNESS_PLUGINS={os.environ.get('HARNESS_PLUGINS', '')}: no installed plugin named "
        f"{', '.join(repr(n) for n in unknown)}{hint}. It takes entry-point names of group '{ENTRY_POINT_GROUP}'; "
        f"installed: {', '.join(names) or '(none)'} (empty: built-ins only)"
    )


def _collect(hook_name: str, make_registry: Registry, wrap) -> Registry:
    pm = get_plugin_manager()
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        plugin_name = impl.plugin_name

        def register(item: Any, _plugin: str = plugin_name) -> None:
            item_id, obj, aliases = wrap(item, _plugin)
            make_registry.add(item_id, obj, aliases)

        impl.function(register=register)
    return make_registry


def _wrap_info(item: Any, plugin: str) -> tuple[str, Any, list[str]]:
    if not isinstance(item, (ModelInfo, JudgeInfo)):
        raise UserError(f"plugin '{plugin}' registered {item!r}; expected a ModelInfo or JudgeInfo")
    item.plugin = plugin
    return item.id, item, list(item.aliases)


@cache
def models() -> Registry:
    return _collect("register_models", Registry("model"), _wrap_info)


@cache
def judges() -> Registry:
    return _collect("register_judges", Registry("judge"), _wrap_info)


@cache
def tasks() -> Registry:
    """Task id -> TaskConfig, read from every registered YAML file (validated on registration)."""
    from harness.task_config import load_task_config

    def wrap(item: Any, plugin: str) -> tuple[str, Any, list[str]]:
        config = load_task_config(Path(item))
        config.plugin = plugin
        return config.id, config, list(config.aliases)

    return _collect("register_tasks", Registry("task"), wrap)


def describe_plugins() -> list[dict[str, Any]]:
    """What `harness plugins` prints: each plugin, its hooks and what it registered."""
    pm = get_plugin_manager()
    registered: dict[str, dict[str, list[str]]] = {}
    for kind, registry in (("models", models()), ("judges", judges()), ("tasks", tasks())):
        for item_id, item in registry.items():
            registered.setdefault(item.plugin, {}).setdefault(kind, []).append(item_id)
    dists = {plugin: dist for plugin, dist in pm.list_plugin_distinfo()}
    out = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda p: p[0]):
        entry: dict[str, Any] = {
            "name": name,
            "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
            "builtin": name in BUILTIN_PLUGINS,
        }
        dist = dists.get(plugin)
        if dist is not None:
            entry["distribution"] = dist.project_name
            entry["version"] = dist.version
        entry.update(registered.get(name, {}))
        out.append(entry)
    return out
