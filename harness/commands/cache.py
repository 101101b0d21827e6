"""`harness cache`: show where the LLM call cache is, how many replies it holds and its size; `--clear` empties it."""

from __future__ import annotations

import argparse
import json

from harness.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache", help="show or clear the LLM call cache",
        description="Show the LLM call cache (judge and API-model replies): path, entries, size. Cached replies "
                    "make reruns, resumed runs and re-scoring free; --clear deletes them.")
    parser.add_argument("--clear", action="store_true", help="delete every cached reply and stored batch id")
    parser.add_argument("--force", action="store_true",
                        help="with --clear: also when batches are still running (their results are then lost)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(func=run)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def run(args: argparse.Namespace) -> int:
    from harness.providers.cache import LLMCache, cache_path

    if args.force and not args.clear:
        raise UserError("--force only goes with --clear (clearing a cache with uncollected batches)")
    path = cache_path()
    blocker = next((parent for parent in path.parents if parent.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UserError(f"LLM cache {path}: {blocker} is a file, not a folder (check HARNESS_CACHE_DIR)")
    if not path.exists():
        stats = {"path": str(path), "entries": 0, "size_bytes": 0, "pending_batches": 0, "models": []}
        if args.clear:
            print(f"LLM cache {path}: already empty")
            return 0
    else:
        with LLMCache(path) as cache:
            if args.clear:
                pending = cache.stats()["pending_batches"]
                if pending and not args.force:
                    raise UserError(f"LLM cache {path} holds {pending} submitted batch(es) not yet collected (paid "
                                    "work in progress): clearing forgets them and the next run submits and pays "
                                    "again. Run the command that submitted them to collect them first, or pass "
                                    "--clear --force")
                removed = cache.clear()
                note = f"; forgot {pending} unfinished batch id(s)" if pending else ""
                print(f"LLM cache {path}: cleared {removed} entries{note}")
                return 0
            stats = cache.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"path:    {stats['path']}")
    print(f"entries: {stats['entries']}")
    print(f"size:    {_size(stats['size_bytes'])}")
    if stats["pending_batches"]:
        print(f"batches: {stats['pending_batches']} submitted and not yet collected (the next run resumes them)")
    for row in stats["models"]:
        unpriced = row.get("unpriced_entries", 0)
        why = f" ({unpriced} through a custom base URL: no API fees counted)" if unpriced else ""
        failed = row.get("billed_failures", 0)
        if failed:  # refused, filtered or empty replies: billed, counted, never served again
            why += f"; {failed} billed replies without an answer (refused, filtered, empty) counted in the cost"
        twice = row.get("paid_twice", 0)
        if twice:  # two runs asked the same at once: one reply kept, both billed
            why += f"; {twice} replies paid for twice (two runs asked the same at once) counted in the cost"
        print(f"  {row['provider']}:{row['model']}  {row['entries']} entries, est. ${row['cost_usd']:.4f} spent{why}")
    if stats["models"]:
        print(f"spent:   est. ${sum(row['cost_usd'] for row in stats['models']):.4f} in all (list prices)")
    return 0
