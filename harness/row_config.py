"""What, beside its visible columns, makes a leaderboard row's numbers what they are, so that rows are only merged
or compared when it agrees.

The visible columns (model label, task, split, source, prompt variant, judge, convention, judge setup) do not show
everything that moves numbers: the generation settings (max_new_tokens, temperature), the prompt's text (edited
under the same variant name), the task version, the judge's version and the model's identity (dtype, pinned hub
revision, API model id). `row_config` is that part; it is in every row's key (harness.publish.row_key), so a run
with other settings is a row of its own instead of silently replacing, and `config_notes` names what differs
between rows that look alike. Rows written before `model_identity` was recorded get it from a row of the same run
id (the run id hashes it) or from their results file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VISIBLE = ("model", "task", "split", "source", "prompt_variant", "judge", "convention")


def config_of(row: dict[str, Any]) -> dict[str, Any]:
    """The number-moving choices of a row that its visible columns do not show."""
    provenance = row["provenance"]
    return {"task_version": row["task_version"], "judge_version": provenance.get("judge_version"),
            "prompt_hash": provenance.get("prompt_hash"), "generation": provenance.get("generation"),
            "model_identity": row.get("model_identity")}


def row_config(row: dict[str, Any]) -> str:
    return json.dumps(config_of(row), sort_keys=True, separators=(",", ":"), default=str)


def fill_identities(existing: list[dict[str, Any]], given: list[dict[str, Any]]) -> None:
    """Give rows written before model identities were recorded the identity of their run: from a given row of the
    same run id, else from their results file when it still holds that run; else none (null)."""
    by_run = {row["provenance"]["run_id"]: row["model_identity"] for row in given if "model_identity" in row}
    for row in existing:
        if "model_identity" in row:
            continue
        run_id = row["provenance"]["run_id"]
        row["model_identity"] = by_run[run_id] if run_id in by_run else _identity_in_file(row, run_id)


def _identity_in_file(row: dict[str, Any], run_id: str) -> Any:
    try:
        data = json.loads(Path(row["provenance"]["results_file"]).read_text(encoding="utf-8"))
        return data["model"].get("identity") if data.get("run_id") == run_id else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def config_notes(rows: list[dict[str, Any]], describe: Any) -> list[str]:
    """One note per group of rows that look alike (same visible columns and judge setup) but differ in their
    configuration, naming what differs."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        visible = json.dumps([row.get(k) for k in VISIBLE] + [row.get("judge_setup") or {}], sort_keys=True,
                             default=str)
        groups.setdefault(visible, []).append(row)
    notes = []
    for group in groups.values():
        configs = [config_of(row) for row in group]
        if len({json.dumps(c, sort_keys=True, default=str) for c in configs}) < 2:
            continue
        differing = [key for key in configs[0] if len({json.dumps(c[key], sort_keys=True, default=str)
                                                       for c in configs}) > 1]
        details = "; ".join(_difference(key, configs) for key in differing)
        notes.append(f"{len(group)} rows of {describe(group[0])} and alike differ in {details}: compare only rows "
                     "that agree (leaderboard.json: task_version, model_identity, provenance)")
    return notes


def _difference(key: str, configs: list[dict[str, Any]]) -> str:
    if key in ("generation", "model_identity"):
        fields = sorted({k for c in configs for k in (c[key] or {})})
        varying = [k for k in fields if len({json.dumps((c[key] or {}).get(k), default=str) for c in configs}) > 1]
        values = ", ".join(f"{k}: {' vs '.join(sorted({str((c[key] or {}).get(k)) for c in configs}))}"
                           for k in varying)
        return f"{key.replace('_', ' ')} ({values or 'recorded vs not recorded'})"
    return f"{key.replace('_', ' ')} ({' vs '.join(sorted({str(c[key]) for c in configs}))})"
