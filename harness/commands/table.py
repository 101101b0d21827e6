"""`harness table`: a leaderboard's rows as a Markdown, CSV or LaTeX table, with intervals and footnotes."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from harness.table import FORMATS

    p = sub.add_parser("table", help="print a leaderboard as a table (Markdown, CSV, LaTeX)", description=__doc__)
    p.add_argument("leaderboard", type=Path, nargs="?", default=Path("leaderboard/leaderboard.json"),
                   help="a leaderboard.json written by harness publish (default: %(default)s)")
    p.add_argument("--task", help="only the rows of this task")
    p.add_argument("--split", help="only the rows of this split")
    p.add_argument("--judge", help="only the rows of this judge, or judge:convention")
    p.add_argument("--metric", action="append",
                   help="a metric to show (repeatable; default: every metric with an interval)")
    p.add_argument("--breakdown", help="also each metric per value of this breakdown (e.g. answer_type)")
    p.add_argument("--format", choices=FORMATS, default="markdown")
    p.add_argument("--percent", action="store_true", help="metrics whose values all lie in [0, 1] shown x 100")
    p.add_argument("--digits", type=int, default=None,
                   help="decimals (default: 3; csv: the recorded values unrounded)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from harness.errors import UserError
    from harness.table import Table, metric_names, read_board, render, select

    if args.digits is not None and not 0 <= args.digits <= 10:
        raise UserError(f"--digits {args.digits}: expected 0 to 10")
    digits = args.digits if args.digits is not None or args.format == "csv" else 3
    rows = select(read_board(args.leaderboard), args.task, args.judge, args.split)
    table = Table(rows, metric_names(rows, args.metric), args.breakdown, args.percent, digits)
    print(render(table, args.format), end="")
    return 0
