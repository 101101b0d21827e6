"""The single pluggy PluginManager: built-in plugins and third-party entry points (group `harness`).

Built-in plugins are registered through the same hook implementations as third-party ones.
`HARNESS_PLUGINS` (comma-separated entry-point names of group `harness`, e.g. `example`, not the package name
`harness-plugin-example`) restricts which third-party plugins load, like llm's LLM_LOAD_PLUGINS; set it to an
empty string to load only the built-ins. A name that matches no installed entry point is an error.

A broken third-party plugin (it fails to import, a hook has a wrong argument, a hook raises, it registers the
wrong kind of item, or one of its task YAMLs is invalid or reuses an id or alias already registered, e.g.
`aliases: [slake]`) does not block the rest: that plugin, hook or item is skipped with one `warning:` line on
stderr naming what was skipped, `harness plugins` lists it under `problems`, and asking for a name it would have
registered says why it is missing. A hook name that is not a hookspec (`register_model`) or a module without any
`@hookimpl` is never called; it is reported the same way. Errors in the built-in plugins stay errors.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import reprlib
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pluggy

from harness import hookspecs
from harness.errors import UserError
from harness.registry import JudgeInfo, ModelInfo, PluginInfo, Registry

ENTRY_POINT_GROUP = "harness"
BUILTIN_PLUGINS = (
    "harness.plugins.builtin",
    "harness.judges.builtin",
    "harness.builtin_tasks",
)


# What _collect does with each item a hook registers: (plugin name) -> (id, object, aliases), UserError if refused.
Wrap = Callable[[Any, str], tuple[str, Any, list[str]]]

# Problems of third-party plugins, by plugin name: one line each, what `harness plugins` shows.
PROBLEMS: dict[str, list[str]] = {}
# Third-party plugins that registered nothing (not importable, refused, no hooks): named when any lookup fails.
UNLOADED: list[str] = []
# Entry-point names of installed third-party plugins that HARNESS_PLUGINS leaves out: named when a lookup fails.
LEFT_OUT: list[str] = []
# Hook name -> plugins whose misnamed hook was probably meant to be that one: named when its lookup fails.
MISNAMED: dict[str, list[str]] = {}
# Plugin name -> (distribution, version) of the third-party plugins loaded from entry points.
DISTRIBUTIONS: dict[str, tuple[str, str]] = {}


def _problem(plugin: str, message: str, where: str = "") -> None:
    """Record a problem of a third-party plugin, and say so once on stderr: `plugin 'p'[ where]: message`.

    `message` says what was skipped ("model 'x' skipped: ...", "skipped: entry point ... could not be loaded")."""
    if message in PROBLEMS.get(plugin, []):
        return
    PROBLEMS.setdefault(plugin, []).append(message)
    separator = " " if message.startswith("skipped:") else ": "
    print(f"warning: plugin '{plugin}'{where}{separator}{message}", file=sys.stderr)


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
        if allowed is not None and ep.name not in allowed and ep.name not in LEFT_OUT:
            LEFT_OUT.append(ep.name)
        if (allowed is not None and ep.name not in allowed) or pm.get_plugin(ep.name) is not None:
            continue
        if pm.is_blocked(ep.name):
            continue
        dist = getattr(ep, "dist", None)
        if dist is not None:  # also for a plugin that fails below: `harness plugins` names the package to fix
            DISTRIBUTIONS[ep.name] = (dist.name, dist.version)
        step = "loaded"
        try:
            plugin = ep.load()
            step = "registered"
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - a broken third-party package must not block the rest
            if step == "registered" and pm.get_plugin(ep.name) is not None:
                pm.unregister(name=ep.name)  # pluggy < 1.7 leaves the hooks before the invalid one registered
            message = f"skipped: entry point '{ep.value}' could not be {step}: {_describe(exc, pm)}"
            _problem(ep.name, message)
            UNLOADED.append(f"plugin '{ep.name}' {message}")
            continue
        _check_hooks(pm, ep.name, plugin, f" (entry point '{ep.value}')")


def _check_hooks(pm: pluggy.PluginManager, name: str, plugin: Any, where: str) -> None:
    """Report hooks that are never called: a name that is no hookspec (`register_model`), a hook function without
    @hookimpl, or no hook at all."""
    specs = _hook_names(pm)
    callers = pm.get_hookcallers(plugin) or []
    for caller in sorted(callers, key=lambda c: c.name):
        impls = [i for i in caller.get_hookimpls() if i.plugin is plugin]
        if caller.has_spec() or all(i.optionalhook for i in impls):
            continue
        close = difflib.get_close_matches(caller.name, specs, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"harness hooks: {', '.join(specs)}"
        message = f"unknown hook '{caller.name}' ({hint}); it is never called"
        _problem(name, message, where)
        if close:
            MISNAMED.setdefault(close[0], []).append(f"plugin '{name}': {message}")
    hooked = {caller.name for caller in callers}
    unmarked = [n for n in specs if n not in hooked and callable(_static_attribute(plugin, n))]
    if callers:
        for function in unmarked:
            _problem(name, f"function '{function}' has no @hookimpl; it is never called", where)
            MISNAMED.setdefault(function, []).append(f"plugin '{name}': function '{function}' has no @hookimpl")
        return
    detail = f" {' and '.join(unmarked)} {'has' if len(unmarked) == 1 else 'have'} none" if unmarked else ""
    message = (f"defines no harness hooks (missing @hookimpl?{detail}: `from harness.hookspecs import hookimpl`, "
               "then @hookimpl above each hook function)")
    _problem(name, message, where)
    UNLOADED.append(f"plugin '{name}': {message}")


def _static_attribute(plugin: Any, name: str) -> Any:
    """`plugin.name` without running the plugin's own __getattr__ (a lazy module, a proxy); None if absent."""
    import inspect

    try:
        return inspect.getattr_static(plugin, name, None)
    except Exception:  # noqa: BLE001 - a plugin's odd attribute machinery must not stop the others loading
        return None


def _hook_names(pm: pluggy.PluginManager) -> list[str]:
    """The hooks of the contract (harness/hookspecs.py)."""
    return sorted(n for n, caller in vars(pm.hook).items() if not n.startswith("_") and caller.has_spec())


def _describe(exc: BaseException, pm: pluggy.PluginManager | None = None) -> str:
    """One line: the type and the first line of the message; pluggy's validation errors keep every line (the reason
    comes last), with the signature the hookspec expects."""
    text = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not text:
        return type(exc).__name__
    if not isinstance(exc, pluggy.PluginValidationError):
        return f"{type(exc).__name__}: {text[0]}"
    described = f"{type(exc).__name__}: {'; '.join(text)}"
    named = re.search(r"for hook '(\w+)'", text[0])
    hook = getattr(pm.hook, named.group(1), None) if pm is not None and named else None
    if hook is not None and hook.spec is not None:
        described += f" (expected: def {hook.name}({', '.join(hook.spec.argnames)}))"
    return described


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


def _collect(hook_name: str, make_registry: Registry, wrap: Wrap) -> Registry:
    pm = get_plugin_manager()
    make_registry.notes.extend(UNLOADED)  # whatever they would have registered is missing too
    make_registry.left_out.extend(LEFT_OUT)
    make_registry.notes.extend(MISNAMED.get(hook_name, []))
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
                _skipped(make_registry, _plugin, f"{_item_label(make_registry.kind, item)} skipped: {exc}")
                stated = _stated_id(item) if make_registry.kind == "task" else None
                if stated:  # `--task <its id>` names this file, not the closest other id and every broken one
                    make_registry.skipped_ids[stated] = make_registry.notes[-1]

        if builtin:
            impl.function(register=register)
            continue
        try:
            impl.function(register=register)
        except Exception as exc:  # noqa: BLE001 - a broken third-party hook must not block the rest
            _skipped(make_registry, plugin_name,
                     f"the rest of its {hook_name} hook skipped: it raised {_describe(exc)}")
    return make_registry


def _stated_id(item: Any) -> str | None:
    """The id a task file that failed to load still states on a line of its own (`id: x`), if any."""
    import re

    if not isinstance(item, (str, os.PathLike)):
        return None
    try:
        text = Path(item).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = re.search(r"^id:[ \t]*[\"']?([\w.-]+)", text, re.M)
    return found.group(1) if found else None


def _item_label(kind: str, item: Any) -> str:
    """Which item was skipped: "model 'x'", "task file y.yaml", or "a model entry" (not even the right type)."""
    if isinstance(item, PluginInfo) and isinstance(item.id, str):
        return f"{kind} '{item.id}'"
    if kind == "task" and isinstance(item, (str, os.PathLike)):
        return f"task file {Path(item).name}"
    return f"a {kind} entry"


def _given(item: Any) -> str:
    """A short description of what a hook passed to `register`."""
    if isinstance(item, PluginInfo):
        return f"a {type(item).__name__}"
    return f"{reprlib.repr(item)} (type {type(item).__name__})"


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


def _info_wrapper(expected: type[PluginInfo], hook_name: str) -> Wrap:
    """`wrap` of _collect for models and judges: only an `expected` (ModelInfo or JudgeInfo) is taken."""
    other = {ModelInfo: ("a judge", "register_judges"), JudgeInfo: ("a model", "register_models")}[expected]

    def wrap(item: Any, plugin: str) -> tuple[str, Any, list[str]]:
        if not isinstance(item, expected):
            hint = f" ({other[0]} goes to {other[1]})" if isinstance(item, PluginInfo) else ""
            raise UserError(f"{hook_name} was given {_given(item)}; expected a harness.registry.{expected.__name__}"
                            f"{hint}")
        item.plugin = plugin
        return item.id, item, list(item.aliases)

    return wrap


@cache
def models() -> Registry:
    return _collect("register_models", Registry("model"), _info_wrapper(ModelInfo, "register_models"))


@cache
def judges() -> Registry:
    return _collect("register_judges", Registry("judge"), _info_wrapper(JudgeInfo, "register_judges"))


@cache
def tasks() -> Registry:
    """Task id -> TaskConfig, read from every registered YAML file (validated on registration)."""
    from harness.task_config import load_task_config

    def wrap(item: Any, plugin: str) -> tuple[str, Any, list[str]]:
        if not isinstance(item, (str, os.PathLike)):
            raise UserError(f"register_tasks was given {_given(item)}; expected the path of a task YAML file")
        config = load_task_config(Path(item))
        config.plugin = plugin
        return config.id, config, list(config.aliases)

    return _collect("register_tasks", Registry("task"), wrap)


#: the `plugin` of a task read from a YAML file given to --task (not registered by any plugin)
TASK_FILE_PLUGIN = "file"


def task_config(name: str) -> Any:
    """The TaskConfig `--task NAME` means: a registered task id or alias, or the path of a task YAML file (a name
    ending in .yaml or .yml): a task of one's own runs without a plugin to register it. A file whose id is a
    registered task's is refused: two tasks of one id would meet on one leaderboard."""
    from harness.task_config import load_task_config

    if not name.endswith((".yaml", ".yml")):
        return tasks().get(name)
    path = Path(name).expanduser()
    if not path.is_file():
        what = "a directory" if path.is_dir() else "no such file"
        raise UserError(f"--task {name}: {what} (expected a task id, see harness list tasks, or a task YAML file)")
    config = load_task_config(path)
    registered = tasks()
    if config.id in registered or any(alias in registered for alias in config.aliases):
        taken = config.id if config.id in registered else next(a for a in config.aliases if a in registered)
        raise UserError(f"{path}: its id or alias '{taken}' is a registered task's ({registered.get(taken).path}): "
                        "give the file an id of its own (a copy of a task edited is another task)")
    config.plugin = TASK_FILE_PLUGIN
    return config


def distribution(plugin: str) -> str | None:
    """`name==version` of the installed package behind a third-party plugin (None for the built-in ones, whose
    version is the harness's own): recorded with its models and judges, and part of a run id, so that an upgraded
    plugin makes a new run instead of resuming with the old one's predictions."""
    get_plugin_manager()  # loads the entry points once, filling DISTRIBUTIONS
    if plugin in BUILTIN_PLUGINS or plugin not in DISTRIBUTIONS:
        return None
    name, version = DISTRIBUTIONS[plugin]
    return f"{name}=={version}"


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
        failed: dict[str, Any] = {"name": name, "hooks": [], "builtin": False}
        if name in DISTRIBUTIONS:
            failed["distribution"], failed["version"] = DISTRIBUTIONS[name]
        out.append({**failed, "problems": list(PROBLEMS[name])})
    return out
