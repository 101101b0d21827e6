"""`harness table` prints a leaderboard as a table to paste into a paper: each row's qualifying choices in their
own columns, values with their intervals, and footnotes for partial rows; Markdown, CSV and LaTeX."""

from __future__ import annotations

import csv
import io
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
        args += ["--limit", limit, "--prompt", "pefomed"] if limit else []
        assert harness(*args).returncode == 0
    assert harness("publish", str(root / "partial"), str(root / "full"), "-o", str(root / "board.json")).returncode == 0
    return root / "board.json"


def test_markdown_has_the_choices_the_values_with_intervals_and_footnotes(board):
    proc = harness("table", str(board), "--judge", "exact:pefomed", "--breakdown", "answer_type", "--percent",
                   "--digits", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = lines[0]
    assert header.startswith("| model | task | split | source | prompt | judge | n | accuracy |")
    assert "accuracy (CLOSED)" in header and "accuracy (OPEN)" in header and "judge setup" not in header
    partial = next(line for line in lines if "| pefomed |" in line)
    assert partial.startswith("| prior\\* |") and "| 40 of 361 |" in partial
    value = partial.split(" | ")[7]
    assert value.count("[") == 1 and 0 <= float(value.split()[0]) <= 100  # a percentage with its interval
    assert any(line.startswith("\\* partial: fewer samples than the split") for line in lines)


def test_csv_and_latex(board):
    rows = list(csv.DictReader(io.StringIO(harness("table", str(board), "--format", "csv", "--metric",
                                                   "closed_accuracy").stdout)))
    assert {r["judge"]: r["closed_accuracy"] == "-" for r in rows} == {"exact:llava-med": False, "exact:pefomed": True}
    assert all("[" in r["closed_accuracy"] for r in rows if r["judge"] == "exact:llava-med")
    latex = harness("table", str(board), "--format", "latex", "--metric", "closed_accuracy").stdout
    assert latex.startswith("\\begin{tabular}") and "closed\\_accuracy" in latex and "exact:llava-med" in latex


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
