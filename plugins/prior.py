"""The `prior` baseline: answers without looking at the image.

VQA: the most frequent training answer for the question's answer type (OPEN/CLOSED), or for another
field given with `--model-args by=question_type` (`by=none`: one answer for everything). Reports and captions:
the most typical training text, i.e. the training text whose TF-IDF vector is closest (cosine) to the
centroid of all training texts. A real, published kind of baseline: it shows how much of a score comes from
answer priors alone, and it lets every pipeline run offline with no weights.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from harness.errors import UserError, close_hint
from harness.model_api import ModelContext, ModelPlugin
from harness.types import GenerationOutput, GenerationRequest, Sample

_TOKEN = re.compile(r"[a-z0-9]+")


def most_frequent(answers: list[str]) -> str:
    """Most frequent answer (compared case-insensitively, stripped); ties go to the alphabetically first."""
    counts = Counter(a.strip().lower() for a in answers if a.strip())
    if not counts:
        return ""
    best = max(counts.values())
    return min(a for a, c in counts.items() if c == best)


def most_typical_text(texts: list[str]) -> str:
    """The text closest to the TF-IDF centroid of all texts (ties: the first such text)."""
    docs = [Counter(_TOKEN.findall(t.lower())) for t in texts]
    n = len(docs)
    df: Counter[str] = Counter()
    for doc in docs:
        df.update(doc.keys())
    idf = {term: math.log((1 + n) / (1 + d)) + 1.0 for term, d in df.items()}
    vectors = []
    centroid: Counter[str] = Counter()
    for doc in docs:
        vec = {t: c * idf[t] for t, c in doc.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        vec = {t: v / norm for t, v in vec.items()}
        vectors.append(vec)
        centroid.update(vec)
    best_i, best_score = 0, -1.0
    for i, vec in enumerate(vectors):
        score = sum(v * centroid[t] for t, v in vec.items())
        if score > best_score + 1e-12:
            best_i, best_score = i, score
    return texts[best_i] if texts else ""


class PriorModel(ModelPlugin):
    default_batch_size = 256
    reads_images = False  # answers from the training split alone: images are only checked to decode, never sent

    @classmethod
    def run_identity(cls, args: dict[str, str], context: ModelContext) -> dict[str, Any]:
        """The training split the answers are learned from: other training data is another run, even when the
        evaluated split is the same (its texts and labels; the prior never reads an image)."""
        from harness.fingerprint import dataset_fingerprint

        task = context.task
        if task is None:
            return {}
        return {"train_split": task.config.train_split,
                "train_fingerprint": dataset_fingerprint(task.train_samples(quiet=True), images=False)}

    @classmethod
    def canonical_args(cls, args: dict[str, str], context: ModelContext) -> dict[str, str]:
        """Without `by` when it names the default (answer_type on VQA tasks, none on others): the same answers."""
        if context.task is not None and args.get("by") == cls.default_by(context.task.kind):
            return {k: v for k, v in args.items() if k != "by"}
        return dict(args)

    @staticmethod
    def default_by(kind: str) -> str:
        return "answer_type" if kind == "vqa" else "none"

    def __init__(self, args: dict[str, str], context: ModelContext) -> None:
        super().__init__(args, context)
        unknown = set(args) - {"by"}
        if unknown:
            raise UserError(
                f"model 'prior' takes --model-args by=answer_type|question_type|none, not {sorted(unknown)}"
                f"{close_hint(sorted(unknown), ['by'])}"
            )
        if context.task is None:
            raise UserError("model 'prior' needs a task with a training split")
        self.task = context.task
        self.by = args.get("by", self.default_by(self.task.kind))
        train = self.task.train_samples()
        self.n_train = len(train)
        fields = sorted({k for s in train for k in s.fields})
        if self.by != "none" and train and self.by not in fields:
            raise UserError(f"--model-args by={self.by}: no training sample of task '{self.task.id}' has that "
                            f"field; expected none or one of {', '.join(fields) or '(no fields)'}")
        if self.task.kind == "vqa":
            self.answers = self._fit_vqa(train)
        else:
            self.answers = {"": most_typical_text([s.answer for s in train])}

    def _fit_vqa(self, train: list[Sample]) -> dict[str, str]:
        groups: dict[str, list[str]] = {"": [s.answer for s in train]}
        if self.by != "none":
            for s in train:
                groups.setdefault(str(s.fields.get(self.by, "")), []).append(s.answer)
        return {key: most_frequent(values) for key, values in groups.items()}

    def identity(self) -> dict[str, Any]:
        return {"by": self.by, "train_split": self.task.config.train_split, "n_train": self.n_train,
                "answers": dict(sorted(self.answers.items()))}

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        outputs = []
        for req in requests:
            key = "" if self.by == "none" else str(req.metadata.get(self.by, ""))
            outputs.append(GenerationOutput(text=self.answers.get(key, self.answers[""]), completion_tokens=0))
        return outputs
