"""Agreement between an LLM judge and human raters (`harness agreement`), like PeFoMed Tables 2 and 6.

Inputs: human labels (CSV or JSONL rows with id, rater, label: 0/1 for a binary judge, 0..4 for Likert)
and the per-sample judge rows of a run's scores.jsonl (every repeat's verdict). Per rater and overall
(all raters' labels pooled) the report gives the agreement with the judge (accuracy; for Likert exact and
within-one) and Cohen's kappa (unweighted for binary, linear-weighted for Likert), each computed per judge
repeat and reported as mean and std across repeats; next to it the human mean (accuracy or mean score)
with its std across raters, and the judge's mean with its std across repeats on the same samples.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UserError
from harness.io import jsonl_objects
from harness.scoring import shown_judge

SCALES = {"binary": (0, 1), "likert": (0, 1, 2, 3, 4)}


# ------------------------------------------------------------------------------------------------- kappa
def cohen_kappa(a: Any, b: Any, categories: Any = None, weights: str | None = None) -> float:
    """Cohen's kappa of two raters' labels; `weights` None, "linear" or "quadratic".

    `categories` fixes the label scale (weights use the positions on it); by default the sorted union of
    the labels seen, as scikit-learn does. NaN when kappa is undefined (no pairs, or one category only).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError("the two label lists differ in length")
    cats = np.union1d(a, b) if categories is None else np.asarray(categories)
    k = len(cats)
    if a.size == 0 or k == 0:
        return float("nan")
    order = np.argsort(cats)
    ia = order[np.clip(np.searchsorted(cats, a, sorter=order), 0, k - 1)]
    ib = order[np.clip(np.searchsorted(cats, b, sorter=order), 0, k - 1)]
    if not (np.array_equal(cats[ia], a) and np.array_equal(cats[ib], b)):
        raise ValueError("a label is not among the categories")
    confusion = np.zeros((k, k), dtype=float)
    np.add.at(confusion, (ia, ib), 1.0)
    expected = np.outer(confusion.sum(axis=1), confusion.sum(axis=0)) / confusion.sum()
    idx = np.arange(k)
    if weights is None:
        w = 1.0 - np.eye(k)
    elif weights == "linear":
        w = np.abs(idx[:, None] - idx[None, :]).astype(float)
    elif weights == "quadratic":
        w = ((idx[:, None] - idx[None, :]) ** 2).astype(float)
    else:
        raise ValueError(f"unknown weights {weights!r}")
    denominator = float((w * expected).sum())
    if denominator == 0.0:
        return float("nan")
    return 1.0 - float((w * confusion).sum()) / denominator


# ------------------------------------------------------------------------------------------------ labels
@dataclass
class Label:
    id: str
    rater: str
    label: int
    where: str  # "file:line", for error messages


def _int_label(value: Any, where: str) -> int:
    if isinstance(value, bool) or value is None:
        raise UserError(f"{where}: label {value!r} is not an integer (expected 0/1 or 0..4)")
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        raise UserError(f"{where}: label {text!r} is not an integer (expected 0/1 or 0..4)") from None
    if not number.is_integer():
        raise UserError(f"{where}: label {text!r} is not an integer (expected 0/1 or 0..4)")
    return int(number)


def _label(fields: dict[str, Any], where: str) -> Label:
    ident = fields.get("id")
    rater = fields.get("rater")
    if ident is None or str(ident).strip() == "":
        raise UserError(f"{where}: empty 'id' (expected columns id, rater, label)")
    if rater is None or str(rater).strip() == "":
        raise UserError(f"{where}: empty 'rater' (expected columns id, rater, label)")
    return Label(str(ident).strip(), str(rater).strip(), _int_label(fields.get("label"), where), where)


def read_labels(path: Path) -> list[Label]:
    """Human labels from a .csv (header id,rater,label) or .jsonl file; malformed rows name file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--labels {path}: no such file")
    try:
        labels = _read_label_rows(path)
    except UnicodeDecodeError:  # found in a chunk of the file: name the byte by its offset in the whole file
        from harness.io import decode_user_bytes

        decode_user_bytes(path.read_bytes(), path, where=f"--labels {path}", advice="save it as UTF-8 (CSV UTF-8 in "
                          "Excel)")
        raise
    if not labels:
        raise UserError(f"--labels {path}: no label rows")
    seen: dict[tuple[str, str], str] = {}
    for lab in labels:
        key = (lab.id, lab.rater)
        if key in seen:
            raise UserError(f"{lab.where}: rater '{lab.rater}' labels id '{lab.id}' twice (first at {seen[key]})")
        seen[key] = lab.where
    return labels


def _read_label_rows(path: Path) -> list[Label]:
    """The rows of a labels file (utf-8, with or without the byte-order mark Excel writes)."""
    labels: list[Label] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        with open(path, encoding="utf-8-sig") as fh:
            for lineno, row in jsonl_objects(fh, path, "id, rater, label"):
                labels.append(_label(row, f"{path}:{lineno}"))
    elif path.suffix.lower() in (".csv", ".tsv"):
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            missing = [c for c in ("id", "rater", "label") if c not in columns]
            if missing:
                raise UserError(f"{path}:1: missing column(s) {', '.join(missing)}; expected a header "
                                f"with id, rater, label (found: {', '.join(columns) or 'nothing'})")
            for row in reader:
                fields = {(k or "").strip().lower(): v for k, v in row.items()}
                labels.append(_label(fields, f"{path}:{reader.line_num}"))
    else:
        raise UserError(f"--labels {path}: expected a .csv or .jsonl file")
    return labels


# ------------------------------------------------------------------------------------------- judge rows
def scores_file(path: Path) -> Path:
    """A run directory's scores.jsonl, or the file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / "scores.jsonl"
    if not path.is_file():
        raise UserError(f"--scores {path}: no such file (give a run directory or its scores.jsonl)")
    return path


JudgeRows = tuple[str, dict[str, list[int | None]], dict[str, Any]]


def read_judge_verdicts(path: Path, judge: str) -> dict[str, JudgeRows]:
    """Per judge key matching `judge` ("gpt4", "gpt4/pefomed" or "gpt4:pefomed"): (scale, {sample id: values},
    {sample id: the judge setup its row was scored with, None in rows written before setups were recorded}).

    Rows are `{"id": ..., "judges": {"<judge id>/<convention>": {"metrics": ..., "details": ...}}}`;
    a binary judge keeps its repeats in details.verdicts, a Likert judge in details.scores (None =
    unscored reply).
    """
    from harness.io import read_jsonl

    asked, judge = judge, judge.replace(":", "/", 1)  # gpt4:pefomed, as harness run / score / table take it
    found: dict[str, JudgeRows] = {}
    available: set[str] = set()
    lines: dict[str, int] = {}
    for lineno, row in enumerate(read_jsonl(path), start=1):
        judges = row.get("judges")
        if "id" not in row or not isinstance(judges, dict):
            raise UserError(f"{path}: row {lineno} has no 'id' and 'judges' (not a scores.jsonl file?)")
        if (first := lines.setdefault(str(row["id"]), lineno)) != lineno:  # the judges write one line per sample
            raise UserError(f"{path}:{lineno}: sample id {json.dumps(row['id'])} is on line {first} too (an edit, or "
                            "files joined): which verdicts count is unknown; score again: harness score DIR")
        for key, entry in judges.items():
            available.add(key)
            if key != judge and key.split("/", 1)[0] != judge:
                continue
            details = (entry.get("details") if isinstance(entry, dict) else None) or {}
            if not isinstance(details, dict):
                raise UserError(f"{path}:{lineno}: field 'judges.{key}.details' must be an object")
            if "verdicts" in details:
                scale, values = "binary", details["verdicts"]
            elif "scores" in details:
                scale, values = "likert", details["scores"]
            else:
                raise UserError(f"{path}: judge '{key}' rows have no per-repeat verdicts "
                                "(details.verdicts or details.scores); is it an LLM judge?")
            problem = _verdicts_problem(values, scale)
            if problem:
                field = "verdicts" if scale == "binary" else "scores"
                raise UserError(f"{path}:{lineno}: field 'judges.{key}.details.{field}' {problem} (scores.jsonl is "
                                "written by the judge; score again: harness score DIR --judge ...)")
            scale_rows = found.setdefault(key, (scale, {}, {}))
            scale_rows[1][str(row["id"])] = list(values)
            scale_rows[2][str(row["id"])] = entry.get("setup")
    if not found:
        raise UserError(f"{path}: no scores of judge '{asked}'; judges in this file: "
                        f"{', '.join(sorted(shown_judge(key) for key in available)) or '(none)'}")
    return found


def one_setup(key: str, labels: list[Label], setups: dict[str, Any]) -> Any:
    """The judge setup (model, prompt, temperature ...) of the rows the labels are compared with; rows scored with
    different setups (a re-judge of some samples with another model) are an error, not a blended agreement."""

    seen: dict[str, tuple[Any, int]] = {}
    for sample_id in {lab.id for lab in labels if lab.id in setups}:
        setup = setups[sample_id]
        if setup is not None:
            text = json.dumps(setup, sort_keys=True)
            seen[text] = (setup, seen.get(text, (setup, 0))[1] + 1)
    if len(seen) > 1:
        (a, n_a), (b, n_b) = sorted(seen.values(), key=lambda item: -item[1])[:2]
        if isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(k for k in {*a, *b} if a.get(k) != b.get(k))
            change = ", ".join(f"{k} {a.get(k, '-')} / {b.get(k, '-')}" for k in keys)
        else:  # a third-party judge's setup that is not a mapping
            change = f"{json.dumps(a)[:60]} / {json.dumps(b)[:60]}"
        raise UserError(f"judge {shown_judge(key)}: the labelled samples were scored with {len(seen)} setups "
                        f"({change}; {n_a} / {n_b} samples); expected one: score every sample again with one setup "
                        "(harness score DIR --judge ...)")
    return next(iter(seen.values()))[0] if seen else None


def _verdicts_problem(values: Any, scale: str) -> str | None:
    """What is wrong with one row's per-repeat values (binary 0/1, Likert 0-4, null for unscored), or None."""
    allowed = (0, 1) if scale == "binary" else (0, 1, 2, 3, 4)
    if not isinstance(values, list):
        return f"must be a list of per-repeat values, got {type(values).__name__}"
    for value in values:
        if value is not None and (isinstance(value, bool) or value not in allowed or not isinstance(value, int)):
            return f"holds {value!r}; expected {', '.join(map(str, allowed))} or null"
    return None


# -------------------------------------------------------------------------------------------- statistics
def _mean_std(values: list[float]) -> dict[str, float | None]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"mean": None, "std": None}
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": std}


def _compare(pairs_by_repeat: list[list[tuple[int, int]]], scale: str) -> dict[str, Any]:
    """Agreement statistics of (human, judge) pairs, per judge repeat, as mean and std across repeats."""
    cats, weights = SCALES[scale], ("linear" if scale == "likert" else None)
    exact, within, kappa = [], [], []
    for pairs in pairs_by_repeat:
        if not pairs:
            continue
        h = np.array([p[0] for p in pairs])
        j = np.array([p[1] for p in pairs])
        exact.append(float(np.mean(h == j)))
        within.append(float(np.mean(np.abs(h - j) <= 1)))
        kappa.append(cohen_kappa(h, j, cats, weights))
    # n: the pairs of the repeat with most; a repeat's unscored replies leave its pairs, so n_per_repeat may vary
    out: dict[str, Any] = {"n": max((len(p) for p in pairs_by_repeat), default=0),
                           "n_per_repeat": [len(p) for p in pairs_by_repeat]}
    out["agreement"] = _mean_std(exact)
    if scale == "likert":
        out["within_one"] = _mean_std(within)
    out["kappa"] = _mean_std(kappa)
    # kappa is undefined (NaN) on a repeat where a side used one category only: say on how many it rests
    out["kappa_repeats"] = {"defined": sum(1 for k in kappa if not math.isnan(k)), "of": len(kappa)}
    return out


def agreement_report(labels: list[Label], scale: str, verdicts: dict[str, list[int | None]]) -> dict[str, Any]:
    """The agreement of one judge (its per-sample repeats) with the human labels."""
    allowed = SCALES[scale]
    for lab in labels:
        if lab.label not in allowed:
            raise UserError(f"{lab.where}: label {lab.label} is outside {'/'.join(map(str, allowed))}, "
                            f"the scale of this {scale} judge")
    matched = [lab for lab in labels if lab.id in verdicts]
    if not matched:
        raise UserError("no labelled id is among the judge's scored samples (do the ids match the "
                        "prediction ids?)")
    repeats = max(len(v) for v in verdicts.values())
    raters = sorted({lab.rater for lab in matched})

    def pairs(subset: list[Label]) -> list[list[tuple[int, int]]]:
        out = []
        for r in range(repeats):
            values = (verdicts[lab.id][r] if r < len(verdicts[lab.id]) else None for lab in subset)
            out.append([(lab.label, v) for lab, v in zip(subset, values) if v is not None])
        return out

    # the human mean is over the samples the judge's mean is over: those with a scored judge reply
    judged = {i for i, values in verdicts.items() if any(v is not None for v in values)}
    per_rater = {}
    for rater in raters:
        subset = [lab for lab in matched if lab.rater == rater]
        row = _compare(pairs(subset), scale)
        human = [lab.label for lab in subset if lab.id in judged]
        row["human_mean"] = float(np.mean(human)) if human else None
        row["judge"] = _judge_means(verdicts, {lab.id for lab in subset}, repeats)
        per_rater[rater] = row
    overall = _compare(pairs(matched), scale)
    ids = {lab.id for lab in matched}
    unscored = sum(1 for i in ids for v in verdicts[i] if v is None)  # per sample, not once per rater's label
    return {
        "scale": scale,
        "measure": "accuracy" if scale == "binary" else "mean score (WASM)",
        "kappa_weights": "linear" if scale == "likert" else "none",
        "repeats": repeats,
        "samples": len(ids),
        "raters": len(raters),
        "labels": len(matched),
        "labels_without_scores": len(labels) - len(matched),
        "unscored_judge_replies": unscored,
        "human": _mean_std([per_rater[r]["human_mean"] for r in raters if per_rater[r]["human_mean"] is not None]),
        "judge": _judge_means(verdicts, ids, repeats),
        "per_rater": per_rater,
        "overall": overall,
    }


def _judge_means(verdicts: dict[str, list[int | None]], ids: set[str], repeats: int) -> dict[str, Any]:
    """The judge's mean (accuracy or WASM) over these samples, per repeat, as mean and std across repeats."""
    per_repeat = []
    for r in range(repeats):
        values = [verdicts[i][r] for i in ids if r < len(verdicts[i]) and verdicts[i][r] is not None]
        if values:
            per_repeat.append(float(np.mean(values)))
    return _mean_std(per_repeat)


# ---------------------------------------------------------------------------------------------- printing
def _fmt(stat: dict[str, float | None] | float | None) -> str:
    if isinstance(stat, dict):
        if stat["mean"] is None:
            return "n/a"
        return f"{stat['mean']:.3f}" + (f" ± {stat['std']:.3f}" if stat["std"] is not None else "")
    return "n/a" if stat is None else f"{stat:.3f}"


def _pairs(row: dict[str, Any]) -> str:
    """The pairs per repeat: one number, or the fewest-most where unscored replies left some repeats fewer."""
    counts = row.get("n_per_repeat") or [row["n"]]
    return str(row["n"]) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"


def format_table(key: str, report: dict[str, Any]) -> str:
    """A readable table of one judge's report."""
    likert = report["scale"] == "likert"
    head = ["rater", "n", "human", "judge", "agreement"] + (["within-one"] if likert else [])
    head.append("kappa (linear)" if likert else "kappa")
    lines = []
    for rater, row in report["per_rater"].items():
        cells = [rater, _pairs(row), _fmt(row["human_mean"]), _fmt(row["judge"]), _fmt(row["agreement"])]
        if likert:
            cells.append(_fmt(row["within_one"]))
        lines.append(cells + [_fmt(row["kappa"])])
    o = report["overall"]
    cells = ["overall", _pairs(o), _fmt(report["human"]), _fmt(report["judge"]), _fmt(o["agreement"])]
    if likert:
        cells.append(_fmt(o["within_one"]))
    lines.append(cells + [_fmt(o["kappa"])])
    widths = [max(len(r[c]) for r in [head] + lines) for c in range(len(head))]
    render = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [head] + lines]
    render.insert(1, "  ".join("-" * w for w in widths))
    title = (f"{shown_judge(key)}: {report['scale']} judge, {report['repeats']} repeat(s), "
             f"{report['raters']} rater(s), "
             f"{report['samples']} samples; n = label-verdict pairs per judge repeat; human/judge = "
             f"{report['measure']} (human ± std across raters, "
             "judge ± std across repeats; agreement and kappa ± std across judge repeats)")
    notes = []
    defined = report["overall"].get("kappa_repeats")
    if defined and defined["defined"] < defined["of"]:
        notes.append(f"overall kappa rests on {defined['defined']} of {defined['of']} judge repeats: on the others "
                     "it is undefined (the humans or the judge used one category only)")
    if report["labels_without_scores"]:
        notes.append(f"{report['labels_without_scores']} label(s) have no judge score and were left out")
    if report["unscored_judge_replies"]:
        notes.append(f"{report['unscored_judge_replies']} unscored judge replies on labelled samples "
                     "were left out of the pairs (and samples with no scored reply out of the human mean)")
    return "\n".join([title, *render, *notes])
