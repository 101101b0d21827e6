"""Expected split sizes in the task YAML: a loaded split of another size gets one `warning:` line on stderr (not
an error) and a note on the Task; the shipped tasks declare the documented sizes (of the samples that load:
records skipped for a blank reference are not counted)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from format_writers import cases, write_r2gen, write_vqa_rad_official

from harness.plugin_manager import tasks
from harness.task import Task
from harness.task_config import TaskConfig

OFFICIAL = "VQA_RAD Dataset Public.json"


@pytest.fixture(scope="module")
def phantom():
    return cases(4, seed=7)


def with_sizes(task_id: str, source: str, sizes: dict[str, int]) -> TaskConfig:
    """A copy of a shipped task whose source `source` expects `sizes` (the registry's object is left alone)."""
    config = tasks().get(task_id)
    sources = [dataclasses.replace(s, sizes=sizes) if s.name == source else s for s in config.sources]
    return dataclasses.replace(config, sources=sources)


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def test_matching_size_is_quiet(tmp_path, phantom, capsys):
    written = write_vqa_rad_official(tmp_path, phantom)
    n_test = len(written.records["test"])
    t = Task(with_sizes("vqa-rad", "official", {"test": n_test}), data_dir=tmp_path)
    assert len(t.samples("test")) == n_test
    assert t.size_note("test") is None
    assert t.size_note("train") is None  # no expected size given for train
    assert warnings_in(capsys.readouterr().err) == []


def test_shrunken_split_warns_once_and_keeps_the_note(tmp_path, phantom, capsys):
    written = write_vqa_rad_official(tmp_path, phantom)
    n_test = len(written.records["test"])
    records = json.loads((tmp_path / OFFICIAL).read_text())
    (tmp_path / OFFICIAL).write_text(json.dumps(records[1:]))  # a user's copy with one test pair removed
    t = Task(with_sizes("vqa-rad", "official", {"test": n_test, "train": 999}), data_dir=tmp_path)
    assert len(t.samples("test")) == n_test - 1  # loaded anyway: a modified copy may be evaluated on purpose
    t.samples("test")
    note = t.size_note("test")
    assert note == (f"task 'vqa-rad' source 'official' split 'test': expected {n_test} samples "
                    f"(sizes in vqa-rad.yaml), found {n_test - 1}")
    assert warnings_in(capsys.readouterr().err) == [f"warning: {note}"]
    assert "expected 999 samples" in t.size_note("train")  # size_note loads a split not yet loaded
    assert len(warnings_in(capsys.readouterr().err)) == 1


def test_sizes_keyed_by_task_split_match_the_release_split_name(tmp_path, phantom, capsys):
    written = write_r2gen(tmp_path, phantom)
    n_val = len(written.records["val"])
    t = Task(with_sizes("iu-xray", "r2gen", {"validation": n_val + 1}), data_dir=tmp_path)
    # the release name "val" is the task's "validation" (splits: {validation: val}): one split, one warning
    assert t.size_note("val") == (f"task 'iu-xray' source 'r2gen' split 'validation': expected {n_val + 1} "
                                  f"samples (sizes in iu-xray.yaml), found {n_val}")
    assert t.size_note("validation") == t.size_note("val")
    assert len(warnings_in(capsys.readouterr().err)) == 1


SHIPPED = {
    ("vqa-rad", "official"): {"test": 451, "train": 1797},
    ("vqa-rad", "mevf"): {"test": 451, "train": 3064},
    ("vqa-rad", "hf"): {"test": 451, "train": 1793},
    ("slake", "local"): {"train": 4918, "validation": 1053, "test": 1061},  # 4,919 released, 1 blank answer
    ("pathvqa", "original"): {"test": 6761},
    ("pathvqa", "hf"): {"train": 19654, "validation": 6259, "test": 6719},
    ("iu-xray", "r2gen"): {"train": 2069, "validation": 296, "test": 590},
    ("iu-xray", "r2gen-per-image"): {"train": 4138, "validation": 592, "test": 1180},
    ("rocov2", "hf"): {"train": 59962, "validation": 9904, "test": 9927},
}


@pytest.mark.parametrize(("task_id", "source"), sorted(SHIPPED))
def test_shipped_tasks_declare_the_documented_sizes(task_id, source):
    assert tasks().get(task_id).source(source).sizes == SHIPPED[(task_id, source)]


def test_shipped_toy_copies_get_the_warning(tmp_path, phantom, capsys):
    """Through the shipped vqa-rad.yaml: a tiny copy is not the 451-pair release, and the user is told so."""
    write_vqa_rad_official(tmp_path, phantom)
    t = Task(tasks().get("vqa-rad"), data_dir=tmp_path)
    found = len(t.samples("test"))
    assert warnings_in(capsys.readouterr().err) == [
        f"warning: task 'vqa-rad' source 'official' split 'test': expected 451 samples (sizes in vqa-rad.yaml), "
        f"found {found}"
    ]


def test_sizes_count_the_samples_left_after_skipping_blank_references(tmp_path, phantom, capsys):
    """A skipped record is not loaded: the expected size is compared with what loaded, and the two warnings
    (skip first, then size) are separate lines with separate notes."""
    written = write_vqa_rad_official(tmp_path, phantom)
    n_test = len(written.records["test"])
    records = json.loads((tmp_path / OFFICIAL).read_text())
    records[0]["answer"] = " "
    (tmp_path / OFFICIAL).write_text(json.dumps(records))
    quiet = Task(with_sizes("vqa-rad", "official", {"test": n_test - 1}), data_dir=tmp_path)
    assert quiet.size_note() is None and quiet.skipped_note() is not None
    assert len(warnings_in(capsys.readouterr().err)) == 1
    loud = Task(with_sizes("vqa-rad", "official", {"test": n_test}), data_dir=tmp_path)
    assert loud.size_note().endswith(f"expected {n_test} samples (sizes in vqa-rad.yaml), found {n_test - 1}")
    assert warnings_in(capsys.readouterr().err) == [f"warning: {loud.skipped_note()}", f"warning: {loud.size_note()}"]


def test_size_note_path_is_the_yaml_file_name(tmp_path, phantom):
    write_vqa_rad_official(tmp_path, phantom)
    config = with_sizes("vqa-rad", "official", {"test": 1})
    config = dataclasses.replace(config, path=Path("/somewhere/else/my-vqa-rad.yaml"))
    assert "(sizes in my-vqa-rad.yaml)" in Task(config, data_dir=tmp_path).size_note()
