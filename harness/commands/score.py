"""`harness score`: re-score saved predictions (a run directory, or a JSONL made elsewhere) without generating."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.commands.judge_options import add_judge_options, judge_ids, judge_settings
from harness.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score saved predictions with judges", description=__doc__)
    p.add_argument("predictions", type=Path, help="a run directory (runs/<run-id>) or a predictions .jsonl file")
    p.add_argument("--task-type", choices=["vqa", "report", "caption"], default=None,
                   help="kind of task, for a predictions file made elsewhere")
    p.add_argument("--task-name", default=None, help="task name to record for a predictions file")
    p.add_argument("--model-name", default=None, help="model name to record for a predictions file")
    p.add_argument("--breakdown", action="append", default=None,
                   help="field to break metrics down by (default: the task's breakdowns / every text field)")
    p.add_argument("--output", "-o", type=Path, default=None,
                   help="folder for scores.jsonl and results.json (default: the run directory itself, or "
                        "<file>-scored beside a predictions file); with a run directory, another folder leaves "
                        "the run's files as they are")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_judge_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from harness.folder_lock import exclusive
    from harness.scoring import PREDICTIONS_FILE, RESULTS_FILE, RUN_FILES, SCORES_FILE

    path: Path = args.predictions
    if not path.exists():
        raise UserError(f"{path} does not exist (expected a run directory or a predictions .jsonl file)")
    if path.is_file() and path.name in ("run.json", "results.json", "scores.jsonl", "predictions.jsonl") and \
            (path.parent / "run.json").is_file():
        raise UserError(f"{path} is a file of the run directory {path.parent}: give the folder "
                        f"(harness score {path.parent})")
    if path.is_file() and not args.task_type:
        raise UserError(f"{path} is a predictions file: say its --task-type (vqa, report or caption)")
    given = [flag for flag, value in (("--task-type", args.task_type), ("--task-name", args.task_name),
                                      ("--model-name", args.model_name)) if value is not None]
    if path.is_dir() and given:
        raise UserError(f"{' and '.join(given)} describe a predictions file; {path} is a run directory, whose run.json "
                        "says its task and model (leave them out)")
    # The folder the scores go to is locked while it is scored: a run directory scored in place (a `harness
    # run` still appending to it is waited for), else --output (or <file>-scored for a predictions file).
    out_dir = args.output or (path if path.is_dir() else path.with_name(path.stem + "-scored"))
    with exclusive(out_dir, owned=RUN_FILES, remove_unless=(PREDICTIONS_FILE, SCORES_FILE, RESULTS_FILE)):
        return _score(args, path, out_dir)


def _score(args: argparse.Namespace, path: Path, out_dir: Path) -> int:
    """Score the predictions at `path` (checked by `main`) into `out_dir`, which `main` holds locked."""
    from harness import plugin_manager
    from harness.external import external_manifest, read_external_predictions
    from harness.io import atomic_write_jsonl
    from harness.providers.claims import counted_when_recorded
    from harness.results import write_results
    from harness.run_files import read_manifest, read_predictions
    from harness.scoring import MANIFEST_FILE, PREDICTIONS_FILE, apply_judges, build_judges, check_default_judges
    from harness.summary import check_judges_scored, check_not_all_failed, results_summary

    if path.is_dir():
        manifest_path = path / MANIFEST_FILE
        if not manifest_path.exists() or not (path / PREDICTIONS_FILE).exists():
            scored = " (it holds scores written by harness score: score the run directory or predictions file " \
                     "they came from, with --output for another folder)" if (path / "scores.jsonl").exists() else ""
            raise UserError(f"{path} is not a run directory: expected {MANIFEST_FILE} and {PREDICTIONS_FILE}{scored}")
        manifest = read_manifest(manifest_path)
        _refuse_another_runs_folder(out_dir, manifest["run_id"])
        # in place (locked), a torn last line from a kill is cut off; read from elsewhere, it is only skipped
        rows = read_predictions(path / PREDICTIONS_FILE, repair_tail=not args.output,
                                skip_torn_tail=bool(args.output))
        records = list({r["id"]: r for r in rows}.values())
        attempts: list[dict[str, Any]] | None = rows  # earlier lines of a sample were calls too (their cost counts)
        if not records:
            raise UserError(f"{path / PREDICTIONS_FILE} holds no predictions yet: nothing to score (harness run "
                            "generates them)")
        n_total = manifest["task"].get("n_total")
        if n_total is not None and len(records) > n_total:
            raise UserError(f"{path / PREDICTIONS_FILE} has {len(records)} sample ids, more than the {n_total} of "
                            f"the {manifest['task']['split']} split of {manifest['task']['id']} that {MANIFEST_FILE} "
                            "records: lines were added or their ids changed by hand (run the same harness run "
                            "command to regenerate what is missing)")
        if args.output:
            atomic_write_jsonl(out_dir / PREDICTIONS_FILE, rows)  # every line: a later one of an id replaces it
        kind = manifest["task"]["kind"]
        default_judges = []
        registered = plugin_manager.tasks().get(manifest["task"]["id"]) \
            if manifest["task"]["id"] in plugin_manager.tasks() else _task_file(manifest["task"])
        if registered is not None and not args.judge:
            check_default_judges(registered)
            default_judges = registered.judges
        manifest = _as_the_task_says_now(manifest, registered, None if args.output else manifest_path)
        credentialed = bool(manifest["task"].get("credentialed"))
    else:
        kind = args.task_type
        records, skipped_note = read_external_predictions(path, kind)
        attempts = None
        manifest = external_manifest(path, records, kind, args.task_name, args.model_name, skipped_note)
        _refuse_another_runs_folder(out_dir, manifest["run_id"])
        default_judges = ["exact"] if kind == "vqa" else ["lexical"]
        # predictions of a registered credentialed task (--task-name) are credentialed data too
        named = plugin_manager.tasks().get(args.task_name) if args.task_name in plugin_manager.tasks() else None
        credentialed = bool(named and named.credentialed)
        manifest["task"]["credentialed"] = credentialed
    breakdowns = args.breakdown or manifest["task"].get("breakdowns", [])
    judges = build_judges(judge_ids(args, default_judges), args.convention, judge_settings(args), kind,
                          credentialed, progress=False if args.no_progress else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not path.is_dir() and (out_dir / PREDICTIONS_FILE).resolve() != path.resolve():
        atomic_write_jsonl(out_dir / PREDICTIONS_FILE, records)  # the samples read, beside their scores (compare)
    declared_by = None if args.breakdown else f"task {manifest['task']['id']} (run {manifest['run_id']})"
    with counted_when_recorded() as recorded:  # replies a judge claimed count once results.json records them

        def keep(done: list[dict[str, Any]]) -> None:
            write_results(out_dir, manifest, records, done, attempts=attempts)
            recorded()

        entries = apply_judges(out_dir, records, judges, breakdowns, manifest["task"].get("cluster_by"), declared_by,
                               keep=keep)
        results = write_results(out_dir, manifest, records, entries, attempts=attempts)
    print(results_summary(results))
    print(f"scores: {out_dir / 'scores.jsonl'}\nresults: {out_dir / 'results.json'}")
    check_not_all_failed(results)
    check_judges_scored(entries)
    return 0


def _task_file(task: dict[str, Any]) -> Any:
    """The TaskConfig of a run made with --task PATH (its YAML file, recorded as task.file), when the file is still
    there and still states the run's task id; else None (a note says why when there was a file)."""
    from harness.task_config import load_task_config

    file = task.get("file")
    if not file:
        return None
    path = Path(file)
    if not path.is_file():
        print(f"note: task '{task['id']}' was read from {path}, which is gone: its default judges, breakdowns and "
              "cluster_by are those the run recorded (pass --judge)", file=sys.stderr)
        return None
    try:
        config = load_task_config(path)
    except UserError as exc:  # edited since into a mistake: what the run recorded still scores
        print(f"note: task '{task['id']}' was read from {path}, which cannot be read now ({exc}): its default "
              "judges, breakdowns and cluster_by are those the run recorded (pass --judge)", file=sys.stderr)
        return None
    if config.id != task["id"]:
        print(f"note: {path} now states task id '{config.id}', not the run's '{task['id']}': not read "
              "(pass --judge)", file=sys.stderr)
        return None
    return config


def _as_the_task_says_now(manifest: dict[str, Any], registered: Any, write_to: Path | None) -> dict[str, Any]:
    """The run's task fields outside its run id (breakdowns, cluster_by, credentialed) as the registered task of the
    same version says them now, as `harness run` resuming it would (run.json rewritten when scored in place):
    a YAML corrected since the run is what scoring uses and results.json records."""
    from harness.run_files import refreshed_task

    task = manifest["task"]
    source_name = (task.get("source") or {}).get("name")
    if registered is None or str(registered.version) != str(task.get("version")) or \
            source_name not in {s.name for s in registered.sources}:
        return manifest
    now = {"breakdowns": list(registered.breakdowns), "cluster_by": registered.source(source_name).cluster_by,
           "credentialed": registered.credentialed}
    return refreshed_task(manifest, now, write_to)


def _refuse_another_runs_folder(out_dir: Path, run_id: str) -> None:
    """A folder holding another run's results.json is refused before anything is written: scoring into it
    mixed two runs' verdicts in scores.jsonl and replaced the other's results (as `harness run --output`)."""
    import json

    from harness.scoring import RESULTS_FILE

    try:
        old = json.loads((out_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # none, or unreadable (set aside when results.json is written)
    other = old.get("run_id") if isinstance(old, dict) else None
    if other is not None and other != run_id:
        raise UserError(f"{out_dir} holds the results of run '{other}', not '{run_id}' (another model, task or "
                        "predictions file): choose another --output (nothing was changed)")
