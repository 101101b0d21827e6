"""A leaderboard's rows as a table to paste into a paper or a README: Markdown, CSV or LaTeX.

`harness table leaderboard.json` reads what `harness publish` wrote (schema-checked) and prints one line per row,
with every choice that makes its numbers comparable or not in its own column (task, split, source, prompt variant,
judge:convention and the judge setup where it differs from the judge's defaults), then the chosen metrics as
`value [low, high]` (the 95% interval recorded with it) and n. Rows that are partial, have failed samples or
samples the judge left unscored get a footnote mark, and the footnotes say what each means; so a number never
leaves the harness without what qualifies it. `--breakdown KEY` adds each metric per value of a breakdown (e.g.
answer_type: CLOSED / OPEN).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from harness.errors import UserError

FORMATS = ("markdown", "csv", "latex")
LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{",
         "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "†": r"$^\dagger$", "‡": r"$^\ddagger$"}
MARKS = {"partial": "*", "errors": "†", "unscored": "‡"}
FOOTNOTES = {
    "partial": "partial: fewer samples than the split (n of n_total), e.g. a --limit run",
    "errors": "samples failed (missing image, API error) and are not in the metrics",
    "unscored": "samples the judge could not score (e.g. an unparseable LLM reply) are not in the metrics",
}


def read_board(path: Path) -> list[dict[str, Any]]:
    from harness.results import validate

    try:
        board = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such leaderboard (write one with harness publish)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable leaderboard ({exc})") from None
    try:
        validate(board, "leaderboard")
    except Exception as exc:  # noqa: BLE001 - jsonschema's error, shortened to one line
        raise UserError(f"{path}: not a valid leaderboard ({str(exc).splitlines()[0]})") from None
    return board["rows"]


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


def _judge(row: dict[str, Any]) -> str:
    return row["judge"] + (f":{row['convention']}" if row.get("convention") else "")


def metric_names(rows: list[dict[str, Any]], wanted: list[str] | None) -> list[str]:
    present = list(dict.fromkeys(name for row in rows for name in row["metrics"]))
    if not wanted:
        return present
    unknown = [name for name in wanted if name not in present]
    if unknown:
        raise UserError(f"--metric {unknown[0]}: no selected row has it; they have {', '.join(present)}")
    return wanted


def cell(metric: dict[str, Any] | None, percent: bool, digits: int) -> str:
    if not metric or metric.get("value") is None:
        return "-"
    scale = 100.0 if percent else 1.0

    def number(x: float) -> str:
        return f"{x * scale:.{digits}f}"

    ci = metric.get("ci95")
    interval = f" [{number(ci[0])}, {number(ci[1])}]" if ci else ""
    return number(metric["value"]) + interval


def build(rows: list[dict[str, Any]], metrics: list[str], breakdown: str | None, percent: bool,
          digits: int) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, lines, footnotes) of the table."""
    from harness.publish import setup_text

    values: list[str] = []
    if breakdown:
        values = sorted({v for r in rows for v in r.get("breakdowns", {}).get(breakdown, {})})
        if not values:
            keys = sorted({k for r in rows for k in r.get("breakdowns", {})})
            raise UserError(f"--breakdown {breakdown}: no selected row has it; they have {', '.join(keys) or 'none'}")
    header = ["model", "task", "split", "source", "prompt", "judge", "judge setup", "n"]
    header += [f"{m} ({v})" if v else m for m in metrics for v in ([None] + values)]
    lines, used = [], []
    for row in rows:
        marks = ""
        for flag, mark in MARKS.items():
            if row.get(flag):
                marks += mark
                used.append(flag)
        n = f"{row['n']}" + (f" of {row['n_total']}" if row.get("partial") and row.get("n_total") else "")
        line = [row["model"] + marks, row["task"], row["split"], str(row.get("source") or ""),
                str(row.get("prompt_variant") or ""), _judge(row), setup_text(row), n]
        for name in metrics:
            line.append(cell(row["metrics"].get(name), percent, digits))
            line += [cell(row.get("breakdowns", {}).get(breakdown, {}).get(v, {}).get(name), percent, digits)
                     for v in values]
        lines.append(line)
    keep = [i for i in range(len(header)) if i < 2 or any(line[i] not in ("", "-") for line in lines)]
    header, lines = [header[i] for i in keep], [[line[i] for i in keep] for line in lines]  # no empty columns
    notes = [f"{MARKS[flag]} {FOOTNOTES[flag]}" for flag in MARKS if flag in used]
    notes.append(f"values{' x 100' if percent else ''} with 95% confidence intervals; harness leaderboard rows")
    return header, lines, notes


def render(fmt: str, header: list[str], lines: list[list[str]], notes: list[str]) -> str:
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(lines)
        return buf.getvalue()
    if fmt == "latex":
        def tex(text: str) -> str:
            return "".join(LATEX.get(ch, ch) for ch in text)

        body = [" & ".join(tex(c) for c in header) + r" \\ \hline"]
        body += [" & ".join(tex(c) for c in line) + r" \\" for line in lines]
        return ("\\begin{tabular}{" + "l" * len(header) + "}\n" + "\n".join(body) + "\n\\end{tabular}\n"
                + "".join(f"% {note}\n" for note in notes))
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "\\|").replace("*", "\\*") for c in line) + " |" for line in lines]
    return "\n".join(out) + "\n\n" + "".join(f"{note.replace('*', chr(92) + '*', 1)}  \n" for note in notes)
