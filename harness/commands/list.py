"""`harness list [tasks|models|judges]`: what is installed (cheap: no model code is imported)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list tasks, models and judges", description=__doc__)
    p.add_argument("what", nargs="?", choices=["tasks", "models", "judges"], default=None)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=main)


def _rows(what: str) -> list[dict]:
    from harness import plugin_manager

    registry = {"tasks": plugin_manager.tasks, "models": plugin_manager.models, "judges": plugin_manager.judges}
    return [item.describe() for _, item in registry[what]().items()]


def _line(what: str, row: dict) -> str:
    if what == "tasks":
        sources = ", ".join(s["name"] for s in row["sources"])
        extra = f"{row['kind']:<8} v{row['version']:<5} sources: {sources}; prompts: {', '.join(row['prompts'])}"
        if row["credentialed"]:
            extra += " [credentialed]"
        return f"  {row['id']:<18} {extra}\n  {'':<18} {row['description']}".rstrip()
    aliases = f" (aliases: {', '.join(row['aliases'])})" if row["aliases"] else ""
    caps = row["capabilities"]
    extra = ""
    if caps.get("task_kinds"):
        extra += f" [{'/'.join(caps['task_kinds'])}]"
    if caps.get("conventions"):
        extra += f" conventions: {', '.join(caps['conventions'])}"
    if caps.get("hub_id"):
        extra += f" hub: {caps['hub_id']}@{caps.get('revision') or 'main'}"
    return f"  {row['id']:<18} {row['description']}{aliases}{extra}"


def main(args: argparse.Namespace) -> int:
    kinds = [args.what] if args.what else ["tasks", "models", "judges"]
    if args.json:
        print(json.dumps({k: _rows(k) for k in kinds}, indent=2))
        return 0
    rows = {kind: _rows(kind) for kind in kinds}  # an error (HARNESS_PLUGINS) comes before any output
    for kind in kinds:
        print(f"{kind}:")
        for row in rows[kind]:
            print(_line(kind, row))
    return 0
