"""Every loader reads a tiny copy of its real format (written from phantom cases) through the shipped task YAML."""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import pytest
from format_writers import (
    cases,
    fixture_cuis,
    write_hf_parquet,
    write_hf_saved,
    write_imageclef,
    write_mevf,
    write_pathvqa_pickle,
    write_r2gen,
    write_slake,
    write_vqa_rad_official,
)
from PIL import Image

from harness.errors import UserError
from harness.plugin_manager import tasks
from harness.task import Task


@pytest.fixture(scope="module")
def phantom():
    return cases(4, seed=7)


def task(task_id: str, data_dir: Path | None, source: str | None = None) -> Task:
    return Task(tasks().get(task_id), source=source, data_dir=data_dir)


def assert_unique_ids(samples) -> None:
    ids = [s.id for s in samples]
    assert len(ids) == len(set(ids))


def test_vqa_rad_official_layout(tmp_path, phantom):
    written = write_vqa_rad_official(tmp_path, phantom)
    t = task("vqa-rad", tmp_path)
    assert t.source.name == "official"  # picked by its json file
    for split in ("test", "train"):
        samples, recs = t.samples(split), written.records[split]
        assert [s.id for s in samples] == [str(r["qid"]) for r in recs]
        for sample, rec in zip(samples, recs):
            assert sample.question == rec["question"]
            assert sample.answer == str(rec["answer"])  # numeric answers become their text
            assert sample.answer_type == rec["answer_type"].strip()  # "CLOSED " -> "CLOSED"
            assert sample.fields["question_type"] == rec["question_type"]  # "X, PRES" kept as given
            assert sample.fields["organ"] == rec["image_organ"]
            assert sample.fields["phrase_type"].startswith("test_") == (split == "test")
            rel = f"VQA_RAD Image Folder/{rec['image_name']}"
            assert sample.images[0].name == rec["image_name"]
            assert sample.images[0].read_bytes() == written.images[rel]
    all_recs = written.records["test"] + written.records["train"]
    assert any(isinstance(r["answer"], int) for r in all_recs)  # the quirks were really exercised
    assert any(r["answer_type"].endswith(" ") for r in all_recs)
    test = t.samples("test")
    assert test[0].images[0].open().size == phantom[0].views[0].size


def test_vqa_rad_mevf_layout(tmp_path, phantom):
    written = write_mevf(tmp_path, phantom)
    t = task("vqa-rad", tmp_path)
    assert t.source.name == "mevf"
    for split in ("test", "train"):
        samples = t.samples(split)
        recs = written.records[split]
        assert [s.id for s in samples] == [str(r["qid"]) for r in recs]
        assert [s.answer_type for s in samples] == [r["answer_type"] for r in recs]
        assert [s.fields["question_type"] for s in samples] == [r["question_type"] for r in recs]
        assert [s.images[0].read_bytes() for s in samples] == [written.images[f"images/{r['image_name']}"]
                                                              for r in recs]


@pytest.mark.parametrize("validation_name", ["validate.json", "validation.json"])
def test_slake_layout_keeps_english(tmp_path, phantom, validation_name):
    written = write_slake(tmp_path, phantom, validation_name=validation_name)
    t = task("slake", tmp_path)
    for split in ("train", "validation", "test"):
        english = [r for r in written.records[split] if r["q_lang"] == "en"]
        samples = t.samples(split)
        assert [s.id for s in samples] == [str(r["qid"]) for r in english]
        assert all(not s.question.startswith("[zh]") for s in samples)
        for s, r in zip(samples, english):
            assert (s.answer, s.answer_type) == (r["answer"], r["answer_type"])
            assert s.fields["modality"] == r["modality"]
            assert s.fields["location"] == r["location"]
            assert s.fields["content_type"] == r["content_type"]
            assert s.images[0].name == r["img_name"]
            assert s.images[0].read_bytes() == written.images[f"imgs/{r['img_name']}"]


def test_pathvqa_original_pickles(tmp_path, phantom):
    written = write_pathvqa_pickle(tmp_path, phantom)
    t = task("pathvqa", tmp_path)
    assert t.source.name == "original"
    for split, folder in (("test", "test"), ("validation", "val"), ("train", "train")):
        samples = t.samples(split)
        recs = written.records[folder]
        assert [s.id for s in samples] == [f"{folder}-{i}" for i in range(len(recs))]
        for s, r in zip(samples, recs):
            assert (s.question, s.answer) == (r["question"], r["answer"])
            assert s.answer_type == ("CLOSED" if r["answer"].lower() in ("yes", "no") else "OPEN")
            rel = f"images/{folder}/{r['image']}.jpg"
            assert s.images[0].name == rel
            assert s.images[0].read_bytes() == written.images[rel]


def test_pathvqa_pickle_cannot_run_code(tmp_path, phantom):
    write_pathvqa_pickle(tmp_path, phantom)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "qas/test/test_qa.pkl").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(UserError, match=r"test_qa\.pkl: not a PathVQA QA pickle \(refusing to load"):
        task("pathvqa", tmp_path).samples("test")
    assert not marker.exists()


@pytest.mark.parametrize("per_image", [False, True])
def test_r2gen_layout(tmp_path, phantom, per_image):
    written = write_r2gen(tmp_path, phantom)
    t = task("iu-xray", tmp_path, source="r2gen-per-image" if per_image else "r2gen")
    for split, key in (("test", "test"), ("validation", "val"), ("train", "train")):
        samples = t.samples(split)
        assert_unique_ids(samples)
        studies = written.records[key]
        if not per_image:
            assert [s.id for s in samples] == [r["id"] for r in studies]
            assert all(s.fields["views"] == 2 and len(s.images) == 2 for s in samples)
        else:
            assert [s.id for s in samples] == [f"{r['id']}/{k}" for r in studies for k in (0, 1)]
            assert [s.fields["view"] for s in samples] == [0, 1] * len(studies)
        for s in samples:
            study = next(r for r in studies if r["id"] == s.fields["study_id"])
            assert s.answer == study["report"] and s.question is None
            assert [ref.read_bytes() for ref in s.images] == [written.images[f"images/{ref.name}"]
                                                              for ref in s.images]
    frontal = t.samples("test")[0].images[0].open()
    assert frontal.size == phantom[2].views[0].size  # case 2 is the first test study (cases go train/val/test)


def test_imageclef_csv_layout(tmp_path, phantom):
    written = write_imageclef(tmp_path, phantom, split="test")
    write_imageclef(tmp_path, phantom[:2], split="valid")
    t = task("rocov2", tmp_path)
    assert t.source.name == "imageclef"
    samples = t.samples("test")
    assert [s.id for s in samples] == [r["ID"] for r in written.records["test"]]
    for s, case, rec in zip(samples, phantom, written.records["test"]):
        assert s.answer == case.caption
        assert s.fields["cuis"] == fixture_cuis(case)
        assert s.images[0].read_bytes() == written.images[f"test/{rec['ID']}.jpg"]
    assert len(t.samples("validation")) == 2  # validation -> the release's "valid" files


def test_hf_parquet_folder_vqa(tmp_path, phantom):
    written = write_hf_parquet(tmp_path, phantom, kind="vqa")
    t = task("vqa-rad", tmp_path)
    assert t.source.name == "hf"  # no official/MEVF files, parquet files present
    for split in ("test", "train"):
        rows = written.records[split]
        samples = t.samples(split)
        assert [s.id for s in samples] == [f"{split}-{i}" for i in range(len(rows))]
        for s, row in zip(samples, rows):
            assert (s.question, s.answer) == (row["question"], row["answer"])
            assert s.answer_type == ("CLOSED" if row["answer"].strip().lower() in ("yes", "no") else "OPEN")
            assert s.images[0].read_bytes() == row["image"]  # raw stored bytes, not a re-encoded image
    img = Image.open(io.BytesIO(t.samples("test")[0].images[0].read_bytes()))
    assert img.size == phantom[0].views[0].size


def test_hf_saved_to_disk_caption(tmp_path, phantom):
    written = write_hf_saved(tmp_path, phantom, kind="caption")
    t = task("rocov2", tmp_path, source="hf")
    for split in ("test", "validation"):
        rows = written.records[split]
        samples = t.samples(split)
        assert [s.id for s in samples] == [r["image_id"] for r in rows]
        assert [s.answer for s in samples] == [r["caption"] for r in rows]
        assert [s.fields["cuis"] for s in samples] == [r["cui"] for r in rows]
        assert [s.images[0].read_bytes() for s in samples] == [r["image"] for r in rows]
        assert all(s.question is None for s in samples)


def test_hf_local_folder_unknown_split(tmp_path, phantom):
    write_hf_parquet(tmp_path, phantom, kind="vqa")
    with pytest.raises(UserError, match=r"split 'validation'.*Unknown split") as err:
        task("vqa-rad", tmp_path, source="hf").samples("validation")
    assert "\n" not in str(err.value)
    for name in ("test", "train"):  # the splits found, each with its files
        assert f"split {name} (data/{name}-00000-of-00001.parquet)" in str(err.value)


def test_hf_folder_without_data_files(tmp_path):
    with pytest.raises(UserError, match=r"not a Hugging Face dataset folder: expected parquet files"):
        task("vqa-rad", tmp_path, source="hf").samples("test")


def test_hub_id_not_cached_offline_is_one_line():
    with pytest.raises(UserError, match=r"cannot load hub dataset 'flaviagiammarino/vqa-rad'") as err:
        task("vqa-rad", None, source="hf").samples("test")
    assert "\n" not in str(err.value) and "--data-dir" in str(err.value)


def test_missing_images_do_not_fail_loading(tmp_path, phantom):
    write_vqa_rad_official(tmp_path, phantom)
    shutil.rmtree(tmp_path / "VQA_RAD Image Folder")
    samples = task("vqa-rad", tmp_path).samples("test")
    assert samples
    with pytest.raises(FileNotFoundError):
        samples[0].images[0].open()


@pytest.mark.parametrize(
    ("task_id", "source", "expected"),
    [
        ("vqa-rad", "official", "VQA_RAD Dataset Public.json"),
        ("vqa-rad", "mevf", "testset.json"),
        ("slake", "local", "test.json"),
        ("pathvqa", "original", "qas/test/test_qa.pkl"),
        ("iu-xray", "r2gen", "annotation.json"),
        ("rocov2", "imageclef", "test_captions.csv"),
    ],
)
def test_missing_files_name_what_was_expected(tmp_path, task_id, source, expected):
    with pytest.raises(UserError, match="pass --data-dir") as err:
        task(task_id, None, source=source).samples("test")
    assert expected in str(err.value)
    with pytest.raises(UserError) as err:
        task(task_id, tmp_path, source=source).samples("test")
    assert f"--data-dir {tmp_path} lacks {expected}" in str(err.value)


def test_slake_missing_validation_names_both_file_names(tmp_path, phantom):
    write_slake(tmp_path, phantom)
    (tmp_path / "validate.json").unlink()
    with pytest.raises(UserError, match=r"lacks validate\.json or validation\.json"):
        task("slake", tmp_path).samples("validation")


def test_slake_validation_aliases_are_one_run(tmp_path, phantom):
    """--split validate / val / validation read the same file: one run directory and one recorded split."""
    from harness import runner

    write_slake(tmp_path / "data", phantom)
    seen = set()
    for alias in ("validation", "validate", "val"):
        spec = runner.RunSpec(model="constant", task="slake", split=alias, data_dir=tmp_path / "data",
                              output=tmp_path / "runs", progress=False)
        _, _, manifest, out_dir, _ = runner.prepare(spec)
        seen.add((manifest["task"]["split"], out_dir.name))
    assert len(seen) == 1
    assert next(iter(seen))[0] == "validation"


def test_split_names_a_yaml_uses_are_kept_and_release_names_map_to_their_key(tmp_path):
    from dataclasses import replace

    slake = tasks().get("slake")
    custom = replace(slake, sources=[replace(slake.sources[0], options={"files": {"val": "my_val.json"}},
                                             sizes={"dev": 3})])
    t = Task(custom, source="local")
    assert (t.canonical_split("val"), t.canonical_split("dev"), t.canonical_split("validate")) == (
        "val", "dev", "validation")  # a custom file for "val", a size for "dev": the YAML's own names stay
    iu = task("iu-xray", None, source="r2gen")
    assert (iu.canonical_split("val"), iu.canonical_split("validation"), iu.canonical_split(None)) == (
        "validation", "validation", "test")  # the release name of `splits: {validation: val}` is its key


def test_data_dir_matching_no_format_lists_every_expectation(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(UserError) as err:
        task("vqa-rad", tmp_path)
    message = str(err.value)
    assert "official: VQA_RAD Dataset Public.json" in message and "mevf: testset.json" in message


def test_bad_answer_type_names_file_and_record(tmp_path, phantom):
    written = write_mevf(tmp_path, phantom)
    recs = written.records["test"]
    recs[0]["answer_type"] = "MAYBE"
    (tmp_path / "testset.json").write_text(json.dumps(recs))
    with pytest.raises(UserError, match=rf"testset\.json: record 0 \(qid {recs[0]['qid']}\) has answer_type 'MAYBE'"):
        task("vqa-rad", tmp_path).samples("test")


def test_r2gen_repeated_study_without_per_image_is_explained(tmp_path, phantom):
    written = write_r2gen(tmp_path, phantom)
    test = written.records["test"]
    test.append(dict(test[0]))
    (tmp_path / "annotation.json").write_text(json.dumps(written.records))
    with pytest.raises(UserError, match=r"appears twice .*per_image: true"):
        task("iu-xray", tmp_path).samples("test")
