"""The `prior` baseline: most frequent training answer per answer type; most typical training text."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from plugins_prior_helpers import vqa_rad_train_answers

from harness.plugins.prior import most_frequent, most_typical_text


def test_most_frequent_is_case_insensitive_with_alphabetical_ties():
    assert most_frequent(["Yes", "no", "yes", "No"]) == "no"
    assert most_frequent(["Yes", "yes", "no"]) == "yes"
    assert most_frequent([]) == ""


def test_most_typical_text_is_the_central_one():
    texts = ["the heart is normal . lungs are clear .", "lungs are clear . the heart is normal size .",
             "fracture of the left femur", "the heart is normal . the lungs are clear ."]
    assert most_typical_text(texts) in (texts[0], texts[3])


def test_prior_on_real_vqa_rad_predicts_the_training_majority(tmp_path, shared_data):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--model", "prior", "--task", "vqa-rad",
                           "--data-dir", str(shared_data / "vqa-rad"), "--judge", "exact", "--output", str(out),
                           "--no-progress"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    by_type = vqa_rad_train_answers(shared_data / "vqa-rad")
    expected = {t: Counter(a).most_common(1)[0][0] for t, a in by_type.items()}
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 451
    for p in preds:
        assert p["prediction"] == expected[p["answer_type"]]
    results = json.loads((out / "results.json").read_text())
    assert results["task"]["n"] == 451 and results["errors"]["count"] == 0
    closed = results["judges"][0]["breakdowns"]["answer_type"]["CLOSED"]["accuracy"]
    assert closed["n"] == 272


def test_misspelled_by_field_is_refused():
    from harness import plugin_manager
    from harness.errors import UserError
    from harness.model_api import ModelContext
    from harness.plugins.prior import PriorModel
    from harness.task import Task

    task = Task(plugin_manager.tasks().get("phantom-vqa"))
    with pytest.raises(UserError, match=r"by=answr_type: no training sample .* one of .*answer_type"):
        PriorModel({"by": "answr_type"}, ModelContext(task=task))
    assert PriorModel({"by": "question_type"}, ModelContext(task=task)).by == "question_type"
