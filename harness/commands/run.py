"""`harness run`: evaluate one model on one task with one or more judges (resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands.judge_options import add_judge_options, judge_ids, judge_settings
from harness.errors import UserError


def parse_model_args(values: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            if not item.strip():
                continue
            key, sep, val = item.partition("=")
            if not sep or not key.strip():
                raise UserError(f"--model-args '{item}': expected KEY=VALUE[,KEY=VALUE...]")
            key, val = key.strip(), val.strip()
            if args.get(key, val) != val:
                raise UserError(f"--model-args: {key} given twice ({args[key]!r} and {val!r}); give it once")
            args[key] = val
    return args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="evaluate a model on a task", description=__doc__)
    p.add_argument("--model", required=True, help="model plugin id or alias (see `harness list models`)")
    p.add_argument("--model-args", action="append", default=[], metavar="K=V[,K=V]",
                   help="arguments for the model plugin")
    p.add_argument("--adapter", type=Path, default=None, help="PEFT adapter directory to load on the model")
    p.add_argument("--device", default=None, help="device for local models (cpu, cuda, cuda:1)")
    p.add_argument("--dtype", default=None, help="dtype for local models (bfloat16, float16, float32)")
    p.add_argument("--task", required=True, help="task id (see `harness list tasks`)")
    p.add_argument("--data-dir", type=Path, default=None, help="folder with your local copy of the dataset")
    p.add_argument("--source", default=None, help="which of the task's sources to read (default: auto)")
    p.add_argument("--split", default=None, help="split to evaluate (default: the task's test split)")
    p.add_argument("--prompt", default=None, help="prompt variant of the task (default: 'default')")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    p.add_argument("--batch-size", type=int, default=None, help="requests per model call")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="longest answer in tokens (default: the task's, e.g. 16 for VQA, 128 for IU-Xray reports)")
    p.add_argument("--temperature", type=float, default=None,
                   help="above 0: sample at this temperature (default: the task's, greedy: 0)")
    p.add_argument("--top-p", type=float, default=None,
                   help="nucleus sampling: draw from the smallest set of tokens holding this probability, in (0, 1] "
                   "(default: the task's, 1: all); used only when sampling")
    p.add_argument("--seed", type=int, default=None, help="seed of sampling (default: the task's, 0)")
    p.add_argument("--output", type=Path, default=None, help="run directory (default: runs/<run-id>/)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"),
                   help="parent of run directories (default: runs/ in the current directory)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-judge", action="store_true",
                   help="generate the predictions only (score them later with harness score DIR)")
    add_judge_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from harness.runner import RunSpec, run
    from harness.summary import check_judges_scored, check_not_all_failed, results_summary

    if args.no_judge and args.judge:
        raise UserError(f"--no-judge with --judge {args.judge[0]}: choose one (--no-judge generates predictions only)")

    generation = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                  "seed": args.seed}
    spec = RunSpec(
        model=args.model,
        task=args.task,
        model_args=parse_model_args(args.model_args),
        data_dir=args.data_dir,
        source=args.source,
        split=args.split,
        prompt=args.prompt,
        generation={k: v for k, v in generation.items() if v is not None},
        limit=args.limit,
        batch_size=args.batch_size,
        output=args.output,
        runs_dir=args.runs_dir,
        judges=judge_ids(args, []),
        convention=args.convention,
        judge_settings=judge_settings(args),
        adapter=args.adapter,
        device=args.device,
        dtype=args.dtype,
        progress=not args.no_progress,
        judge=not args.no_judge,
    )
    out_dir, results, entries = run(spec)
    if not spec.judge:
        records = results["records"]
        failed = sum(1 for r in records if r.get("error"))
        print(f"predictions: {out_dir / 'predictions.jsonl'} ({len(records)} samples, {failed} failed); not judged "
              f"(--no-judge): score them with harness score {out_dir} [--judge ID]")
        if records and failed == len(records):
            raise UserError(f"all {failed} samples failed (first: {records[0]['id']}: {records[0]['error']}); fix "
                            "the cause and run the same command again")
        return 0
    print(results_summary(results))
    print(f"results: {out_dir / 'results.json'}")
    check_not_all_failed(results)
    check_judges_scored(entries)
    return 0
