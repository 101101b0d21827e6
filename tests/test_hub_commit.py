"""A hub source records the commit it was read at, not only the revision asked ("main" says nothing once the data
set moves on); and a source pinned to a commit refuses another one, which offline `datasets` would read without a
word (it takes the latest cached copy whatever revision is asked).

The Hugging Face cache is built here as `datasets` lays out a hub download
(`<cache>/flaviagiammarino___path-vqa/default/0.0.0/<commit>/path-vqa-<split>.arrow`), from a tiny PathVQA-shaped
data set; HF_DATASETS_CACHE points the run at it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import error_line
from hub_cache_layout import build_pathvqa_cache

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def png(shade: int) -> dict:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 0, 0)).save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": None}


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """A Hugging Face datasets cache holding flaviagiammarino/path-vqa at COMMIT (train and test)."""
    return build_pathvqa_cache(tmp_path_factory.mktemp("hub"), COMMIT,
                               {"train": [png(40 * i) for i in range(6)], "test": [png(40 * i) for i in range(4)]})


def harness(hub_cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_DATASETS_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_a_hub_run_records_the_commit_it_read(hub_cache, tmp_path):
    done = harness(hub_cache, "run", "--model", "prior", "--task", "pathvqa", "--source", "hf", "--judge", "exact",
                   "--output", str(tmp_path / "run"), "--no-progress")
    assert done.returncode == 0, done.stderr
    source = json.loads((tmp_path / "run" / "results.json").read_text())["task"]["source"]
    assert source["path"] == "flaviagiammarino/path-vqa" and source["revision"] == "main"
    assert source["commit"] == COMMIT
    assert (f"note: offline: hub dataset 'flaviagiammarino/path-vqa' split 'test' read from the cached commit {COMMIT}"
            in done.stderr) and "Using the latest cached version" not in done.stderr  # datasets' two lines: one
    assert json.loads((tmp_path / "run" / "run.json").read_text())["task"]["source"]["commit"] == COMMIT


def test_a_source_pinned_to_another_commit_is_refused(hub_cache, tmp_path):
    task = (Path(__file__).resolve().parents[1] / "tasks" / "pathvqa.yaml").read_text()
    assert "    revision: main\n" in task
    pinned = tmp_path / "pathvqa-pinned.yaml"
    pinned.write_text(task.replace("id: pathvqa", "id: pathvqa-pinned").replace("aliases: [path-vqa]", "")
                      .replace("    revision: main\n", f"    revision: {OTHER[:12]}\n"))
    done = harness(hub_cache, "run", "--model", "prior", "--task", str(pinned), "--source", "hf", "--judge", "exact",
                   "--output", str(tmp_path / "run"), "--no-progress")
    line = error_line(done)
    assert f"revision {OTHER[:12]} was asked, but the copy in the Hugging Face cache is commit {COMMIT}" in line
    assert not (tmp_path / "run" / "predictions.jsonl").exists()


def test_a_data_dir_in_the_hub_caches_snapshot_folder_records_its_commit(hub_cache, tmp_path):
    """--data-dir pointed at what `huggingface-cli download` or `snapshot_download` left
    (`datasets--<org>--<name>/snapshots/<commit>/`) recorded no commit, although the folder names it; a copy of the
    same files anywhere else still has none, and a snapshot of another repository gives it no commit."""
    import datasets

    parquet = tmp_path / "parquet"
    for split in ("train", "test"):
        target = parquet / "data" / f"{split}-00000-of-00001.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        arrow = next((hub_cache / "flaviagiammarino___path-vqa" / "default" / "0.0.0" / COMMIT).glob(
            f"path-vqa-{split}*.arrow"))
        datasets.Dataset.from_file(str(arrow)).to_parquet(str(target))
    where = {"snapshot": tmp_path / "hub" / "datasets--flaviagiammarino--path-vqa" / "snapshots" / OTHER,
             "other repo": tmp_path / "hub" / "datasets--someone--else" / "snapshots" / OTHER,
             "plain copy": tmp_path / "copy"}
    commits = {}
    for name, folder in where.items():
        shutil.copytree(parquet, folder)
        done = harness(hub_cache, "run", "--model", "prior", "--task", "pathvqa", "--source", "hf", "--data-dir",
                       str(folder), "--judge", "exact", "--output", str(tmp_path / name), "--no-progress")
        assert done.returncode == 0, done.stderr
        source = json.loads((tmp_path / name / "results.json").read_text())["task"]["source"]
        assert source["copy_of"] == "flaviagiammarino/path-vqa" and source["path"] == str(folder)
        commits[name] = source.get("commit")
    assert commits == {"snapshot": OTHER, "other repo": None, "plain copy": None}
