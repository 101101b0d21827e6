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
    with pytest.raises(UserError, match="only 0 readable training image.*field 'organ_system'"):
        fit_for_task(task, "organ_system")


def test_each_image_counts_once_unreadable_ones_are_counted_and_no_image_is_its_own_neighbour():
    """A VQA image with many questions (or one image under two names) is fitted once; a missing or corrupt image
    is left out and counted; predicting a fitted image ignores that image itself (fine-tuning prompts get labels
    as good as unseen images do, not perfect ones)."""
    import io
    from types import SimpleNamespace

    from PIL import Image

    from harness.types import ImageRef, Sample

    def png(level: int, seed: int) -> bytes:
        rng = np.random.default_rng(seed)
        buf = io.BytesIO()
        Image.fromarray(np.clip(rng.normal(level, 8, (16, 16)), 0, 255).astype(np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    samples = [Sample(id=f"d{i}", images=[ImageRef(name=f"d{i}.png", data=png(40 + 80 * (i % 2), i))],
                      answer="", fields={"modality": "dark" if i % 2 == 0 else "odd"}) for i in range(12)]
    samples += [Sample(id=f"b{i}", images=[ImageRef(name=f"b{i}.png", data=png(220, 100 + i))], answer="",
                       fields={"modality": "bright"}) for i in range(12)]
    outlier = Sample(id="x", images=[ImageRef(name="x.png", data=png(220, 999))], answer="",
                     fields={"modality": "dark"})
    again = Sample(id="x-q2", images=[ImageRef(name="x-copy.png", data=outlier.images[0].data)], answer="",
                   fields={"modality": "dark"})
    broken = Sample(id="z", images=[ImageRef(name="z.png", data=b"not an image")], answer="",
                    fields={"modality": "dark"})
    task = SimpleNamespace(id="stub", config=SimpleNamespace(train_split="train"),
                           train_samples=lambda: [*samples, outlier, again, broken])
    classifier, info = fit_for_task(task, "modality")
    assert info["n_fitted"] == 25 and info["n_unreadable"] == 1
    assert info["labels"] == {"bright": 12, "dark": 7, "odd": 6}
    assert classifier.predict(outlier.images[0].open()) == "bright"  # its own "dark" entry is not a neighbour


def test_the_training_data_of_the_classifier_is_part_of_the_run_id():
    """The classifier is fitted on the train split: other training data must not resume the first run."""
    from types import SimpleNamespace

    from harness.model_api import ModelContext
    from harness.plugins.hf import HFModel
    from harness.types import Sample

    def identity(modality: str) -> dict:
        train = [Sample(id=f"t{i}", images=[], answer="a", fields={"modality": modality}) for i in range(3)]
        task = SimpleNamespace(train_samples=lambda quiet=False: train, kind="caption")
        return HFModel.run_identity({"model": "tiny-vlm", "prepend_modality": "predicted"},
                                    ModelContext(task=task, device="cpu"))

    assert identity("CT")["modality_train_fingerprint"] != identity("MRI")["modality_train_fingerprint"]
    assert HFModel.run_identity({"model": "tiny-vlm"}, ModelContext(device="cpu")).keys().isdisjoint(
        {"modality_classifier", "modality_train_fingerprint"})
