"""A dataset read from the hub whose rows name their image by a path (no bytes) is read only where the path lies in
the Hugging Face caches (an image-folder data set's Arrow rows point into its extracted downloads). A path
elsewhere names a file of the machine that made the data set: it was opened here, so a published parquet could
make a run read any file of the user's machine and send it, as the sample's image, to an API model.

The Hugging Face cache is built here as `datasets` lays out a hub download
(`<cache>/flaviagiammarino___path-vqa/default/0.0.0/<commit>/path-vqa-<split>.arrow`), its image column holding
paths only; HF_DATASETS_CACHE points the run at it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from hub_cache_layout import build_pathvqa_cache

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_hub_rows_naming_files_outside_the_hf_cache_are_not_read(tmp_path):
    from PIL import Image

    private = tmp_path / "home" / "private-scan.png"  # a file of this machine that the data set names
    private.parent.mkdir()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(private)
    inside = tmp_path / "cache" / "downloads" / "extracted" / "abc" / "img.png"  # where datasets extracts images
    inside.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8), (0, 200, 0)).save(inside)
    other = tmp_path / "home" / "other.png"
    shutil.copy(private, other)
    paths = [{"bytes": None, "path": str(p)} for p in (private, inside, other, inside)]
    cache = build_pathvqa_cache(tmp_path, COMMIT, {"train": paths, "test": paths})
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "harness", "run", "--model", "prior", "--task", "pathvqa",
                           "--source", "hf", "--judge", "exact", "--output", str(tmp_path / "run"), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (f"warning: flaviagiammarino/path-vqa split 'test': 2 rows name their image by a path outside the Hugging "
            f"Face cache (e.g. {private})") in done.stderr
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "run" / "predictions.jsonl").read_text().splitlines())}
    assert [bool(rows[f"test-{i}"]["error"]) for i in range(4)] == [True, False, True, False]
    assert "neither a path nor bytes" in rows["test-0"]["error"] and str(private) not in rows["test-0"]["error"]
