"""The scoring stage: prediction records -> judges -> scores.jsonl and results.json.

Reads only what the generation stage wrote (predictions.jsonl and run.json), so saved predictions can be
re-scored with another judge or convention without regenerating. `scores.jsonl` holds one line per sample
id with every judge's row under "<judge>/<convention>"; results.json keeps one entry per judge+convention,
so scoring with a new judge adds to what is there.
"""

from __future__ import annotations

import difflib
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from harness import plugin_manager
from harness.aggregate import summarize
from harness.errors import UserError
from harness.external import NOT_BREAKDOWNS
from harness.io import atomic_write_jsonl
from harness.judge_api import JudgeOptions, JudgePlugin
from harness.plugin_hooks import close_plugin
from harness.plugin_outputs import checked_rows, third_party_code
from harness.providers import claims
from harness.run_files import read_scores
from harness.task_config import TaskConfig

PREDICTIONS_FILE = "predictions.jsonl"
SCORES_FILE = "scores.jsonl"
RESULTS_FILE = "results.json"
MANIFEST_FILE = "run.json"
LOADED_MODEL_FILE = "model.json"  # what the model plugin reported after loading (identity())
RUN_FILES = (PREDICTIONS_FILE, SCORES_FILE, RESULTS_FILE, MANIFEST_FILE, LOADED_MODEL_FILE)


#: judge settings that have a flag of their own (the others come from --judge-arg KEY=VALUE)
SETTING_FLAGS = {
    "model": "--judge-model", "provider": "--judge-provider", "base_url": "--judge-base-url",
    "repeats": "--judge-repeats", "concurrency": "--judge-concurrency", "timeout": "--judge-timeout",
    "batch": "--judge-batch", "allow_external": "--allow-external-judge",
}


def _load_judge(spec: str, convention: str | None, task_kind: str) -> tuple[Any, str | None, tuple[str, ...], Any]:
    """(judge class, convention, accepted settings, JudgeInfo) of one `id[:convention]` spec, checked against the
    task kind."""
    judge_id, _, explicit = (part.strip() for part in spec.partition(":"))
    info = plugin_manager.judges().get(judge_id)
    if task_kind not in info.capabilities.get("task_kinds", [task_kind]):
        raise UserError(
            f"judge '{info.id}' scores {'/'.join(info.capabilities['task_kinds'])} tasks, not '{task_kind}'"
        )
    cls = info.load()
    if not getattr(cls, "conventions", ()):  # a convention it would ignore must not label (and split) its results
        if explicit:
            raise UserError(f"--judge {spec}: judge '{info.id}' has no conventions; drop ':{explicit}'")
        return cls, None, tuple(getattr(cls, "accepted_settings", ()) or ()), info
    return cls, explicit or convention, tuple(getattr(cls, "accepted_settings", ()) or ()), info


def _construct(cls: Any, convention: str | None, accepted: tuple[str, ...], info: Any, settings: dict[str, Any],
               task_kind: str, credentialed: bool, progress: bool | None = None) -> JudgePlugin:
    """The judge, under the id it is registered with (what --judge names and results record), whatever its class
    says."""
    options = JudgeOptions(
        convention=convention,
        task_kind=task_kind,
        settings={k: v for k, v in settings.items() if k in accepted},
        credentialed=credentialed,
        progress=progress,
    )
    judge = cls.__new__(cls)
    judge.id, judge.registered_plugin = info.id, info.plugin  # set first: __init__'s own errors name it too
    with third_party_code("judge", info.id, info.plugin, "__init__"):
        judge.__init__(options)
    return judge


def check_settings(settings: dict[str, Any], accepted: dict[str, tuple[str, ...]]) -> None:
    """Refuse a setting that no selected judge accepts (a typo in --judge-arg would otherwise do nothing).

    `accepted` maps each selected judge id to its `accepted_settings`. One set of settings is shared by all of
    them, so a key is fine when at least one of them accepts it.
    """
    known = sorted({key for keys in accepted.values() for key in keys})
    several = len(accepted) > 1
    which = f"judge{'s' if several else ''} {', '.join(accepted)}"
    for key, value in settings.items():
        if key in known or key == "allow_external":  # a permission, harmless where no judge calls out
            continue
        if key in SETTING_FLAGS:
            flag = SETTING_FLAGS[key]
            given = flag if value is True else f"{flag} {_shown(value)}"
            raise UserError(f"{given}: not used by the selected {which}; it is a setting of the LLM judges "
                            "(gpt4, likert): add --judge gpt4 or --judge likert, or drop the flag")
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        if known:
            accepts = f"{'they accept' if several else 'it accepts'}: {', '.join(known)}"
        else:
            accepts = f"{'they accept' if several else 'it accepts'} no --judge-arg keys"
        shown = _unknown_value(key, value)
        raise UserError(f"--judge-arg {key}={shown}: the selected {which} {'do' if several else 'does'} not "
                        f"accept '{key}'.{hint} {'Keys ' + accepts if known else accepts.capitalize()}")


def _unknown_value(key: str, value: Any) -> str:
    """How an unknown setting's value appears in the error: '...' (it may be a key: --judge-arg api_key=...)
    unless it is a short lowercase word or number under a name that does not suggest a credential."""
    text = str(value)
    if re.search(r"(?i)key|token|secret|auth|pass|cred|bearer", key) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,23}",
                                                                                          text):
        return "..."
    shown = _shown(text)
    return shown if shown == text else "..."


def _shown(value: Any) -> str:
    """A setting's value for an error message, with any API key of the environment taken out."""
    from harness.secrets import redact_env

    return redact_env(str(value))


def judge_key(judge: JudgePlugin) -> str:
    return f"{judge.id}/{judge.convention}" if judge.convention else judge.id


def shown_judge(key: str) -> str:
    """A judge key of scores.jsonl ("gpt4/pefomed") as the command line takes it ("gpt4:pefomed")."""
    return key.replace("/", ":", 1)


def build_judges(
    judge_specs: list[str], convention: str | None, settings: dict[str, Any], task_kind: str, credentialed: bool,
    progress: bool | None = None,
) -> list[JudgePlugin]:
    """Build every judge up front, so a wrong name or option fails before any generation."""
    if not judge_specs:
        raise UserError("no judge given and the task names no default judge: pass --judge")
    loaded = [_load_judge(spec, convention, task_kind) for spec in judge_specs]
    if convention and not any(getattr(cls, "conventions", ()) for cls, _, _, _ in loaded):
        ids = ", ".join(dict.fromkeys(info.id for _, _, _, info in loaded))
        several = len(loaded) > 1
        raise UserError(f"--convention {convention}: the selected judge{'s' if several else ''} {ids} "
                        f"{'have' if several else 'has'} no conventions; drop --convention")
    accepted: dict[str, tuple[str, ...]] = {}
    for _, _, keys, info in loaded:
        accepted.setdefault(info.id, keys)
    check_settings(settings, accepted)
    return [_construct(cls, conv, keys, info, settings, task_kind, credentialed, progress)
            for cls, conv, keys, info in loaded]


def check_default_judges(config: TaskConfig) -> None:
    """A task YAML's `judges:` name registered judges; an error names the file and line (a YAML typo is not a
    --judge typo)."""
    registry = plugin_manager.judges()
    for judge_id in config.judges:
        try:
            info = registry.get(judge_id.split(":")[0])
        except UserError as exc:
            raise UserError(f"{config.path}:{config.judges_line}: field 'judges': {exc}") from None
        kinds = info.capabilities.get("task_kinds", [config.kind])
        if config.kind not in kinds:
            raise UserError(f"{config.path}:{config.judges_line}: field 'judges': judge '{info.id}' scores "
                            f"{'/'.join(kinds)} tasks, not this {config.kind} task")


def warn_absent_breakdowns(records: list[dict[str, Any]], breakdown_keys: list[str],
                           declared_by: str | None = None) -> list[str]:
    """Breakdown keys no record has a value for, on one stderr line with the fields the records do have: a
    `warning:` for keys the user typed (--breakdown: a typo), a `note:` for keys a task YAML declares
    (`declared_by`, e.g. "task vqa-rad source 'hf'": a source without that field, or a typo in the YAML)."""
    absent = [k for k in breakdown_keys if not any(r.get(k) not in (None, "") for r in records)]
    for key in breakdown_keys:
        lacking = sum(r.get(key) in (None, "") for r in records)
        if key not in absent and lacking:
            print(f"note: {lacking} of {len(records)} samples have no {key!r}, so they are in no {key} group of the "
                  f"breakdown (results.json: breakdown_missing)", file=sys.stderr)
    if absent and records:
        present = sorted({k for r in records for k, v in r.items()
                          if isinstance(v, (str, int, float)) and v != "" and k not in NOT_BREAKDOWNS})
        hint = difflib.get_close_matches(absent[0], present, n=1)
        names = ", ".join(repr(k) for k in absent)
        field, it = ("field", "it") if len(absent) == 1 else ("fields", "them")
        head = (f"note: no sample of {declared_by} has the breakdown {field} {names}, so results have no breakdown "
                f"by {it}" if declared_by else f"warning: --breakdown {names} is in no sample, so it is left out")
        print(head + (f" (did you mean {hint[0]!r}?)" if hint else "")
              + f"; fields the samples have: {', '.join(present) or 'none'}", file=sys.stderr)
    return absent


def apply_judges(
    out_dir: Path, records: list[dict[str, Any]], judges: list[JudgePlugin], breakdown_keys: list[str],
    cluster_key: str | None = None, breakdowns_declared_by: str | None = None,
    keep: Callable[[list[dict[str, Any]]], Any] | None = None,
) -> list[dict[str, Any]]:
    """Score `records` with each judge; update scores.jsonl after each judge; return the results entries.
    `cluster_key`: the record field grouping dependent samples, resampled together for the intervals.
    `breakdowns_declared_by`: the task YAML the breakdown keys come from, None for a user's --breakdown.
    `keep(entries)`: when a judge fails or is interrupted, records the entries of the judges that finished before
    the error goes on (an LLM provider that is down must not discard the exact judge's results)."""
    scorable = [r for r in records if not r.get("error")]
    excluded = len(records) - len(scorable)
    # the samples scored, as breakdown_missing counts them (failed samples are in no group either way)
    warn_absent_breakdowns(scorable or records, breakdown_keys, breakdowns_declared_by)
    lacking = sum(1 for r in scorable if r.get(cluster_key) is None) if cluster_key else 0
    if lacking:  # aggregate.cluster_values then groups nothing: said, not silently per sample
        print(f"note: {lacking} of {len(scorable)} predictions lines have no '{cluster_key}' (written before the task "
              "grouped its samples by it): the intervals take the samples as independent; run the model again into a "
              "new --output folder to group them", file=sys.stderr)
    entries: list[dict[str, Any]] = []
    try:
        _score_each(out_dir, judges, scorable, excluded, breakdown_keys, cluster_key, entries)
    except BaseException:
        if entries and keep is not None:
            try:
                keep(entries)
                names = ", ".join(e["id"] for e in entries)
                print(f"note: results.json records the judge(s) that finished ({names})", file=sys.stderr)
            except Exception as exc:  # noqa: BLE001 - the judge's error is the one to report
                print(f"note: could not record the judges that finished: {exc}", file=sys.stderr)
        raise
    return entries


def _score_each(out_dir: Path, judges: list[JudgePlugin], scorable: list[dict[str, Any]], excluded: int,
                breakdown_keys: list[str], cluster_key: str | None, entries: list[dict[str, Any]]) -> None:
    """apply_judges' loop: each judge's rows into scores.jsonl and its results entry appended to `entries`."""
    for judge in judges:
        claimed_from = claims.mark()
        try:
            _score_one(out_dir, judge, scorable, excluded, breakdown_keys, cluster_key, entries)
        except BaseException:  # nothing records its replies: the run that uses them next counts their cost
            claims.give_back(claimed_from)
            raise


def _score_one(out_dir: Path, judge: JudgePlugin, scorable: list[dict[str, Any]], excluded: int,
               breakdown_keys: list[str], cluster_key: str | None, entries: list[dict[str, Any]]) -> None:
    """One judge's rows into scores.jsonl and its results entry appended to `entries`."""
    started = time.perf_counter()
    plugin = getattr(judge, "registered_plugin", "")
    # a plugin's setup(), score(), describe() and aggregate() are its code: an exception is one line naming it;
    # an exception in its close() is a warning once its rows are in hand (they are saved, and summarised)
    try:
        if plugin not in plugin_manager.BUILTIN_PLUGINS:  # before any paid call, not after the scoring
            with third_party_code("judge", judge.id, plugin, "setup"):
                judge.setup()
        with third_party_code("judge", judge.id, plugin, "score"):
            rows = judge.score(scorable) if scorable else []
    except BaseException:
        close_plugin("judge", judge.id, plugin, judge)  # the error of setup() or score() is the one reported
        raise
    close_plugin("judge", judge.id, plugin, judge, "its scores are kept")
    rows = checked_rows(judge.id, plugin, rows, [r["id"] for r in scorable],
                        tuple(getattr(judge, "proportion_metrics", ()) or ()))
    with third_party_code("judge", judge.id, plugin, "describe"):
        described = judge.describe()
    _merge_scores(out_dir / SCORES_FILE, judge_key(judge), scorable, rows, described.get("setup"))
    with third_party_code("judge", judge.id, plugin, "aggregate"):
        summary = summarize(judge, scorable, rows, breakdown_keys, cluster_key)
    entries.append(
        {
            **described,
            **({"distribution": dist} if (dist := plugin_manager.distribution(plugin)) else {}),
            "n_scored": len(scorable),
            "n_excluded": excluded,
            "metrics": summary["metrics"],
            "breakdowns": summary["breakdowns"],
            **({"breakdown_missing": summary["missing"]} if summary["missing"] else {}),
            "scoring_s": round(time.perf_counter() - started, 3),
            "scored_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )


def _merge_scores(path: Path, key: str, records: list[dict], rows: list[dict], setup: Any) -> None:
    """Each row under `key` with the judge `setup` it was scored with; rows of samples not scored now stay, and
    a note says when they hold another setup's verdicts (harness agreement refuses such a mix)."""
    existing = {row["id"]: row for row in read_scores(path)} if path.exists() else {}
    now = {record["id"] for record in records}
    others = [row["judges"][key].get("setup") for sample_id, row in existing.items()
              if sample_id not in now and isinstance(row["judges"].get(key), dict)]
    differing = [other for other in others if other is not None and other != setup]
    if differing:
        print(f"note: {path} keeps {len(differing)} earlier {key} verdicts of samples not scored now, made with "
              f"another setup than this one; to have one setup throughout: harness score {path.parent} --judge "
              f"{shown_judge(key)} (with the same judge options)", file=sys.stderr)
    for record, row in zip(records, rows):
        entry = existing.setdefault(record["id"], {"id": record["id"], "judges": {}})
        entry["judges"][key] = {**row, "setup": setup}
    atomic_write_jsonl(path, existing.values())


@cache
def installed_judge_class(judge_id: str) -> Any:
    """The installed judge plugin class of `judge_id` (None: not installed or not loadable), for reading recorded
    results written by any version."""
    try:
        return plugin_manager.judges().get(judge_id).load()
    except Exception:  # noqa: BLE001 - a judge that is gone only loses what could be derived from it
        return None


def recorded_convention(judge_id: str, convention: str | None) -> str | None:
    """The convention an entry or row really has: None for an installed judge that declares no conventions (older
    versions recorded a shared --convention on it, e.g. semantic under r2gen), else as recorded."""
    cls = installed_judge_class(judge_id) if convention is not None else None
    if cls is None:
        return convention
    return convention if getattr(cls, "conventions", ()) else None  # the test scoring applies (_load_judge)


def merge_judge_entries(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace entries of the same judge+convention, keep the others (in their order; of old entries that now
    share a key, the last)."""
    def key(entry: dict[str, Any]) -> tuple[str, Any]:
        return entry["id"], recorded_convention(entry["id"], entry.get("convention"))

    fresh = {key(e): e for e in new}
    merged: dict[tuple[str, Any], dict[str, Any]] = {}
    for entry in old:
        k = key(entry)
        merged[k] = fresh.get(k, entry)
    return list({**merged, **fresh}.values())
