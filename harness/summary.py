"""Plain-text summaries of results for the terminal (what `harness run` / `harness score` print)."""

from __future__ import annotations

from typing import Any


def plural(n: float, word: str) -> str:
    """'1 step', '2 steps', '1,024 samples', '0.5 epochs'."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def format_metric(entry: dict[str, Any]) -> str:
    value = entry.get("value")
    if value is None:
        return "n/a"
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    ci = entry.get("ci95")
    if ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    text += f" (n={entry.get('n', 0)}"
    if entry.get("unscored"):
        text += f", unscored={entry['unscored']}"
    return text + ")"


def first_error(results: dict[str, Any], width: int = 200) -> str | None:
    """'<id>: <first line of its error>' of the first failed sample of a results.json (None: none failed)."""
    samples = results["errors"].get("samples") or []
    if not samples:
        return None
    lines = samples[0]["error"].splitlines() or [""]
    return f"{samples[0]['id']}: {lines[0][:width]}"


IMAGE_ADVICE = ("restore or repair the images that failed and run the same command again: the data (and its "
                "fingerprint) then changes, so it starts a new run folder; delete this one so that harness publish "
                "does not meet two fingerprints of one split")


def retry_advice(results: dict[str, Any], otherwise: str) -> str:
    """What to do about failed samples: restore the images, fill in a predictions file made elsewhere, else
    `otherwise` (run the same command again)."""
    if image_failed(results):
        return IMAGE_ADVICE
    if results["task"]["version"] == "external":
        return "fill the predictions in the file and score it again"
    return otherwise


def image_failed(results: dict[str, Any]) -> bool:
    """Whether an image failed to open. Images are part of the dataset fingerprint (a missing one hashes as
    'missing'), so restoring them changes the data and the run id: the same command then starts a new run
    folder, not a retry in this one."""
    return any(str(s.get("error", "")).startswith("image ") for s in results["errors"].get("samples") or [])


def results_summary(results: dict[str, Any], max_breakdowns: int = 1, max_values: int = 8) -> str:
    task, model = results["task"], results["model"]
    if task["version"] == "external":  # harness score on a predictions file made elsewhere
        what = f"{task['id']} (predictions file, n={task['n']}, data {task['fingerprint']})"
    else:
        what = f"{task['id']} v{task['version']} ({task['split']}, n={task['n']}, data {task['fingerprint']})"
    lines = [f"{model.get('label', model['id'])} on {what}"]
    errors = results["errors"]["count"]
    if errors:
        first = first_error(results)
        example = f" (first: {first})" if first else ""
        lines.append(f"  {errors} of {task['n']} sample(s) failed and are not in the metrics{example}; "
                     f"{retry_advice(results, 'run the same command again to retry them')}")
    note = truncation_note(results)
    if note:
        lines.append(f"  {note}")
    for judge in results["judges"]:
        name = judge["id"] + (f" ({judge['convention']})" if judge.get("convention") else "")
        lines.append(f"  judge {name}:")
        for metric, entry in judge["metrics"].items():
            lines.append(f"    {metric:<22} {format_metric(entry)}")
        for key in informative_breakdowns(judge)[:max_breakdowns]:
            for value, metrics in list(judge["breakdowns"][key].items())[:max_values]:
                shown = _slice_metrics(metrics)
                if shown:
                    lines.append(f"    {key}={value}: " + "; ".join(f"{m} {format_metric(e)}" for m, e in shown))
    return "\n".join(lines)


def truncation_note(results: dict[str, Any]) -> str | None:
    """The line on answers cut at the token limit (None: none was), with what to do about it."""
    cut = (results.get("timings") or {}).get("truncated_answers")
    if not cut:
        return None
    limit = (results.get("generation") or {}).get("max_new_tokens")
    at = f" ({limit} tokens)" if limit else ""
    return (f"{cut} of {results['task']['n']} answers were cut at the token limit{at} and scored as cut "
            "(generation_details.truncated in predictions.jsonl); raise --max-new-tokens to let them finish "
            "(another run)")


def informative_breakdowns(judge: dict[str, Any]) -> list[str]:
    """A judge entry's breakdown keys but those whose one slice is the whole set (IU-Xray per image, all `views=1`:
    its line would repeat the overall one)."""
    return [key for key, values in judge["breakdowns"].items()
            if not (len(values) == 1 and next(iter(values.values())) == judge["metrics"])]


def _slice_metrics(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The metrics a breakdown line shows: the first, and the first open_* or closed_* one of a group not shown
    yet (under multimedeval a slice answer_type=CLOSED holds yes/no questions, scored by closed_*, and others,
    scored by open_*; llava-med scores CLOSED rows by closed_* and OPEN rows by open_*)."""
    shown: dict[str | None, tuple[str, dict[str, Any]]] = {}
    for name, entry in metrics.items():
        group = name.split("_", 1)[0] if name.startswith(("open_", "closed_")) else None
        if not shown or (group is not None and group not in shown and entry.get("n")):
            shown.setdefault(group, (name, entry))
    return list(shown.values())


def check_not_all_failed(results: dict[str, Any]) -> None:
    """`harness run` and `harness score` end with exit code 2 when every sample failed (what was recorded stays)."""
    from harness.errors import UserError

    failed, n = results["errors"]["count"], results["task"]["n"]
    if n and failed == n:
        raise UserError(f"all {n} samples failed, so there is nothing to score (first: {first_error(results, 300)}); "
                        f"{retry_advice(results, 'fix the cause and run the same command again')}")


def check_judges_scored(entries: list[dict[str, Any]]) -> None:
    """Exit code 2 when a judge of this command scored no sample because every one of its calls failed (the
    provider refused or stayed unreachable) or no reply could be read (a model that does not follow the judge
    prompt): a script must not take that for a result. What was recorded stays."""
    from harness.errors import UserError

    for entry in entries:
        metrics = entry.get("metrics", {})
        failed = (metrics.get("failed_calls") or {}).get("value") or 0
        unread = (metrics.get("unscored_replies") or {}).get("value") or 0
        if (failed or unread) and not (metrics.get("scored_samples") or {}).get("value"):
            name = entry["id"] + (f" ({entry['convention']})" if entry.get("convention") else "")
            if failed:
                raise UserError(f"judge {name} scored no sample: {failed} of its calls failed and no reply was "
                                "scored (the note above says why); fix the cause and run the same command to retry "
                                "them")
            raise UserError(f"judge {name} scored no sample: none of its {unread} replies could be read as a "
                            "verdict or score (the note above shows one); is the judge model one that follows "
                            "the judge prompt?")
