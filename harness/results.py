"""results.json: assembled from the run manifest, the prediction records and the judges' entries,
validated against harness/schemas/results.schema.json (schema_version 1.0) and written atomically.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from harness.aggregate import CI_METHODS
from harness.environment import environment
from harness.fingerprint import text_hash
from harness.io import atomic_write_json, read_json_object
from harness.run_files import read_previous_results
from harness.scoring import LOADED_MODEL_FILE, RESULTS_FILE, merge_judge_entries
from harness.served_models import with_served_models

SCHEMA_VERSION = "1.0"


@cache
def schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("harness").joinpath(f"schemas/{name}.schema.json").read_text())


def validate(data: dict[str, Any], name: str = "results") -> None:
    """Raise jsonschema.ValidationError if `data` breaks the schema (a bug, not a user error)."""
    import jsonschema

    jsonschema.Draft202012Validator(schema(name)).validate(data)


def read_results_file(path: Path) -> dict[str, Any]:
    """A results.json written by harness run or score, schema-checked: one-line errors naming the file and place."""
    import jsonschema

    from harness.errors import UserError
    from harness.io import read_user_text

    try:
        data = json.loads(read_user_text(path))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read results ({exc})") from None
    try:
        validate(data, "results")
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "(top level)"
        raise UserError(f"{path}: not a valid results file at '{where}': {exc.message}") from None
    return data


def error_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [{"id": r["id"], "error": str(r["error"])} for r in records if r.get("error")]
    return {"count": len(failed), "samples": failed}


def timing_summary(records: list[dict[str, Any]], attempts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Time, tokens and answers cut of the predictions scored (`records`, the latest line of each sample); the
    cost is that of every attempt (`attempts`: each line, as each was a call; a failed call may be billed too, and
    replies from the cache cost 0)."""
    seconds = sum(float(r.get("time_s") or 0.0) for r in records)
    generated = [r for r in records if not r.get("error")]
    out: dict[str, Any] = {"generation_s": round(seconds, 3)}
    if seconds > 0:
        out["samples_per_s"] = round(len(generated) / seconds, 3)
    for key in ("prompt_tokens", "completion_tokens"):
        tokens = [r[key] for r in generated if r.get(key) is not None]
        if tokens:
            out[key] = int(sum(tokens))
    # answers cut at the token limit (kept and scored as cut: the limit is part of the protocol)
    cut = sum(1 for r in generated if isinstance(r.get("generation_details"), dict)
              and r["generation_details"].get("truncated") is True)
    if cut:
        out["truncated_answers"] = cut
    costs = [r["cost_usd"] for r in (records if attempts is None else attempts) if r.get("cost_usd") is not None]
    if costs:
        out["generation_cost_usd"] = round(sum(costs), 6)
    return out


def selection(records: list[dict[str, Any]], n_total: int | None, limit: int | None) -> dict[str, Any]:
    """Which samples a results.json describes: `n` of the split's `n_total` (`partial` when fewer), the
    `--limit` that chose them (null: none, or `harness score`, which scores every saved prediction) and a
    hash of their ids."""
    n = len(records)
    return {"limit": limit, "n": n, "n_total": n_total, "partial": n_total is not None and n < n_total,
            "ids_hash": text_hash("\n".join(sorted(str(r["id"]) for r in records)))}


def selection_of(data: dict[str, Any]) -> dict[str, Any]:
    """The selection of a results.json; files written before it was recorded fall back on task.n/n_total."""
    if "selection" in data:
        return data["selection"]
    n, n_total = data["task"]["n"], data["task"].get("n_total")
    return {"limit": None, "n": n, "n_total": n_total, "partial": n_total is not None and n < n_total,
            "ids_hash": None}


def _same_selection(old: dict[str, Any], new: dict[str, Any]) -> bool:
    if old.get("ids_hash") and new.get("ids_hash"):
        return old["ids_hash"] == new["ids_hash"]
    return old["n"] == new["n"]


def _error_ids(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(str(r["id"]) for r in rows if r.get("error"))


def _judge_names(entries: list[dict[str, Any]]) -> list[str]:
    return [e["id"] + (f":{e['convention']}" if e.get("convention") else "") for e in entries]


def write_results(
    out_dir: Path, manifest: dict[str, Any], records: list[dict[str, Any]], judge_entries: list[dict[str, Any]],
    limit: int | None = None, attempts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Record the judges' entries for the selected `records` and return the results of this selection.
    `attempts`: every predictions line of these samples, earlier ones included (what generation cost); by default
    `records`.

    results.json of the same run is merged with, never silently shrunk:
    - same selection: the entries of judges not run this time are kept (a judge run again replaces its own);
    - larger selection: results.json now describes it; entries of other judges (smaller selection) are dropped;
    - smaller selection: results.json is left as it is; the returned results (this selection) are not recorded.
    Each of these, and partial results, is stated in one line on stderr.
    """
    path = out_dir / RESULTS_FILE
    task = dict(manifest["task"])
    task["n"] = len(records)
    chosen = selection(records, task.get("n_total"), limit)
    old = read_previous_results(path, manifest["run_id"])
    old_sel = selection_of(old) if old else None
    old_judges = old.get("judges", []) if old else []
    same = old_sel is not None and _same_selection(old_sel, chosen)
    keep_old = old_sel is not None and not same and chosen["n"] < old_sel["n"]
    # Entries of other judges stay only if they scored exactly these samples (not before a failed one was retried).
    mergeable = same and _error_ids(old.get("errors", {}).get("samples", [])) == _error_ids(records)
    judges = merge_judge_entries(old_judges, judge_entries) if mergeable else judge_entries
    notes = _replaced_setups(old_judges, judge_entries) if mergeable else []
    if keep_old:
        notes.append(f"results.json keeps its {old_sel['n']} scored samples ({', '.join(_judge_names(old_judges))});"
                     f" the metrics of these {chosen['n']} are not recorded there (per-sample verdicts: scores.jsonl;"
                     f" to record a judge on every saved prediction: harness score {out_dir} --judge ID)")
    elif old_sel is not None and not mergeable:
        run_now = {(j["id"], j.get("convention")) for j in judge_entries}
        dropped = _judge_names([e for e in old_judges if (e["id"], e.get("convention")) not in run_now])
        why = ("they scored these samples before failed ones were generated again" if same
               else f"they scored {old_sel['n']} samples, not these {chosen['n']}")
        if dropped:
            notes.append(f"results.json drops {', '.join(dropped)} ({why}); re-score with harness score {out_dir} "
                         + " ".join("--judge " + name for name in dropped))
    if chosen["partial"] and not keep_old:
        notes.append(f"partial results: {chosen['n']} of the {chosen['n_total']} samples of the {task['split']} "
                     "split (on a leaderboard a partial run never replaces a complete one)")
    model = dict(manifest["model"])
    loaded = out_dir / LOADED_MODEL_FILE
    if loaded.exists():
        loaded_model = read_json_object(loaded)
        # which models answered these predictions, whichever invocation or cache hit made them
        model["loaded"] = with_served_models(loaded_model.get("identity", {}), records)
        if loaded_model.get("environments"):  # `environment` below is the one that scored
            model["generated_with"] = loaded_model["environments"]
    data = {
        "schema_version": SCHEMA_VERSION,
        "run_id": manifest["run_id"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "task": task,
        "selection": chosen,
        "prompt": manifest["prompt"],
        "generation": manifest.get("generation"),
        "judges": judges,
        "errors": error_summary(records),
        "timings": timing_summary(records, attempts),
        "environment": environment(),
    }
    data["ci_methods"] = _ci_methods(judges)
    validate(data)
    if not keep_old:
        atomic_write_json(path, data)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return data


def _replaced_setups(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    """A note for each judge run again with another setup: its earlier numbers leave results.json (a leaderboard
    keeps them only if they were published before)."""
    notes = []
    for entry in new:
        earlier = next((e for e in old if (e["id"], e.get("convention")) == (entry["id"], entry.get("convention"))),
                       None)
        if earlier is not None and earlier.get("setup") != entry.get("setup"):
            name = _judge_names([entry])[0]
            notes.append(f"results.json replaces {name}'s entry by one with another setup ("
                         f"{_setup_change(earlier.get('setup') or {}, entry.get('setup') or {})}; harness publish "
                         "it first to keep both on a leaderboard)")
    return notes


def _setup_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'repeats 1 -> 3, temperature 0.0 -> 1.0': only the settings that differ ('-': not set)."""
    keys = sorted(k for k in {*old, *new} if old.get(k, "-") != new.get(k, "-"))
    return ", ".join(f"{k} {old.get(k, '-')} -> {new.get(k, '-')}" for k in keys)


def _ci_methods(entries: Any) -> dict[str, str]:
    """What each `ci_method` named in the judge entries is (resamples, seed), so an interval can be reproduced."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("ci_method"), str):
                found.add(value["ci_method"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(entries)
    return {name: CI_METHODS.get(name, "named by the judge") for name in sorted(found)}
