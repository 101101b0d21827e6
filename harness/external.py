"""Predictions made elsewhere: validate a user's JSONL and give it a manifest so it scores like a run.

One JSON object per line with `id`, `answer` (reference), `prediction`, for VQA also `answer_type`
(OPEN/CLOSED) and optionally `question`, `question_type` and any other breakdown fields.
"""

from __future__ import annotations

import math
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.fingerprint import IMAGE_CONTENT, config_hash
from harness.io import jsonl_objects, read_user_text

REQUIRED = {"vqa": ("id", "answer", "prediction", "answer_type"), "report": ("id", "answer", "prediction"),
            "caption": ("id", "answer", "prediction")}
#: the error of a predictions-file line whose prediction is null or NaN (a table's missing output)
NO_PREDICTION = "no prediction in the file (null or NaN)"
NOT_BREAKDOWNS = {"id", "question", "answer", "prediction", "images", "error", "prompt_tokens",
                  "completion_tokens", "cost_usd", "time_s", "reference_digest", IMAGE_CONTENT}


def read_external_predictions(path: Path, kind: str) -> tuple[list[dict[str, Any]], str | None]:
    """The file's predictions, and a note on those skipped for a null or blank reference (as the task loaders
    skip such samples: there is nothing to score them against), also printed as a warning."""
    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    missing_predictions: list[str] = []
    seen: set[str] = set()
    try:
        lines = read_user_text(path).split("\n")  # not splitlines(): U+2028 in a JSON string is no line end
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    for lineno, row in jsonl_objects(lines, path, ", ".join(REQUIRED[kind])):
        missing = [k for k in REQUIRED[kind] if k not in row]
        if missing:
            raise UserError(f"{path}:{lineno}: missing field(s) {', '.join(missing)} "
                            f"(a {kind} prediction needs {', '.join(REQUIRED[kind])})")
        row["id"] = str(row["id"])
        if row["id"] in seen:
            raise UserError(f"{path}:{lineno}: duplicate id '{row['id']}'")
        seen.add(row["id"])
        for key in ("answer", "prediction"):
            value = row[key]
            if value is None or (isinstance(value, float) and not math.isfinite(value)):  # null, NaN (pandas)
                row[key] = ""
                if key == "prediction":  # no output: a failed sample, as in harness run, not a wrong answer
                    row["error"] = NO_PREDICTION
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                row[key] = str(value)
            elif not isinstance(value, str):
                raise UserError(f"{path}:{lineno}: field '{key}' must be a string, got {type(value).__name__}")
        if kind == "vqa":
            label = str(row["answer_type"]).strip().upper()
            if label not in ("OPEN", "CLOSED"):
                raise UserError(f"{path}:{lineno}: field 'answer_type' is {row['answer_type']!r}, "
                                "expected OPEN or CLOSED")
            row["answer_type"] = label
        if not row["answer"].strip():
            skipped.append(f"line {lineno} (id {row['id']})")
            continue
        if row.get("error") == NO_PREDICTION:  # counted once the line is known to be scored (it has a reference)
            missing_predictions.append(f"line {lineno} (id {row['id']})")
        records.append(row)
    if not records:
        why = f" with a reference ({len(skipped)} have a null or blank 'answer')" if skipped else ""
        raise UserError(f"{path}: no predictions{why} in the file")
    if missing_predictions:
        n = len(missing_predictions)
        print(f"warning: {path}: {n} prediction{'s are' if n > 1 else ' is'} null or NaN ({_first(missing_predictions)}"
              "): counted as failed samples, not in the metrics; write \"\" where the model answered nothing",
              file=sys.stderr)
    return records, _skipped_note(path, skipped)


def _first(items: list[str]) -> str:
    return ", ".join(items[:3]) + (f", and {len(items) - 3} more" if len(items) > 3 else "")


def _skipped_note(path: Path, skipped: list[str]) -> str | None:
    if not skipped:
        return None
    n, shown = len(skipped), _first(skipped)
    note = (f"{path}: {n} prediction{'s' if n > 1 else ''} with a null or blank reference ('answer') skipped "
            f"({shown}); {'they are' if n > 1 else 'it is'} not scored")
    print(f"warning: {note}", file=sys.stderr)
    return note


def external_manifest(path: Path, records: list[dict[str, Any]], kind: str, task_name: str | None,
                      model_name: str | None, skipped_note: str | None = None) -> dict[str, Any]:
    from harness.fingerprint import dataset_fingerprint
    from harness.types import Sample

    fingerprint = dataset_fingerprint(
        Sample(id=r["id"], images=[], answer=r["answer"], question=r.get("question")) for r in records
    )
    import hashlib

    task_id = task_name or path.stem
    model_id = model_name or "external"
    # the file's content, not where it lies: a copy is the same run, an edited file another
    content = hashlib.sha256(path.read_bytes()).hexdigest()
    breakdowns = sorted({k for r in records for k, v in r.items()
                         if k not in NOT_BREAKDOWNS and isinstance(v, str)})
    return {
        "run_id": f"{task_id}--{model_id}--{config_hash([content, fingerprint])}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"id": model_id, "label": model_id, "plugin": "external", "args": {}, "adapter": None,
                  "adapter_hash": None, "identity": {"predictions_sha256": content}},
        "task": {"id": task_id, "version": "external", "kind": kind,
                 "source": {"name": "external", "format": "predictions-jsonl", "path": str(path)},
                 "revision": None, "split": "external", "fingerprint": fingerprint, "n_total": len(records),
                 "credentialed": False, "breakdowns": breakdowns, "skipped_note": skipped_note},
        "prompt": {"variant": None, "hash": None, "template": None},
        "generation": None,
    }
