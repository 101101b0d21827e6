"""What the lexical judge keeps per sample, and the corpus metrics of any subset of samples, without Java.

Built once per scoring run from the tokenized texts and METEOR statistics (or, for rows read back from a file,
from each row's "details"). `metrics(indices)` recomputes every corpus metric exactly as pycocoevalcap would on
those samples alone: BLEU and METEOR from summed statistics, CIDEr-D with the IDF of that subset, ROUGE-L and the
rouge-score metrics as means. Indices may repeat (bootstrap resamples).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.judges.coco_meteor import corpus_meteor
from harness.judges.coco_ngram import CiderCorpus, bleu_stats, corpus_bleu, precook

BLEU_NAMES = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")
ROUGE_SCORE_NAMES = ("rouge1_f", "rouge2_f", "rougeL_f")


class LexicalCorpus:
    def __init__(self, ref_tokens: Sequence[str], hyp_tokens: Sequence[str],
                 means: dict[str, Sequence[float | None]], meteor_stats: Sequence[Sequence[float]] = ()) -> None:
        ref_words = [t.split() for t in ref_tokens]
        hyp_words = [t.split() for t in hyp_tokens]
        ref_counts = [precook(w) for w in ref_words]
        hyp_counts = [precook(w) for w in hyp_words]
        self.size = len(ref_words)
        self.bleu_stats = np.array(
            [bleu_stats(h, r, len(hw), len(rw)) for h, r, hw, rw in zip(hyp_counts, ref_counts, hyp_words, ref_words)],
            dtype=np.int64,
        ).reshape(self.size, 10)
        self.cider = CiderCorpus(hyp_counts, ref_counts, [len(w) for w in hyp_words], [len(w) for w in ref_words],
                                 ref_keys=list(ref_tokens))
        self.meteor_stats = np.array(meteor_stats, dtype=float).reshape(-1, 23)  # may be set after METEOR ran
        # metrics whose corpus value is the mean of the per-sample values (None = unscored, left out)
        self.means: dict[str, np.ndarray] = {}
        for name, values in means.items():
            self.add_mean(name, values)

    def add_mean(self, name: str, values: Sequence[float | None]) -> None:
        """One more metric whose corpus value is the mean of its per-sample values (None: unscored)."""
        self.means[name] = np.array([np.nan if v is None else v for v in values], dtype=float)

    def per_sample_cider(self) -> np.ndarray:
        """Each sample's CIDEr-D with the IDF of the whole set (pycocoevalcap's per-image scores)."""
        return self.cider.scores(np.arange(self.size))

    def metrics(self, indices: Sequence[int]) -> dict[str, float | None]:
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) == 0:
            return {name: None for name in (*BLEU_NAMES, "METEOR", "ROUGE_L", "CIDEr", *self._mean_names())}
        out: dict[str, float | None] = dict(zip(BLEU_NAMES, corpus_bleu(self.bleu_stats[idx])))
        out["METEOR"] = corpus_meteor(self.meteor_stats[idx])
        out["ROUGE_L"] = float(np.mean(self.means["ROUGE_L"][idx]))
        out["CIDEr"] = float(np.mean(self.cider.scores(idx)))
        for name in self._mean_names():
            values = self.means[name][idx]
            values = values[~np.isnan(values)]
            out[name] = float(np.mean(values)) if len(values) else None
        return out

    def _mean_names(self) -> list[str]:
        return [name for name in self.means if name != "ROUGE_L"]


def corpus_from_rows(rows: Sequence[dict[str, Any]]) -> LexicalCorpus:
    """Rebuild the corpus from score rows read back from scores.jsonl (their "details" and metrics)."""
    try:
        details = [row["details"] for row in rows]
        ref_tokens = [d["reference_tokens"] for d in details]
        hyp_tokens = [d["prediction_tokens"] for d in details]
        meteor = [d["meteor_stats"] for d in details]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"lexical score rows lack the details needed to aggregate them ({exc})") from None
    spice = bool(rows) and all("SPICE" in r["metrics"] for r in rows)
    names = ["ROUGE_L", *ROUGE_SCORE_NAMES] + (["SPICE"] if spice else [])
    means = {name: [row["metrics"].get(name) for row in rows] for name in names}
    return LexicalCorpus(ref_tokens, hyp_tokens, means, meteor)
