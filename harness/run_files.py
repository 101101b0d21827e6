"""Reading back the files of a run folder, which a user may have edited or damaged by hand.

Each stage reads what the one before wrote (run.json and predictions.jsonl for scoring, scores.jsonl and an
earlier results.json for merging). A file of the wrong shape is a one-line error naming the file, the line
or field and what was expected, never a traceback from deep inside a later stage. An earlier results.json
that no longer passes its schema is only a cache of scores.jsonl: it is set aside with a note and rewritten.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.fingerprint import reference_digest, text_hash
from harness.io import atomic_write_json, read_json_object, read_jsonl

_RESTORE = "restore it, or run again into a new --output"


@cache
def _manifest_schema() -> dict[str, Any]:
    """run.json's schema: the parts of results.schema.json that `harness run` writes first (the task has no `n`,
    the count of samples scored, yet)."""
    from harness.results import schema

    results = schema("results")
    props = results["properties"]
    task = dict(props["task"])
    task["required"] = [k for k in task["required"] if k != "n"]
    task["properties"] = {**task["properties"], "breakdowns": {"type": "array", "items": {"type": "string"}}}
    prompt = dict(props["prompt"])
    return {
        "type": "object",
        "required": ["run_id", "model", "task", "prompt"],
        "properties": {"run_id": {"type": "string", "minLength": 1}, "created": {"type": "string"},
                       "model": props["model"], "task": task, "prompt": prompt,
                       "generation": props["generation"]},
        "$defs": results.get("$defs", {}),
    }


def _schema_error(path: Path, exc: Any, what: str) -> UserError:
    where = ".".join(map(str, exc.absolute_path)) or "(top level)"
    message = exc.message if len(exc.message) <= 160 else exc.message[:157] + "..."
    return UserError(f"{path}: field '{where}': {message} ({what})")


def read_manifest(path: Path) -> dict[str, Any]:
    """A run folder's run.json, checked against the shape `harness run` writes."""
    import jsonschema

    data = read_json_object(path)
    try:
        jsonschema.Draft202012Validator(_manifest_schema()).validate(data)
    except jsonschema.ValidationError as exc:
        raise _schema_error(path, exc, f"run.json is written by harness run; {_RESTORE}") from None
    prompt = data["prompt"]
    if isinstance(prompt.get("template"), str) and prompt.get("hash") != text_hash(prompt["template"]):
        raise UserError(f"{path}: field 'prompt.template' is not the prompt whose hash {prompt.get('hash')} the run "
                        f"id records (edited by hand?): the predictions were made with that one "
                        f"(run.json is written by harness run; {_RESTORE})")
    return data


#: what run.json says of the task that is not part of the run id: a task YAML corrected since (its breakdowns, sizes,
#: cluster_by) is what scoring uses, and the record must say so; credentialed, once said, stays; `source` (the
#: folder read) is where the same data is now, after a resume from another --data-dir holding it; `file`: the task
#: YAML read with --task PATH, where it is now
REFRESHED_TASK_FIELDS = ("breakdowns", "cluster_by", "size_note", "skipped_note", "credentialed", "source", "file")


def refreshed_task(manifest: dict[str, Any], now: dict[str, Any], write_to: Path | None = None) -> dict[str, Any]:
    """`manifest` with the REFRESHED_TASK_FIELDS that `now` (the task as its YAML gives it now) has; written to
    `write_to` (its run.json) when one of them changed."""
    fresh = {k: now[k] for k in REFRESHED_TASK_FIELDS if k in now}
    fresh["credentialed"] = bool(fresh.get("credentialed") or manifest["task"].get("credentialed"))
    if all(manifest["task"].get(k) == v for k, v in fresh.items()):
        return manifest
    refreshed = {**manifest, "task": {**manifest["task"], **fresh}}
    if write_to is not None:
        atomic_write_json(write_to, refreshed)
    return refreshed


def _check_id(row: dict[str, Any]) -> str | None:
    value = row.get("id")
    if value is None:
        return "missing field 'id'"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return f"field 'id' must be a string, got {type(value).__name__}"
    return None


_TEXT_FIELDS = ("question", "answer", "prediction", "error", "answer_type")
_NUMBER_FIELDS = ("prompt_tokens", "completion_tokens", "cost_usd", "time_s")
_PREDICTIONS_FIX = "predictions.jsonl is written by harness run; restore the line, or delete it to generate it again"


def _check_prediction_row(row: dict[str, Any]) -> str | None:
    """The shape `harness run` writes: an id, texts or null, a list of image names, numbers or null."""
    problem = _check_id(row)
    if problem is not None:
        return problem
    for key in ("answer", "prediction"):  # every line harness run writes has both (a failed sample: prediction "")
        if key not in row:
            return f"field '{key}' is missing ({_PREDICTIONS_FIX})"
    for key in _TEXT_FIELDS:
        if row.get(key) is not None and not isinstance(row[key], str):
            return f"field '{key}' must be a string, got {type(row[key]).__name__} ({_PREDICTIONS_FIX})"
    images = row.get("images")
    if images is not None and not (isinstance(images, list) and all(isinstance(name, str) for name in images)):
        return f"field 'images' must be a list of file names ({_PREDICTIONS_FIX})"
    for key in _NUMBER_FIELDS:
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"field '{key}' must be a number, got {type(value).__name__} ({_PREDICTIONS_FIX})"
    if "reference_digest" in row and row["reference_digest"] != reference_digest(row):  # older lines have none
        return ("its id, question, answer or answer_type differs from what harness run wrote (edited by hand?): "
                f"scored, it would not be the data the run records ({_PREDICTIONS_FIX})")
    return None


def read_predictions(path: Path, *, repair_tail: bool = False, skip_torn_tail: bool = False) -> list[dict[str, Any]]:
    """predictions.jsonl: one object per line with an `id` (a later line of an id replaces an earlier one), of the
    shape `harness run` writes."""
    return read_jsonl(path, repair_tail=repair_tail, skip_torn_tail=skip_torn_tail, check=_check_prediction_row)


def _check_scores_row(row: dict[str, Any]) -> str | None:
    problem = _check_id(row)
    if problem is None and not isinstance(row.get("judges"), dict):
        problem = (f"field 'judges' must be an object of the judges' rows, got {type(row.get('judges')).__name__} "
                   "(scores.jsonl is written by the judges; delete it and score again: harness score DIR)")
    return problem


def read_scores(path: Path) -> list[dict[str, Any]]:
    """scores.jsonl: one object per sample id, with the judges' rows under `judges`."""
    return read_jsonl(path, check=_check_scores_row, hint=f" (scores.jsonl is written whole by the judges, so "
                      f"this is an edit or another tool's; delete it and score again: harness score {path.parent})")


def read_previous_results(path: Path, run_id: str) -> dict[str, Any] | None:
    """The results.json of the same run already in the folder, or None. One that cannot be read, or no longer
    passes its schema (edited by hand), is renamed `results.json.invalid-<UTC time>` to be written anew: a note
    says so, since its other judges' entries are not carried over (their per-sample rows stay in scores.jsonl;
    `harness score` records them again)."""
    import jsonschema

    from harness.results import validate

    if not path.is_file():  # none yet (a directory in its place fails when results.json is written)
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"not readable JSON ({exc})"
    else:
        if not isinstance(old, dict) or old.get("run_id") != run_id or "task" not in old:
            return None  # another run's file, or not a results file at all: replaced as before
        try:
            validate(old, "results")
            return old
        except jsonschema.ValidationError as exc:
            where = ".".join(map(str, exc.absolute_path)) or "(top level)"
            problem = f"field '{where}': {exc.message[:160]}"
    aside = path.with_name(f"{path.name}.invalid-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}")
    os.replace(path, aside)  # never lost: the user may have edited it by hand
    print(f"note: {path} is not a valid results file ({problem}); it is set aside as {aside.name} and written "
          "anew from this scoring (judges scored before are in scores.jsonl: harness score DIR --judge ID records "
          "them again)", file=sys.stderr)
    return None


FINETUNE_FORMAT = "medvlm-harness-finetune/"  # manifest.json `format` of an adapter folder harness finetune wrote


def adapter_training(folder: Path, digest: str | None) -> dict[str, Any] | None:
    """What `harness finetune` recorded of the adapter in `folder` (its manifest.json): the fine-tune's config hash,
    the base model and revision, the steps, and per stage the task, split, source, data fingerprint, samples and
    epochs, so that a result says what its adapter learnt from. None for an adapter made elsewhere, or one whose
    manifest names other adapter files than those there (`digest`, the adapter's hash: a manifest copied beside
    other weights)."""
    data = _finetune_manifest(Path(folder))
    if data is None:
        return None
    if data.get("adapter_hash") and digest and data["adapter_hash"] != digest:
        print(f"warning: {Path(folder) / 'manifest.json'} describes other adapter files ({data['adapter_hash']}, "
              f"these are {digest}): what the adapter learnt from is not recorded", file=sys.stderr)
        return None
    return _training_summary(data)


def adapter_folder(spec: Any, adapter_arg: str | None) -> tuple[Path | None, str]:
    """The adapter folder a run loads, and how the user named it: --adapter, or the model's `adapter_arg` key of
    --model-args (vllm's adapter=DIR) when that names a folder; (None, "") for a run without one."""
    if spec.adapter:
        return Path(spec.adapter).expanduser(), f"--adapter {spec.adapter}"
    value = spec.model_args.get(adapter_arg) if adapter_arg else None
    if value and Path(value).expanduser().is_dir():
        return Path(value).expanduser(), f"--model-args {adapter_arg}={value}"
    return None, ""


def model_training(model_args: dict[str, str], adapter: str | Path | None) -> dict[str, Any] | None:
    """What `harness finetune --method full` recorded of the model folder a run loads (`--model-args
    model=<folder>`, without --adapter), as `adapter_training` says it of an adapter; None for any other model."""
    folder = model_args.get("model")
    if adapter or not folder or not Path(folder).expanduser().is_dir():
        return None
    data = _finetune_manifest(Path(folder).expanduser())
    return _training_summary(data) if data is not None and data.get("kind") == "full-model" else None


def _finetune_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not str(data.get("format", "")).startswith(FINETUNE_FORMAT):
        return None
    return data


def _training_summary(data: dict[str, Any]) -> dict[str, Any]:
    base = data.get("base_model") if isinstance(data.get("base_model"), dict) else {}
    stages = []
    for stage in data.get("stages") or []:
        if isinstance(stage, dict):
            task = stage.get("task") if isinstance(stage.get("task"), dict) else {}
            stages.append({"name": stage.get("name"), "steps": stage.get("steps"), "epochs": stage.get("epochs"),
                           **{key: task.get(key) for key in ("id", "version", "source", "split", "fingerprint",
                                                             "n_samples", "prompt_variant", "prompt_hash")}})
    return {"config_hash": data.get("config_hash"), "base_model": {"id": base.get("id"),
                                                                  "revision": base.get("revision")},
            "steps": data.get("steps"), "stages": stages}


def warn_untrained_prompt(trained: dict[str, Any] | None, what: str, task_id: str, variant: str,
                          template: str) -> None:
    """A warning when a run asks an adapter about a task it was trained on with another prompt than the one it
    learnt (`--prompt` left out after `harness finetune --prompt pefomed`): its scores are of untrained prompts."""
    for stage in reversed((trained or {}).get("stages") or []):  # the main stage is the last
        if stage.get("id") != task_id or not stage.get("prompt_hash"):
            continue
        if stage["prompt_hash"] != text_hash(template):
            learnt = stage.get("prompt_variant")
            print(f"warning: {what} was trained on {task_id} with its '{learnt}' prompt; this run asks "
                  f"with '{variant}', a prompt it did not learn (--prompt {learnt} evaluates it as trained)",
                  file=sys.stderr)
        return
