"""`harness plugins`: installed plugins, their hooks and what they register, as JSON."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list installed plugins as JSON", description=__doc__)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from harness.plugin_manager import describe_plugins

    print(json.dumps(describe_plugins(), indent=2))
    return 0
