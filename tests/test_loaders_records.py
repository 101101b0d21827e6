"""Record-level mistakes that used to load as wrong samples are one-line errors naming file, record and field: an
IU-Xray study listed twice in the per-image source or filed under another split, PathVQA pickle records whose
question, answer or image is not text, VQA-RAD records without an image name; a truncated JSON file is named with
the line and column where it breaks."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from format_writers import cases, write_mevf, write_pathvqa_pickle, write_r2gen, write_slake, write_vqa_rad_official
from loader_helpers import edit_json, load_error, task

ANNOTATION = "annotation.json"
OFFICIAL = "VQA_RAD Dataset Public.json"
PICKLE = "qas/test/test_qa.pkl"


@pytest.fixture(scope="module")
def phantom():
    return cases(4, seed=7)


# --- IU-Xray (R2Gen annotation.json) ------------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["r2gen", "r2gen-per-image"])
def test_r2gen_study_listed_twice_is_refused_by_both_sources(tmp_path, phantom, source):
    written = write_r2gen(tmp_path, phantom)
    n = len(written.records["test"])
    data = edit_json(tmp_path / ANNOTATION, lambda d: d["test"].append(dict(d["test"][0])))
    study = data["test"][0]["id"]
    message = load_error("iu-xray", tmp_path, source=source)
    assert message.startswith(f"{tmp_path / ANNOTATION}: study id '{study}' appears twice in split 'test'")
    if source == "r2gen-per-image":  # not counted twice as <study>/2, <study>/3 of the same images
        assert message == (f"{tmp_path / ANNOTATION}: study id '{study}' appears twice in split 'test' (records 0 "
                           f"and {n}, both with image \"{study}/0.png\"); expected each image of a study once")
    else:  # the records are named too
        assert message.startswith(f"{tmp_path / ANNOTATION}: study id '{study}' appears twice in split 'test' "
                                  f"(records 0 and {n}); a file with one record per image")


def test_r2gen_per_image_file_may_repeat_a_study_with_its_other_images(tmp_path, phantom):
    """PeFoMed's per-image file lists a study once per image: still one sample per image, none counted twice."""
    written = write_r2gen(tmp_path, phantom)
    per_image = {split: [{**rec, "image_path": p} for rec in recs for p in rec["image_path"]]
                 for split, recs in written.records.items()}
    per_image["test"].append(dict(per_image["test"][0]))  # ...but not the same image twice
    (tmp_path / ANNOTATION).write_text(json.dumps(per_image), encoding="utf-8")
    assert "appears twice in split 'test' (records 0 and " in load_error("iu-xray", tmp_path, source="r2gen-per-image")
    per_image["test"].pop()
    (tmp_path / ANNOTATION).write_text(json.dumps(per_image), encoding="utf-8")
    samples = task("iu-xray", tmp_path, source="r2gen-per-image").samples("test")
    assert [s.id for s in samples] == [f"{r['id']}/{k}" for r in written.records["test"] for k in (0, 1)]
    assert len({s.images[0].name for s in samples}) == len(samples)


@pytest.mark.parametrize("source", ["r2gen", "r2gen-per-image"])
@pytest.mark.parametrize(("value", "said"), [
    (None, "lacks split (it has id, image_path, report)"),
    ("train", 'has split "train"; expected "val" (the split whose list holds the record)'),
    ("", 'has split ""; expected "val" (the split whose list holds the record)'),
    (["val"], 'has split ["val"]; expected "val" (the split whose list holds the record)'),
])
def test_r2gen_record_without_its_split_field_is_an_error(tmp_path, phantom, source, value, said):
    write_r2gen(tmp_path, phantom)

    def change(d: dict[str, Any]) -> None:
        if value is None:
            d["val"][0].pop("split")
        else:
            d["val"][0]["split"] = value

    data = edit_json(tmp_path / ANNOTATION, change)
    assert load_error("iu-xray", tmp_path, "validation", source) == (
        f"{tmp_path / ANNOTATION}: split 'val' record 0 (id {data['val'][0]['id']}) {said}")


def test_r2gen_split_field_is_matched_like_other_split_fields(tmp_path, phantom):
    written = write_r2gen(tmp_path, phantom)
    edit_json(tmp_path / ANNOTATION, lambda d: d["test"][0].update(split=" TEST "))
    assert [s.id for s in task("iu-xray", tmp_path).samples("test")] == [r["id"] for r in written.records["test"]]


# --- PathVQA pickles ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "expected"), [
    ("question", None, "has question null; expected the question (a non-empty string)"),
    ("question", "  ", 'has question "  "; expected the question (a non-empty string)'),
    ("question", ["what?"], 'has question ["what?"]; expected the question (a non-empty string)'),
    ("answer", ["yes"], 'has answer ["yes"]; expected the answer (a string or a number)'),
    ("answer", {"a": 1}, 'has answer {"a": 1}; expected the answer (a string or a number)'),
    ("answer", True, "has answer true; expected the answer (a string or a number)"),
    ("image", None, "has image null; expected the image file name (a non-empty string)"),
    ("image", " ", 'has image " "; expected the image file name (a non-empty string)'),
])
def test_pathvqa_wrongly_typed_field_names_record_and_field(tmp_path, phantom, field, value, expected):
    written = write_pathvqa_pickle(tmp_path, phantom)
    recs = written.records["test"]
    recs[1][field] = value
    (tmp_path / PICKLE).write_bytes(pickle.dumps(recs))
    assert load_error("pathvqa", tmp_path) == f"{tmp_path / PICKLE}: record 1 (id test-1) {expected}"


def test_pathvqa_numeric_answer_is_its_text_as_in_vqa_rad(tmp_path, phantom):
    written = write_pathvqa_pickle(tmp_path, phantom)
    recs = written.records["test"]
    recs[0]["answer"], recs[1]["answer"] = 3, 2.0
    (tmp_path / PICKLE).write_bytes(pickle.dumps(recs))
    samples = task("pathvqa", tmp_path).samples("test")
    assert [(s.answer, s.answer_type) for s in samples[:2]] == [("3", "OPEN"), ("2", "OPEN")]


def test_pathvqa_null_answer_is_still_skipped_not_refused(tmp_path, phantom):
    written = write_pathvqa_pickle(tmp_path, phantom)
    recs = written.records["test"]
    recs[1]["answer"] = None
    (tmp_path / PICKLE).write_bytes(pickle.dumps(recs))
    assert [s.id for s in task("pathvqa", tmp_path).samples("test")] == [f"test-{i}" for i in range(len(recs))
                                                                         if i != 1]


# --- VQA-RAD image names ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "shown"), [(None, "null"), ("", '""'), ("  ", '"  "'), (7, "7")])
@pytest.mark.parametrize("layout", ["official", "mevf"])
def test_vqa_rad_record_without_an_image_name_is_an_error(tmp_path, phantom, layout, value, shown):
    if layout == "official":
        write_vqa_rad_official(tmp_path, phantom)
        path, k = tmp_path / OFFICIAL, 1
    else:
        write_mevf(tmp_path, phantom)
        path, k = tmp_path / "testset.json", 1
    data = edit_json(path, lambda recs: recs[k].update(image_name=value))
    assert load_error("vqa-rad", tmp_path, source=layout) == (
        f"{path}: record {k} (qid {data[k]['qid']}) has image_name {shown}; expected the image file name "
        "(a non-empty string)")


@pytest.mark.parametrize("layout", ["official", "mevf"])
def test_a_breakdown_field_holding_a_list_is_an_error_not_a_group(tmp_path, phantom, layout):
    """An organ ["HEAD", "CHEST"] became a breakdown group named "['HEAD', 'CHEST']"."""
    writer, name = (write_vqa_rad_official, OFFICIAL) if layout == "official" else (write_mevf, "testset.json")
    writer(tmp_path, phantom)
    path, k = tmp_path / name, 1
    data = edit_json(path, lambda recs: recs[k].update(image_organ=["HEAD", "CHEST"]))
    assert load_error("vqa-rad", tmp_path, source=layout) == (
        f'{path}: record {k} (qid {data[k]["qid"]}) has image_organ ["HEAD", "CHEST"]; expected one value (text or '
        "a number) for the breakdown by it")


def test_a_json_file_saved_with_a_byte_order_mark_is_the_same_data(tmp_path, phantom):
    """Windows editors save UTF-8 with a BOM: json refused it ("Unexpected UTF-8 BOM"), where CSVs were read."""
    from harness.plugin_manager import tasks
    from harness.task import Task

    write_mevf(tmp_path / "plain", phantom)
    write_mevf(tmp_path / "bom", phantom)
    testset = tmp_path / "bom" / "testset.json"
    testset.write_bytes(b"\xef\xbb\xbf" + testset.read_bytes())
    plain, bom = (Task(tasks().get("vqa-rad"), source="mevf", data_dir=tmp_path / name) for name in ("plain", "bom"))
    assert [s.answer for s in bom.samples("test")] == [s.answer for s in plain.samples("test")]
    assert bom.fingerprint("test") == plain.fingerprint("test")


# --- truncated JSON -----------------------------------------------------------------------------------------------

def test_truncated_json_names_line_and_column(tmp_path, phantom):
    write_slake(tmp_path, phantom)
    text = (tmp_path / "test.json").read_text(encoding="utf-8")
    start = text.index('"question"', 200)
    (tmp_path / "test.json").write_text(text[:start + 5], encoding="utf-8")  # cut inside the key "question"
    assert load_error("slake", tmp_path) == (  # the message of json alone ends "starting at": where is the point
        f"{tmp_path / 'test.json'}: not valid JSON (Unterminated string starting at: line 1 column {start + 1})")


def test_yes_no_rule_reads_a_punctuated_or_capitalised_yes_as_closed():
    from harness.loaders.common import closed_label

    labels = [closed_label(a, None, "yes_no") for a in ("Yes.", " no! ", "YES", "yes, left", "Nodule", "no.")]
    assert labels == ["CLOSED", "CLOSED", "CLOSED", "OPEN", "OPEN", "CLOSED"]
