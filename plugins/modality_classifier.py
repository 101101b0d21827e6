"""A small image-modality classifier for the ROCOv2 study's prompt variant: prepend the *predicted* modality label.

`--model-args prepend_modality=predicted` (hf backend) fits it on the task's train split when the model loads:
cosine k-nearest neighbours (k=5) over a 32 x 32 grayscale thumbnail (standardised) and colour statistics of each
image, from at most MAX_TRAIN distinct training images (a seeded sample). The labels come from the samples'
`modality_field`: a label (SLAKE's and the phantom tasks' `modality`), or a CUI list such as ROCOv2's `cuis`, read
through MODALITY_CUIS. Its accuracy on a held-out fifth of those images, the label counts and its settings go into
model.json, so a number made with predicted labels says how good they were. Deterministic; numpy and Pillow only.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import numpy as np

from harness.errors import UserError

# UMLS concepts of imaging modalities in ROCOv2's concept lists (an image's first listed one is its label)
MODALITY_CUIS = {"C0040405": "CT", "C1306645": "X-ray", "C0024485": "MRI", "C0041618": "ultrasound",
                 "C0002978": "angiography", "C0032743": "PET"}
MAX_TRAIN = 2000
NEIGHBOURS = 5
THUMBNAIL = 32
SEED = 0
CLASSIFIER = (f"modality-knn-v1: cosine {NEIGHBOURS}-nearest neighbours over {THUMBNAIL}x{THUMBNAIL} grayscale "
              f"thumbnails and colour statistics of at most {MAX_TRAIN} distinct training images (seed {SEED})")


def label_of(value: Any) -> str | None:
    """A sample's modality label: the field's text, or the first known modality CUI of a CUI list."""
    if isinstance(value, (list, tuple)):
        return next((MODALITY_CUIS[c] for c in map(str, value) if c in MODALITY_CUIS), None)
    text = "" if value is None else str(value).strip()
    return text or None


def image_features(image: Any) -> np.ndarray:
    """Unit-length features of one PIL image: its standardised grayscale thumbnail and colour statistics."""
    from PIL import Image

    rgb = np.asarray(image.convert("RGB").resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR),
                     dtype=np.float64) / 255.0
    gray = rgb.mean(axis=2).ravel()
    shape = (gray - gray.mean()) / (gray.std() + 1e-6) / np.sqrt(gray.size)
    colour = np.concatenate([rgb.mean(axis=(0, 1)), rgb.std(axis=(0, 1)),
                             [(rgb.max(axis=2) - rgb.min(axis=2)).mean()]])
    features = np.concatenate([shape, colour])
    return features / (np.linalg.norm(features) + 1e-12)


class ModalityClassifier:
    """Cosine k-nearest neighbours; ties go to the label of the nearest neighbour among the tied ones. A fitted
    image itself (similarity 1) is never its own neighbour: predictions on the train split, as when fine-tuning,
    are as good as on unseen images, not perfect."""

    def __init__(self, features: np.ndarray, labels: list[str], k: int = NEIGHBOURS) -> None:
        self.features, self.labels, self.k = features, labels, min(k, len(labels) - 1)

    def predict_features(self, features: np.ndarray) -> str:
        similarity = self.features @ features
        similarity[similarity > 1 - 1e-9] = -np.inf  # the same image
        nearest = np.argsort(-similarity, kind="stable")[: self.k]
        votes = Counter(self.labels[i] for i in nearest)
        best = max(votes.values())
        return next(self.labels[i] for i in nearest if votes[self.labels[i]] == best)

    def predict(self, image: Any) -> str:
        return self.predict_features(image_features(image))


def _fitting_images(task: Any, field: str) -> tuple[list[tuple[np.ndarray, str]], int]:
    """(features, label) of at most MAX_TRAIN distinct labelled training images, in a seeded order (a VQA image
    with many questions, or one image under two names, counts once), and how many could not be read."""
    samples = task.train_samples()
    seen: set[str] = set()
    chosen: list[tuple[np.ndarray, str]] = []
    unreadable = 0
    for index in np.random.default_rng(SEED).permutation(len(samples)):
        sample = samples[int(index)]
        label = label_of(sample.fields.get(field)) if sample.images else None
        if label is None:
            continue
        try:
            data = sample.images[0].read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:
                continue
            features = image_features(sample.images[0].open())
        except (OSError, ValueError):  # a missing or unreadable image: left out, counted
            unreadable += 1
            continue
        seen.add(digest)
        chosen.append((features, label))
        if len(chosen) == MAX_TRAIN:
            break
    return chosen, unreadable


def fit_for_task(task: Any, field: str) -> tuple[ModalityClassifier, dict[str, Any]]:
    """The classifier fitted on the task's train split, and what model.json records about it. The train split's
    records are read; images only until MAX_TRAIN distinct labelled ones are found (hub images are read lazily)."""
    if task is None:
        raise UserError("prepend_modality=predicted needs a task to fit the modality classifier on")
    chosen, unreadable = _fitting_images(task, field)
    if len(chosen) < 2 * NEIGHBOURS:
        raise UserError(f"prepend_modality=predicted: only {len(chosen)} readable training image(s) of task "
                        f"'{task.id}' have a modality in field '{field}' (expected at least {2 * NEIGHBOURS}; "
                        "another field: --model-args modality_field=<field>)")
    features = np.stack([f for f, _ in chosen])
    labels = [label for _, label in chosen]
    held = np.arange(len(chosen)) % 5 == 0
    fitted = ModalityClassifier(features[~held], [lab for lab, h in zip(labels, held) if not h])
    correct = [fitted.predict_features(features[i]) == labels[i] for i in np.flatnonzero(held)]
    info = {"method": CLASSIFIER, "field": field, "train_split": task.config.train_split,
            "n_fitted": len(chosen), "n_unreadable": unreadable, "labels": dict(sorted(Counter(labels).items())),
            "heldout_accuracy": round(float(np.mean(correct)), 4), "n_heldout": int(held.sum())}
    return ModalityClassifier(features, labels), info
