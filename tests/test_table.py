"""`harness table` prints a leaderboard as a table to paste into a paper: each row's qualifying choices in their
own columns, values with their intervals, and footnotes for partial rows; Markdown, CSV and LaTeX."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("table")
    for limit, out in (("40", "partial"), (None, "full")):
        args = ["run", "--model", "prior", "--task", "phantom-vqa", "--judge", "exact:pefomed",
                "--judge", "exact:llava-med", "--output", str(root / out), "--no-progress"]
        args += ["--limit", limit, "--model-args", "by=none"] if limit else []
        assert harness(*args).returncode == 0
    assert harness("publish", str(root / "partial"), str(root / "full"), "-o", str(root / "board.json")).returncode == 0
    return root / "board.json"


def test_markdown_has_the_choices_the_values_with_intervals_and_footnotes(board):
    proc = harness("table", str(board), "--judge", "exact:pefomed", "--breakdown", "answer_type", "--percent",
                   "--digits", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = lines[0]
    assert header.startswith("| model | task | split | source | prompt | judge | n | accuracy x100 |")
    assert "accuracy (CLOSED) x100" in header and "accuracy (OPEN) x100" in header and "judge setup" not in header
    partial = next(line for line in lines if "| 40 of 361 |" in line)
    assert partial.startswith("| prior[by=none]\\* |")
    cells = partial.split(" | ")
    assert cells[7].count("[") == 1 and 0 <= float(cells[7].split()[0]) <= 100  # a percentage with its interval
    assert "(n=" in cells[8] and "(n=" not in cells[7]  # a breakdown value rests on fewer samples: it says so
    assert any(line.startswith("\\* partial: fewer samples than the split") for line in lines)


def test_csv_is_plain_numbers_with_flags_and_latex_shows_its_notes(board):
    rows = list(csv.DictReader(io.StringIO(harness("table", str(board), "--format", "csv", "--metric",
                                                   "closed_accuracy").stdout)))
    assert {r["judge"] for r in rows} == {"exact:llava-med"}  # rows without the metric are no lines of it
    for row in rows:
        low, value, high = (float(row[k]) for k in ("closed_accuracy low", "closed_accuracy",
                                                    "closed_accuracy high"))
        assert low <= value <= high and int(row["closed_accuracy n"]) <= int(row["n"].split()[0])
        assert row["model"] == ("prior[by=none]" if row["partial"] == "true" else "prior")
    recorded = {(r["model"], r["metrics"]["closed_accuracy"]["value"])
                for r in json.loads(board.read_text())["rows"] if r["convention"] == "llava-med"}
    assert {(r["model"], float(r["closed_accuracy"])) for r in rows} == recorded  # unrounded (it was 3 decimals)
    rounded = harness("table", str(board), "--format", "csv", "--metric", "closed_accuracy", "--digits", "2").stdout
    assert all(len(r["closed_accuracy"].split(".")[1]) == 2 for r in csv.DictReader(io.StringIO(rounded)))
    latex = harness("table", str(board), "--format", "latex", "--metric", "closed_accuracy").stdout
    assert latex.startswith("\\begin{tabular}") and "closed\\_accuracy" in latex and "exact:llava-med" in latex
    assert "\\multicolumn" in latex and "partial: fewer samples" in latex  # the footnotes print, not comments


def test_counts_are_not_scaled_or_shown_unasked_and_look_alike_rows_show_their_configuration(board, tmp_path):
    data = json.loads(board.read_text())
    row = next(r for r in data["rows"] if r["judge"] == "exact" and r["convention"] == "pefomed")
    row["metrics"]["cost_usd"] = {"value": 0.42, "ci95": None, "n": row["n"], "ci_method": None}
    row["metrics"]["wasm"] = {"value": 2.5, "ci95": [2.3, 2.7], "n": row["n"], "ci_method": "bootstrap-mean"}
    twin = json.loads(json.dumps(row))
    twin["provenance"]["generation"]["max_new_tokens"] = 7
    data["rows"].append(twin)
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    out = harness("table", str(edited), "--judge", "exact:pefomed", "--percent").stdout
    assert "cost_usd" not in out and "| 2.500 [2.300, 2.700] |" in out and "x100: accuracy  \n" in out
    # how each interval shown was made, spelt out
    assert out.endswith("intervals: bootstrap-mean: percentile bootstrap of the mean, 1000 resamples, numpy "
                        "default_rng(0), numpy.quantile 2.5% and 97.5%; wilson: Wilson score interval of a proportion "
                        "(every per-sample value 0 or 1)  \n")
    methods = next(csv.DictReader(io.StringIO(harness("table", str(edited), "--judge", "exact:pefomed",
                                                              "--format", "csv").stdout)))
    assert (methods["accuracy interval"], methods["wasm interval"]) == ("wilson", "bootstrap-mean")
    assert "max_new_tokens=7" in out and "max_new_tokens=16" in out
    assert "| 0.420 |" in harness("table", str(edited), "--judge", "exact:pefomed", "--metric", "cost_usd").stdout


def test_a_wrong_selection_is_one_line_naming_what_exists(board):
    for args, expected in ((["--task", "vqa-rad"], "--task vqa-rad: no such row in the leaderboard; it has "
                                                   "phantom-vqa"),
                           (["--metric", "bleu"], "--metric bleu: no selected row has it; they have"),
                           (["--breakdown", "organs"], "--breakdown organs: no selected row has it"),
                           ([], None)):
        proc = harness("table", str(board), *args)
        if expected is None:
            assert proc.returncode == 0
            continue
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
    missing = harness("table", str(board.with_name("none.json")))
    assert missing.returncode == 2 and "no such leaderboard (write one with harness publish)" in missing.stderr


def test_a_metric_name_two_judges_define_differently_gets_a_note(board, tmp_path):
    import shutil

    run = shutil.copytree(board.parent / "full", tmp_path / "full")  # the module's board stays as it is
    assert harness("score", str(run), "--judge", "exact:multimedeval", "--no-progress").returncode == 0
    assert harness("publish", str(run), "-o", str(tmp_path / "board.json")).returncode == 0
    text = harness("table", str(tmp_path / "board.json"), "--metric", "closed_accuracy").stdout
    assert "defined by each judge (compare within one judge only): closed_accuracy under exact:llava-med, " \
           "exact:multimedeval" in text
    alone = harness("table", str(tmp_path / "board.json"), "--judge", "exact:llava-med").stdout
    assert "defined by each judge" not in alone


def test_partial_rows_give_csv_integer_counts_and_the_split_size(board):
    rows = list(csv.DictReader(io.StringIO(harness("table", str(board), "--format", "csv", "--percent").stdout)))
    partial = next(r for r in rows if r["partial"] == "true")
    assert (partial["n"], partial["n_total"]) == ("40", "361")  # numbers a CSV reader can sum, not "40 of 361"
    assert "accuracy x100" in rows[0] and "accuracy n" in rows[0]  # a count is not scaled, nor said to be


def test_awkward_names_keep_markdown_rows_and_latex_compilable(tmp_path):
    values = ["a&b", "line1\nline2", "_u_", "x|y"]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": f"q{i}", "question": "Is it?", "answer": "yes",
                                         "prediction": "yes" if i % 3 else "no", "answer_type": "CLOSED",
                                         "organ": values[i % 4]}) + "\n" for i in range(12)))
    for name, out in (("two\nlines", "o1"), ("[v2] --fast", "o2")):
        proc = harness("score", str(preds), "--task-type", "vqa", "--model-name", name, "--judge", "exact",
                       "--output", str(tmp_path / out), "--breakdown", "organ", "--no-progress")
        assert proc.returncode == 0, proc.stderr
    board = tmp_path / "board.json"
    assert harness("publish", str(tmp_path / "o1"), str(tmp_path / "o2"), "-o", str(board)).returncode == 0
    markdown = harness("table", str(board), "--breakdown", "organ").stdout.split("\n\n")[0].splitlines()
    assert len(markdown) == 4 and all(line.startswith("|") and line.endswith("|") for line in markdown)
    assert "| two lines |" in markdown[2] + markdown[3] and "(line1 line2)" in markdown[0]
    assert "(\\_u\\_)" in markdown[0] and "(x\\|y)" in markdown[0]  # no italics, no extra column
    latex = harness("table", str(board), "--format", "latex").stdout
    assert "{[}v2{]} -{}-fast" in latex  # after a row's \\ a leading [ would be read as a length; -- as a dash
    assert "two lines" in latex and "\n\n" not in latex.strip()


def test_a_board_of_an_older_layout_and_whole_number_values(board, tmp_path):
    """Rows written before `ci_method` was recorded have intervals but were "no value of the metrics asked for";
    a value of 1 stored as a JSON integer (a third-party judge's aggregate) stayed 1 under --percent, its interval
    bounds scaled (`1 [90.000, 1]`)."""
    data = json.loads(board.read_text())
    for row in data["rows"]:
        for metric in row["metrics"].values():
            metric.pop("ci_method", None)
    row = next(r for r in data["rows"] if r["judge"] == "exact" and r["convention"] == "pefomed"
               and not r["partial"])
    row["metrics"]["accuracy"].update(value=1, ci95=[0.9, 1])
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    proc = harness("table", str(old), "--judge", "exact:pefomed", "--percent")
    assert proc.returncode == 0, proc.stderr
    assert "| 100.000 [90.000, 100.000] |" in proc.stdout, proc.stdout


def test_names_from_someone_elses_results_make_no_link_image_or_formula(tmp_path):
    """A model name '[click](https://evil.example) ![t](https://evil.example/p.png)' rendered a link and a remote
    image in the Markdown table; '=HYPERLINK(...)' was a formula in a spreadsheet opening the CSV."""
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": "a", "answer": "yes", "prediction": "yes", "answer_type": "CLOSED"}) + "\n")
    name = '=HYPERLINK("http://evil.example") [click](https://evil.example) ![t](https://evil.example/p.png) `x`'
    assert harness("score", str(preds), "--task-type", "vqa", "--judge", "exact", "--model-name", name,
                   "--output", str(tmp_path / "out")).returncode == 0
    assert harness("publish", str(tmp_path / "out"), "-o", str(tmp_path / "b.json")).returncode == 0
    markdown = harness("table", str(tmp_path / "b.json")).stdout
    assert not re.search(r"\]\(https|(?<!\\)!\[|(?<!\\)`x", markdown), markdown
    assert "[click]\\(https://evil.example) \\![t]\\(https://evil.example/p.png) \\`x\\`" in markdown
    row = list(csv.reader(io.StringIO(harness("table", str(tmp_path / "b.json"), "--format", "csv").stdout)))[1]
    assert row[0] == "'" + name


def _edited(board: Path, tmp_path: Path, edit) -> Path:
    data = json.loads(board.read_text())
    edit(data["rows"])
    out = tmp_path / "edited.json"
    out.write_text(json.dumps(data))
    return out


def test_a_column_of_several_interval_methods_marks_each_cell(board, tmp_path):
    """A column with per-sample Wilson intervals beside per-image ones named both methods in a footnote, and the
    reader could not tell which cell had which (the narrower per-sample one looks the surer)."""
    def cluster_one(rows: list[dict]) -> None:
        next(r for r in rows if "accuracy" in r["metrics"])["metrics"]["accuracy"]["ci_method"] = "cluster-wilson-t"

    edited = _edited(board, tmp_path, cluster_one)
    lines = harness("table", str(edited), "--judge", "exact:pefomed").stdout.splitlines()
    cells = [line.split(" | ")[7] for line in lines[2:4]]
    assert sorted(cell.rstrip(" |")[-1] for cell in cells) == ["ᵃ", "ᵇ"], cells  # ᵃ cluster-wilson-t, ᵇ wilson
    note = next(line for line in lines if line.startswith("intervals"))
    assert note.startswith("intervals (marked where a column mixes methods): ᵃ cluster-wilson-t: ")
    assert "; ᵇ wilson: Wilson score interval" in note
    latex = harness("table", str(edited), "--judge", "exact:pefomed", "--format", "latex").stdout
    assert "$^{a}$" in latex and "$^{b}$" in latex
    plain = harness("table", str(board), "--judge", "exact:pefomed").stdout  # one method a column: no marks
    assert "ᵃ" not in plain and "intervals: wilson: " in plain


def test_a_breakdown_value_holding_every_sample_and_empty_columns_are_left_out(board, tmp_path):
    """Per-image IU-Xray's `views=1` is every sample: its columns repeated the overall ones; CSV kept columns no row
    fills (closed_accuracy of OPEN questions)."""
    def one_view(rows: list[dict]) -> None:
        for row in rows:
            row["breakdowns"]["views"] = {"1": json.loads(json.dumps(row["metrics"]))}

    edited = _edited(board, tmp_path, one_view)
    proc = harness("table", str(edited), "--judge", "exact:pefomed", "--breakdown", "views")
    assert proc.returncode == 0, proc.stderr
    assert "(1)" not in proc.stdout.splitlines()[0]
    assert ("not shown, the same numbers as the overall column in every row (the slice holds every sample behind "
            "them): accuracy (1)  ") in proc.stdout
    header = next(csv.reader(io.StringIO(harness("table", str(board), "--judge", "exact:llava-med", "--metric",
                                                 "closed_accuracy", "--breakdown", "answer_type",
                                                 "--format", "csv").stdout)))
    assert "closed_accuracy" in header and not any("(" in name for name in header)  # OPEN: empty; CLOSED: the same
    header = next(csv.reader(io.StringIO(harness("table", str(board), "--judge", "exact:pefomed", "--breakdown",
                                                 "answer_type", "--format", "csv").stdout)))
    assert "accuracy (CLOSED)" in header and "accuracy (OPEN)" in header
