"""results.json: assembled from the run manifest, the prediction records and the judges' entries,
validated against harness/schemas/results.schema.json (schema_version 1.0) and written atomically.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from harness.environment import environment
from harness.io import atomic_write_json
from harness.scoring import LOADED_MODEL_FILE, RESULTS_FILE, merge_judge_entries

SCHEMA_VERSION = "1.0"


@cache
def schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("harness").joinpath(f"schemas/{name}.schema.json").read_text())


def validate(data: dict[str, Any], name: str = "results") -> None:
    """Raise jsonschema.ValidationError if `data` breaks the schema (a bug, not a user error)."""
    import jsonschema

    jsonschema.Draft202012Validator(schema(name)).validate(data)


def error_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [{"id": r["id"], "error": str(r["error"])} for r in records if r.get("error")]
    return {"count": len(failed), "samples": failed}


def timing_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = sum(float(r.get("time_s") or 0.0) for r in records)
    generated = [r for r in records if not r.get("error")]
    out: dict[str, Any] = {"generation_s": round(seconds, 3)}
    if seconds > 0:
        out["samples_per_s"] = round(len(generated) / seconds, 3)
    for key in ("prompt_tokens", "completion_tokens"):
        tokens = [r[key] for r in generated if r.get(key) is not None]
        if tokens:
            out[key] = int(sum(tokens))
    costs = [r["cost_usd"] for r in generated if r.get("cost_usd") is not None]
    if costs:
        out["generation_cost_usd"] = round(sum(costs), 6)
    return out


def write_results(
    out_dir: Path, manifest: dict[str, Any], records: list[dict[str, Any]], judge_entries: list[dict[str, Any]]
) -> dict[str, Any]:
    path = out_dir / RESULTS_FILE
    old_judges: list[dict[str, Any]] = []
    if path.exists():
        try:
            old = json.loads(path.read_text())
            if old.get("run_id") == manifest["run_id"] and old.get("task", {}).get("n") == len(records):
                old_judges = old.get("judges", [])
        except (OSError, json.JSONDecodeError):
            old_judges = []
    task = dict(manifest["task"])
    task["n"] = len(records)
    model = dict(manifest["model"])
    loaded = out_dir / LOADED_MODEL_FILE
    if loaded.exists():
        model["loaded"] = json.loads(loaded.read_text()).get("identity", {})
    data = {
        "schema_version": SCHEMA_VERSION,
        "run_id": manifest["run_id"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "task": task,
        "prompt": manifest["prompt"],
        "generation": manifest.get("generation"),
        "judges": merge_judge_entries(old_judges, judge_entries),
        "errors": error_summary(records),
        "timings": timing_summary(records),
        "environment": environment(),
    }
    validate(data)
    atomic_write_json(path, data)
    return data
