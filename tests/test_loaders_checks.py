"""Bad records in real-format files are refused with one line naming file, record (position in the file and id)
and field, instead of silently shrinking a split or renaming an id. A record whose reference is null or blank is
skipped, never scored against, and the split gets one `warning:` line naming the count and up to three records."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from format_writers import (
    cases,
    write_hf_parquet,
    write_hf_saved,
    write_imageclef,
    write_mevf,
    write_pathvqa_pickle,
    write_r2gen,
    write_slake,
    write_vqa_rad_official,
)
from loader_helpers import edit_json, load_error, task

from harness.errors import UserError
from harness.plugin_manager import tasks

OFFICIAL = "VQA_RAD Dataset Public.json"


@pytest.fixture(scope="module")
def phantom():
    return cases(4, seed=7)


def first_train_position(records: list[dict[str, Any]]) -> int:
    return next(i for i, r in enumerate(records) if not str(r["phrase_type"]).startswith("test_"))


# --- reference answers: a null or blank one is skipped with one warning per split -------------------------------

BAD_ANSWERS = [("null", None), ("empty", ""), ("blank", "  \t")]


def skip_warning(task_id: str, source: str, split: str, shown: str, n: int = 1) -> str:
    what = "1 sample with a blank reference" if n == 1 else f"{n} samples with a blank reference"
    return (f"task '{task_id}' source '{source}' split '{split}': {what} skipped ({shown}); "
            f"{'it is' if n == 1 else 'they are'} not evaluated")


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def loaded_skipping(capsys, task_id: str, data_dir: Path, split: str = "test", source: str | None = None,
                    **expected: Any) -> list:
    """Load a split that has skipped records: one warning line (no size warning), the same text as skipped_note."""
    capsys.readouterr()
    t = task(task_id, data_dir, source)
    samples = t.samples(split)
    t.samples(split)  # loaded once: no second warning
    note = skip_warning(task_id, t.source.name, split, **expected)
    assert t.skipped_note(split) == note
    assert [w for w in warnings_in(capsys.readouterr().err) if "expected " not in w] == [f"warning: {note}"]
    return samples


@pytest.mark.parametrize(("case", "value"), BAD_ANSWERS, ids=[b[0] for b in BAD_ANSWERS])
def test_vqa_rad_official_bad_answer_is_skipped_naming_record_and_qid(tmp_path, phantom, capsys, case, value):
    written = write_vqa_rad_official(tmp_path, phantom)
    k = len(written.records["test"]) + 1  # a train record: its file position differs from its index in the split
    data = edit_json(tmp_path / OFFICIAL, lambda recs: recs[k].update(answer=value))
    train = loaded_skipping(capsys, "vqa-rad", tmp_path, "train", shown=f"record {k} (qid {data[k]['qid']})")
    assert len(train) == len(written.records["train"]) - 1
    assert str(data[k]["qid"]) not in {s.id for s in train} and all(s.answer for s in train)
    t = task("vqa-rad", tmp_path)
    assert len(t.samples("test")) == len(written.records["test"]) and t.skipped_note("test") is None
    assert t.skipped_records("test") == []


def test_missing_answer_names_the_position_in_the_file_not_in_the_split(tmp_path, phantom):
    write_vqa_rad_official(tmp_path, phantom)
    data = json.loads((tmp_path / OFFICIAL).read_text())
    k = first_train_position(data) + 2
    edit_json(tmp_path / OFFICIAL, lambda recs: recs[k].pop("answer"))
    message = load_error("vqa-rad", tmp_path, "train")  # a missing key is a layout error, not a blank answer
    assert message.startswith(f"{tmp_path / OFFICIAL}: record {k} (qid {data[k]['qid']}) lacks answer (it has ")


def test_mevf_blank_answers_show_three_records_and_count_the_rest(tmp_path, phantom, capsys):
    written = write_mevf(tmp_path, phantom)
    recs = written.records["test"]
    assert len(recs) >= 6
    edit_json(tmp_path / "testset.json", lambda rs: [rs[i].update(answer=[None, " ", ""][i % 3]) for i in range(5)])
    shown = ", ".join(f"record {i} (qid {recs[i]['qid']})" for i in range(3)) + ", and 2 more"
    test = loaded_skipping(capsys, "vqa-rad", tmp_path, source="mevf", shown=shown, n=5)
    assert [s.id for s in test] == [str(r["qid"]) for r in recs[5:]]
    t = task("vqa-rad", tmp_path, "mevf")
    assert t.skipped_records() == [f"record {i} (qid {recs[i]['qid']})" for i in range(5)]


def test_slake_skipped_record_counts_chinese_records_in_the_position(tmp_path, phantom, capsys):
    write_slake(tmp_path, phantom)
    data = edit_json(tmp_path / "test.json", lambda recs: recs[4].update(answer=None))
    assert data[4]["q_lang"] == "en" and data[1]["q_lang"] == "zh"  # position 4 in the file, 2 among English
    test = loaded_skipping(capsys, "slake", tmp_path, shown=f"record 4 (qid {data[4]['qid']})")
    assert str(data[4]["qid"]) not in {s.id for s in test}


def test_slake_qid_1622_is_skipped_like_any_blank_answer(tmp_path, phantom, capsys):
    """The real train.json has qid 1622 with a blank answer: no exception in slake.yaml, it is skipped."""
    assert "known_empty_answers" not in tasks().get("slake").source("local").options
    written = write_slake(tmp_path, phantom)
    edit_json(tmp_path / "train.json", lambda recs: recs[0].update(qid=1622, answer=""))
    train = loaded_skipping(capsys, "slake", tmp_path, "train", shown="record 0 (qid 1622)")
    n_english = sum(r["q_lang"] == "en" for r in written.records["train"])
    assert len(train) == n_english - 1 and "1622" not in {s.id for s in train}


def test_skipped_record_still_counts_for_repeated_ids(tmp_path, phantom):
    write_mevf(tmp_path, phantom)
    data = edit_json(tmp_path / "testset.json", lambda recs: recs[1].update(qid=recs[0]["qid"], answer=""))
    assert load_error("vqa-rad", tmp_path) == (
        f"{tmp_path / 'testset.json'}: qid '{data[0]['qid']}' appears twice (records 0 and 1); "
        "expected one record per id")


def test_split_of_blank_answers_only_is_an_error(tmp_path, phantom):
    written = write_mevf(tmp_path, phantom)
    edit_json(tmp_path / "testset.json", lambda recs: [r.update(answer="") for r in recs])
    n = len(written.records["test"])
    assert load_error("vqa-rad", tmp_path) == (
        f"task 'vqa-rad' source 'mevf' split 'test' has no samples in {tmp_path / 'testset.json'} ({n} skipped: "
        "blank reference)")


def test_pathvqa_blank_answer_keeps_the_other_ids(tmp_path, phantom, capsys):
    written = write_pathvqa_pickle(tmp_path, phantom)
    recs = written.records["test"]
    recs[1]["answer"] = ""
    (tmp_path / "qas/test/test_qa.pkl").write_bytes(pickle.dumps(recs))
    test = loaded_skipping(capsys, "pathvqa", tmp_path, shown="record 1 (id test-1)")
    assert [s.id for s in test] == [f"test-{i}" for i in range(len(recs)) if i != 1]


def test_hf_folder_null_answer(tmp_path, phantom, capsys):
    import pyarrow.parquet as pq

    written = write_hf_parquet(tmp_path, phantom, kind="vqa")
    path = tmp_path / "data" / "test-00000-of-00001.parquet"
    table = pq.read_table(path)
    answers = table.column("answer").to_pylist()
    answers[3] = None
    pq.write_table(table.set_column(table.schema.get_field_index("answer"), "answer", [answers]), path)
    test = loaded_skipping(capsys, "vqa-rad", tmp_path, source="hf", shown="row 3")
    assert len(test) == len(written.records["test"]) - 1 and "test-3" not in {s.id for s in test}


def test_hf_blank_caption_names_row_and_id(tmp_path, phantom, capsys):
    from datasets import DatasetDict, load_from_disk

    write_hf_saved(tmp_path / "orig", phantom, kind="caption")
    dd = load_from_disk(str(tmp_path / "orig"))
    captions = list(dd["test"]["caption"])
    captions[0] = " "
    dd["test"] = dd["test"].remove_columns("caption").add_column("caption", captions)
    DatasetDict(dict(dd)).save_to_disk(str(tmp_path / "blank"))
    image_id = list(dd["test"]["image_id"])[0]
    test = loaded_skipping(capsys, "rocov2", tmp_path / "blank", source="hf", shown=f"row 0 (image_id {image_id})")
    assert image_id not in {s.id for s in test}


@pytest.mark.parametrize(("source", "shown"), [("r2gen", "record 1 (id {study})"),
                                               ("r2gen-per-image", "record 1 (id {study}/0), record 1 (id {study}/1)")])
def test_r2gen_blank_report_skips_the_study(tmp_path, phantom, capsys, source, shown):
    written = write_r2gen(tmp_path, phantom)
    assert len(written.records["train"]) == 2
    data = edit_json(tmp_path / "annotation.json", lambda d: d["train"][1].update(report="   "))
    study, kept = data["train"][1]["id"], data["train"][0]["id"]
    n = 1 if source == "r2gen" else len(data["train"][1]["image_path"])
    train = loaded_skipping(capsys, "iu-xray", tmp_path, "train", source=source, shown=shown.format(study=study), n=n)
    assert {s.fields["study_id"] for s in train} == {kept}


def test_imageclef_empty_caption_names_the_csv_line(tmp_path, phantom, capsys):
    written = write_imageclef(tmp_path, phantom, split="test")
    path = tmp_path / "test_captions.csv"
    lines = path.read_text().splitlines()
    image_id = written.records["test"][1]["ID"]
    lines[2] = f"{image_id},"
    path.write_text("\n".join(lines) + "\n")
    test = loaded_skipping(capsys, "rocov2", tmp_path, shown=f"line 3 (ID {image_id})")
    assert [s.id for s in test] == [r["ID"] for r in written.records["test"] if r["ID"] != image_id]


# --- split-deciding fields ---------------------------------------------------------------------------------------

def test_vqa_rad_phrase_type_is_matched_case_insensitively(tmp_path, phantom):
    written = write_vqa_rad_official(tmp_path, phantom)
    n_test, n_train = len(written.records["test"]), len(written.records["train"])

    def shout(recs):
        recs[0]["phrase_type"] = "TEST_FREEFORM"
        recs[1]["phrase_type"] = " Test_Para "
        recs[-1]["phrase_type"] = "FREEFORM"

    edit_json(tmp_path / OFFICIAL, shout)
    t = task("vqa-rad", tmp_path)
    assert (len(t.samples("test")), len(t.samples("train"))) == (n_test, n_train)


@pytest.mark.parametrize(("value", "said"), [(None, "lacks phrase_type"), ("", "has a blank phrase_type"),
                                              ("test-freeform", "has phrase_type 'test-freeform'")])
def test_vqa_rad_record_without_known_phrase_type_is_an_error(tmp_path, phantom, value, said):
    write_vqa_rad_official(tmp_path, phantom)

    def change(recs):
        if value is None:
            recs[5].pop("phrase_type")
        else:
            recs[5]["phrase_type"] = value

    data = edit_json(tmp_path / OFFICIAL, change)
    for split in ("test", "train"):  # whichever split is asked for: the record would be lost from one of them
        message = load_error("vqa-rad", tmp_path, split)
        assert message.startswith(f"{tmp_path / OFFICIAL}: record 5 (qid {data[5]['qid']}) {said}, which decides its")
        assert "test_freeform, test_para" in message and "freeform, para" in message


def test_slake_q_lang_is_matched_case_insensitively(tmp_path, phantom):
    written = write_slake(tmp_path, phantom)
    english = [r["qid"] for r in written.records["test"] if r["q_lang"] == "en"]
    edit_json(tmp_path / "test.json", lambda recs: [r.update(q_lang=f" {r['q_lang'].upper()}") for r in recs])
    assert [s.id for s in task("slake", tmp_path).samples("test")] == [str(q) for q in english]


@pytest.mark.parametrize(("value", "said"), [(None, "lacks q_lang"), ("english", "has q_lang 'english'")])
def test_slake_record_without_known_language_is_an_error(tmp_path, phantom, value, said):
    write_slake(tmp_path, phantom)

    def change(recs):
        if value is None:
            recs[3].pop("q_lang")
        else:
            recs[3]["q_lang"] = value

    data = edit_json(tmp_path / "test.json", change)
    assert load_error("slake", tmp_path).startswith(
        f"{tmp_path / 'test.json'}: record 3 (qid {data[3]['qid']}) {said}, which decides whether it is kept; "
        "expected one of en, zh")


# --- duplicated ids ----------------------------------------------------------------------------------------------

def test_vqa_rad_duplicated_qid_is_an_error_not_a_rename(tmp_path, phantom):
    write_vqa_rad_official(tmp_path, phantom)
    data = edit_json(tmp_path / OFFICIAL, lambda recs: recs[1].update(qid=recs[0]["qid"]))
    assert load_error("vqa-rad", tmp_path) == (
        f"{tmp_path / OFFICIAL}: qid '{data[0]['qid']}' appears twice (records 0 and 1); expected one record per id")


def test_mevf_and_slake_duplicated_qid(tmp_path, phantom):
    write_mevf(tmp_path / "mevf", phantom)
    edit_json(tmp_path / "mevf" / "trainset.json", lambda recs: recs[3].update(qid=recs[1]["qid"]))
    assert "trainset.json: qid '" in load_error("vqa-rad", tmp_path / "mevf", "train")
    write_slake(tmp_path / "slake", phantom)
    data = edit_json(tmp_path / "slake" / "test.json", lambda recs: recs[2].update(qid=recs[0]["qid"]))
    assert load_error("slake", tmp_path / "slake").endswith(
        f"test.json: qid '{data[0]['qid']}' appears twice (records 0 and 2); expected one record per id")


def test_hf_duplicated_id_column(tmp_path, phantom):
    from datasets import DatasetDict, load_from_disk

    write_hf_saved(tmp_path / "orig", phantom, kind="caption")
    dd = load_from_disk(str(tmp_path / "orig"))
    ids = dd["test"]["image_id"]
    dd["test"] = dd["test"].remove_columns("image_id").add_column("image_id", [ids[0]] * len(ids))
    DatasetDict(dict(dd)).save_to_disk(str(tmp_path / "dup"))
    message = load_error("rocov2", tmp_path / "dup", source="hf")
    assert message == (f"{tmp_path / 'dup'} split 'test': image_id '{ids[0]}' appears twice (rows 0 and 1); "
                       "expected one record per id")


@pytest.mark.parametrize(("key", "pattern"), [("qa_file", "qas/{split}/{nosuch}.pkl"), ("image_path", "{image.jpg")])
def test_pathvqa_file_patterns_with_unknown_placeholders_are_one_line(tmp_path, phantom, key, pattern):
    import dataclasses

    from harness.loaders import pathvqa

    write_pathvqa_pickle(tmp_path, phantom)
    source = next(s for s in tasks().get("pathvqa").sources if s.format == "pathvqa-pickle")
    with pytest.raises(UserError) as err:
        pathvqa.load(dataclasses.replace(source, options={key: pattern}), "test", tmp_path, "vqa")
    assert f"options.{key} {pattern!r} may only use the placeholders {{split}}" in str(err.value)
