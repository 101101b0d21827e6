"""`harness agreement`: how well an LLM judge agrees with human raters (accuracy, Cohen's kappa)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "agreement",
        help="compare an LLM judge's verdicts with human labels (agreement, Cohen's kappa)",
        description="Agreement between an LLM judge and human raters, per rater and overall: accuracy "
        "(Likert: exact and within-one), Cohen's kappa (Likert: linear-weighted), and the human mean "
        "± std across raters next to the judge's mean ± std across repeats.",
    )
    p.add_argument("--labels", required=True, type=Path, metavar="FILE",
                   help="human labels: .csv with header id,rater,label or .jsonl with those keys "
                   "(label 0/1 for gpt4, 0..4 for likert)")
    p.add_argument("--scores", required=True, type=Path, metavar="PATH",
                   help="a run directory or its scores.jsonl")
    p.add_argument("--judge", action="append", required=True, metavar="ID",
                   help="judge id (gpt4, likert) or id:convention (gpt4:pefomed; gpt4/pefomed also); repeatable")
    p.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                   help="where to write the JSON report (default: agreement.json next to scores.jsonl)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness import agreement
    from harness.io import atomic_write_json

    if args.output is not None:
        check_output(args.output, "--output")
    labels = agreement.read_labels(args.labels)
    scores = agreement.scores_file(args.scores)
    if args.output is None:
        check_output(scores.parent / "agreement.json", "the default report path", "pass --output FILE")
    else:
        check_not_overwriting(args.output, args.labels, scores)
    judges = [part.strip() for value in args.judge for part in value.split(",") if part.strip()]
    reports = {}
    for judge in judges:
        for key, (scale, verdicts, setups) in agreement.read_judge_verdicts(scores, judge).items():
            setup = agreement.one_setup(key, labels, setups)
            reports[key] = {**agreement.agreement_report(labels, scale, verdicts), "judge_setup": setup}
    for key, report in reports.items():
        print(agreement.format_table(key, report))
        print()
    output = args.output or scores.parent / "agreement.json"
    atomic_write_json(output, {"labels": str(args.labels), "scores": str(scores), "judges": reports})
    print(f"wrote {output}")
    return 0


def check_output(path: Path, what: str, hint: str = "") -> None:
    """Refuse, before any work, a report path that cannot be written as a file (it would fail after the table)."""
    if path.is_dir():
        hint = hint or f"e.g. {path / 'agreement.json'}"
        raise UserError(f"{what} {path} is a directory; expected a file path ({hint})")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(f"{what} {path}: {parent} is not a directory; expected a file path in a directory")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: directory {parent} is not writable; expected a writable location")


def check_not_overwriting(path: Path, labels: Path, scores: Path) -> None:
    """Refuse an --output that is one of the inputs or an existing file other than an agreement report: the
    human labels or a run's paid verdicts would be replaced by the report."""
    import json

    if not path.exists():
        return
    for what, given in (("--labels", labels), ("the scores file", scores)):
        if path.resolve() == given.resolve():
            raise UserError(f"--output {path} is {what}: the report would replace it; choose another path")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        report = None
    if not (isinstance(report, dict) and {"labels", "scores", "judges"} <= set(report)):
        raise UserError(f"--output {path} exists and is not an agreement report; choose another path (or delete it)")
