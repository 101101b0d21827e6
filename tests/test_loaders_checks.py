"""Bad records in real-format files are refused with one line naming file, record (position in the file and id)
and field, instead of silently shrinking a split, renaming an id or scoring against an empty reference."""

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

from harness.errors import UserError
from harness.plugin_manager import tasks
from harness.task import Task

OFFICIAL = "VQA_RAD Dataset Public.json"


@pytest.fixture(scope="module")
def phantom():
    return cases(4, seed=7)


def task(task_id: str, data_dir: Path, source: str | None = None) -> Task:
    return Task(tasks().get(task_id), source=source, data_dir=data_dir)


def load_error(task_id: str, data_dir: Path, split: str = "test", source: str | None = None) -> str:
    with pytest.raises(UserError) as err:
        task(task_id, data_dir, source).samples(split)
    message = str(err.value)
    assert "\n" not in message
    return message


def edit_json(path: Path, change) -> Any:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return data


def first_train_position(records: list[dict[str, Any]]) -> int:
    return next(i for i, r in enumerate(records) if not str(r["phrase_type"]).startswith("test_"))


# --- reference answers -------------------------------------------------------------------------------------------

BAD_ANSWERS = [("null", None, "answer is null"), ("empty", "", "answer is empty"), ("blank", "  \t", "answer is empty")]


@pytest.mark.parametrize(("case", "value", "said"), BAD_ANSWERS, ids=[b[0] for b in BAD_ANSWERS])
def test_vqa_rad_official_bad_answer_names_file_record_and_qid(tmp_path, phantom, case, value, said):
    written = write_vqa_rad_official(tmp_path, phantom)
    k = len(written.records["test"]) + 1  # a train record: its file position differs from its index in the split
    data = edit_json(tmp_path / OFFICIAL, lambda recs: recs[k].update(answer=value))
    assert load_error("vqa-rad", tmp_path, "train") == (
        f"{tmp_path / OFFICIAL}: record {k} (qid {data[k]['qid']}): {said}; expected the reference text (non-empty)"
    )
    assert task("vqa-rad", tmp_path).samples("test")  # the other split has no bad record


def test_missing_answer_names_the_position_in_the_file_not_in_the_split(tmp_path, phantom):
    write_vqa_rad_official(tmp_path, phantom)
    data = json.loads((tmp_path / OFFICIAL).read_text())
    k = first_train_position(data) + 2
    edit_json(tmp_path / OFFICIAL, lambda recs: recs[k].pop("answer"))
    message = load_error("vqa-rad", tmp_path, "train")
    assert message.startswith(f"{tmp_path / OFFICIAL}: record {k} (qid {data[k]['qid']}) lacks answer (it has ")


@pytest.mark.parametrize("value", [None, " "])
def test_mevf_bad_answer(tmp_path, phantom, value):
    written = write_mevf(tmp_path, phantom)
    qid = written.records["test"][2]["qid"]
    edit_json(tmp_path / "testset.json", lambda recs: recs[2].update(answer=value))
    assert load_error("vqa-rad", tmp_path).startswith(f"{tmp_path / 'testset.json'}: record 2 (qid {qid}): answer is")


def test_slake_bad_answer_counts_chinese_records_in_the_position(tmp_path, phantom):
    write_slake(tmp_path, phantom)
    data = edit_json(tmp_path / "test.json", lambda recs: recs[4].update(answer=None))
    assert data[4]["q_lang"] == "en" and data[1]["q_lang"] == "zh"  # position 4 in the file, 2 among English
    assert load_error("slake", tmp_path).startswith(
        f"{tmp_path / 'test.json'}: record 4 (qid {data[4]['qid']}): answer is null")


def test_slake_known_blank_answer_is_kept_only_where_the_yaml_lists_it(tmp_path, phantom):
    """The real train.json has qid 1622 with a blank answer (slake.yaml known_empty_answers): kept as released.
    The same qid elsewhere, or any other blank answer, is still an error."""
    write_slake(tmp_path, phantom)
    edit_json(tmp_path / "train.json", lambda recs: recs[0].update(qid=1622, answer=""))
    train = task("slake", tmp_path).samples("train")
    assert train[0].id == "1622" and train[0].answer == ""
    edit_json(tmp_path / "test.json", lambda recs: recs[0].update(qid=1622, answer=""))
    assert "record 0 (qid 1622): answer is empty" in load_error("slake", tmp_path)
    edit_json(tmp_path / "train.json", lambda recs: recs[2].update(answer=" "))
    assert "train.json: record 2 (qid " in load_error("slake", tmp_path, "train")


def test_pathvqa_blank_answer(tmp_path, phantom):
    written = write_pathvqa_pickle(tmp_path, phantom)
    recs = written.records["test"]
    recs[1]["answer"] = ""
    (tmp_path / "qas/test/test_qa.pkl").write_bytes(pickle.dumps(recs))
    path = tmp_path / "qas/test/test_qa.pkl"
    assert load_error("pathvqa", tmp_path) == (
        f"{path}: record 1 (id test-1): answer is empty; expected the reference text (non-empty)")


def test_hf_folder_null_answer(tmp_path, phantom):
    import pyarrow.parquet as pq

    write_hf_parquet(tmp_path, phantom, kind="vqa")
    path = tmp_path / "data" / "test-00000-of-00001.parquet"
    table = pq.read_table(path)
    answers = table.column("answer").to_pylist()
    answers[3] = None
    pq.write_table(table.set_column(table.schema.get_field_index("answer"), "answer", [answers]), path)
    message = load_error("vqa-rad", tmp_path, source="hf")
    assert message == f"{tmp_path} split 'test' row 3: answer is null; expected the reference text (non-empty)"


def test_r2gen_blank_report(tmp_path, phantom):
    write_r2gen(tmp_path, phantom)
    data = edit_json(tmp_path / "annotation.json", lambda d: d["test"][0].update(report="   "))
    study = data["test"][0]["id"]
    assert load_error("iu-xray", tmp_path) == (
        f"{tmp_path / 'annotation.json'}: split 'test' record 0 (id {study}): report is empty; "
        "expected the reference text (non-empty)")


def test_imageclef_empty_caption_names_the_csv_line(tmp_path, phantom):
    written = write_imageclef(tmp_path, phantom, split="test")
    path = tmp_path / "test_captions.csv"
    lines = path.read_text().splitlines()
    image_id = written.records["test"][1]["ID"]
    lines[2] = f"{image_id},"
    path.write_text("\n".join(lines) + "\n")
    assert load_error("rocov2", tmp_path).startswith(f"{path}:3: ID '{image_id}' has an empty Caption")


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
