"""What, beside its visible columns, makes a leaderboard row's numbers what they are, so that rows are only merged
or compared when it agrees.

The visible columns (model label, task, split, source, prompt variant, judge, convention, judge setup) do not show
everything that moves numbers: the generation settings (max_new_tokens, temperature), the prompt's text (edited
under the same variant name), the task version, the judge's version, the model's identity (dtype, pinned hub
revision, API model id) and how images were decoded (another harness's decoding of >8-bit images). `row_config`
is that part; it is in every row's key (harness.publish.row_key), so a run with other settings is a row of its own
instead of silently replacing, and `config_notes` names what differs between rows that look alike. Rows written
before `model_identity` was recorded get it from a row of the same run id (the run id hashes it) or from their
results file; one still unknown is keyed with the identity of the rows it matches in everything else, marked as
inferred.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VISIBLE = ("model", "task", "split", "source", "prompt_variant", "judge", "convention")


def config_of(row: dict[str, Any]) -> dict[str, Any]:
    """The number-moving choices of a row that its visible columns do not show (an unknown model identity counts
    as the one it was inferred to have, see fill_identities)."""
    from harness.image_decoding import IMAGE_DECODING

    provenance = row["provenance"]
    identity = row.get("model_identity")
    config = {"task_version": row["task_version"], "judge_version": provenance.get("judge_version"),
              "prompt_hash": provenance.get("prompt_hash"), "generation": provenance.get("generation"),
              "model_identity": identity if identity is not None else row.get("model_identity_inferred")}
    decoding = provenance.get("image_decoding")
    if decoding not in (None, IMAGE_DECODING):  # rows of this decoding (or before it was recorded) share keys
        config["image_decoding"] = decoding
    return config


def row_config(row: dict[str, Any]) -> str:
    return json.dumps(config_of(row), sort_keys=True, separators=(",", ":"), default=str)


def fill_identities(rows: list[dict[str, Any]], board_dir: Path) -> None:
    """Rows without a recorded model identity (written before identities were recorded) get the identity of
    their run when it can be known: from a row of the same run id (the run id hashes it), else from their results
    file (as recorded, or relative to the leaderboard's folder) when it still holds that run. A row whose identity
    stays unknown is keyed, but never labelled, with the one identity of the known rows it matches in everything
    else (`model_identity_inferred`: a newer run of its configuration then replaces it, and rows that could be
    either stay apart); no match or several: none. An unknown identity is never stored as null."""
    by_run = {row["provenance"]["run_id"]: row["model_identity"] for row in rows
              if row.get("model_identity") is not None}
    unknown = []
    for row in rows:
        row.pop("model_identity_inferred", None)
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
    known: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("model_identity") is not None:
            known.setdefault(_without_identity(row), {})[_canonical(row["model_identity"])] = row["model_identity"]
    for row in unknown:
        candidates = known.get(_without_identity(row), {})
        if len(candidates) == 1:
            row["model_identity_inferred"] = next(iter(candidates.values()))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def visible_key(row: dict[str, Any]) -> str:
    """What a reader sees of a row: its visible columns and judge setup."""
    return _canonical([row.get(k) for k in VISIBLE] + [row.get("judge_setup") or {}])


def look_alike(rows: list[dict[str, Any]]) -> list[list[int]]:
    """The indices of `rows` grouped by what a reader sees of them."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(visible_key(row), []).append(i)
    return list(groups.values())


def _without_identity(row: dict[str, Any]) -> str:
    return _canonical([visible_key(row), {k: v for k, v in config_of(row).items() if k != "model_identity"}])


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
    notes = []
    for members in look_alike(rows):
        group = [rows[i] for i in members]
        configs = [config_of(row) for row in group]
        if len({_canonical(c) for c in configs}) < 2:
            continue
        keys = dict.fromkeys(key for c in configs for key in c)  # image_decoding is in some configs only
        differing = [key for key in keys if len({_canonical(c.get(key)) for c in configs}) > 1]
        details = "; ".join(_difference(key, configs) for key in differing)
        notes.append(f"{len(group)} rows of {describe(group[0])} and alike differ in {details}: compare only rows "
                     "that agree (leaderboard.json: task_version, model_identity, provenance)")
    return notes


IMAGE_DECODING_NOW = "this harness's"  # what a config without image_decoding decoded with


def _difference(key: str, configs: list[dict[str, Any]]) -> str:
    if key in ("generation", "model_identity"):
        fields = sorted({k for c in configs for k in (c[key] or {})})
        varying = [k for k in fields if len({_canonical((c[key] or {}).get(k)) for c in configs}) > 1]
        values = ", ".join(f"{k}: {' vs '.join(sorted({str((c[key] or {}).get(k)) for c in configs}))}"
                           for k in varying)
        return f"{key.replace('_', ' ')} ({values or 'recorded vs not recorded'})"
    return f"{key.replace('_', ' ')} ({' vs '.join(sorted({str(c.get(key, IMAGE_DECODING_NOW)) for c in configs}))})"
