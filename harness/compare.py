"""`harness compare`: two scored runs on the same samples, metric by metric: A, B, B - A with a paired 95% interval
and a p-value, overall and per breakdown value.

Reads what `harness run` / `harness score` wrote (results.json for the task and the judges' setups, predictions.jsonl
for the samples' fields, scores.jsonl for the per-sample rows); generates and judges nothing. The runs must be on one
task version, split and data fingerprint; a judge is compared only where both runs recorded the same setup. The
statistics are harness.paired_stats'; each judge's own aggregation comes from its `saved_aggregator`.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import UserError, close_hint
from harness.external import NOT_BREAKDOWNS
from harness.paired_stats import METHODS, RESAMPLES, mcnemar_exact, paired_differences
from harness.run_settings_diff import settings_diff
from harness.scoring import shown_judge as _shown

SAME_TASK_FIELDS = ("id", "version", "split", "fingerprint")


@dataclass
class SavedRun:
    folder: Path
    results: dict[str, Any]
    records: dict[str, dict[str, Any]]  # sample id -> prediction record, failed samples left out
    scores: dict[str, dict[str, Any]]  # sample id -> {judge key: row}


def read_run(path: Path) -> SavedRun:
    """A folder written by harness run or harness score (or its results.json), checked, with one-line errors."""
    from harness.results import read_results_file
    from harness.run_files import read_predictions, read_scores

    folder = path.parent if path.name == "results.json" and path.is_file() else path
    files = [folder / name for name in ("results.json", "predictions.jsonl", "scores.jsonl")]
    needed = [files[0], files[2]]  # a predictions file scored before harness score kept its samples lacks it
    if not folder.is_dir() or not all(f.is_file() for f in needed):
        missing = ", ".join(f.name for f in needed if not f.is_file())
        raise UserError(f"{path}: not a scored run folder (missing {missing if folder.is_dir() else 'the folder'}): "
                        "expected the output folder of harness run or harness score")
    results = read_results_file(files[0])
    scores: dict[str, dict[str, Any]] = {}
    for lineno, row in enumerate(read_scores(files[2]), start=1):
        if row["id"] in scores:
            raise UserError(f"{files[2]}:{lineno}: sample id {json.dumps(row['id'])} is on an earlier line too (an "
                            f"edit, or files joined); score again: harness score {folder}")
        scores[row["id"]] = row["judges"]
    if files[1].is_file():
        records = {r["id"]: r for r in read_predictions(files[1], skip_torn_tail=True)}
    else:  # scored from a file by an older harness: no sample fields (the fingerprint covers the answers)
        records = {sample_id: {"id": sample_id} for sample_id in scores}
    return SavedRun(folder, results, {i: r for i, r in records.items() if not r.get("error")}, scores)


def check_same_samples(a: SavedRun, b: SavedRun) -> None:
    for field in SAME_TASK_FIELDS:
        left, right = a.results["task"].get(field), b.results["task"].get(field)
        if left != right:
            raise UserError(f"{a.folder} and {b.folder} are not runs on the same samples: task {field} {left!r} vs "
                            f"{right!r} (a paired comparison needs one task version, split and data fingerprint)")
    left, right = a.results["task"].get("cluster_by"), b.results["task"].get("cluster_by")
    if left != right:
        raise UserError(f"{a.folder} records cluster_by {left!r}, {b.folder} {right!r}: score both again with this "
                        "harness (harness score DIR) so that they group dependent samples alike")


def judge_entries(run: SavedRun) -> dict[str, dict[str, Any]]:
    from harness.scoring import recorded_convention

    out = {}
    for entry in run.results["judges"]:
        convention = recorded_convention(entry["id"], entry.get("convention"))
        out[f"{entry['id']}/{convention}" if convention else entry["id"]] = entry
    return out


def _chosen_judges(a: dict[str, Any], b: dict[str, Any], asked: str | None, where: tuple[Path, Path]) -> list[str]:
    common = [key for key in a if key in b]
    if asked is None:
        if not common:
            raise UserError(f"{where[0]} and {where[1]} have no judge in common (A: "
                            f"{', '.join(map(_shown, a)) or 'none'}; B: {', '.join(map(_shown, b)) or 'none'}): score "
                            "one with the other's judge (harness score DIR --judge)")
        return common
    wanted = asked.replace(":", "/", 1)
    chosen = [key for key in common if key == wanted or key.split("/", 1)[0] == wanted]
    if not chosen:
        shown = ", ".join(map(_shown, common)) or "none"
        raise UserError(f"--judge {asked}: not a judge both runs were scored with (both have: {shown})"
                        f"{close_hint([asked], [_shown(k) for k in common])}")
    return chosen


def _setup_problem(key: str, a: dict[str, Any], b: dict[str, Any]) -> str | None:
    for field in ("version", "setup"):
        if a.get(field) != b.get(field):
            return (f"judge {_shown(key)} is set up differently in the two runs ({field} {json.dumps(a.get(field))} vs "
                    f"{json.dumps(b.get(field))}): their numbers are not comparable; score one again with the other's "
                    "judge options")
    return None


def _rows_setup_problem(run: SavedRun, key: str, entry: dict[str, Any]) -> str | None:
    """Rows of the run's samples scored with another setup than its results.json records (some samples re-judged
    with another judge model): their verdicts would be blended into one number."""
    other = sum(1 for i in run.records if isinstance(row := run.scores.get(i, {}).get(key), dict)
                and row.get("setup") is not None and row.get("setup") != entry.get("setup"))
    if not other:
        return None
    return (f"{run.folder / 'scores.jsonl'} holds {other} {_shown(key)} verdicts made with another setup than its "
            f"results.json records: score them all with one: harness score {run.folder} --judge {_shown(key)} "
            "(with the judge options wanted)")


def compare(a: SavedRun, b: SavedRun, judge: str | None = None, metrics: list[str] | None = None,
            breakdown: str | None = None, resamples: int = RESAMPLES, progress: bool = True) -> dict[str, Any]:
    """The comparison report (a JSON object: see harness/schemas/comparison.schema.json)."""
    from tqdm import tqdm

    from harness.progress import bar_pacing

    check_same_samples(a, b)
    entries_a, entries_b = judge_entries(a), judge_entries(b)
    keys = _chosen_judges(entries_a, entries_b, judge, (a.folder, b.folder))
    notes: list[str] = []
    work: list[tuple[str, dict[str, Any]]] = []
    for key in keys:
        problem = (_setup_problem(key, entries_a[key], entries_b[key]) or _rows_setup_problem(a, key, entries_a[key])
                   or _rows_setup_problem(b, key, entries_b[key]))
        if problem and judge is not None:
            raise UserError(problem)
        if problem:
            notes.append(f"{problem} (left out)")
            continue
        work.append((key, entries_a[key]))
    _check_metrics(metrics, {key: interval_metrics(entry, entries_b[key]) for key, entry in work})
    if breakdown is not None and not breakdown.strip():
        raise UserError("--breakdown '': expected a field name, e.g. answer_type")
    comparisons: list[dict[str, Any]] = []
    paired_counts: dict[str, dict[str, int]] = {}
    # on a terminal only: a log would keep the bar's first line, run into the notes that follow
    bar = tqdm(desc="compare", unit="draw", disable=not progress or not sys.stderr.isatty(), leave=False,
               **bar_pacing())
    try:
        for key, entry in work:
            found = _compare_judge(a, b, key, entry, entries_b[key], metrics, breakdown, resamples, notes, bar)
            if found is not None:
                paired_counts[key], rows = found
                comparisons += rows
    finally:
        bar.close()
    if not comparisons:
        raise UserError("nothing to compare: " + "; ".join(notes or ["no metric with an interval in both runs"]))
    if breakdown and not any(c["breakdown"] == breakdown for c in comparisons):
        fields = sorted({k for r in a.records.values() for k, v in r.items() if isinstance(v, (str, int))
                         and k not in NOT_BREAKDOWNS})
        raise UserError(f"--breakdown {breakdown}: no sample compared has that field or judge group"
                        f"{close_hint([breakdown], fields)}; fields of the samples: {', '.join(fields) or 'none'}")
    return {
        "schema_version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": {k: a.results["task"].get(k) for k in (*SAME_TASK_FIELDS, "kind", "cluster_by")},
        "a": _describe(a),
        "b": _describe(b),
        "differs": settings_diff(a.results, b.results),
        "judges": paired_counts,
        "breakdown": breakdown,
        "resamples": resamples,
        "comparisons": comparisons,
        "methods": {name: METHODS[name] for name in sorted({c[m] for c in comparisons
                                                              for m in ("ci_method", "p_method") if c.get(m)})},
        "notes": notes,
    }


def interval_metrics(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The metrics of a judge that both runs' entries give with an interval (estimates, not counts or costs)."""
    return [name for name, m in a["metrics"].items()
            if m.get("ci95") is not None and (b["metrics"].get(name) or {}).get("ci95") is not None]


def _check_metrics(asked: list[str] | None, available: dict[str, list[str]]) -> None:
    known = sorted({name for names in available.values() for name in names})
    for name in asked or []:
        if name not in known:
            shown = "; ".join(f"{key}: {', '.join(names) or 'none'}" for key, names in available.items())
            raise UserError(f"--metric {name}: no such metric with an interval in both runs ({shown or 'no judge'})"
                            f"{close_hint([name], known)}")


def _describe(run: SavedRun) -> dict[str, Any]:
    r = run.results
    model = r["model"].get("label", r["model"]["id"])
    source = r["task"].get("source") or {}
    if source.get("name") == "external" and source.get("path"):  # two files' predictions are both "external"
        model = f"{model} ({source['path']})"
    return {"path": str(run.folder.resolve()), "run_id": r["run_id"], "model": model,
            "prompt_variant": r["prompt"].get("variant"), "created": r["created"]}


def _compare_judge(a: SavedRun, b: SavedRun, key: str, entry: dict[str, Any], entry_b: dict[str, Any],
                   metrics: list[str] | None, breakdown: str | None, resamples: int, notes: list[str],
                   bar: Any) -> tuple[dict[str, int], list[dict[str, Any]]] | None:
    from harness.aggregate import breakdown_values, cluster_values
    from harness.scoring import installed_judge_class

    cls = installed_judge_class(entry["id"])
    if cls is None:
        notes.append(f"judge {_shown(key)} is not installed here: left out")
        return None
    in_a = {i for i in a.records if _scored(a.scores.get(i, {}).get(key))}
    in_b = {i for i in b.records if _scored(b.scores.get(i, {}).get(key))}
    ids = sorted(in_a & in_b)
    counts = {"paired": len(ids), "only_a": len(in_a - in_b), "only_b": len(in_b - in_a)}
    cluster_key = a.results["task"].get("cluster_by")
    # a sample's group from whichever run recorded it (one data fingerprint: the same images): an older run's
    # lines without image_content beside a newer run's are grouped alike in A-B and B-A order
    grouped = {i: a.records[i] if a.records[i].get(cluster_key or "") is not None else b.records[i] for i in ids}
    clusters = cluster_values([grouped[i] for i in ids], cluster_key)
    if clusters is not None:  # how many groups the intervals and tests draw
        counts["clusters"] = len(set(clusters))
    else:
        cluster_key = None  # neither run recorded the field (written before the task clustered): per sample
    names = [name for name in interval_metrics(entry, entry_b) if not metrics or name in metrics]
    if not ids or not names:
        if not ids or not metrics:
            why = "no sample scored in both runs" if not ids else "no metric with an interval in both runs"
            notes.append(f"judge {_shown(key)}: {why}: left out")
        return None
    for i in ids:
        if a.records[i].get("answer") != b.records[i].get("answer"):
            raise UserError(f"sample {json.dumps(i)} has another reference answer in {b.folder} than in {a.folder}: "
                            "not the same samples (a predictions file edited or made elsewhere?)")
    rows_a, rows_b = _checked_rows(a, key, ids), _checked_rows(b, key, ids)
    if getattr(cls, "mean_metrics", True):
        rows_a, rows_b = _paired_only(rows_a, rows_b)
    slices: list[tuple[str | None, str | None, list[int]]] = [(None, None, list(range(len(ids))))]
    if breakdown:
        by_value: dict[str, list[int]] = {}
        for pos, i in enumerate(ids):
            value = breakdown_values(a.records[i], rows_a[pos], breakdown)
            if value is not None:
                by_value.setdefault(value, []).append(pos)
        slices += [(breakdown, value, positions) for value, positions in sorted(by_value.items())]
    out = []
    for slice_key, value, positions in slices:
        sub_a, sub_b = [rows_a[p] for p in positions], [rows_b[p] for p in positions]
        aggregate = _aggregator(cls, key, sub_a + sub_b, entry, (a.folder, b.folder))  # a slice's own: its size
        if aggregate is None:
            notes.append(f"judge {_shown(key)} cannot aggregate saved rows (no saved_aggregator): left out")
            return None
        records = [grouped[ids[p]] for p in positions]
        stats: dict[str, dict[str, Any]] = {}
        for at, group in _resampled_together(cls, names, sub_a).items():
            bar.total = (bar.total or 0) + 2 * resamples
            stats.update(paired_differences(aggregate, len(positions), list(at), cluster_values(
                [records[i] for i in at], cluster_key), group, resamples, tick=bar.update))
        for name in names:
            row = {"judge": key, "metric": name, "breakdown": slice_key, "value": value, **stats[name],
                   **_method_and_n(cls, name, sub_a, sub_b, clustered=bool(cluster_key))}
            if row["a"] is None and row["b"] is None:  # no such metric on this slice (closed_accuracy of OPEN)
                continue
            if row["p_method"] == "mcnemar-exact" and row["difference"] is not None and row["n"] >= 2:
                row["p_value"] = mcnemar_exact(row["discordant"]["a_only"], row["discordant"]["b_only"])
            if row["ci95"] is None:
                row["ci_method"] = None
            if row["p_value"] is None:
                row["p_method"] = None
            if (disagree := _disagreement(row)) is not None:
                notes.append(disagree)
            out.append(row)
    return counts, out


def _disagreement(row: dict[str, Any]) -> str | None:
    """A note where the interval excludes 0 and p >= 0.05, or the reverse. With few samples differing (5 answers
    right in B alone, say) the percentile bootstrap interval is too narrow; either way the test's p-value (valid
    under no difference) is the one to go by."""
    ci, p = row["ci95"], row["p_value"]
    excludes = ci is not None and (ci[0] > 0 or ci[1] < 0)
    if ci is None or p is None or excludes == (p < 0.05):
        return None
    where = "" if row["breakdown"] is None else f" ({row['breakdown']}={row['value']})"
    differing = row["discordant"]["a_only"] + row["discordant"]["b_only"] if "discordant" in row else None
    if excludes:
        why = (f"only {differing} samples differ, and " if differing is not None and differing < 20 else "") + \
            "a percentile bootstrap interval is too narrow with few differing samples"
        shown = f"the 95% interval excludes 0 but p = {p:.4f}"
    else:
        why = "the bootstrap interval is an approximation"
        shown = f"p = {p:.4f} but the 95% interval includes 0"
    return (f"{_shown(row['judge'])} {row['metric']}{where}: {shown}: {why}; the test's p-value (valid under no "
            "difference) is the one to go by")


def _resampled_together(cls: Any, names: list[str], rows: list[dict[str, Any]]) -> dict[tuple[int, ...], list[str]]:
    """The metrics drawn with the same samples: a per-sample mean is resampled over the samples that have it (as
    results.json's interval of closed_accuracy is over the closed questions), a corpus judge's over all."""
    if not getattr(cls, "mean_metrics", True):
        return {tuple(range(len(rows))): list(names)}
    together: dict[tuple[int, ...], list[str]] = {}
    for name in names:  # rows are paired: a metric unscored in either run is None in both
        at = tuple(i for i, row in enumerate(rows) if row["metrics"].get(name) is not None)
        together.setdefault(at, []).append(name)
    return together


def _scored(row: Any) -> bool:
    """Whether a judge's row scored its sample: some metric not None (an LLM judge's reply that could not be read on
    every repeat leaves all None; such a sample is compared in neither run, as results.json leaves it out)."""
    if row is None:
        return False
    metrics = row.get("metrics") if isinstance(row, dict) else None
    return not isinstance(metrics, dict) or not metrics or any(v is not None for v in metrics.values())


def _aggregator(cls: Any, key: str, rows: list[dict[str, Any]], entry: dict[str, Any],
                folders: tuple[Path, Path]) -> Any:
    try:
        return cls.saved_aggregator(rows, entry.get("convention"), entry.get("setup"))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise UserError(f"judge {_shown(key)}: the rows of {folders[0]} or {folders[1]} cannot be aggregated "
                        f"({exc}); score again: harness score DIR") from None


def _checked_rows(run: SavedRun, key: str, ids: list[str]) -> list[dict[str, Any]]:
    """The judge's rows of `ids`, each with `metrics` an object of finite numbers or nulls (as the judges write
    them; a hand edit otherwise, named by file and sample)."""
    rows = []
    for i in ids:
        row = run.scores[i][key]
        metrics = row.get("metrics") if isinstance(row, dict) else None
        if not isinstance(metrics, dict):
            bad: str | None = "its 'metrics' is no object" if isinstance(row, dict) else "its row is no object"
        else:
            bad = next((f"metric '{name}' is {json.dumps(value)}" for name, value in metrics.items()
                        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                                  or not math.isfinite(value))), None)
        if bad:
            raise UserError(f"{run.folder / 'scores.jsonl'}: sample {json.dumps(i)}, judge {_shown(key)}: {bad} "
                            f"(expected a number or null; score again: harness score {run.folder})")
        rows.append(row)
    return rows


def _paired_only(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Per-sample metrics kept where both runs scored them: a value unscored in one run leaves both (the means are
    then over the same samples)."""
    out_a, out_b = [], []
    for ra, rb in zip(rows_a, rows_b):
        ma, mb = dict(ra.get("metrics", {})), dict(rb.get("metrics", {}))
        for name in set(ma) | set(mb):
            if ma.get(name) is None or mb.get(name) is None:
                ma[name] = mb[name] = None
        out_a.append({**ra, "metrics": ma})
        out_b.append({**rb, "metrics": mb})
    return out_a, out_b


def _method_and_n(cls: Any, name: str, rows_a: list[dict], rows_b: list[dict], clustered: bool) -> dict[str, Any]:
    """n (samples with the metric in both runs for a per-sample mean, else every sample of the slice), the interval
    and p-value methods, and for a 0/1 verdict the discordant counts."""
    cluster = "cluster-" if clustered else ""
    methods = {"ci_method": f"paired-{cluster}bootstrap-expanded", "p_method": f"paired-{cluster}randomization"}
    if not getattr(cls, "mean_metrics", True):
        return {"n": len(rows_a), **methods}
    pairs = [(ra["metrics"].get(name), rb["metrics"].get(name)) for ra, rb in zip(rows_a, rows_b)]
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
    out: dict[str, Any] = {"n": len(pairs), **methods}
    if name in getattr(cls, "proportion_metrics", ()) and all(x in (0, 1) and y in (0, 1) for x, y in pairs):
        out["discordant"] = {"a_only": sum(1 for x, y in pairs if x == 1 and y == 0),
                             "b_only": sum(1 for x, y in pairs if x == 0 and y == 1)}
        if not clustered:
            out["p_method"] = "mcnemar-exact"
    return out
