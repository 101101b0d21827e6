"""Many questions about one image (PathVQA: about 7 per image, SLAKE 11): each image file is read once per command.

Before, the dataset fingerprint read and hashed an image file once per question about it, and a model that ignores
pixels (the `prior`) decoded it once per question to check it: a 30,000-question task on 4,500 images read 15
times the bytes it needed (benchmarks/scale.py). The bytes this process reads (`rchar` of /proc/self/io) show it.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from harness.fingerprint import dataset_fingerprint, image_digest
from harness.plugin_manager import tasks
from harness.task import Task

pytestmark = pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's /proc/self/io")

IMAGES, PER_IMAGE, SIDE = 3, 10, 600  # 3 PNGs of noise, about 1 MB each, 10 questions each


def bytes_read() -> int:
    """Bytes this process (all its threads) has read so far, from files or the page cache alike."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def write_pathvqa(root: Path, corrupt_first: bool = False) -> int:
    """A PathVQA release (original pickles) whose test split asks PER_IMAGE questions about each of IMAGES large
    images, and a one-image train split; returns the test images' total size in bytes."""
    from PIL import Image

    total = 0
    for split, n_images in (("test", IMAGES), ("train", 1)):
        folder = root / "images" / split
        folder.mkdir(parents=True)
        records = []
        for i in range(n_images):
            name = f"{split}_{i:04d}.png"
            Image.frombytes("RGB", (SIDE, SIDE), os.urandom(SIDE * SIDE * 3)).save(folder / name)
            if split == "test" and i == 0 and corrupt_first:
                data = (folder / name).read_bytes()
                (folder / name).write_bytes(data[: len(data) // 2])  # truncated: fails to decode
            total += (folder / name).stat().st_size if split == "test" else 0
            records += [{"image": name, "question": f"is there a lesion {k}?" if k % 2 else f"what organ {k}?",
                         "answer": ("yes", "no")[k % 4 == 1] if k % 2 else "liver"} for k in range(PER_IMAGE)]
        (root / "qas" / split).mkdir(parents=True)
        (root / "qas" / split / f"{split}_qa.pkl").write_bytes(pickle.dumps(records))
    return total


def test_the_fingerprint_reads_each_image_file_once(tmp_path):
    image_bytes = write_pathvqa(tmp_path)
    task = Task(tasks().get("pathvqa"), data_dir=tmp_path)
    samples = task.samples("test")
    assert len(samples) == IMAGES * PER_IMAGE
    before = bytes_read()
    fingerprint = task.fingerprint("test")
    read = bytes_read() - before
    assert image_bytes <= read < 1.5 * image_bytes, f"read {read} bytes for {image_bytes} bytes of images"
    # the same fingerprint as hashing every sample's images on their own: run ids of earlier runs are unchanged
    assert fingerprint == dataset_fingerprint(samples, digests_by_id={s.id: image_digest(s) for s in samples})


def test_the_prior_checks_each_image_file_once_and_fails_every_question_of_a_corrupt_one(tmp_path):
    from harness.runner import RunSpec, run

    data = tmp_path / "pvqa"
    image_bytes = write_pathvqa(data, corrupt_first=True)
    spec = dict(model="prior", task="pathvqa", data_dir=data, judges=["exact"], progress=False)
    run(RunSpec(**spec, output=tmp_path / "warm-up"))  # the modules a run imports are read before we count
    before = bytes_read()
    _, results, _ = run(RunSpec(**spec, output=tmp_path / "run"))
    read = bytes_read() - before
    # the fingerprint reads each image once and the decoding check once more; per question it was 1 + 10 times
    assert read < 3 * image_bytes, f"read {read} bytes for {image_bytes} bytes of images"
    lines = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").open()]
    failed = [row for row in lines if row["error"]]
    assert [row["id"] for row in failed] == [f"test-{k}" for k in range(PER_IMAGE)]  # every question of image 0
    assert len({row["error"] for row in failed}) == 1 and "images/test/test_0000.png" in failed[0]["error"]
    assert results["errors"]["count"] == PER_IMAGE
    assert len(lines) == IMAGES * PER_IMAGE and all(row["prediction"] for row in lines if not row["error"])
