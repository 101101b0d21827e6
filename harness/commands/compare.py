"""`harness compare A B`: is run B better than run A? Paired differences of every metric on the same samples."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="compare two scored runs on the same samples (paired interval and p-value)",
        description="Compare two runs scored on the same task, split and data: for each metric of each judge both "
                    "runs were scored with (with the same setup), A, B, the difference B - A with a paired bootstrap "
                    "95% interval, and a p-value (McNemar's exact test for 0/1 verdicts, else a paired randomization "
                    "test). Reads the run folders only: nothing is generated or judged.")
    p.add_argument("run_a", type=Path, metavar="A",
                   help="the baseline: a folder written by harness run or harness score")
    p.add_argument("run_b", type=Path, metavar="B", help="the run compared with it, on the same samples")
    p.add_argument("--judge", help="only this judge, or judge:convention (default: every judge both runs have)")
    p.add_argument("--metric", action="append", help="only this metric (repeatable; default: every metric with an "
                   "interval)")
    p.add_argument("--breakdown", help="also per value of this breakdown (e.g. answer_type)")
    p.add_argument("--resamples", type=int, default=None,
                   help="bootstrap and randomization draws (default: 1000; 100 to 100000)")
    p.add_argument("--output", "-o", type=Path, help="also write the comparison as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from harness.compare import compare, read_run
    from harness.errors import UserError
    from harness.io import atomic_write_json
    from harness.paired_stats import RESAMPLES
    from harness.results import validate

    resamples = RESAMPLES if args.resamples is None else args.resamples
    if not 100 <= resamples <= 100_000:
        raise UserError(f"--resamples {resamples}: expected 100 to 100000")
    if args.output is not None:
        if args.output.is_dir():
            raise UserError(f"--output {args.output} is a directory: expected a file name, e.g. comparison.json")
        if args.output.name in ("results.json", "scores.jsonl", "predictions.jsonl", "run.json"):
            raise UserError(f"--output {args.output}: a run folder's own file name; choose another, e.g. "
                            "comparison.json")
    a, b = read_run(args.run_a), read_run(args.run_b)
    report = compare(a, b, args.judge, args.metric, args.breakdown, resamples, progress=not args.no_progress)
    print(format_report(report))
    if args.output is not None:
        validate(report, "comparison")
        atomic_write_json(args.output, report)
        print(f"comparison: {args.output}")
    return 0


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _p(value: float | None, draws: int, method: str | None) -> str:
    if value is None:
        return "-"
    if method and "randomization" in method and abs(value - 1 / (draws + 1)) < 1e-12:
        return f"<{1 / draws:.4f}"  # no draw as far from 0: the smallest p that many draws can tell
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def format_report(report: dict[str, Any]) -> str:
    from harness.run_settings_diff import describe_diff
    from harness.scoring import shown_judge

    task = report["task"]
    lines = [f"paired comparison on {task['id']} ({task['split']}, data {task['fingerprint']})"]
    for side in ("a", "b"):
        run = report[side]
        prompt = f", prompt {run['prompt_variant']}" if run["prompt_variant"] else ""
        lines.append(f"  {side.upper()}: {run['model']}{prompt}  ({run['path']})")
    a, b = report["a"], report["b"]
    if (a["model"], a["prompt_variant"]) == (b["model"], b["prompt_variant"]):  # one label: say what A and B are
        lines.append("  " + describe_diff(report.get("differs", []), a["run_id"] == b["run_id"]))
    def label(c: dict[str, Any]) -> str:
        return c["metric"] if c["breakdown"] is None else f"{c['breakdown']}={c['value']}: {c['metric']}"

    width = max([28, *(len(label(c)) for c in report["comparisons"])])
    current = None
    for c in report["comparisons"]:
        if c["judge"] != current:
            current = c["judge"]
            counts = report["judges"][current]
            unpaired = [f"{counts[k]} only in {k[-1].upper()}" for k in ("only_a", "only_b") if counts[k]]
            clusters = f", in {counts['clusters']} clusters ({task['cluster_by']})" if "clusters" in counts else ""
            lines.append(f"judge {shown_judge(current)}: {counts['paired']} samples scored in both runs{clusters}"
                         + (f" ({', '.join(unpaired)}: left out)" if unpaired else ""))
            lines.append(f"    {'metric':<{width}} {'A':>8} {'B':>8} {'B - A':>9}  {'95% CI of B - A':<21} {'p':>8} "
                         f"{'n':>6}")
        name = label(c)
        ci = f"[{_number(c['ci95'][0], True)}, {_number(c['ci95'][1], True)}]" if c["ci95"] else "-"
        extra = ""
        if "discordant" in c:
            extra = f"  (only A right {c['discordant']['a_only']}, only B right {c['discordant']['b_only']})"
        values = f"{_number(c['a']):>8} {_number(c['b']):>8} {_number(c['difference'], True):>9}"
        lines.append(f"    {name:<{width}} {values}  "
                     f"{ci:<21} {_p(c['p_value'], report['resamples'], c['p_method']):>8} {c['n']:>6}{extra}")
    if report["methods"]:
        lines.append(f"methods ({report['resamples']} draws):")
        lines += [f"  {name}: {text}" for name, text in report["methods"].items()]
    for note in report["notes"]:
        print(f"note: {note}", file=sys.stderr)
    return "\n".join(lines)
