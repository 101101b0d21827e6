"""Merge results.json files into a leaderboard.json (schema-checked, written atomically).

One row per model x task x split x source x prompt variant x judge x convention, carrying its metrics (overall
and per breakdown, e.g. open/closed) and provenance (run id, harness version and commit, judge version and
settings, prompt, generation settings, dataset fingerprint). A partial row (fewer samples than the split, e.g. a
--limit run) never replaces a complete one; then the newest wins (rows with failed samples are flagged).
Results of one task version, split and source whose dataset fingerprints differ are refused, whether or not
one would replace the other: their numbers are not comparable.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.fingerprint import fingerprint_version
from harness.io import atomic_write_json, exclusive
from harness.results import SCHEMA_VERSION, selection_of, validate


def find_results(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_file() and path.name.endswith(".json"):
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob("results.json")))
        else:
            raise UserError(f"{path} is neither a results.json file nor a folder of runs")
    if not found:
        raise UserError(f"no results.json found under {', '.join(map(str, paths))}")
    return list({path.resolve(): path for path in found}.values())  # a file reached twice is read once


def rows_from_results(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read results ({exc})") from None
    import jsonschema

    try:
        validate(data, "results")
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "(top level)"
        raise UserError(f"{path}: not a valid results file at '{where}': {exc.message}") from None
    chosen = selection_of(data)
    rows = []

    def trimmed(metrics: dict[str, Any]) -> dict[str, Any]:
        return {name: {"value": m["value"], "ci95": m["ci95"], "n": m["n"], "ci_method": m.get("ci_method")}
                for name, m in metrics.items()}

    for judge in data["judges"]:
        rows.append({
            "model": data["model"].get("label", data["model"]["id"]),
            "model_plugin": data["model"]["plugin"],
            "adapter_hash": data["model"].get("adapter_hash"),
            "task": data["task"]["id"],
            "task_version": data["task"]["version"],
            "split": data["task"]["split"],
            "source": data["task"]["source"].get("name"),
            "fingerprint": data["task"]["fingerprint"],
            "judge": judge["id"],
            "convention": judge.get("convention"),
            "prompt_variant": data["prompt"].get("variant"),
            "n": data["task"]["n"],
            "n_total": chosen["n_total"],
            "partial": chosen["partial"],
            "errors": data["errors"]["count"],
            "metrics": trimmed(judge["metrics"]),
            "breakdowns": {key: {value: trimmed(metrics) for value, metrics in values.items()}
                           for key, values in judge.get("breakdowns", {}).items()},
            "provenance": {
                "run_id": data["run_id"],
                "created": data["created"],
                "harness_version": data["environment"]["harness_version"],
                "git_commit": data["environment"].get("git_commit"),
                "results_file": str(path),
                "judge_version": judge["version"],
                "judge_settings": judge.get("settings", {}),
                "prompt_hash": data["prompt"].get("hash"),
                "generation": data.get("generation"),
            },
        })
    return rows


def row_key(row: dict[str, Any]) -> tuple:
    return (row["model"], row["task"], row["split"], row.get("source"), row["prompt_variant"], row["judge"],
            row["convention"])


def describe(row: dict[str, Any]) -> str:
    size = f"n={row['n']}" + (f" of {row['n_total']}" if row.get("n_total") is not None else "")
    convention = f":{row['convention']}" if row["convention"] else ""
    source = f", source {row['source']}" if row.get("source") else ""
    return (f"{row['model']} on {row['task']} ({row['split']}{source}, prompt {row['prompt_variant']}) "
            f"judge {row['judge']}{convention}, {size}, run {row['provenance']['run_id']}")


def prefer(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """A complete row beats a partial one; among equally complete rows the newest wins (a row with failed
    samples is kept but flagged: rerunning the same command retries them)."""
    if bool(new.get("partial")) != bool(old.get("partial")):
        return not new.get("partial")
    return old["provenance"]["created"] <= new["provenance"]["created"]


def check_fingerprints(rows: list[dict[str, Any]]) -> None:
    """Every row (kept or not) of one task version, split and source must come from the same data."""
    seen: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = (row["task"], row["task_version"], row["split"], row.get("source"))
        first = seen.setdefault(key, row)
        if first["fingerprint"] != row["fingerprint"]:
            source = f", source {row['source']}" if row.get("source") else ""
            versions = {fingerprint_version(first["fingerprint"]), fingerprint_version(row["fingerprint"])}
            why = ("results from different data are not comparable (re-run on the same data, or publish them to "
                   "separate leaderboards)")
            if len(versions) > 1:
                why = (f"one comes from an older harness (fingerprint v{min(versions)}; v{max(versions)} also hashes "
                       "the labels), so the data cannot be compared: run that model again with this harness "
                       "(same command; it starts a new run folder), or publish into a separate leaderboard")
            raise UserError(
                f"task {row['task']} v{row['task_version']} ({row['split']}{source}) has two dataset fingerprints: "
                f"{first['fingerprint']} in {first['provenance']['results_file']} and {row['fingerprint']} in "
                f"{row['provenance']['results_file']}; {why}"
            )


def _why_not(row: dict[str, Any], kept: dict[str, Any]) -> str:
    if row.get("partial") and not kept.get("partial"):
        return "partial; the leaderboard keeps the complete results of"
    if row["provenance"]["created"] == kept["provenance"]["created"]:
        return "as old as the kept"
    return "older than the kept"


def _same_run(row: dict[str, Any], kept: dict[str, Any]) -> bool:
    """The same results file, unchanged (published before): nothing to tell. Runs of one key share their run id
    and may finish within one second (a --limit run and the full one), so neither tells them apart."""
    return all(row["provenance"][k] == kept["provenance"][k] for k in ("results_file", "created"))


def publish(inputs: list[Path], output: Path) -> tuple[dict[str, Any], list[str]]:
    """Merge the rows of `inputs` into `output`; return the leaderboard and one notice per row skipped
    (a partial row beside a complete one, or an older row) and per partial row on the leaderboard.
    Two publishes into one leaderboard run one after the other (a lock beside it), so neither loses rows."""
    with exclusive(output.parent, f".{output.name}.lock", owned=(output.name,)):
        return _publish(inputs, output)


def _publish(inputs: list[Path], output: Path) -> tuple[dict[str, Any], list[str]]:
    rows: dict[tuple, dict[str, Any]] = {}
    if output.exists():
        try:
            existing = json.loads(output.read_text())
            validate(existing, "leaderboard")
        except Exception as exc:  # noqa: BLE001 - any unreadable leaderboard is the user's file to fix
            raise UserError(f"{output}: existing leaderboard is not valid ({str(exc).splitlines()[0]})") from None
        rows = {row_key(r): r for r in existing["rows"]}
    candidates = list(rows.values()) + [row for path in find_results(inputs) for row in rows_from_results(path)]
    check_fingerprints(candidates)
    given = candidates[len(rows):]
    for row in given:
        old = rows.get(row_key(row))
        if old is None or prefer(row, old):
            rows[row_key(row)] = row
    notices = []
    for row in given:  # each row given and not kept, against the row kept in the end (in any input order)
        kept = rows[row_key(row)]
        if kept is not row and not _same_run(row, kept):
            notices.append(f"skipped {describe(row)} ({row['provenance']['results_file']}): {_why_not(row, kept)} "
                           f"{kept['provenance']['results_file']}")
    ordered = sorted(rows.values(), key=lambda r: (r["task"], r["split"], str(r.get("source")), r["judge"],
                                                   str(r["convention"]), str(r["prompt_variant"]), r["model"]))
    notices += [f"partial row kept (no complete run yet): {describe(r)}" for r in ordered if r.get("partial")]
    notices += [f"row with {r['errors']} failed sample(s), not in its metrics (re-run to retry them): {describe(r)}"
                for r in ordered if r.get("errors")]
    board = {
        "schema_version": SCHEMA_VERSION,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": ordered,
    }
    validate(board, "leaderboard")
    atomic_write_json(output, board)
    return board, notices
