"""`harness publish`: merge results.json files into a leaderboard.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="merge results into a leaderboard", description=__doc__)
    p.add_argument("inputs", nargs="+", type=Path, help="results.json files or folders of runs")
    p.add_argument("-o", "--output", type=Path, default=Path("leaderboard/leaderboard.json"),
                   help="leaderboard JSON to write (default: leaderboard/leaderboard.json)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from harness.publish import publish

    board, notices = publish(args.inputs, args.output)
    for notice in notices:
        print(f"note: {notice}", file=sys.stderr)
    print(f"{len(board['rows'])} rows in {args.output}")
    return 0
