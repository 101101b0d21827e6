"""The single pluggy PluginManager: built-in plugins and third-party entry points (group `harness`).

Built-in plugins are registered through the same hook implementations as third-party ones.
`HARNESS_PLUGINS` (comma-separated entry-point names of group `harness`, e.g. `example`, not the package name
`harness-plugin-example`) restricts which third-party plugins load, like llm's LLM_LOAD_PLUGINS; set it to an
empty string to load only the built-ins. A name that matches no installed entry point is an error.

A broken third-party plugin (it fails to import, its hook raises, or one of its task YAMLs is invalid or reuses
an id or alias already registered, e.g. `aliases: [slake]`) does not block the rest: that plugin or file is
skipped with one `warning:` line on stderr, `harness plugins` lists it under `problems`, and asking for a name
it would have registered says why it is missing. Errors in the built-in plugins stay errors.
"""

from __future__ import annotations

import importlib
import os
import sys
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


# Third-party plugins that failed to load, by plugin name: one line each, what `harness plugins` shows.
PROBLEMS: dict[str, list[str]] = {}
# Third-party plugins that could not be imported at all: named when a lookup of any kind fails.
UNLOADED: list[str] = []
# Plugin name -> (distribution, version) of the third-party plugins loaded from entry points.
DISTRIBUTIONS: dict[str, tuple[str, str]] = {}


def _problem(plugin: str, message: str) -> None:
    """Record that part of a third-party plugin was skipped, and say so once on stderr."""
    PROBLEMS.setdefault(plugin, []).append(message)
    print(f"warning: plugin '{plugin}' skipped: {message}", file=sys.stderr)


@cache
def get_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("harness")
    pm.add_hookspecs(hookspecs)
    for module_name in BUILTIN_PLUGINS:
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
    allow = os.environ.get("HARNESS_PLUGINS")
    _load_entrypoints(pm, None if allow is None else {n.strip() for n in allow.split(",") if n.strip()})
    return pm


def _load_entrypoints(pm: pluggy.PluginManager, allowed: set[str] | None) -> None:
    """Register the entry points of group `harness` (only the `allowed` names, when given)."""
    from importlib.metadata import entry_points

    available = list(entry_points(group=ENTRY_POINT_GROUP))
    if allowed is not None:
        unknown = sorted(allowed - {ep.name for ep in available} - set(BUILTIN_PLUGINS))
        if unknown:
            raise _unknown_plugins_error(unknown, available)
    for ep in available:
        if (allowed is not None and ep.name not in allowed) or pm.get_plugin(ep.name) is not None:
            continue
        if pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - a broken third-party package must not block the rest
            message = f"entry point '{ep.value}' could not be loaded: {_describe(exc)}"
            _problem(ep.name, message)
            UNLOADED.append(f"plugin '{ep.name}': {message}")
            continue
        dist = getattr(ep, "dist", None)
        if dist is not None:
            DISTRIBUTIONS[ep.name] = (dist.name, dist.version)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


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
    make_registry.notes.extend(UNLOADED)  # whatever they would have registered is missing too
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        plugin_name = impl.plugin_name
        builtin = plugin_name in BUILTIN_PLUGINS

        def register(item: Any, _plugin: str = plugin_name, _builtin: bool = builtin) -> None:
            try:
                item_id, obj, aliases = wrap(item, _plugin)
                try:
                    make_registry.add(item_id, obj, aliases)
                except UserError as exc:  # name the file (and line) that repeats the id or alias (a task YAML)
                    raise UserError(_where_repeated(obj, exc)) from None
            except UserError as exc:
                if _builtin:
                    raise
                _skipped(make_registry, _plugin, str(exc))

        if builtin:
            impl.function(register=register)
            continue
        try:
            impl.function(register=register)
        except Exception as exc:  # noqa: BLE001 - a broken third-party hook must not block the rest
            _skipped(make_registry, plugin_name, f"its {hook_name} hook raised {_describe(exc)}")
    return make_registry


def _where_repeated(obj: Any, exc: UserError) -> str:
    """`exc` prefixed with the file of `obj` (a task YAML) and the line of the clashing field, when known."""
    where = getattr(obj, "path", None)
    if not where:
        return str(exc)
    line = getattr(obj, "field_lines", {}).get(getattr(exc, "field", ""))
    return f"{where}:{line}: {exc}" if line else f"{where}: {exc}"


def _skipped(registry: Registry, plugin: str, message: str) -> None:
    _problem(plugin, message)
    registry.notes.append(f"plugin '{plugin}': {message}")


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
    out = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda p: p[0]):
        entry: dict[str, Any] = {
            "name": name,
            "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
            "builtin": name in BUILTIN_PLUGINS,
        }
        if name in DISTRIBUTIONS:
            entry["distribution"], entry["version"] = DISTRIBUTIONS[name]
        entry.update(registered.get(name, {}))
        if PROBLEMS.get(name):
            entry["problems"] = list(PROBLEMS[name])
        out.append(entry)
    for name in sorted(set(PROBLEMS) - {entry["name"] for entry in out}):  # failed to import: not registered
        out.append({"name": name, "hooks": [], "builtin": False, "problems": list(PROBLEMS[name])})
    return out
