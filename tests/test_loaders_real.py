"""The real releases in ../shared/data load through the shipped task YAMLs with their published counts."""

from __future__ import annotations

from collections import Counter

import pytest

from harness.plugin_manager import tasks
from harness.task import Task


def real_task(task_id: str, data_dir, source: str | None = None) -> Task:
    return Task(tasks().get(task_id), source=source, data_dir=data_dir)


@pytest.fixture
def vqa_rad(shared_data):
    t = real_task("vqa-rad", shared_data / "vqa-rad")
    return t, t.samples("test"), t.samples("train")


def test_vqa_rad_official_test_split(vqa_rad):
    t, test, train = vqa_rad
    assert t.source.name == "official"
    assert len(test) == 451
    assert Counter(s.answer_type for s in test) == {"OPEN": 179, "CLOSED": 272}
    assert len({s.images[0].name for s in test}) == 203
    assert len(train) == 1797
    assert len({s.id for s in test} | {s.id for s in train}) == 451 + 1797
    assert {s.fields["phrase_type"] for s in test} == {"test_freeform", "test_para"}
    assert {s.fields["organ"] for s in test} == {"HEAD", "CHEST", "ABD"}
    assert t.size_note("test") is None and t.size_note("train") is None  # vqa-rad.yaml's sizes match the release
    assert t.skipped_note("test") is None and t.skipped_note("train") is None  # no blank answer in the release


def test_vqa_rad_quirks_survive_loading(vqa_rad):
    _, test, train = vqa_rad
    everything = test + train
    # answers stored as JSON numbers arrive as text; "CLOSED " is CLOSED; two-type question_types are kept
    assert all(isinstance(s.answer, str) and s.answer == s.answer.strip() for s in everything)
    assert any(s.answer.isdigit() for s in everything)
    assert {s.answer_type for s in everything} == {"OPEN", "CLOSED"}
    assert "POS, PRES" in {s.fields["question_type"] for s in everything}
    assert "superficial to the patient's skin" in {s.answer for s in everything}  # stray leading space cut


def test_vqa_rad_images_are_real_files(vqa_rad):
    _, test, _ = vqa_rad
    for sample in test[:5]:
        img = sample.images[0].open()
        assert img.mode == "RGB" and min(img.size) > 100


def test_slake_english_counts(shared_data, capsys):
    t = real_task("slake", shared_data / "slake")
    assert t.source.name == "local"
    counts = {split: len(t.samples(split)) for split in ("train", "validation", "test")}
    # 4,919 English train questions in the release; qid 1622 has a blank answer and is skipped with one warning
    assert counts == {"train": 4918, "validation": 1053, "test": 1061}
    assert all(t.size_note(split) is None for split in counts)  # slake.yaml expects what loads: no size warning
    note = ("task 'slake' source 'local' split 'train': 1 sample with a blank reference skipped "
            "(record 1622 (qid 1622)); it is not evaluated")
    assert t.skipped_note("train") == note and t.skipped_records("train") == ["record 1622 (qid 1622)"]
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {note}"]
    assert t.skipped_note("validation") is None and t.skipped_note("test") is None
    assert all(s.answer for split in counts for s in t.samples(split))
    assert "1622" not in {s.id for s in t.samples("train")}
    test = t.samples("test")
    assert Counter(s.answer_type for s in test) == {"OPEN": 645, "CLOSED": 416}
    assert len({s.images[0].name for s in test}) == 96
    closed_answers = {s.answer.lower() for s in test if s.answer_type == "CLOSED"}
    assert closed_answers - {"yes", "no"}  # CLOSED is not only yes/no: the rule comes from answer_type
    assert {s.fields["modality"] for s in test} == {"CT", "MRI", "X-Ray"}
    # no images in shared/: loading works, the image fails only when opened
    with pytest.raises(FileNotFoundError):
        test[0].images[0].open()


@pytest.mark.parametrize(("source", "factor"), [("r2gen", 1), ("r2gen-per-image", 2)])
def test_iu_xray_r2gen_counts(shared_data, source, factor):
    t = real_task("iu-xray", shared_data / "iu-xray", source=source)
    counts = {split: len(t.samples(split)) for split in ("train", "validation", "test")}
    assert counts == {"train": 2069 * factor, "validation": 296 * factor, "test": 590 * factor}
    assert all(t.size_note(split) is None and t.skipped_note(split) is None for split in counts)
    test = t.samples("test")
    assert len({s.id for s in test}) == len(test)
    assert all(len(s.images) == 3 - factor for s in test)
    assert all(s.answer for s in test)
    if factor == 2:
        assert test[0].id == f"{test[0].fields['study_id']}/0" and test[1].id.endswith("/1")
    assert t.fingerprint().startswith("v2-sha256:")  # missing images are hashed as missing, not an error


def test_iu_xray_picks_study_level_source_by_default(shared_data):
    assert real_task("iu-xray", shared_data / "iu-xray").source.name == "r2gen"
