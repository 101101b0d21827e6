"""The embedded phantom tasks: deterministic generation, balanced closed answers, findings that can be
recovered from 32x32 pixels, the generation cache, and loading through the task registry."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.errors import UserError
from harness.loaders import phantom as loader
from harness.phantom import generate_cases
from harness.phantom_text import NORMAL_IMPRESSION
from harness.plugin_manager import tasks
from harness.task import Task
from harness.task_config import SourceConfig

# sha256 over the PNGs of generate_cases(4, seed=0). It pins the pixels across machines: if a change to the
# generator is intended, bump harness.phantom.GENERATOR_VERSION (so caches are redone) and update this value.
GOLDEN_SHA256 = "617b397972e59b39483fa9d3349ee5c04501d56ca571fe8b16b604fbccd394b9"


def _png_digest(cases) -> str:
    h = hashlib.sha256()
    for case in cases:
        for view in case.views:
            h.update(loader.encode_png(view))
    return h.hexdigest()


def _texts(cases) -> list:
    return [(c.case_id, c.findings, [vars(q) for q in c.qa], c.report, c.caption) for c in cases]


def test_same_seed_gives_identical_bytes_and_other_seeds_differ():
    a, b = generate_cases(6, seed=7), generate_cases(6, seed=7)
    assert _png_digest(a) == _png_digest(b)
    assert _texts(a) == _texts(b)
    other = generate_cases(6, seed=8)
    pngs_a = {loader.encode_png(v) for c in a for v in c.views}
    assert not pngs_a & {loader.encode_png(v) for c in other for v in c.views}
    assert {c.case_id for c in a}.isdisjoint(c.case_id for c in other)
    # case i depends on (seed, i) only: asking for fewer cases gives the same first cases
    assert _png_digest(generate_cases(3, seed=7)) == _png_digest(a[:3])


def test_pixels_are_pinned_and_png_round_trips():
    cases = generate_cases(4, seed=0)
    assert _png_digest(cases) == GOLDEN_SHA256
    view = cases[0].views[0]
    decoded = Image.open(io.BytesIO(loader.encode_png(view)))
    assert decoded.size == (128, 128)
    assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(view))


def test_cases_state_their_findings_in_pixels_questions_reports_and_captions():
    cases = generate_cases(40, seed=3)
    for case in cases:
        f = case.findings
        assert [v.size for v in case.views] == [(128, 128), (128, 128)]
        pixels = np.asarray(case.views[0])
        assert np.array_equal(pixels[..., 0], pixels[..., 2])  # grayscale rendered as RGB
        assert (f["count"] > 0) == f["lesion"] and len(f["lesions"]["frontal"]) == f["count"]
        by_type = {q.question_type: q for q in case.qa if q.answer_type == "OPEN"}
        if "COUNT" in by_type:
            assert by_type["COUNT"].answer == str(f["count"])
        pres = case.qa[0]
        assert pres.question_type == "PRES" and pres.answer in ("yes", "no")
        if f["lesion"]:
            assert f"{f['side']} " in case.report and f"{f['side']} " in case.caption
            # frontal views: the patient's left is on the image's right
            xs = [x for x, _, _ in f["lesions"]["frontal"]]
            assert all((x > 64) == (f["side"] == "left") for x in xs)
        else:
            assert case.report.endswith(NORMAL_IMPRESSION[case.organ]) and "no " in case.caption
            assert not {"left", "right"} & set(case.report.replace(".", " ").split())
        assert case.modality in ("x-ray", "ct", "mri") and case.organ in ("chest", "head", "abdomen", "knee")
        assert 3 <= len(case.qa) <= 4


@pytest.fixture(scope="module")
def vqa_task() -> Task:
    return Task(tasks().get("phantom-vqa"))


def test_tasks_load_through_the_registry(vqa_task):
    assert vqa_task.source.name == "embedded" and vqa_task.source.format == "phantom"
    test = vqa_task.samples()
    assert 300 <= len(test) <= 400  # 100 cases, 3-4 questions each
    assert len({s.id for s in test}) == len(test)
    assert {s.fields["case_id"] for s in test}.isdisjoint(s.fields["case_id"] for s in vqa_task.train_samples())
    sample = test[0]
    assert set(sample.fields) >= {"answer_type", "question_type", "organ", "modality"}
    assert sample.id.startswith(sample.fields["case_id"] + "-q")
    name, template = vqa_task.prompt_template("pefomed")
    image = sample.images[0].open()
    request = vqa_task.build_request(sample, template, vqa_task.generation_settings(), [image])
    pefomed = "[vqa] Based on the image, respond to this question with a short answer: "
    assert request.prompt == pefomed + sample.question
    assert request.generation.max_new_tokens == 16 and image.mode == "RGB" and image.size == (128, 128)

    report = Task(tasks().get("phantom-report"))
    reports = report.samples()
    assert len(reports) == 100 and all(len(s.images) == 2 for s in reports)
    assert report.generation_settings().max_new_tokens == 96 and report.config.judges == ["lexical"]
    caption = Task(tasks().get("phantom-caption"))
    captions = caption.samples()
    assert len(captions) == 100 and all(len(s.images) == 1 and s.fields["modality"] for s in captions)
    # the three tasks share the same generated images
    assert reports[0].images[0].path == captions[0].images[0].path


def test_closed_answers_are_balanced_so_a_prior_scores_near_chance(vqa_task):
    train = [s for s in vqa_task.train_samples() if s.fields["answer_type"] == "CLOSED"]
    test = [s for s in vqa_task.samples() if s.fields["answer_type"] == "CLOSED"]
    counts = Counter(s.answer for s in test)
    assert counts.most_common(1)[0][1] <= 0.6 * len(test)
    prior = Counter(s.answer for s in train).most_common(1)[0][0]
    prior_acc = sum(s.answer == prior for s in test) / len(test)
    assert 0.35 <= prior_acc <= 0.6, prior_acc
    for qtype in ("PRES", "MODALITY", "ORGAN", "POS", "SIZE", "COLOR"):
        yes_no = [s.answer for s in train if s.fields["question_type"] == qtype and s.answer in ("yes", "no")]
        assert len(yes_no) >= 20 and 0.3 <= yes_no.count("yes") / len(yes_no) <= 0.7, qtype
    assert Counter(s.fields["question_type"] for s in vqa_task.samples() if s.fields["answer_type"] == "OPEN")


def _small(path: Path) -> np.ndarray:
    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
    return pixels.reshape(32, 4, 32, 4).mean(axis=(1, 3))  # 128 -> 32 by 4x4 block means


def _box_mean(a: np.ndarray, r: int) -> np.ndarray:
    k = 2 * r + 1
    c = np.pad(np.pad(a, ((0, 0), (r, r), (r, r)), mode="edge").cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
    return (c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]) / (k * k)


def _blob_response(residual: np.ndarray) -> np.ndarray:
    """Centre (3x3) minus surround (9x9 ring) on 32x32 residuals: a blob answers, a slightly moved edge not."""
    centre, big = _box_mean(residual, 1), _box_mean(residual, 4)
    return (centre - (big * 81 - centre * 9) / 72).reshape(len(residual), -1)


def _logistic_regression(x: np.ndarray, y: np.ndarray, steps: int = 400):
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w, b = np.zeros(z.shape[1]), 0.0
    for _ in range(steps):
        g = 1.0 / (1.0 + np.exp(-(z @ w + b))) - y
        w -= 0.5 * (z.T @ g / len(y) + 1e-3 * w)
        b -= 0.5 * g.mean()
    return lambda x2: ((x2 - mu) / sd @ w + b) > 0


def test_findings_are_recoverable_from_32px_pixels(vqa_task):
    """Proof of learnability: subtract the mean lesion-free image of the same organ and modality (train split),
    filter for blobs, and fit logistic regressions; they must predict the test findings."""

    def cases(split):
        source = vqa_task.source
        seed, n = loader.split_parameters(source, split)
        records = json.loads((loader.ensure_generated(seed, n) / "cases.json").read_text())
        folder = loader.cache_folder(seed, n)
        return records, np.stack([_small(folder / r["images"][0]) for r in records])

    train, x_train = cases("train")
    test, x_test = cases("test")
    groups = {(r["organ"], r["modality"]) for r in train}
    normal = {g: x_train[[(r["organ"], r["modality"]) == g and not r["findings"]["lesion"] for r in train]].mean(0)
              for g in groups}

    def features(records, x):
        residual = np.stack([img - normal[(r["organ"], r["modality"])] for r, img in zip(records, x)])
        blobs = _blob_response(residual)
        top = np.argsort(-np.abs(blobs), axis=1)[:, :8]  # the 8 strongest blob responses, any position
        return blobs, np.concatenate([np.take_along_axis(np.abs(blobs), top, 1),
                                      np.take_along_axis(blobs, top, 1)], axis=1)

    blobs_train, top_train = features(train, x_train)
    blobs_test, top_test = features(test, x_test)
    checks = {  # finding -> (features, label, only cases with a lesion?)
        "presence": ("top", lambda f: f["lesion"], False),
        "brightness": ("top", lambda f: f["brightness"] == "bright", True),
        "side": ("map", lambda f: f["side"] == "left", True),
    }
    for name, (kind, label, lesion_only) in checks.items():
        tr = [i for i, r in enumerate(train) if r["findings"]["lesion"] or not lesion_only]
        te = [i for i, r in enumerate(test) if r["findings"]["lesion"] or not lesion_only]
        f_train, f_test = (top_train, top_test) if kind == "top" else (np.abs(blobs_train), np.abs(blobs_test))
        y_train = np.array([label(train[i]["findings"]) for i in tr], dtype=float)
        y_test = np.array([label(test[i]["findings"]) for i in te], dtype=float)
        predict = _logistic_regression(f_train[tr], y_train)
        accuracy = float((predict(f_test[te]) == y_test).mean())
        assert accuracy >= 0.85, f"{name}: {accuracy:.2f} on {len(te)} test cases"


def _source(**options) -> SourceConfig:
    return SourceConfig(name="embedded", format="phantom", closed_rule="answer_type", options=options)


def test_second_load_reuses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    source = _source(seed=5, n_train=4, n_test=6)
    first = loader.load(source, "test", None, "vqa")
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    stamps = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in files}
    assert len([p for p in files if p.suffix == ".png"]) == 12

    def fail(*args, **kwargs):
        raise AssertionError("a complete cache must not be generated again")

    monkeypatch.setattr("harness.phantom.generate_cases", fail)
    second = loader.load(source, "test", None, "vqa")
    assert [(s.id, s.answer, s.images[0].name) for s in first] == [(s.id, s.answer, s.images[0].name) for s in second]
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in files} == stamps


def test_half_written_cache_is_generated_again(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    source = _source(seed=5, n_train=4, n_test=6)
    samples = loader.load(source, "test", None, "caption")
    folder = samples[0].images[0].path.parent.parent
    good = samples[0].images[0].read_bytes()
    # a generation killed half-way: no marker, a truncated image, a missing one, a temp file left behind
    (folder / loader.MARKER).unlink()
    samples[0].images[0].path.write_bytes(good[:100])
    samples[1].images[0].path.unlink()
    (folder / "images" / ".x.png.abc.tmp").write_bytes(b"partial")
    again = loader.load(source, "test", None, "caption")
    assert again[0].images[0].read_bytes() == good
    assert again[1].images[0].path.is_file() and again[1].images[0].open().size == (128, 128)
    assert (folder / loader.MARKER).is_file()
    assert not list(folder.rglob("*.tmp"))
    # an image deleted after a complete generation is noticed too
    again[2].images[0].path.unlink()
    assert loader.load(source, "test", None, "caption")[2].images[0].path.is_file()


def test_a_run_needing_the_cases_another_process_is_generating_waits_for_it(tmp_path, monkeypatch):
    """Two runs on a fresh cache (array jobs): the second one deleted the temporary files of the first one's
    generation as a killed generation's leftovers, and the first then failed ("error: cannot use
    .../images/.ph1-0000_frontal.png.x.tmp: No such file or directory"). Here this test is the first process,
    holding the generation lock with an image half-written."""
    import os
    import subprocess
    import sys
    import tempfile

    from harness.folder_lock import exclusive

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    folder = loader.cache_folder(1, 100)  # phantom-vqa's test split
    (folder / "images").mkdir(parents=True)
    with exclusive(folder, loader.GENERATION_LOCK, transient=True):
        fd, writing = tempfile.mkstemp(prefix=".ph1-0000_frontal.png.", suffix=".tmp", dir=folder / "images")
        os.write(fd, b"half a png")
        os.close(fd)
        second = subprocess.Popen([sys.executable, "-m", "harness", "run", "--model", "constant", "--model-args",
                                   "answer=yes", "--task", "phantom-vqa", "--limit", "2", "--judge", "exact",
                                   "--runs-dir", str(tmp_path / "runs"), "--no-progress"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert second.stderr is not None
        seen = []
        while not seen or not ("waiting for it to finish" in seen[-1] or seen[-1] == ""):
            seen.append(second.stderr.readline())  # "" once it ended without waiting
        assert Path(writing).exists(), f"the second process deleted the file this one was writing: {seen}"
        assert f"is using the phantom data {folder}; waiting for it to finish" in seen[-1]
        os.replace(writing, folder / "images" / "ph1-0000_frontal.png")
    assert second.wait(timeout=120) == 0, "".join(seen) + second.stderr.read()
    assert (folder / loader.MARKER).is_file() and not (folder / loader.GENERATION_LOCK).exists()
    assert not list(folder.rglob("*.tmp"))


@pytest.mark.parametrize(
    ("options", "split", "message"),
    [
        ({"n_test": 0}, "test", "option 'n_test' is 0"),
        ({"seed": "zero"}, "test", "option 'seed' is 'zero'"),
        ({"n_tests": 5}, "test", "unknown option n_tests"),
        ({}, "validation", "has no split 'validation'"),
    ],
)
def test_bad_options_are_user_errors(options, split, message):
    with pytest.raises(UserError, match=message):
        loader.load(_source(**options), split, None, "vqa")
