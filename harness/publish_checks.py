"""Checks that the results files and leaderboard rows being merged describe their data truthfully.

`check_selection`: the selection a results file states agrees with its task part (a hand-edited `partial`,
`n_total` or a deleted field would publish a --limit run as complete). `check_fingerprints`: every row of one task
version, split and source comes from the same data (one dataset fingerprint), and one fingerprint always counts
the same number of samples. `interval_notes`: rows of one task, split, source and judge whose intervals of a metric
are per sample in some and per cluster in others (results written before the task grouped its samples).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.fingerprint import fingerprint_version


def check_selection(path: Path, data: dict[str, Any], chosen: dict[str, Any]) -> None:
    """The selection a results file states must agree with its task part (a hand-edited `partial` or n_total, or
    one deleted, would publish a partial run as complete)."""
    task = data["task"]
    n_total = task["n_total"]  # required by the schema: every harness version wrote it
    partial = chosen["n"] < n_total
    if chosen["n"] != task["n"] or chosen.get("n_total") != n_total or bool(chosen.get("partial")) != partial:
        raise UserError(f"{path}: selection (n={chosen['n']}, n_total={chosen.get('n_total')}, partial="
                        f"{chosen.get('partial')}) disagrees with task (n={task['n']}, n_total={n_total}): the file "
                        "was edited; rewrite it with harness score on its run folder")


def check_fingerprints(rows: list[dict[str, Any]]) -> None:
    """Every row (kept or not) of one task version, split and source must come from the same data. A row of the
    first leaderboard layout has no source: it is compared with the rows of every source of its task version."""
    seen: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        group = seen.setdefault((row["task"], row["task_version"], row["split"]), [])
        for first in group:
            if first["fingerprint"] != row["fingerprint"] and \
                    (first.get("source") == row.get("source") or None in (first.get("source"), row.get("source"))):
                _two_fingerprints(first, row)
            elif first["fingerprint"] == row["fingerprint"] and None not in (first.get("n_total"), row.get("n_total")) \
                    and first["n_total"] != row["n_total"]:  # one dataset has one size
                raise UserError(f"task {row['task']} v{row['task_version']} ({row['split']}): the same data counts "
                                f"{first['n_total']} samples in {first['provenance']['results_file']} and "
                                f"{row['n_total']} in {row['provenance']['results_file']}: one of them was edited; "
                                "rewrite it with harness score on its run folder")
        if all(r["fingerprint"] != row["fingerprint"] or r.get("source") != row.get("source") for r in group):
            group.append(row)


def _two_fingerprints(first: dict[str, Any], row: dict[str, Any]) -> None:
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


def interval_notes(rows: list[dict[str, Any]], describe: Any) -> list[str]:
    """A note per task, split, source and judge setup whose rows give a metric intervals over independent samples
    in some rows and over clusters (`cluster_by`: the questions on one image) in others: side by side, the narrower
    per-sample intervals would look the surer."""
    import json

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        key = json.dumps([row["task"], row["split"], row.get("source"), row["judge"], row["convention"],
                          row.get("judge_setup")], sort_keys=True, default=str)
        groups.setdefault(key, []).append(row)
    notes = []
    for group in groups.values():
        names = sorted({name for row in group for name in row.get("metrics", {})})
        for name in names:
            clustered = [(row, method.startswith("cluster-")) for row in group
                         if (method := (row.get("metrics", {}).get(name) or {}).get("ci_method"))]
            if len({kind for _, kind in clustered}) > 1:
                per_sample = [describe(row) for row, kind in clustered if not kind]
                notes.append(f"rows of one task and judge whose '{name}' intervals are per sample in some rows and "
                             f"per cluster (cluster_by) in others; score the per-sample ones again with this harness "
                             "(harness score DIR; a hub-copy run whose predictions.jsonl lines have no image_content, "
                             "written before such copies were grouped by image bytes, needs harness run into a new "
                             f"folder) and publish them again: {'; '.join(per_sample)}")
                break
    return notes
