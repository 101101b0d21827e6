"""Wrongly typed or mixed-up user files (a null image_path, a list answer, MIMIC-CXR given as IU-Xray, two SLAKE
validation files, a hub copy missing a split) are one-line errors naming file, record and field, never a
traceback or a silently coerced sample; the advice in them is what a user can type (--source, --split)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import error_line
from format_writers import cases, write_hf_parquet, write_hf_saved, write_mevf, write_r2gen, write_slake
from loader_helpers import edit_json, load_error, task

ANNOTATION = "annotation.json"


@pytest.fixture(scope="module")
def phantom():
    return cases(4, seed=7)


# --- IU-Xray (R2Gen annotation.json) ------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "shown"), [
    ("image_path", None, "null"), ("image_path", 3, "3"), ("image_path", [], "[]"),
    ("image_path", ["a/0.png", None], '["a/0.png", null]'), ("report", ["no acute findings"], '["no acute findings"]'),
    ("report", 7, "7"),
])
@pytest.mark.parametrize("source", ["r2gen", "r2gen-per-image"])
def test_r2gen_wrongly_typed_field_names_file_split_record_and_field(tmp_path, phantom, field, value, shown, source):
    write_r2gen(tmp_path, phantom)
    data = edit_json(tmp_path / ANNOTATION, lambda d: d["train"][1].update({field: value}))
    study = data["train"][1]["id"]
    message = load_error("iu-xray", tmp_path, "train", source)
    assert message.startswith(f"{tmp_path / ANNOTATION}: split 'train' record 1 (id {study}) has {field} {shown}; "
                              "expected ")
    assert ("a non-empty list of image paths" if field == "image_path" else "the report text (a string)") in message


def test_r2gen_null_image_path_is_exit_2_not_a_traceback(tmp_path, phantom):
    write_r2gen(tmp_path / "data", phantom)
    edit_json(tmp_path / "data" / ANNOTATION, lambda d: d["test"][0].update(image_path=None))
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--model", "prior", "--task", "iu-xray",
                           "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})  # this checkout's code
    assert "has image_path null; expected a non-empty list of image paths" in error_line(proc)


def _as_mimic(data: dict[str, list[dict[str, Any]]], keys: bool = True) -> None:
    """Rewrite the records as R2Gen's MIMIC-CXR annotation: dicom ids, subject/study numbers, MIMIC-CXR-JPG paths."""
    for n, rec in enumerate(r for recs in data.values() for r in recs):
        subject, study = 10000032 + n, 50414267 + n
        rec["id"] = f"02aa804e-bde0afdd-112c0b34-7bc16630-{n:08x}"
        rec["image_path"] = [f"p10/p{subject}/s{study}/{rec['id']}.jpg"]
        if keys:
            rec.update(subject_id=subject, study_id=study)


@pytest.mark.parametrize("keys", [True, False], ids=["ids", "paths-only"])
def test_r2gen_mimic_cxr_annotation_is_refused_as_credentialed(tmp_path, phantom, keys):
    write_r2gen(tmp_path, phantom)
    data = edit_json(tmp_path / ANNOTATION, lambda d: _as_mimic(d, keys))
    for source in ("r2gen", "r2gen-per-image"):
        message = load_error("iu-xray", tmp_path, source=source)
        assert message.startswith(f"{tmp_path / ANNOTATION}: split 'test' record 0 (id {data['test'][0]['id']}) "
                                  + ("has subject_id and study_id" if keys else "has image path \"p10/p1000"))
        assert "this looks like MIMIC-CXR (credentialed, not IU-Xray" in message


def test_pefomed_per_image_file_advice_is_a_cli_flag_that_works(tmp_path, phantom):
    written = write_r2gen(tmp_path, phantom)
    per_image = {split: [{**rec, "image_path": p} for rec in recs for p in rec["image_path"]]
                 for split, recs in written.records.items()}  # PeFoMed: one record per image, a path string
    (tmp_path / ANNOTATION).write_text(json.dumps(per_image), encoding="utf-8")
    message = load_error("iu-xray", tmp_path)
    assert "appears twice in split 'test'" in message and "--source r2gen-per-image" in message
    samples = task("iu-xray", tmp_path, source="r2gen-per-image").samples("test")
    assert [s.id for s in samples] == [f"{r['id']}/{k}" for r in written.records["test"]
                                       for k in range(len(r["image_path"]))]


# --- VQA json records (MEVF, SLAKE) -------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "expected"), [
    ("answer", ["Yes"], 'has answer ["Yes"]; expected the answer (a string or a number)'),
    ("answer", True, "has answer true; expected the answer (a string or a number)"),
    ("question", None, "has question null; expected the question (a non-empty string)"),
    ("question", "  ", 'has question "  "; expected the question (a non-empty string)'),
    ("question", {"en": "Is it normal?"}, 'has question {"en": "Is it normal?"}; expected the question (a non-empty '
                                          'string)'),
])
def test_slake_wrongly_typed_question_or_answer_names_record_and_field(tmp_path, phantom, field, value, expected):
    write_slake(tmp_path, phantom)
    data = edit_json(tmp_path / "test.json", lambda recs: recs[2].update({field: value}))
    assert data[2]["q_lang"] == "en"
    assert load_error("slake", tmp_path) == f"{tmp_path / 'test.json'}: record 2 (qid {data[2]['qid']}) {expected}"


def test_mevf_numeric_answer_is_its_text_and_null_qid_is_said_to_be_null(tmp_path, phantom):
    write_mevf(tmp_path, phantom)
    edit_json(tmp_path / "testset.json", lambda recs: recs[0].update(answer=2))
    assert task("vqa-rad", tmp_path, "mevf").samples("test")[0].answer == "2"
    edit_json(tmp_path / "testset.json", lambda recs: recs[5].update(qid=None))
    assert load_error("vqa-rad", tmp_path, source="mevf") == (
        f"{tmp_path / 'testset.json'}: record 5 has qid null; expected the record's id")


# --- SLAKE files --------------------------------------------------------------------------------------------------

def test_slake_empty_split_file_is_named(tmp_path, phantom):
    write_slake(tmp_path, phantom)
    (tmp_path / "validate.json").write_text("[]", encoding="utf-8")
    assert load_error("slake", tmp_path, "validation") == (
        f"{tmp_path / 'validate.json'}: an empty list; expected the split's question records")
    edit_json(tmp_path / "test.json", lambda recs: recs.__setitem__(slice(None), [r for r in recs
                                                                                   if r["q_lang"] == "zh"]))
    assert load_error("slake", tmp_path).startswith(f"{tmp_path / 'test.json'}: none of its ")


def test_slake_both_validation_file_names_are_refused(tmp_path, phantom):
    write_slake(tmp_path, phantom)
    shutil.copy(tmp_path / "validate.json", tmp_path / "validation.json")
    message = load_error("slake", tmp_path, "val")
    assert message.startswith(f"--data-dir {tmp_path} has both validate.json and validation.json for split "
                              "'validation'; remove one")
    assert len(task("slake", tmp_path).samples("test")) > 0  # the other splits still load


# --- Hugging Face hub-format copies -------------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["val", "valid", "validate"])
def test_hf_copy_runs_validation_aliases_as_validation(tmp_path, phantom, alias):
    written = write_hf_saved(tmp_path, phantom, kind="vqa")
    t = task("pathvqa", tmp_path, source="hf")
    assert t.canonical_split(alias) == "validation"
    assert [s.question for s in t.samples(alias)] == [r["question"] for r in written.records["validation"]]


def test_hf_copy_missing_a_split_names_the_folder_and_its_files(tmp_path, phantom):
    write_hf_parquet(tmp_path, phantom, kind="vqa")
    configs = "".join(f"  - split: {s}\n    path: data/{s}-*\n" for s in ("train", "validation", "test"))
    (tmp_path / "README.md").write_text(f"---\nconfigs:\n- config_name: default\n  data_files:\n{configs}---\n")
    message = load_error("vqa-rad", tmp_path, source="hf")
    assert message.startswith(f"{tmp_path} lacks the files of split 'validation' (data/validation-*, as its "
                              "README.md `configs` say)")


@pytest.mark.parametrize(("column", "expected"), [
    ("answer", 'has answer ["yes"]; expected the answer (a string or a number)'),  # a list column
    ("question", "has question null; expected the question (a non-empty string)"),
])
def test_hf_copy_wrongly_typed_question_or_answer_names_row_and_column(tmp_path, phantom, column, expected):
    from datasets import DatasetDict, Sequence, Value, load_from_disk

    write_hf_saved(tmp_path / "orig", phantom, kind="vqa")
    test = load_from_disk(str(tmp_path / "orig"))["test"]
    if column == "answer":  # a list column (every row a list): row 0 is the first refused
        values = [["yes"]] + [[a] for a in test["answer"][1:]]
        test = test.remove_columns("answer").add_column("answer", values, feature=Sequence(Value("string")))
    else:
        values = [None] + list(test["question"][1:])
        test = test.remove_columns("question").add_column("question", values)
    DatasetDict({"test": test}).save_to_disk(str(tmp_path / "bad"))
    assert load_error("vqa-rad", tmp_path / "bad", source="hf") == f"{tmp_path / 'bad'} split 'test' row 0 {expected}"


def test_a_lone_surrogate_escape_in_a_data_file_is_named_not_a_traceback(tmp_path, phantom):
    """`"\\udc80"` in a JSON file (a broken export) loaded, then crashed hashing the data (UnicodeEncodeError)."""
    write_slake(tmp_path, phantom)
    path = tmp_path / "test.json"
    records = json.loads(path.read_text(encoding="utf-8"))
    records[1]["answer"] = "yes \udc80"
    path.write_text(json.dumps(records), encoding="utf-8")  # ASCII: the surrogate as its escape
    assert load_error("slake", tmp_path) == (f"{tmp_path / 'test.json'}: [1].answer holds a lone surrogate escape "
                                             "(\\ud800-\\udfff), which is not text; write the file as UTF-8 text")


@pytest.mark.parametrize("name", ["../../secret/private.png", "/etc/passwd", "xmlab1/../../outside.png"])
def test_an_image_path_leaving_the_data_folder_is_refused(tmp_path, phantom, name):
    """A dataset copy from elsewhere naming '../..' or absolute image paths made the harness read, hash and send
    to an API model files outside its folder."""
    write_slake(tmp_path, phantom)
    data = edit_json(tmp_path / "test.json", lambda recs: recs[0].update({"img_name": name}))
    assert load_error("slake", tmp_path) == (
        f"{tmp_path / 'test.json'}: record 0 (qid {data[0]['qid']}): image path {name!r} leaves the data folder "
        "(absolute, or with '..'); expected a path relative to it")


def test_an_image_that_is_no_regular_file_fails_its_sample_without_blocking(tmp_path):
    """A FIFO in the image folder hung the run; /dev/zero as an image was read until memory ran out."""
    from harness.types import ImageRef

    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(OSError, match="is not a regular file"):
            ImageRef(name="x", path=path).read_bytes()


def test_a_record_repeating_a_key_is_refused_not_read_as_its_last_value(tmp_path, phantom):
    """`"answer": "no", "answer": "yes"` (a hand edit or merge slip) was read as "yes" without a word, moving
    accuracy, where a task YAML repeating a key is refused."""
    write_mevf(tmp_path, phantom)
    path = tmp_path / "testset.json"
    text = path.read_text(encoding="utf-8")
    first = json.loads(text)[0]
    answer = json.dumps(first["answer"], ensure_ascii=False)
    assert text.count(f'"answer": {answer}') >= 1
    path.write_text(text.replace(f'"answer": {answer}', f'"answer": "no", "answer": {answer}', 1), encoding="utf-8")
    message = load_error("vqa-rad", tmp_path, source="mevf")
    assert message == (f'{path}: an object repeats the key "answer" (values "no" and {answer}; the last would '
                       "silently win): keep the one meant")
    preds = tmp_path / "preds.jsonl"
    preds.write_text('{"id": "a", "answer": "no", "answer": "yes", "prediction": "yes", "answer_type": "CLOSED"}\n')
    proc = subprocess.run([sys.executable, "-m", "harness", "score", str(preds), "--task-type", "vqa"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and error_line(proc) == (
        f'error: {preds}:1: an object repeats the key "answer" (values "no" and "yes"; the last would silently '
        "win): keep the one meant")
    # a run's own files edited by hand: predictions.jsonl and run.json
    run = tmp_path / "run"
    harness_cli = [sys.executable, "-m", "harness"]
    subprocess.run([*harness_cli, "run", "--model", "prior", "--task", "phantom-vqa", "--limit", "3", "--judge",
                    "exact", "--output", str(run), "--no-progress"], capture_output=True, check=True)
    lines = (run / "predictions.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"prediction": ', '"prediction": "yes", "prediction": ', 1)
    (run / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([*harness_cli, "score", str(run)], capture_output=True, text=True)
    assert proc.returncode == 2 and error_line(proc).startswith(
        f'error: {run / "predictions.jsonl"}:2: an object repeats the key "prediction" (values "yes" and ')
    (run / "predictions.jsonl").write_text("\n".join(lines).replace('"prediction": "yes", ', "", 1) + "\n")
    manifest = (run / "run.json").read_text()
    (run / "run.json").write_text(manifest.replace('"run_id": ', '"run_id": "x", "run_id": ', 1))
    proc = subprocess.run([*harness_cli, "score", str(run)], capture_output=True, text=True)
    assert proc.returncode == 2 and error_line(proc).startswith(
        f'error: {run / "run.json"}: an object repeats the key "run_id" (values "x" and ')
