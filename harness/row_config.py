"""What, beside its visible columns, makes a leaderboard row's numbers what they are, so that rows are only merged
or compared when it agrees.

The visible columns (model label, task, split, source, prompt variant, judge, convention, judge setup) do not show
everything that moves numbers: the generation settings (max_new_tokens, temperature), the prompt's text (edited
under the same variant name), the task version, the judge's version and the model's identity (dtype, pinned hub
revision, API model id). `row_config` is that part; it is in every row's key (harness.publish.row_key), so a run
with other settings is a row of its own instead of silently replacing, and `config_notes` names what differs
between rows that look alike. Rows written before `model_identity` was recorded get it from a row of the same run
id (the run id hashes it), from their results file, or from the rows they match in everything else.
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


def fill_identities(existing: list[dict[str, Any]], given: list[dict[str, Any]], board_dir: Path) -> None:
    """Give rows written before model identities were recorded (no `model_identity`, or null) the identity of
    their run: from a given row of the same run id (the run id hashes it), else from their results file (as
    recorded, or relative to the leaderboard's folder) when it still holds that run, else from the given rows that
    match them in everything else when those all share one identity (an unknown identity matches a known one: a
    newer run of the same configuration then replaces the old row). Still unknown: left out, to be filled later."""
    by_run = {row["provenance"]["run_id"]: row.get("model_identity") for row in given}
    unknown = []
    for row in existing:
        if row.get("model_identity") is not None:
            continue
        run_id = row["provenance"]["run_id"]
        found = by_run.get(run_id)
        if found is None:
            found = _identity_in_file(row, run_id, board_dir)
        if found is None:
            row.pop("model_identity", None)
            unknown.append(row)
        else:
            row["model_identity"] = found
    for row in unknown:
        rest = _without_identity(row)
        candidates = {json.dumps(g.get("model_identity"), sort_keys=True, default=str): g.get("model_identity")
                      for g in given if _without_identity(g) == rest and g.get("model_identity") is not None}
        if len(candidates) == 1:
            row["model_identity"] = next(iter(candidates.values()))


def _without_identity(row: dict[str, Any]) -> str:
    config = {k: v for k, v in config_of(row).items() if k != "model_identity"}
    visible = [row.get(k) for k in VISIBLE] + [row.get("judge_setup") or {}]
    return json.dumps([visible, config], sort_keys=True, default=str)


def _identity_in_file(row: dict[str, Any], run_id: str, board_dir: Path) -> Any:
    recorded = Path(str(row["provenance"].get("results_file")))
    for path in dict.fromkeys([recorded] + ([] if recorded.is_absolute() else [board_dir / recorded])):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("run_id") == run_id and isinstance(data.get("model"), dict):
            return data["model"].get("identity")
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
