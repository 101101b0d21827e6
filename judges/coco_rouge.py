"""ROUGE-L as pycocoevalcap's `Rouge` computes it, and ROUGE-1/2/L F as the `rouge-score` package computes them.

Both need longest-common-subsequence lengths, which both packages get from a quadratic Python table; we use the
bit-parallel LCS-length algorithm (Allison-Dix / Hyyrö), which returns the same integer in a fraction of the time.
Everything else (tokenization, precision/recall/F formulas) is the packages' own code path.
"""

from __future__ import annotations

from collections.abc import Sequence

BETA = 1.2  # pycocoevalcap Rouge().beta


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def coco_rouge_l(candidate: str, reference: str) -> float:
    """pycocoevalcap `Rouge.calc_score([candidate], [reference])` (tokens split on single spaces, as it does)."""
    token_c = candidate.split(" ")
    token_r = reference.split(" ")
    lcs = lcs_length(token_r, token_c)
    prec_max = lcs / float(len(token_c))
    rec_max = lcs / float(len(token_r))
    if prec_max != 0 and rec_max != 0:
        return ((1 + BETA**2) * prec_max * rec_max) / float(rec_max + BETA**2 * prec_max)
    return 0.0


class RougeScore:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures of `rouge_score.rouge_scorer.RougeScorer(...).score(ref, pred)`."""

    def __init__(self, use_stemmer: bool = False) -> None:
        from rouge_score import scoring, tokenize

        # what rouge_score.tokenizers.DefaultTokenizer(use_stemmer) does, without importing all of nltk
        # (seconds) when no stemmer is used
        self._stemmer = None
        if use_stemmer:
            from nltk.stem import porter

            self._stemmer = porter.PorterStemmer()
        self._tokenize = tokenize.tokenize
        self._fmeasure = scoring.fmeasure

    def score(self, reference: str, prediction: str) -> dict[str, float]:
        target = self._tokenize(reference, self._stemmer)
        predicted = self._tokenize(prediction, self._stemmer)
        out = {f"rouge{n}_f": self._ngram_f(target, predicted, n) for n in (1, 2)}
        if not target or not predicted:
            out["rougeL_f"] = 0.0
        else:
            lcs = lcs_length(target, predicted)
            out["rougeL_f"] = self._fmeasure(lcs / len(predicted), lcs / len(target))
        return out

    def _ngram_f(self, target: list[str], predicted: list[str], n: int) -> float:
        """rouge_scorer._score_ngrams(_create_ngrams(target, n), _create_ngrams(prediction, n)).fmeasure"""
        target_ngrams = _ngrams(target, n)
        predicted_ngrams = _ngrams(predicted, n)
        overlap = sum(min(count, predicted_ngrams.get(ngram, 0)) for ngram, count in target_ngrams.items())
        precision = overlap / max(sum(predicted_ngrams.values()), 1)
        recall = overlap / max(sum(target_ngrams.values()), 1)
        return self._fmeasure(precision, recall)


def _ngrams(tokens: list[str], n: int) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(tokens) - n + 1):
        ngram = tuple(tokens[i: i + n])
        counts[ngram] = counts.get(ngram, 0) + 1
    return counts
