"""Hub copies of VQA-RAD and PathVQA embed their images without names: the questions asked about one image are
grouped by the image bytes (`cluster_by: image_content`) so that their intervals are not those of independent
questions; the data fingerprint (and so every run id) is what it was before they were grouped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from format_writers import cases, write_hf_parquet


@pytest.fixture(scope="module")
def hub_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vqa-rad-hub")
    write_hf_parquet(root, cases(8, seed=11))  # 4 test images, several questions each
    return root


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_questions_on_one_hub_image_form_one_cluster(tmp_path, hub_copy):
    from harness.cli import main
    from harness.fingerprint import IMAGE_CONTENT, dataset_fingerprint
    from harness.plugin_manager import tasks
    from harness.task import Task

    task = Task(tasks().get("vqa-rad"), data_dir=hub_copy, source="hf")
    assert task.source.cluster_by == IMAGE_CONTENT
    unread = dataset_fingerprint(Task(tasks().get("vqa-rad"), data_dir=hub_copy, source="hf").samples("test"))
    assert task.fingerprint("test") == unread  # the digest field set on the samples is not hashed again
    samples = task.samples("test")
    assert len({s.fields[IMAGE_CONTENT] for s in samples}) == 4 < len(samples)

    out = tmp_path / "run"
    assert main(["run", "--model", "prior", "--task", "vqa-rad", "--data-dir", str(hub_copy), "--source", "hf",
                 "--judge", "exact", "--output", str(out), "--no-progress"]) == 0
    lines = _lines(out / "predictions.jsonl")
    by_image: dict[str, set] = {}
    for line, sample in zip(sorted(lines, key=lambda r: r["id"]), sorted(samples, key=lambda s: s.id)):
        assert line[IMAGE_CONTENT] == sample.fields[IMAGE_CONTENT]
        by_image.setdefault(line[IMAGE_CONTENT], set()).add(line["images"][0])
    assert len(by_image) == 4  # one digest per image, each image under one hub row name per question
    results = json.loads((out / "results.json").read_text())
    assert results["task"]["cluster_by"] == "image_content"
    assert results["judges"][0]["metrics"]["accuracy"]["ci_method"] == "cluster-wilson-t"
    assert "image_content" not in results["judges"][0]["breakdowns"]


def test_a_hub_run_written_before_grouping_stays_per_question_when_scored_again(tmp_path, hub_copy, capsys):
    """Its predictions lines have no image_content: scored again, each question is its own cluster, not every
    question one cluster (which would give no interval, or a meaningless one)."""
    from harness.cli import main

    out = tmp_path / "run"
    assert main(["run", "--model", "prior", "--task", "vqa-rad", "--data-dir", str(hub_copy), "--source", "hf",
                 "--judge", "exact", "--output", str(out), "--no-progress"]) == 0
    lines = _lines(out / "predictions.jsonl")
    (out / "predictions.jsonl").write_text("".join(
        json.dumps({k: v for k, v in line.items() if k != "image_content"}) + "\n" for line in lines))
    assert main(["score", str(out), "--no-progress"]) == 0
    accuracy = json.loads((out / "results.json").read_text())["judges"][0]["metrics"]["accuracy"]
    assert accuracy["ci_method"] == "wilson" and accuracy["ci95"][0] < accuracy["value"] < accuracy["ci95"][1]
    assert (f"note: {len(lines)} of {len(lines)} predictions lines have no 'image_content' (written before the task "
            "grouped its samples by it): the intervals take the samples as independent; run the model again into a "
            "new --output folder to group them") in capsys.readouterr().err
    # beside a newer run, compare groups the samples by the newer run's digests in either order
    new = tmp_path / "new"
    assert main(["run", "--model", "prior", "--model-args", "by=none", "--task", "vqa-rad", "--data-dir",
                 str(hub_copy), "--source", "hf", "--judge", "exact", "--output", str(new), "--no-progress"]) == 0
    reports = []
    for first, second in ((out, new), (new, out)):
        assert main(["compare", str(first), str(second), "-o", str(tmp_path / "c.json"), "--no-progress"]) == 0
        reports.append(json.loads((tmp_path / "c.json").read_text()))
    assert [r["judges"]["exact/pefomed"]["clusters"] for r in reports] == [4, 4]
    forward, backward = (next(c for c in r["comparisons"] if c["metric"] == "accuracy") for r in reports)
    assert forward["ci95"] == pytest.approx([-x for x in reversed(backward["ci95"])])
