"""ROCOv2 ImageCLEF CSV copies through the shipped rocov2.yaml: a malformed row is refused at its physical line
instead of silently changing references, both documented image layouts load, a sample without an image names the
paths tried, missing concepts give one warning per split, and the release's split sizes are declared."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from format_writers import cases, fixture_cuis, write_imageclef

from harness.errors import UserError
from harness.image_decoding import open_images
from harness.plugin_manager import tasks
from harness.task import Task


@pytest.fixture(scope="module")
def phantom():
    return cases(4, seed=7)


@pytest.fixture
def copy(tmp_path, phantom):
    """A four-image test split: (data dir, its caption rows as written)."""
    written = write_imageclef(tmp_path, phantom, split="test")
    return tmp_path, written.records["test"]


def task(data_dir: Path, **options: object) -> Task:
    config = tasks().get("rocov2")
    if options:
        sources = [dataclasses.replace(s, options={**s.options, **options}) if s.name == "imageclef" else s
                   for s in config.sources]
        config = dataclasses.replace(config, sources=sources)
    return Task(config, source="imageclef", data_dir=data_dir)


def set_lines(path: Path, change) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    change(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def load_error(data_dir: Path, **options: object) -> str:
    with pytest.raises(UserError) as err:
        task(data_dir, **options).samples("test")
    message = str(err.value)
    assert "\n" not in message
    return message


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


# --- malformed CSV rows are refused at the physical line where the record starts ----------------------------------

def test_row_with_an_extra_field_is_refused(copy):
    root, rows = copy
    set_lines(root / "test_captions.csv", lambda lines: lines.__setitem__(2, f'{rows[1]["ID"]},extra,"A caption"'))
    message = load_error(root)
    assert message.startswith(f"{root / 'test_captions.csv'}:3: 3 fields, expected 2 (ID,Caption)")


def test_row_missing_its_caption_column_is_refused_not_skipped(copy):
    root, rows = copy
    set_lines(root / "test_captions.csv", lambda lines: lines.__setitem__(slice(2, 3), [rows[1]["ID"], "#Axial CT"]))
    message = load_error(root)
    assert message.startswith(f"{root / 'test_captions.csv'}:3: 1 field, expected 2 (ID,Caption)")


@pytest.mark.parametrize(("last", "said"), [
    ("Sagittal T2 image.", "unexpected end of data"),  # no other quote: the caption runs to the end of the file
    ('"Sagittal T2, fat saturated."', "',' expected after '\"'"),  # it closes at the next record's opening quote
])
def test_unclosed_quote_is_refused_at_the_line_it_opens(copy, last, said):
    root, rows = copy

    def change(lines):
        lines[2] = f'{rows[1]["ID"]},"Axial CT of the chest'
        lines[3] = f"{rows[2]['ID']},Coronal MRI of the knee."
        lines[4] = f"{rows[3]['ID']},{last}"

    set_lines(root / "test_captions.csv", change)
    message = load_error(root)
    assert message.startswith(f"{root / 'test_captions.csv'}:3: malformed CSV record") and said in message


def test_unclosed_quote_that_merges_two_records_is_refused(copy):
    root, rows = copy

    def change(lines):
        lines[2] = f'{rows[1]["ID"]},"Axial CT of the chest'
        lines[3] = f'{rows[2]["ID"]},Coronal MRI of the knee"'

    set_lines(root / "test_captions.csv", change)
    message = load_error(root)
    assert message.startswith(f"{root / 'test_captions.csv'}:3: the Caption of {rows[1]['ID']} runs over a line")
    assert "unbalanced double quote merged two records" in message


def test_lines_are_physical_after_a_multi_line_caption(copy, capsys):
    root, rows = copy
    set_lines(root / "test_captions.csv", lambda lines: lines.__setitem__(
        1, f'{rows[0]["ID"]},"Axial CT.\nArrow: the lesion.\n(Courtesy of the authors.)"'))
    set_lines(root / "test_captions.csv", lambda lines: lines.__setitem__(5, f"{rows[2]['ID']},"))
    t = task(root)
    assert [s.id for s in t.samples("test")] == [rows[0]["ID"], rows[1]["ID"], rows[3]["ID"]]
    assert t.samples("test")[0].answer == "Axial CT.\nArrow: the lesion.\n(Courtesy of the authors.)"
    assert f"line 6 (ID {rows[2]['ID']})" in t.skipped_note("test")  # the third row starts on line 6, not 4
    set_lines(root / "test_captions.csv", lambda lines: lines.__setitem__(5, f"{rows[2]['ID']}x,Caption."))
    assert load_error(root).startswith(f"{root / 'test_captions.csv'}:6: ID '{rows[2]['ID']}x' does not look like")


@pytest.mark.parametrize(("bad_id", "written"), [('#"Axial CT of the chest', '"#""Axial CT of the chest"'),
                                                ("image_0001", "image_0001"),
                                                ("../ROCOv2_2023_test_000002", "../ROCOv2_2023_test_000002")])
def test_id_that_is_not_a_rocov2_image_id_is_refused(copy, bad_id, written):
    root, _ = copy
    set_lines(root / "test_captions.csv", lambda lines: lines.__setitem__(2, f"{written},A caption."))
    message = load_error(root)
    assert message.startswith(f"{root / 'test_captions.csv'}:3: ID {bad_id!r} does not look like a ROCOv2 image id")
    assert "ROCOv2_2023_train_000001" in message


def test_id_pattern_option_accepts_other_ids(copy):
    root, rows = copy
    set_lines(root / "test_captions.csv", lambda lines: lines.__setitem__(2, "CLEF25_test_1,A caption."))
    assert "ID 'CLEF25_test_1' does not look like a ROCOv2 image id" in load_error(root)
    ids = [s.id for s in task(root, id_pattern=r"CLEF25_test_\d+|ROCOv2_.*").samples("test")]
    assert ids == [rows[0]["ID"], "CLEF25_test_1", rows[2]["ID"], rows[3]["ID"]]


# --- image layouts --------------------------------------------------------------------------------------------------

def test_images_folder_layout_loads_and_the_split_folder_wins(tmp_path, phantom):
    written = write_imageclef(tmp_path, phantom, split="test")
    ids = [r["ID"] for r in written.records["test"]]
    (tmp_path / "test").rename(tmp_path / "images")  # ImageCLEF's images/<ID>.jpg
    (tmp_path / "test").mkdir()
    shutil.copy(tmp_path / "images" / f"{ids[1]}.jpg", tmp_path / "test" / f"{ids[0]}.jpg")
    samples = task(tmp_path).samples("test")
    assert [s.images[0].name for s in samples] == [f"test/{ids[0]}.jpg"] + [f"images/{i}.jpg" for i in ids[1:]]
    assert samples[0].images[0].read_bytes() == written.images[f"test/{ids[1]}.jpg"]  # first hit: <split>/<ID>.jpg
    for s in samples[1:]:
        assert s.images[0].read_bytes() == written.images[f"test/{s.id}.jpg"]
    assert samples[1].images[0].open().size == phantom[1].views[0].size


def test_missing_image_fails_its_sample_naming_the_paths_tried(copy):
    root, rows = copy
    (root / "test" / f"{rows[1]['ID']}.jpg").unlink()
    samples = task(root).samples("test")
    assert open_images(samples[0])[1] is None
    images, error = open_images(samples[1])
    assert images == []
    assert f"{root / 'test' / rows[1]['ID']}.jpg, {root / 'images' / rows[1]['ID']}.jpg" in error
    assert error.startswith(f"image test/{rows[1]['ID']}.jpg") and "no image file found" in error
    with pytest.raises(FileNotFoundError):
        samples[1].images[0].read_bytes()


# --- concepts -------------------------------------------------------------------------------------------------------

def test_missing_concepts_file_warns_once_per_split(copy, capsys):
    root, rows = copy
    (root / "test_concepts.csv").unlink()
    capsys.readouterr()
    t = task(root)
    assert all("cuis" not in s.fields for s in t.samples("test"))
    t.samples("test")
    found = [w for w in warnings_in(capsys.readouterr().err) if "concepts" in w]
    assert found == [f"warning: source 'imageclef' split 'test': no concepts file ({root / 'test_concepts.csv'} or "
                     f"{root / 'concepts.csv'}); fields.cuis is missing for all 4 samples"]


def test_a_caption_task_of_ones_own_without_concepts_is_not_warned_on_every_run(copy, capsys):
    """A source whose YAML maps no `cuis` (captions only) was told on every run that its concepts file is missing."""
    root, _ = copy
    (root / "test_concepts.csv").unlink()
    config = tasks().get("rocov2")
    own = dataclasses.replace(config, sources=[dataclasses.replace(
        s, fields={k: v for k, v in s.fields.items() if k != "cuis"},
        options={k: v for k, v in s.options.items() if k != "concepts"}) for s in config.sources])
    capsys.readouterr()
    samples = Task(own, data_dir=root, source="imageclef").samples("test")
    assert len(samples) == 4 and all("cuis" not in s.fields for s in samples)
    assert "concepts" not in capsys.readouterr().err


def test_caption_rows_without_concepts_rows_warn_once_with_the_count(copy, capsys):
    root, rows = copy
    set_lines(root / "test_concepts.csv", lambda lines: lines.__delitem__(slice(2, 4)))  # rows 2 and 3
    capsys.readouterr()
    samples = task(root).samples("test")
    assert [s.fields["cuis"] == [] for s in samples] == [False, True, True, False]
    found = [w for w in warnings_in(capsys.readouterr().err) if "concepts" in w or "cuis" in w]
    assert found == [f"warning: source 'imageclef' split 'test': 2 of 4 samples have no row in "
                     f"{root / 'test_concepts.csv'}; their fields.cuis is []"]


def test_a_repeated_concepts_row_is_refused_not_the_last_one_kept(copy):
    root, rows = copy
    set_lines(root / "test_concepts.csv", lambda lines: lines.append(f"{rows[0]['ID']},C9999999"))
    assert load_error(root) == (f"{root / 'test_concepts.csv'}:6: ID '{rows[0]['ID']}' appears twice (lines 2 and "
                                "6); expected one row of concepts per image")


def test_a_copy_saved_with_windows_line_breaks_is_the_same_data(copy, tmp_path):
    """A line break inside a quoted caption was kept as CR LF: the reference and the fingerprint changed."""
    root, rows = copy
    captions = root / "test_captions.csv"
    set_lines(captions, lambda lines: lines.__setitem__(1, f'{rows[0]["ID"]},"A caption over'))
    set_lines(captions, lambda lines: lines.insert(2, 'two lines"'))
    windows = tmp_path / "windows"
    shutil.copytree(root, windows)
    (windows / "test_captions.csv").write_bytes(captions.read_bytes().replace(b"\n", b"\r\n"))
    unix, other = task(root), task(windows)
    assert other.samples("test")[0].answer == unix.samples("test")[0].answer == "A caption over\ntwo lines"
    assert other.fingerprint("test") == unix.fingerprint("test")


def test_single_concepts_csv_is_read(tmp_path, phantom, capsys):
    write_imageclef(tmp_path, phantom, split="test")
    (tmp_path / "test_concepts.csv").rename(tmp_path / "concepts.csv")  # the layout datasets.md describes
    capsys.readouterr()
    samples = task(tmp_path).samples("test")
    assert [s.fields["cuis"] for s in samples] == [fixture_cuis(c) for c in phantom]
    assert not [w for w in warnings_in(capsys.readouterr().err) if "concepts" in w]


# --- sizes ----------------------------------------------------------------------------------------------------------

def test_release_sizes_are_declared_and_a_partial_copy_is_told(copy, capsys):
    root, _ = copy
    assert tasks().get("rocov2").source("imageclef").sizes == {"train": 59958, "validation": 9904, "test": 9927}
    capsys.readouterr()
    assert task(root).size_note("test") == ("task 'rocov2' source 'imageclef' split 'test': expected 9927 samples "
                                            "(sizes in rocov2.yaml), found 4")
    assert f"warning: {task(root).size_note('test')}" in warnings_in(capsys.readouterr().err)
