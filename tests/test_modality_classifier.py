"""The modality classifier behind `prepend_modality=predicted`: it reads the modality from the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import UserError
from harness.plugin_manager import tasks as task_registry
from harness.plugins.modality_classifier import fit_for_task, label_of
from harness.task import Task


def test_it_predicts_the_phantom_modalities_of_unseen_test_images():
    task = Task(task_registry().get("phantom-caption"))
    classifier, info = fit_for_task(task, "modality")
    assert set(info["labels"]) == {"x-ray", "ct", "mri"} and info["n_fitted"] >= 100
    test = task.samples("test")[:60]
    predicted = [classifier.predict(s.images[0].open()) for s in test]
    accuracy = np.mean([p == s.fields["modality"] for p, s in zip(predicted, test)])
    majority = max(np.mean([s.fields["modality"] == m for s in test]) for m in info["labels"])
    assert accuracy >= 0.9 > majority, (accuracy, majority)
    assert info["heldout_accuracy"] >= 0.9
    assert fit_for_task(task, "modality")[1] == info  # deterministic


def test_labels_come_from_a_field_or_a_cui_list_and_mistakes_are_one_line():
    assert label_of(" CT ") == "CT" and label_of("") is None and label_of(None) is None
    assert label_of(["C0817096", "C0040405"]) == "CT" and label_of(["C0817096"]) is None
    task = Task(task_registry().get("phantom-caption"))
    with pytest.raises(UserError, match="only 0 training sample.*field 'organ_system'"):
        fit_for_task(task, "organ_system")
