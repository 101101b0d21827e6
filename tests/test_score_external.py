"""`harness score` on predictions made elsewhere and on saved runs (re-judging without regenerating)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True)


def write_preds(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    {"id": "a", "question": "Is there a lesion?", "answer": "Yes", "prediction": "yes", "answer_type": "CLOSED",
     "question_type": "PRES"},
    {"id": "b", "question": "Is it on the left?", "answer": "no", "prediction": "No, it is not.",
     "answer_type": "CLOSED", "question_type": "POS"},
    {"id": "c", "question": "Which organ?", "answer": "left lung", "prediction": "the lung",
     "answer_type": "OPEN", "question_type": "ORGAN"},
    {"id": "d", "question": "How many?", "answer": "2", "prediction": "two", "answer_type": "OPEN",
     "question_type": "COUNT"},
]


def test_score_external_predictions_with_each_convention(tmp_path):
    preds = write_preds(tmp_path / "preds.jsonl", ROWS)
    out = tmp_path / "out"
    proc = cli("score", str(preds), "--task-type", "vqa", "--judge", "exact", "--convention", "pefomed",
               "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert proc.stdout.startswith(f"external on preds (predictions file, n=4, data {results['task']['fingerprint']})")
    (judge,) = results["judges"]
    assert judge["convention"] == "pefomed"
    # a: yes==yes; b: "no, it is not" != "no"; c: "lung" != "left lung"; d: "two" -> "2" matches
    assert judge["metrics"]["accuracy"]["value"] == 0.5
    assert judge["breakdowns"]["answer_type"]["OPEN"]["accuracy"]["value"] == 0.5
    assert judge["breakdowns"]["question_type"]["COUNT"]["accuracy"]["value"] == 1.0
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert [s["id"] for s in scores] == ["a", "b", "c", "d"]

    proc = cli("score", str(preds), "--task-type", "vqa", "--judge", "exact", "--convention", "llava-med",
               "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert [j["convention"] for j in results["judges"]] == ["pefomed", "llava-med"], "re-scoring adds a judge"
    llava = results["judges"][1]["metrics"]
    assert llava["closed_accuracy"]["value"] == 1.0  # substring hits: "yes" in "yes", "no" in "no it is not"
    assert llava["open_recall"]["value"] == 0.75  # "left lung" -> 1/2 ; "2" in "2" -> 1
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert set(scores[0]["judges"]) == {"exact/pefomed", "exact/llava-med"}


def test_malformed_predictions_name_file_line_and_field(tmp_path):
    bad = write_preds(tmp_path / "bad.jsonl", [ROWS[0], {"id": "x", "answer": "yes", "prediction": "no"}])
    proc = cli("score", str(bad), "--task-type", "vqa", "--judge", "exact")
    assert proc.returncode == 2
    assert f"{bad}:2: missing field(s) answer_type" in proc.stderr
    bad.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    proc = cli("score", str(bad), "--task-type", "vqa")
    assert f"{bad}:2: not valid JSON" in proc.stderr
    bad.write_text(json.dumps({**ROWS[0], "answer_type": "maybe"}) + "\n")
    proc = cli("score", str(bad), "--task-type", "vqa")
    assert "expected OPEN or CLOSED" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("score", str(bad))
    assert "--task-type" in proc.stderr


def test_predictions_that_are_not_utf8_are_one_line_naming_file_line_and_byte(tmp_path):
    """A binary file, or a Latin-1 export with an accent on line 2, was a UnicodeDecodeError traceback."""
    from cli_helpers import error_line

    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x80\x81\x82\xff" * 8)
    line = error_line(cli("score", str(garbage), "--task-type", "vqa", "--output", str(tmp_path / "o1")))
    assert line == f"error: {garbage}:1: not UTF-8 text (byte 0x80 at offset 0); save it as UTF-8"
    latin = tmp_path / "latin.jsonl"
    first = json.dumps(ROWS[0]) + "\n"
    latin.write_bytes((first + json.dumps({**ROWS[1], "prediction": "caf\u00e9"}, ensure_ascii=False) + "\n")
                      .encode("latin-1"))
    line = error_line(cli("score", str(latin), "--task-type", "vqa", "--output", str(tmp_path / "o2")))
    offset = latin.read_bytes().index(0xE9)
    assert line == f"error: {latin}:2: not UTF-8 text (byte 0xe9 at offset {offset}); save it as UTF-8"
    assert offset > len(first) and not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_rescore_a_run_directory_without_generating(tmp_path):
    out = tmp_path / "run"
    proc = cli("run", "--model", "prior", "--task", "phantom-vqa", "--judge", "exact", "--output", str(out),
               "--limit", "30", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    preds_before = (out / "predictions.jsonl").read_bytes()
    proc = cli("score", str(out), "--judge", "exact", "--convention", "multimedeval")
    assert proc.returncode == 0, proc.stderr
    assert (out / "predictions.jsonl").read_bytes() == preds_before
    results = json.loads((out / "results.json").read_text())
    assert [(j["id"], j["convention"]) for j in results["judges"]] == [("exact", "pefomed"),
                                                                        ("exact", "multimedeval")]
    assert "multimedeval_class" in results["judges"][1]["breakdowns"]


def test_a_breakdown_field_in_no_sample_is_named_in_a_warning(tmp_path):
    preds = write_preds(tmp_path / "preds.jsonl", ROWS)
    proc = cli("score", str(preds), "--task-type", "vqa", "--judge", "exact", "--breakdown", "question_typ",
               "--breakdown", "answer_type", "--output", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: --breakdown")]
    assert warnings == ["warning: --breakdown 'question_typ' is in no sample, so it is left out (did you mean "
                        "'question_type'?); fields the samples have: answer_type, question_type"]
    (judge,) = json.loads((tmp_path / "out" / "results.json").read_text())["judges"]
    assert list(judge["breakdowns"]) == ["answer_type"]


def test_samples_without_a_breakdown_value_are_counted_not_silently_dropped(tmp_path):
    rows = [dict(ROWS[0]), {**ROWS[1], "question_type": None}, {**ROWS[2], "question_type": ""}, dict(ROWS[3])]
    del rows[3]["question_type"]
    preds = write_preds(tmp_path / "preds.jsonl", rows)
    proc = cli("score", str(preds), "--task-type", "vqa", "--judge", "exact", "--breakdown", "question_type",
               "--breakdown", "answer_type", "--output", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "note: 3 of 4 samples have no 'question_type', so they are in no question_type group" in proc.stderr
    (judge,) = json.loads((tmp_path / "out" / "results.json").read_text())["judges"]
    assert {k: v["accuracy"]["n"] for k, v in judge["breakdowns"]["question_type"].items()} == {"PRES": 1}
    assert judge["breakdown_missing"] == {"question_type": 3}  # answer_type: every sample has one


def test_a_task_breakdown_its_source_lacks_is_a_note_naming_the_source(capsys):
    from harness.scoring import warn_absent_breakdowns

    hub_rows = [{k: r[k] for k in ("id", "question", "answer", "prediction", "answer_type")} for r in ROWS]
    absent = warn_absent_breakdowns(hub_rows, ["answer_type", "question_type", "organ"], "task vqa-rad source 'hf'")
    assert absent == ["question_type", "organ"]
    assert capsys.readouterr().err == (
        "note: no sample of task vqa-rad source 'hf' has the breakdown fields 'question_type', 'organ', so results "
        "have no breakdown by them; fields the samples have: answer_type\n")
    assert warn_absent_breakdowns(ROWS, ["answer_type", "question_type"], "task x") == []
    assert capsys.readouterr().err == ""


def test_predictions_with_a_null_or_blank_reference_are_skipped_with_a_warning(tmp_path):
    """They were scored (an empty prediction matched an empty reference: accuracy 1.0) and counted in n, where the
    task loaders skip such samples with a warning."""
    rows = [*ROWS, {"id": "e", "answer": " ", "prediction": "", "answer_type": "OPEN"},
            {"id": "f", "answer": None, "prediction": "x", "answer_type": "OPEN"}]
    preds = write_preds(tmp_path / "preds.jsonl", rows)
    proc = cli("score", str(preds), "--task-type", "vqa", "--judge", "exact", "--output", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    note = (f"{preds}: 2 predictions with a null or blank reference ('answer') skipped (line 5 (id e), line 6 "
            "(id f)); they are not scored")
    assert f"warning: {note}" in proc.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["task"]["n"] == 4 and results["task"]["skipped_note"] == note
    assert results["judges"][0]["metrics"]["accuracy"]["value"] == 0.5
    blank = write_preds(tmp_path / "blank.jsonl", rows[4:])
    proc = cli("score", str(blank), "--task-type", "vqa")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (f"error: {blank}: no predictions with a reference (2 have a null "
                                                    "or blank 'answer') in the file")


def test_nan_and_null_from_a_table_are_a_skipped_reference_and_failed_samples_not_text(tmp_path):
    """A file written from a pandas table (json.dumps of its rows) holds NaN where a cell is empty: the reference
    NaN was compared as the text "nan", and a NaN or null prediction was scored as a wrong answer (0.25 of 4 where
    1 of 1 was scorable), with no word."""
    rows = [{**ROWS[0], "id": "a0", "answer": float("nan")}, {**ROWS[0], "id": "a1", "prediction": float("nan")},
            {**ROWS[0], "id": "a2", "prediction": None}, {**ROWS[0], "id": "a3"}]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json.dumps writes NaN, as pandas users get
    proc = cli("score", str(preds), "--task-type", "vqa", "--judge", "exact", "--output", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert (f"warning: {preds}: 2 predictions are null or NaN (line 2 (id a1), line 3 (id a2)): counted as failed "
            "samples, not in the metrics; write \"\" where the model answered nothing") in proc.stderr
    assert f"{preds}: 1 prediction with a null or blank reference ('answer') skipped (line 1 (id a0))" in proc.stderr
    assert "2 of 3 sample(s) failed and are not in the metrics" in proc.stdout
    assert "fill the predictions in the file and score it again" in proc.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    accuracy = results["judges"][0]["metrics"]["accuracy"]
    assert (accuracy["value"], accuracy["n"], results["errors"]["count"]) == (1.0, 1, 2)
    # a line with neither reference nor prediction is skipped, not counted among the failed; none left to score
    both = write_preds(tmp_path / "both.jsonl", [{**ROWS[0], "id": "n0", "answer": None, "prediction": None},
                                                 {**ROWS[0], "id": "n1", "prediction": None}])
    proc = cli("score", str(both), "--task-type", "vqa", "--judge", "exact", "--output", str(tmp_path / "both"))
    assert "1 prediction is null or NaN (line 2 (id n1))" in proc.stderr
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        "fill the predictions in the file and score it again")


def test_scoring_into_a_folder_of_another_run_is_refused(tmp_path):
    """Scores of a second model went into the first one's folder: scores.jsonl mixed both models' verdicts and
    results.json was replaced without a word (the default <file>-scored folder too, with another --model-name)."""
    preds = write_preds(tmp_path / "preds.jsonl", ROWS)
    first = cli("score", str(preds), "--task-type", "vqa", "--model-name", "modelA", "--judge", "exact")
    assert first.returncode == 0, first.stderr
    out = tmp_path / "preds-scored"
    before = {name: (out / name).read_bytes() for name in ("results.json", "scores.jsonl")}
    proc = cli("score", str(preds), "--task-type", "vqa", "--model-name", "modelB", "--judge", "exact:llava-med")
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {out} holds the results of run 'preds--modelA--") and line.endswith(
        "(another model, task or predictions file): choose another --output (nothing was changed)")
    assert {name: (out / name).read_bytes() for name in before} == before
    again = cli("score", str(preds), "--task-type", "vqa", "--model-name", "modelA", "--judge", "exact:llava-med")
    assert again.returncode == 0, again.stderr  # the same run adds its judge as before


def test_files_and_folders_that_are_not_run_directories_say_what_to_give():
    """`harness score run/run.json` asked for a --task-type, then failed on run.json:1 as a predictions file; the
    folder a `harness score --output` wrote was only 'not a run directory'."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        preds = write_preds(root / "preds.jsonl", ROWS)
        assert cli("score", str(preds), "--task-type", "vqa", "--output", str(root / "scored")).returncode == 0
        (root / "run").mkdir()
        (root / "run" / "run.json").write_text("{}")
        for given in ("run.json", "results.json"):
            (root / "run" / given).write_text("{}")
            proc = cli("score", str(root / "run" / given), "--task-type", "vqa")
            assert proc.stderr.strip().splitlines()[-1] == (f"error: {root / 'run' / given} is a file of the run "
                                                            f"directory {root / 'run'}: give the folder (harness "
                                                            f"score {root / 'run'})")
        proc = cli("score", str(root / "scored"))
        assert proc.returncode == 2 and proc.stderr.strip().endswith(
            "(it holds scores written by harness score: score the run directory or predictions file they came from, "
            "with --output for another folder)")


def test_a_lone_surrogate_escape_in_predictions_is_one_line_naming_line_and_field(tmp_path):
    """`"yes \\udc80"` (an escape of half a UTF-16 pair) was a UnicodeEncodeError traceback when the scores were
    written (or, in the answer, when the data was hashed)."""
    from cli_helpers import error_line

    for field in ("prediction", "answer"):
        preds = write_preds(tmp_path / f"{field}.jsonl", [ROWS[0], {**ROWS[1], field: "no \udc80"}])
        line = error_line(cli("score", str(preds), "--task-type", "vqa", "--output", str(tmp_path / field)))
        assert line == (f"error: {preds}:2: field '{field}' holds a lone surrogate escape (\\ud800-\\udfff), which "
                        "is not text; write the file as UTF-8 text")
        assert not (tmp_path / field).exists()


def test_line_separators_inside_json_strings_are_text_not_line_ends(tmp_path):
    """U+2028, U+2029 and U+0085 may stand unescaped in a JSON string (the harness writes its own predictions.jsonl
    so, with ensure_ascii=False): they split no line."""
    rows = [{**row, "prediction": row["prediction"] + sep + "more"}
            for row, sep in zip(ROWS, ("\u2028", "\u2029", "\u0085", "\u001e"))]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    proc = cli("score", str(preds), "--task-type", "vqa", "--judge", "exact", "--output", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out" / "results.json").read_text())["task"]["n"] == 4


def test_the_predictions_file_is_never_overwritten_and_its_folder_is_no_run_folder(tmp_path):
    """harness score FILE writes the predictions it read beside the scores, except over FILE itself (ids made
    strings, a blank reference dropped: the user's file changed and its next scoring refused); a harness run
    into that folder would append its predictions to them."""
    folder = tmp_path / "mine"
    folder.mkdir()
    preds = folder / "predictions.jsonl"
    rows = [{**ROWS[0], "id": 1}, ROWS[1], {**ROWS[2], "answer": ""}]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = preds.read_bytes()
    for _ in range(2):
        proc = cli("score", str(preds), "--task-type", "vqa", "--judge", "exact", "--output", str(folder))
        assert proc.returncode == 0, proc.stderr
        assert preds.read_bytes() == before
    proc = cli("run", "--model", "prior", "--task", "phantom-vqa", "--limit", "3", "--output", str(folder),
               "--no-progress")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: {folder} holds predictions.jsonl and results.json but no run.json (scores of a predictions file, "
        "or a run folder without its record): choose another --output")
    assert preds.read_bytes() == before
