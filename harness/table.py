"""A leaderboard's rows as a table to paste into a paper or a README: Markdown, CSV or LaTeX.

`harness table leaderboard.json` reads what `harness publish` wrote (schema-checked, strict JSON) and prints one
line per row, with every choice that qualifies its numbers in a column of its own: task, split, source, prompt
variant, judge:convention, the judge setup where it differs from the judge's defaults, and the configuration
(generation settings, model identity, ...) where look-alike rows differ in it. Each metric is shown as
`value [low, high]` (its recorded 95% interval) and, where it rests on fewer samples than the row, `(n=K)`.
Rows that are partial, have failed samples or samples the judge left unscored, or were run on a split not of the
size its task expects, get a footnote mark and the footnotes say how many (or what). `--breakdown KEY` adds
each metric per value of a breakdown (e.g. answer_type: CLOSED / OPEN).
Metrics without an interval (counts, tokens, cost) are left out unless asked for with `--metric`; `--percent`
scales only metrics whose values all lie in [0, 1], and says which. CSV gives plain numbers, one column each, and
each interval's method (`ci_method`); the other formats spell out the methods in a footnote.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from harness.errors import UserError

FORMATS = ("markdown", "csv", "latex")
LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{",
         "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "|": r"\textbar{}", "<": r"\textless{}",
         ">": r"\textgreater{}", '"': r"\textquotedbl{}", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "§": r"\S{}",
         "[": "{[}", "]": "{]}", "*": "{*}"}  # a row's \\ would read a next row's leading [length] or *
MARKS = {"partial": "*", "errors": "†", "unscored": "‡", "size_note": "§"}
#: a cell's interval method, marked where one column holds intervals of several methods (per-sample Wilson beside a
#: cluster bootstrap: the narrower would look the surer)
METHOD_MARKS = "ᵃᵇᶜᵈᵉᶠᵍʰⁱʲ"
LATEX.update({mark: f"$^{{{letter}}}$" for mark, letter in zip(METHOD_MARKS, "abcdefghij")})
QUALIFIERS = ["task", "split", "source", "prompt", "judge", "judge setup", "configuration", "n"]


def read_board(path: Path) -> list[dict[str, Any]]:
    from harness.results import validate

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON value {name}")

    try:
        board = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    except FileNotFoundError:
        raise UserError(f"{path}: no such leaderboard (write one with harness publish)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a readable leaderboard ({exc})") from None
    try:
        validate(board, "leaderboard")
    except Exception as exc:  # noqa: BLE001 - jsonschema's error, shortened to one line
        raise UserError(f"{path}: not a valid leaderboard ({str(exc).splitlines()[0]})") from None
    return board["rows"]


def _judge(row: dict[str, Any]) -> str:
    return row["judge"] + (f":{row['convention']}" if row.get("convention") else "")


def select(rows: list[dict[str, Any]], task: str | None, judge: str | None, split: str | None) -> list[dict]:
    """The rows of one task / judge[:convention] / split (each optional); an error names what exists."""
    chosen = rows
    for name, wanted, value_of in (
        ("task", task, lambda r: r["task"]),
        ("split", split, lambda r: r["split"]),
        ("judge", judge, lambda r: r["judge"] if judge and ":" not in judge else _judge(r)),
    ):
        if wanted is None:
            continue
        kept = [r for r in chosen if value_of(r) == wanted]
        if not kept:
            have = sorted({value_of(r) for r in chosen})
            raise UserError(f"--{name} {wanted}: no such row in the leaderboard; it has {', '.join(have) or 'none'}")
        chosen = kept
    if not chosen:
        raise UserError("the leaderboard has no rows")
    return chosen


def metric_names(rows: list[dict[str, Any]], wanted: list[str] | None) -> list[str]:
    """The metrics asked for, else every metric with an interval in some row (not counts, tokens or cost)."""
    present = list(dict.fromkeys(name for row in rows for name in row["metrics"]))
    if not wanted:
        return [name for name in present  # leaderboards written before ci_method was recorded have only ci95
                if any(row["metrics"].get(name, {}).get("ci_method") or row["metrics"].get(name, {}).get("ci95")
                       for row in rows)]
    unknown = [name for name in wanted if name not in present]
    if unknown:
        raise UserError(f"--metric {unknown[0]}: no selected row has it; they have {', '.join(present)}")
    return list(dict.fromkeys(wanted))


def _metrics_of(row: dict[str, Any], breakdown: str | None, value: str | None) -> dict[str, Any]:
    return row["metrics"] if value is None else row.get("breakdowns", {}).get(breakdown, {}).get(value, {})


def _proportions(rows: list[dict[str, Any]], metrics: list[str], breakdown: str | None, values: list) -> set[str]:
    """The metrics whose every shown value and interval bound lies in [0, 1] (what --percent may scale)."""
    out = set()
    for name in metrics:
        numbers = []
        for row in rows:
            for value in [None, *values]:
                metric = _metrics_of(row, breakdown, value).get(name) or {}
                numbers += [x for x in [metric.get("value"), *(metric.get("ci95") or [])] if x is not None]
        if numbers and all(isinstance(x, (int, float)) and 0 <= x <= 1 for x in numbers):
            out.add(name)
    return out


def _configurations(rows: list[dict[str, Any]]) -> list[str]:
    """Per row, what its configuration is where look-alike rows of the table differ in it ("" elsewhere)."""
    from harness.row_config import config_of, look_alike

    out = [""] * len(rows)
    for members in look_alike(rows):
        flat = [_flatten(config_of(rows[i])) for i in members]
        keys = sorted({k for f in flat for k in f})
        differing = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flat}) > 1]
        for i, f in zip(members, flat):
            out[i] = ", ".join(f"{k}={f.get(k)}" for k in differing)
    return out


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({name: item for name, item in value.items()})
        else:
            flat[key] = value
    return flat


class Table:
    """The selected rows laid out: qualifier columns, then per metric (and breakdown value) its numbers."""

    def __init__(self, rows: list[dict[str, Any]], metrics: list[str], breakdown: str | None, percent: bool,
                 digits: int | None) -> None:
        from harness.publish import setup_text

        self.values: list[str] = []
        if breakdown:
            self.values = sorted({v for r in rows for v in r.get("breakdowns", {}).get(breakdown, {})})
            if not self.values:
                keys = sorted({k for r in rows for k in r.get("breakdowns", {})})
                raise UserError(f"--breakdown {breakdown}: no selected row has it; they have "
                                f"{', '.join(keys) or 'none'}")
        self.breakdown, self.digits = breakdown, digits
        self.scaled = _proportions(rows, metrics, breakdown, self.values) if percent else set()
        self.columns = [(m, v) for m in metrics for v in [None, *self.values]]
        configs = _configurations(rows)
        self.rows = []
        for row, config in zip(rows, configs):
            cells = [_metrics_of(row, breakdown, v).get(m) for m, v in self.columns]
            if all(not c or c.get("value") is None for c in cells):
                continue  # none of the asked metrics: not a line of this table
            n = f"{row['n']}" + (f" of {row['n_total']}" if row.get("partial") and row.get("n_total") else "")
            qualifiers = [row["task"], row["split"], str(row.get("source") or ""), str(row.get("prompt_variant") or ""),
                          _judge(row), setup_text(row), config, n]
            self.rows.append((row, qualifiers, cells))
        if not self.rows:
            raise UserError("no selected row has a value of the metrics asked for")
        self.dropped: list[str] = []
        self._drop_columns()
        methods = [sorted({c["ci_method"] for _, _, cells in self.rows if (c := cells[j]) and c.get("ci95")
                           and c.get("ci_method")}) for j in range(len(self.columns))]
        self.all_methods = sorted({m for found in methods for m in found})
        self.mixed = [len(found) > 1 for found in methods]

    def _drop_columns(self) -> None:
        """Columns no row fills (closed_accuracy of OPEN questions) and breakdown columns that repeat the overall
        numbers in every row (per-image IU-Xray's views=1, every sample; closed_accuracy of CLOSED questions)."""
        keep = []
        for j, (name, value) in enumerate(self.columns):
            cells = [cells[j] for _, _, cells in self.rows]
            if all(not c or c.get("value") is None for c in cells):
                continue
            overall = self.columns.index((name, None))
            if value is not None and all(cells[i] == line[overall] for i, (_, _, line) in enumerate(self.rows)):
                self.dropped.append(self.heading(name, value, scaled=False))
                continue
            keep.append(j)
        self.columns = [self.columns[j] for j in keep]
        self.rows = [(row, qualifiers, [cells[j] for j in keep]) for row, qualifiers, cells in self.rows]

    def heading(self, name: str, value: str | None, scaled: bool = True) -> str:
        shown = f"{name} ({value})" if value is not None else name
        return shown + (" x100" if scaled and name in self.scaled else "")

    def number(self, name: str, x: float) -> str:
        if isinstance(x, int) and not isinstance(x, bool) and name not in self.scaled:
            return str(x)  # a count
        scaled = x * (100 if name in self.scaled else 1)
        return repr(scaled) if self.digits is None else f"{scaled:.{self.digits}f}"  # None: unrounded (csv)

    def text(self, name: str, metric: dict[str, Any] | None, row_n: int, mixed: bool = False) -> str:
        if not metric or metric.get("value") is None:
            return "-"
        ci = metric.get("ci95")
        shown = self.number(name, metric["value"])
        if ci and None not in ci:
            shown += f" [{self.number(name, ci[0])}, {self.number(name, ci[1])}]"
            if mixed and metric.get("ci_method") in self.all_methods:
                shown += METHOD_MARKS[self.all_methods.index(metric["ci_method"]) % len(METHOD_MARKS)]
        if metric.get("n") is not None and metric["n"] != row_n:
            shown += f" (n={metric['n']})"
        return shown

    def marks(self, row: dict[str, Any]) -> str:
        return "".join(mark for flag, mark in MARKS.items() if row.get(flag))

    def notes(self) -> list[str]:
        flagged = {flag: [r for r, _, _ in self.rows if r.get(flag)] for flag in MARKS}
        notes = []
        if flagged["partial"]:
            notes.append(f"{MARKS['partial']} partial: fewer samples than the split (n of n_total), e.g. a --limit run")
        if flagged["errors"]:
            counts = ", ".join(str(r["errors"]) for r in flagged["errors"])
            notes.append(f"{MARKS['errors']} samples that failed (missing image, API error), not in the metrics: "
                         f"{counts}")
        if flagged["unscored"]:
            counts = ", ".join(str(r["unscored"]) for r in flagged["unscored"])
            notes.append(f"{MARKS['unscored']} samples the judge left unscored, not in the metrics: {counts}")
        if flagged["size_note"]:
            found = "; ".join(dict.fromkeys(r["size_note"] for r in flagged["size_note"]))
            notes.append(f"{MARKS['size_note']} the split is not the size its task expects (a modified copy of the "
                         f"data): {found}")
        shared = self.shared_names()
        if shared:
            notes.append("defined by each judge (compare within one judge only): "
                         + "; ".join(f"{name} under {', '.join(judges)}" for name, judges in shared.items()))
        scaled = f"; x100: {', '.join(sorted(self.scaled))}" if self.scaled else ""
        notes.append(f"value [95% confidence interval] where recorded; (n=K): samples behind a value when fewer "
                     f"than the row's n{scaled}")
        if self.dropped:
            notes.append(f"not shown, the same numbers as the overall column in every row (the slice holds every "
                         f"sample behind them): {', '.join(self.dropped)}")
        if self.all_methods:
            from harness.aggregate import CI_METHODS

            def mark(method: str) -> str:
                return METHOD_MARKS[self.all_methods.index(method) % len(METHOD_MARKS)] + " " if any(self.mixed) else ""

            notes.append("intervals" + (" (marked where a column mixes methods)" if any(self.mixed) else "") + ": "
                         + "; ".join(f"{mark(m)}{m}: {CI_METHODS.get(m, 'as its results file says')}"
                                     for m in self.all_methods))
        return notes

    def shared_names(self) -> dict[str, list[str]]:
        """Metric names that rows of several judges (or conventions) fill: the same name, different definitions
        (closed_accuracy is a substring test under exact:llava-med, a token recall under exact:multimedeval)."""
        judges: dict[str, set[str]] = {}
        for row, _, cells in self.rows:
            for (name, _), cell in zip(self.columns, cells):
                if cell and cell.get("value") is not None:
                    judges.setdefault(name, set()).add(_judge(row))
        return {name: sorted(found) for name, found in judges.items() if len(found) > 1}

    def text_lines(self) -> tuple[list[str], list[list[str]]]:
        """Header and lines of text cells, without the columns that are empty on every line."""
        header = ["model", *QUALIFIERS, *(self.heading(m, v) for m, v in self.columns)]
        lines = [[row["model"] + self.marks(row), *qualifiers,
                  *(self.text(m, cell, row["n"], mixed)
                    for (m, _), cell, mixed in zip(self.columns, cells, self.mixed))]
                 for row, qualifiers, cells in self.rows]
        keep = [i for i in range(len(header)) if i < 2 or any(line[i] not in ("", "-") for line in lines)]
        return [header[i] for i in keep], [[line[i] for i in keep] for line in lines]


def render(table: Table, fmt: str) -> str:
    if fmt == "csv":
        return _csv(table)
    header, lines = table.text_lines()
    notes = table.notes()
    if fmt == "latex":
        def tex(text: str) -> str:
            return re.sub(r"-(?=-)", "-{}", "".join(LATEX.get(ch, ch) for ch in _one_line(text)))  # "--": a dash

        body = [" & ".join(tex(c) for c in header) + r" \\ \hline"]
        body += [" & ".join(tex(c) for c in line) + r" \\" for line in lines]
        body += [r"\hline"] + [rf"\multicolumn{{{len(header)}}}{{l}}{{\footnotesize {tex(n)}}} \\" for n in notes]
        return "\\begin{tabular}{" + "l" * len(header) + "}\n" + "\n".join(body) + "\n\\end{tabular}\n"

    def md(text: str) -> str:
        text = _one_line(text)
        for a, b in (("\\", "\\\\"), ("|", "\\|"), ("*", "\\*"), ("<", "&lt;"), (">", "&gt;"), ("`", "\\`"),
                     ("](", "]\\("), ("![", "\\![")):
            text = text.replace(a, b)  # no link, image or code span from a name in someone's results
        return re.sub(r"(?<![^\W_])_|_(?![^\W_])", r"\_", text)  # GFM: only an _ inside a word is no emphasis

    out = ["| " + " | ".join(md(c) for c in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(md(c) for c in line) + " |" for line in lines]
    return "\n".join(out) + "\n\n" + "".join(f"{md(note)}  \n" for note in notes)


def _one_line(text: str) -> str:
    """A cell's text on one line: a line break inside a name or breakdown value would end a Markdown row (or, as a
    blank line, a LaTeX paragraph inside the tabular)."""
    return " ".join(text.split()) if any(ch in text for ch in "\r\n\t\v\f") else text


def _csv(table: Table) -> str:
    """Plain numbers: per metric its value, interval bounds and n in columns of their own (empty when absent),
    the flags as counts, the scale in the header."""
    header = ["model", "partial", "errors", "unscored", "size_note", *QUALIFIERS, "n_total"]
    for name, value in table.columns:
        head = table.heading(name, value)
        unscaled = table.heading(name, value, scaled=False)
        header += [head, f"{head} low", f"{head} high", f"{unscaled} n", f"{unscaled} interval"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([_no_formula(head) for head in header])  # metric names come from judges, breakdowns from data
    for row, qualifiers, cells in table.rows:
        line = [_no_formula(row["model"]), str(bool(row.get("partial"))).lower(), row.get("errors") or 0,
                row.get("unscored") or 0, _no_formula(row.get("size_note") or ""),
                *map(_no_formula, qualifiers[:-1]), row["n"],
                "" if row.get("n_total") is None else row["n_total"]]
        for (name, _), metric in zip(table.columns, cells):
            metric = metric or {}
            ci = metric.get("ci95") or [None, None]
            line += [table.number(name, x) if x is not None else "" for x in (metric.get("value"), *ci)]
            line.append(metric.get("n") if metric.get("value") is not None else "")
            line.append(metric.get("ci_method") or "" if metric.get("ci95") else "")
        writer.writerow(line)
    return buf.getvalue()


def _no_formula(text: str) -> str:
    """A CSV cell a spreadsheet would run as a formula (=, +, -, @ first) gets a leading apostrophe."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text

