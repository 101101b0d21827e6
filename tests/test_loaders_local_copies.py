"""Local copies given with --data-dir: a damaged or empty Hugging Face copy is one line naming the folder or file
(not a datasets/pyarrow traceback), a copy whose validation split is named `valid` runs as `validation`, and
results.json records the folder read as an absolute path without changing the run id."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from format_writers import cases, write_hf_parquet, write_hf_saved, write_mevf
from loader_helpers import load_error, task


@pytest.fixture(scope="module")
def phantom():
    return cases(4, seed=7)


def _resave(src: Path, dest: Path, rename: dict[str, str] | None = None, empty: str | None = None) -> None:
    """Save a copy of a save_to_disk folder with splits renamed (old -> new) or one split emptied."""
    from datasets import DatasetDict, load_from_disk

    dd = load_from_disk(str(src))
    splits = {(rename or {}).get(name, name): ds.select([]) if name == empty else ds for name, ds in dd.items()}
    DatasetDict(splits).save_to_disk(str(dest))


# --- damaged or empty save_to_disk folders ------------------------------------------------------------------------

def test_saved_copy_with_an_empty_split_says_it_is_empty(tmp_path, phantom):
    write_hf_saved(tmp_path / "orig", phantom, kind="vqa")
    _resave(tmp_path / "orig", tmp_path / "copy", empty="test")
    assert load_error("pathvqa", tmp_path / "copy", source="hf") == (
        f"{tmp_path / 'copy' / 'test' / 'state.json'}: split 'test' is empty (0 rows, no data file); expected its "
        "samples")
    assert len(task("pathvqa", tmp_path / "copy", source="hf").samples("validation")) > 0  # the other split loads


def test_saved_copy_with_a_truncated_dataset_dict_json(tmp_path, phantom):
    write_hf_saved(tmp_path, phantom, kind="vqa")
    index = tmp_path / "dataset_dict.json"
    index.write_text(index.read_text()[:10])
    assert load_error("pathvqa", tmp_path, source="hf") == (
        f"{index}: not valid JSON (Expecting value: line 1 column 11)")


@pytest.mark.parametrize("damage", ["no dataset_info.json", "no state.json", "truncated arrow", "no arrow"])
def test_saved_copy_with_a_damaged_split_names_its_folder(tmp_path, phantom, damage):
    write_hf_saved(tmp_path, phantom, kind="vqa")
    folder = tmp_path / "test"
    arrow = next(folder.glob("*.arrow"))
    if damage == "truncated arrow":
        arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    else:
        {"no dataset_info.json": folder / "dataset_info.json", "no state.json": folder / "state.json",
         "no arrow": arrow}[damage].unlink()
    message = load_error("pathvqa", tmp_path, source="hf")
    assert message.startswith(f"{folder}: cannot load split 'test' of the save_to_disk copy (")
    assert message.endswith("); save or copy the dataset again")
    if damage != "truncated arrow":  # the file found missing is named
        assert damage.split()[-1].replace("arrow", ".arrow") in message


def test_empty_parquet_split_says_it_is_empty(tmp_path, phantom):
    import pyarrow.parquet as pq

    write_hf_parquet(tmp_path, phantom, kind="vqa")
    path = tmp_path / "data" / "test-00000-of-00001.parquet"
    pq.write_table(pq.read_table(path).slice(0, 0), path)
    assert load_error("vqa-rad", tmp_path, source="hf") == (
        f"{path}: split 'test' of {tmp_path} is empty (0 rows); expected its samples")


def test_truncated_parquet_file_is_named(tmp_path, phantom):
    write_hf_parquet(tmp_path, phantom, kind="vqa")
    path = tmp_path / "data" / "test-00000-of-00001.parquet"
    path.write_bytes(path.read_bytes()[:100])
    message = load_error("vqa-rad", tmp_path, source="hf")
    assert message.startswith(f"{path}: not a readable parquet file of split 'test' (")


# --- a copy's own name of the validation split --------------------------------------------------------------------

@pytest.mark.parametrize("asked", ["val", "valid", "validation"])
def test_saved_copy_with_a_valid_split_runs_it_as_validation(tmp_path, phantom, asked):
    written = write_hf_saved(tmp_path / "orig", phantom, kind="vqa")
    _resave(tmp_path / "orig", tmp_path / "copy", rename={"validation": "valid"})
    t = task("pathvqa", tmp_path / "copy", source="hf")
    samples = t.samples(asked)
    assert [s.question for s in samples] == [r["question"] for r in written.records["validation"]]
    assert [s.id for s in samples] == [f"validation-{i}" for i in range(len(samples))]  # one run whatever was typed
    assert t.canonical_split(asked) == "validation"


def test_parquet_copy_with_valid_files_runs_them_as_validation(tmp_path, phantom):
    written = write_hf_parquet(tmp_path, phantom, kind="vqa")
    os.rename(tmp_path / "data" / "train-00000-of-00001.parquet", tmp_path / "data" / "valid-00000-of-00001.parquet")
    samples = task("vqa-rad", tmp_path, source="hf").samples("val")
    assert [s.question for s in samples] == [r["question"] for r in written.records["train"]]


def test_saved_copy_with_two_names_of_validation_is_refused(tmp_path, phantom):
    write_hf_saved(tmp_path / "orig", phantom, kind="vqa")
    _resave(tmp_path / "orig", tmp_path / "one", rename={"validation": "valid"})
    _resave(tmp_path / "orig", tmp_path / "two", rename={"test": "dev"})
    shutil.copytree(tmp_path / "two" / "dev", tmp_path / "one" / "dev")
    index = tmp_path / "one" / "dataset_dict.json"
    index.write_text(json.dumps({"splits": ["test", "valid", "dev"]}))
    assert load_error("pathvqa", tmp_path / "one", "validation", source="hf") == (
        f"{index} has no split 'validation' but both valid and dev, other names of it; rename the one meant to "
        "'validation'")


# --- where results.json says the data came from -------------------------------------------------------------------

def test_relative_data_dir_is_recorded_as_an_absolute_path_with_the_same_run_id(tmp_path, phantom):
    write_mevf(tmp_path / "m2", phantom)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}  # this checkout's code
    ids = []
    for data_dir, out in (("m2", "relative"), (str(tmp_path / "m2"), "absolute")):
        proc = subprocess.run([sys.executable, "-m", "harness", "run", "--model", "prior", "--task", "vqa-rad",
                               "--source", "mevf", "--data-dir", data_dir, "--judge", "exact", "--no-progress",
                               "--output", str(tmp_path / out)], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        results = json.loads((tmp_path / out / "results.json").read_text())
        assert results["task"]["source"]["path"] == str(tmp_path / "m2")
        ids.append(results["run_id"])
    assert ids[0] == ids[1]


def test_a_list_in_a_breakdown_column_of_a_hub_copy_is_refused(tmp_path):
    """A column mapped as a breakdown holding a list was grouped by its Python repr ("['chest', 'lung']")."""
    import dataclasses

    from datasets import Dataset, DatasetDict

    from harness.errors import UserError
    from harness.plugin_manager import tasks
    from harness.task import Task

    rows = {"image": [None, None], "question": ["Is it normal?", "Where?"], "answer": ["yes", "chest"],
            "organ": [["chest", "lung"], ["chest"]]}
    DatasetDict({"test": Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "copy"))
    config = tasks().get("vqa-rad")
    sources = [dataclasses.replace(s, fields={**s.fields, "organ": "organ"}) if s.name == "hf" else s
               for s in config.sources]
    with pytest.raises(UserError, match=r"row 0: column organ is \[\"chest\", \"lung\"\]; expected one value"):
        Task(dataclasses.replace(config, sources=sources), source="hf", data_dir=tmp_path / "copy").samples("test")
