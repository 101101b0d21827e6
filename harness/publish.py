"""Merge results.json files into a leaderboard.json (schema-checked, written atomically).

One row per model x task x split x source x prompt variant x judge x convention x judge setup x configuration
(what else moves numbers: generation settings, prompt text, task and judge versions, the model's identity such as
dtype or pinned revision; harness.row_config, with a note naming what differs between rows that look alike), its
metrics (overall and per breakdown, e.g. open/closed) and provenance (run id, harness version and commit, judge
version and settings, prompt, generation settings, dataset fingerprint). The judge setup (`judge_setup`, the
judge's resolved number-moving choices, see JudgePlugin.resolve_setup) is part of the row's identity: a re-score
with a stemmed ROUGE or another LLM judge model is a row of its own, while worker counts, timeouts or the cache
never split rows. Results and leaderboards written before setups were recorded get the setup the judge resolves
from their recorded settings (so re-publishing them adds no row); {} when the judge is not installed.
A partial row (fewer samples than the split, e.g. a --limit run) never replaces a complete one; then the newest
`created` wins (rows with failed samples are flagged). A judge entry without any metric value (every sample
failed or went unscored) is skipped with a notice. Results of one task version, split and source whose dataset
fingerprints differ are refused, whether or not one would replace the other: their numbers are not comparable.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.folder_lock import exclusive
from harness.io import atomic_write_json, non_finite
from harness.labels import current_label, keeps_default_setup
from harness.publish_checks import check_fingerprints, check_selection, interval_notes
from harness.results import SCHEMA_VERSION, read_results_file, selection_of, validate
from harness.row_config import config_notes, fill_identities, row_config
from harness.scoring import installed_judge_class, recorded_convention


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


def parse_created(value: Any, where: str, field: str = "created") -> datetime:
    """An ISO-8601 timestamp (one without a zone is taken as UTC); else a UserError naming file and field."""
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise UserError(f"{where}: field '{field}' is {json.dumps(value)}, not an ISO-8601 timestamp "
                        "(e.g. 2025-01-31T12:00:00+00:00)")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def derived_setup(judge_id: str, convention: str | None, settings: dict[str, Any]) -> dict[str, Any]:
    """The setup of a judge entry or leaderboard row written before setups were recorded: what the judge resolves
    from the recorded settings (for the built-in judges, exactly what a run with those settings records now);
    {} when the judge is not installed or refuses them."""
    from harness.providers.aliases import ignoring_base_url_variables

    resolve = getattr(installed_judge_class(judge_id), "resolve_setup", None)
    if resolve is None:
        return {}
    try:
        with ignoring_base_url_variables():  # those runs called the default endpoint, whatever is set now
            setup = resolve(dict(settings), convention)
    except Exception:  # noqa: BLE001 - old settings this judge no longer takes: no setup to compare
        return {}
    return setup if isinstance(setup, dict) else {}


def has_metric_value(judge: dict[str, Any]) -> bool:
    """Whether a judge entry has any number to publish (not when every sample failed or went unscored; an LLM
    judge's counts of calls, tokens and repeats are no metric value: its scored_samples tells)."""
    metrics = judge["metrics"]
    if "scored_samples" in metrics and not metrics["scored_samples"].get("value"):
        return False
    return any(m.get("value") is not None and m.get("n", 1) > 0 for m in metrics.values())


def rows_from_results(path: Path, notices: list[str] | None = None) -> list[dict[str, Any]]:
    """The leaderboard rows of one results.json; a judge entry without a metric value gives a notice instead."""
    data = read_results_file(path)
    chosen = selection_of(data)
    check_selection(path, data, chosen)
    parse_created(data["created"], str(path))
    rows = []

    def trimmed(metrics: dict[str, Any]) -> dict[str, Any]:
        return {name: {"value": m["value"], "ci95": m["ci95"], "n": m["n"], "ci_method": m.get("ci_method")}
                for name, m in metrics.items()}

    identity = {"model_identity": data["model"]["identity"]} if data["model"].get("identity") is not None else {}
    for i, judge in enumerate(data["judges"]):
        if judge.get("scored_at") is not None:
            parse_created(judge["scored_at"], str(path), f"judges.{i}.scored_at")
        if not has_metric_value(judge):
            if notices is not None:
                name = judge["id"] + (f":{judge['convention']}" if judge.get("convention") else "")
                notices.append(f"skipped {path}: judge {name} has no metric value (every one of its "
                               f"{data['task']['n']} samples failed or went unscored); nothing of it is published")
            continue
        _check_finite(path, data, i)
        convention = recorded_convention(judge["id"], judge.get("convention"))
        if isinstance(judge.get("setup"), dict) and not keeps_default_setup(judge["id"]):
            setup = judge["setup"]
        else:  # what the recorded settings resolve to, with the model and endpoint the entry says it called (an
            setup = dict(derived_setup(judge["id"], convention, judge.get("settings", {})))  # alias may move)
            setup.update({k: judge[k] for k in ("provider", "model", "base_url") if k in setup and judge.get(k)})
        rows.append({
            "model": current_label(data["model"].get("label", data["model"]["id"])),
            "model_plugin": data["model"]["plugin"],
            "adapter_hash": data["model"].get("adapter_hash"),
            "task": data["task"]["id"],
            "task_version": data["task"]["version"],
            "split": data["task"]["split"],
            "source": data["task"]["source"].get("name"),
            "fingerprint": data["task"]["fingerprint"],
            "judge": judge["id"],
            "convention": convention,
            "judge_setup": setup,
            "prompt_variant": data["prompt"].get("variant"),
            "n": data["task"]["n"],
            "n_total": chosen["n_total"],
            "partial": chosen["partial"],
            **({"size_note": data["task"]["size_note"]} if data["task"].get("size_note") else {}),
            "errors": data["errors"]["count"],
            "unscored": max((m.get("unscored") or 0 for m in judge["metrics"].values()), default=0),
            **identity,
            "metrics": trimmed(judge["metrics"]),
            "breakdowns": {key: {value: trimmed(metrics) for value, metrics in values.items()}
                           for key, values in judge.get("breakdowns", {}).items()},
            "provenance": {
                "run_id": data["run_id"],
                # when this judge scored (results.json's `created` changes whenever another judge is added)
                "created": judge.get("scored_at") or data["created"],
                "harness_version": data["environment"]["harness_version"],
                "git_commit": data["environment"].get("git_commit"),
                "results_file": str(path),
                "judge_version": judge["version"],
                **({"judge_distribution": judge["distribution"]} if judge.get("distribution") else {}),
                **({"model_distribution": data["model"]["distribution"]} if data["model"].get("distribution")
                   else {}),
                **{key: data["model"][key] for key in ("adapter_trained", "model_trained") if data["model"].get(key)},
                "judge_settings": judge.get("settings", {}),
                "prompt_hash": data["prompt"].get("hash"),
                "image_decoding": data["task"].get("image_decoding"),
                "generation": data.get("generation"),
            },
        })
    return rows


def _check_finite(path: Path, data: dict[str, Any], i: int) -> None:
    """What a row of judge entry `i` copies holds no NaN or infinity (elsewhere in the file, e.g. in timings an
    older version wrote, one does no harm): else a one-line error naming the file and the value's place in it."""
    parts = {f"judges.{i}.{key}": data["judges"][i].get(key) for key in ("metrics", "breakdowns", "setup", "settings")}
    parts.update({"model.identity": data["model"].get("identity"), "generation": data.get("generation")})
    for where, part in parts.items():
        found = non_finite(part, where)
        if found is not None:
            raise UserError(f"{path}: the value at '{found[0]}' is {found[1]}, not a number a leaderboard can hold "
                            "(expected a finite number or null); rewrite the file with harness score on its run "
                            "folder")


def canonical_setup(row: dict[str, Any]) -> str:
    return json.dumps(row.get("judge_setup") or {}, sort_keys=True, separators=(",", ":"))


def row_key(row: dict[str, Any]) -> tuple:
    return (row["model"], row["task"], row["split"], row.get("source"), row["prompt_variant"], row["judge"],
            row["convention"], canonical_setup(row), row_config(row))


@cache
def _default_setup(judge_id: str, convention: str | None) -> dict[str, Any]:
    """The judge's setup with no settings given ({} when unknown); not to be changed by callers."""
    return derived_setup(judge_id, convention, {})


def setup_text(row: dict[str, Any]) -> str:
    """The judge setup in short: only what differs from the judge's defaults (hashes cut to 12 characters)."""
    setup = row.get("judge_setup") or {}
    defaults = _default_setup(row["judge"], row["convention"])

    def shown(value: Any) -> str:
        if isinstance(value, str):
            return value[:12] if re.fullmatch(r"[0-9a-f]{32,}", value) else value
        return json.dumps(value)

    return ", ".join(f"{key}={shown(value)}" for key, value in setup.items()
                     if key not in defaults or defaults[key] != value)


def describe(row: dict[str, Any]) -> str:
    size = f"n={row['n']}" + (f" of {row['n_total']}" if row.get("n_total") is not None else "")
    convention = f":{row['convention']}" if row["convention"] else ""
    source = f", source {row['source']}" if row.get("source") else ""
    setup = setup_text(row)
    setup = f" ({setup})" if setup else ""
    return (f"{row['model']} on {row['task']} ({row['split']}{source}, prompt {row['prompt_variant']}) "
            f"judge {row['judge']}{convention}{setup}, {size}, run {row['provenance']['run_id']}")


def _created(row: dict[str, Any]) -> datetime:
    return parse_created(row["provenance"]["created"], str(row["provenance"].get("results_file")))


def prefer(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """A complete row beats a partial one; of two partial rows the one on more samples wins; otherwise the newest
    (a row with failed samples is kept but flagged: rerunning the same command retries them). Rows scored in the
    same second go by their results file's path, so the input order never decides."""
    if bool(new.get("partial")) != bool(old.get("partial")):
        return not new.get("partial")
    if new.get("partial") and new["n"] != old["n"]:
        return new["n"] > old["n"]
    return _order(old) <= _order(new)


def _order(row: dict[str, Any]) -> tuple[datetime, str]:
    return _created(row), str(row["provenance"].get("results_file"))


def _why_not(row: dict[str, Any], kept: dict[str, Any]) -> str:
    if row.get("partial") and not kept.get("partial"):
        return "partial; the leaderboard keeps the complete results of"
    if row.get("partial") and row["n"] < kept["n"]:
        return f"partial on fewer samples ({row['n']}) than the kept"
    if _created(row) == _created(kept):
        return "as old as the kept"
    return "older than the kept"


def _same_run(row: dict[str, Any], kept: dict[str, Any]) -> bool:
    """The same results file, unchanged (published before): nothing to tell. Also when given by another path
    (`runs/x` and `/abs/runs/x`, or typed from another folder): every field but the file's path is equal. Runs of
    one key share their run id and may finish within one second (a --limit run and the full one), so neither tells
    them apart."""
    def without_path(r: dict[str, Any]) -> dict[str, Any]:
        return {**r, "provenance": {k: v for k, v in r["provenance"].items() if k != "results_file"}}

    same_file = row["provenance"]["results_file"] == kept["provenance"]["results_file"]
    return (same_file and row["provenance"]["created"] == kept["provenance"]["created"]) \
        or without_path(row) == without_path(kept)


def publish(inputs: list[Path], output: Path) -> tuple[dict[str, Any], list[str]]:
    """Merge the rows of `inputs` into `output`; return the leaderboard and one notice per row skipped
    (a partial row beside a complete one, an older row, a judge without any metric value), per leaderboard row
    replaced by another results file's, and per partial row and row with failed samples on the leaderboard.
    Two publishes into one leaderboard run one after the other (a lock beside it), so neither loses rows."""
    if output.is_symlink():  # a board kept elsewhere and linked here: written (and locked) where it is
        output = output.resolve()
    with exclusive(output.parent, f".{output.name}.lock", owned=(output.name,), what=str(output)):
        return _publish(inputs, output)


def _existing_rows(output: Path) -> list[dict[str, Any]]:
    """The rows of the leaderboard at `output` (none if absent); rows written before judge setups were recorded,
    and rows of judges that keep the default resolve_setup, get the setup derived from their recorded judge
    settings; labels lose args that are transport args today (harness.labels)."""
    if not output.exists():
        return []
    try:
        existing = json.loads(output.read_text())
        validate(existing, "leaderboard")
    except Exception as exc:  # noqa: BLE001 - any unreadable leaderboard is the user's file to fix
        raise UserError(f"{output}: existing leaderboard is not valid ({str(exc).splitlines()[0]})") from None
    for i, row in enumerate(existing["rows"]):
        parse_created(row["provenance"]["created"], f"{output}: row {i}", "provenance.created")
        row["convention"] = recorded_convention(row["judge"], row["convention"])
        if not isinstance(row.get("judge_setup"), dict) or keeps_default_setup(row["judge"]):
            row["judge_setup"] = derived_setup(row["judge"], row["convention"],
                                               row["provenance"].get("judge_settings") or {})
        row["model"] = current_label(row["model"])  # without args that are transport args today
    return existing["rows"]


def _left_behind(rows: dict[tuple, dict[str, Any]], before: dict[tuple, dict[str, Any]],
                 given: list[dict[str, Any]]) -> list[str]:
    """Notes for leaderboard rows whose results file was published again without them: the run was re-scored
    with another judge setup since (its results.json keeps one entry per judge and convention); the row stays."""
    given_runs = {(_resolved(r["provenance"]["results_file"]), r["provenance"]["run_id"]) for r in given}
    keys = {row_key(r) for r in given}
    notes = []
    for key, row in before.items():
        where = (_resolved(row["provenance"].get("results_file")), row["provenance"].get("run_id"))
        if rows.get(key) is row and where in given_runs and key not in keys:
            notes.append(f"row {describe(row)} is no longer in its results file {row['provenance']['results_file']} "
                         "(re-scored since with another judge setup); the leaderboard keeps it as published")
    return notes


def _resolved(path: Any) -> str:
    return str(Path(str(path)).resolve())


def _replaced(old: dict[str, Any], kept: dict[str, Any]) -> str:
    why = ("complete" if old.get("partial") and not kept.get("partial")
           else "larger" if old.get("partial") and old["n"] < kept["n"] else "newer")
    return (f"replaced {describe(old)} ({old['provenance'].get('results_file')}): the leaderboard now keeps the "
            f"{why} results of {kept['provenance'].get('results_file')}")


def _publish(inputs: list[Path], output: Path) -> tuple[dict[str, Any], list[str]]:
    notices: list[str] = []
    existing = _existing_rows(output)
    given = [row for path in find_results(inputs) for row in rows_from_results(path, notices)]
    fill_identities(existing + given, output.parent)
    rows: dict[tuple, dict[str, Any]] = {}
    for row in existing:  # two rows of one key (a convention read as none now): the preferred one
        key = row_key(row)
        old = rows.get(key)
        if old is None or prefer(row, old):
            rows[key] = row
        if old is not None:
            dropped, kept = (old, row) if rows[key] is row else (row, old)
            notices.append(_replaced(dropped, kept))
    before = dict(rows)
    check_fingerprints(list(rows.values()) + given)
    for row in given:
        old = rows.get(row_key(row))
        if old is None or prefer(row, old):
            rows[row_key(row)] = row
    for row in given:  # each row given and not kept, against the row kept in the end (in any input order)
        kept = rows[row_key(row)]
        if kept is not row and not _same_run(row, kept):
            notices.append(f"skipped {describe(row)} ({row['provenance']['results_file']}): {_why_not(row, kept)} "
                           f"{kept['provenance']['results_file']}")
    for key, old in before.items():  # a leaderboard row that another results file now stands in for
        kept = rows[key]
        same = all(kept["provenance"].get(k) == old["provenance"].get(k) for k in ("run_id", "created"))
        if kept is not old and kept["provenance"].get("results_file") != old["provenance"].get("results_file") \
                and not same:  # the same results reached by another path are no news
            notices.append(_replaced(old, kept))
    notices += _left_behind(rows, before, given)
    ordered = sorted(rows.values(), key=lambda r: (r["task"], r["split"], str(r.get("source")), r["judge"],
                                                   str(r["convention"]), canonical_setup(r),
                                                   str(r["prompt_variant"]), r["model"],
                                                   row_config(r)))
    notices += [f"partial row kept (no complete run of its configuration yet): {describe(r)}" for r in ordered
                if r.get("partial")]
    notices += [f"row on a split not of the size its task expects ({r['size_note']}): {describe(r)}"
                for r in ordered if r.get("size_note")]
    notices += [f"row with {r['errors']} failed sample(s), not in its metrics (re-run to retry them): {describe(r)}"
                for r in ordered if r.get("errors")]
    notices += [f"row with {r['unscored']} sample(s) its judge left unscored, not in its metrics: {describe(r)}"
                for r in ordered if r.get("unscored")]
    notices += config_notes(ordered, describe)
    notices += interval_notes(ordered, describe)
    board = {
        "schema_version": SCHEMA_VERSION,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": ordered,
    }
    validate(board, "leaderboard")
    atomic_write_json(output, board)
    return board, notices
