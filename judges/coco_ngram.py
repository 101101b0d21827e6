"""BLEU-1..4 and CIDEr-D exactly as pycocoevalcap's `Bleu(4)` and `Cider()` compute them, for any subset of samples.

BLEU: per-sample sufficient statistics (lengths, n-gram guesses and clipped matches, integers); corpus BLEU with
the 'closest' reference length is a function of their sums, and the per-sentence BLEU is pycocoevalcap's
`bleu_list` formula.

CIDEr-D: the IDF comes from the references of the evaluated set, so every subset needs a fresh pass. `CiderCorpus`
lays out every sample's n-gram vectors once, in the order pycocoevalcap's dicts iterate, and recomputes the scores
of a subset with numpy, summing each vector sequentially (column by column) so that every floating-point operation
happens in pycocoevalcap's order: the values are bit-identical, not just close.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

N = 4
SIGMA = 6.0
_TINY, _SMALL = 1e-15, 1e-9


def precook(words: Sequence[str], n: int = N) -> dict[tuple[str, ...], int]:
    """pycocoevalcap's `precook`: n-gram counts in first-occurrence order, n-gram length by length."""
    counts: dict[tuple[str, ...], int] = {}
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            ngram = tuple(words[i: i + k])
            counts[ngram] = counts.get(ngram, 0) + 1
    return counts


def bleu_stats(hyp_counts: dict, ref_counts: dict, hyp_len: int, ref_len: int) -> list[int]:
    """[testlen, reflen, guess_1..4, correct_1..4] of `cook_test` with one reference."""
    correct = [0] * N
    for ngram, count in hyp_counts.items():
        correct[len(ngram) - 1] += min(ref_counts.get(ngram, 0), count)
    guess = [max(0, hyp_len - k + 1) for k in range(1, N + 1)]
    return [hyp_len, ref_len, *guess, *correct]


def bleu(stats: Sequence[int]) -> list[float]:
    """BLEU-1..4 of one statistics vector, the formula of `BleuScorer.compute_score`: applied to one sample's
    statistics it gives pycocoevalcap's per-image `bleu_list` values, to their sum the corpus BLEU."""
    testlen, reflen = stats[0], stats[1]
    scores, product = [], 1.0
    for k in range(N):
        product *= float(stats[6 + k] + _TINY) / (stats[2 + k] + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def corpus_bleu(all_stats: np.ndarray) -> list[float]:
    """Corpus BLEU-1..4 ('closest' reference length) of the rows of an (n, 10) integer statistics array."""
    return bleu([int(x) for x in all_stats.sum(axis=0)])


class CiderCorpus:
    """Every sample's n-gram vectors, laid out for recomputing CIDEr-D on any multiset of samples."""

    def __init__(self, hyp_counts: Sequence[dict], ref_counts: Sequence[dict], hyp_lens: Sequence[int],
                 ref_lens: Sequence[int], ref_keys: Sequence[str] | None = None) -> None:
        self.size = len(hyp_counts)
        # rows with equal references (`ref_keys`: two runs' rows of one sample) give one IDF for any multiset
        # drawn over them: scores() keeps the last few IDFs' per-sample scores (a paired resample asks each twice)
        groups: dict[str, int] = {}
        keys = ref_keys if ref_keys is not None else [str(i) for i in range(self.size)]
        self.ref_group = np.array([groups.setdefault(k, len(groups)) for k in keys], dtype=np.int64)
        self.n_groups = len(groups)
        self._recent: dict[bytes, np.ndarray] = {}
        ids: dict[tuple[str, ...], int] = {}
        h_gid, h_tf, h_rtf, h_seg = [], [], [], []
        r_gid, r_tf, r_seg, r_sample = [], [], [], []
        for s, (hyp, ref) in enumerate(zip(hyp_counts, ref_counts)):
            for ngram, tf in ref.items():
                r_gid.append(ids.setdefault(ngram, len(ids)))
                r_tf.append(tf)
                r_seg.append(4 * s + len(ngram) - 1)
                r_sample.append(s)
            for ngram, tf in hyp.items():
                h_gid.append(ids.setdefault(ngram, len(ids)))
                h_tf.append(tf)
                h_rtf.append(ref.get(ngram, 0))
                h_seg.append(4 * s + len(ngram) - 1)
        self.vocab_size = len(ids)
        self.h_gid, self.h_tf, self.h_rtf = np.array(h_gid, np.int64), np.array(h_tf, float), np.array(h_rtf, float)
        self.r_gid, self.r_tf = np.array(r_gid, np.int64), np.array(r_tf, float)
        self.r_sample = np.array(r_sample, np.int64)
        self.h_segments = _Segments(np.array(h_seg, np.int64), 4 * self.size)
        self.r_segments = _Segments(np.array(r_seg, np.int64), 4 * self.size)
        # CIDEr's "length" is the number of bigrams (pycocoevalcap counts term frequencies where n == 1)
        deltas = np.maximum(np.asarray(hyp_lens) - 1, 0) - np.maximum(np.asarray(ref_lens) - 1, 0)
        penalties = {d: np.e ** (-(float(d) ** 2) / (2 * SIGMA**2)) for d in set(deltas.tolist())}
        self.penalty = np.array([penalties[d] for d in deltas.tolist()], dtype=float)
        self._logs = np.zeros(1)

    def _log_table(self, n: int) -> np.ndarray:
        """np.log(max(1.0, df)) for df = 0..n, computed as pycocoevalcap does (scalar np.log)."""
        if len(self._logs) <= n:
            self._logs = np.array([np.log(max(1.0, float(k))) for k in range(n + 1)])
        return self._logs

    def scores(self, samples: np.ndarray) -> np.ndarray:
        """Per-sample CIDEr-D of `samples` (indices, repeats allowed) with the IDF of exactly that multiset."""
        samples = np.asarray(samples, dtype=np.int64)
        key = np.bincount(self.ref_group[samples], minlength=self.n_groups).tobytes()
        known = self._recent.get(key)
        if known is None:
            known = self._all_scores(samples)
            if len(self._recent) >= 4:
                self._recent.pop(next(iter(self._recent)))
            self._recent[key] = known
        return known[samples]

    def _all_scores(self, samples: np.ndarray) -> np.ndarray:
        """Every row's CIDEr-D with the IDF of the multiset `samples`."""
        weight = np.bincount(samples, minlength=self.size).astype(float)
        df = np.bincount(self.r_gid, weights=weight[self.r_sample], minlength=self.vocab_size)
        ref_len = np.log(float(len(samples)))
        idf = ref_len - self._log_table(len(samples))[df.astype(np.int64)]
        h_vec = self.h_tf * idf[self.h_gid]
        r_of_h = self.h_rtf * idf[self.h_gid]
        r_vec = self.r_tf * idf[self.r_gid]
        # pycocoevalcap squares with pow(x, 2) (libm pow, which is not always x * x); an array exponent keeps numpy
        # on libm's pow too, where a scalar 2 would take its x * x shortcut
        two = np.full(1, 2.0)
        norm_h = np.sqrt(self.h_segments.sums(np.power(h_vec, two)))
        norm_r = np.sqrt(self.r_segments.sums(np.power(r_vec, two)))
        val = self.h_segments.sums(np.minimum(h_vec, r_of_h) * r_of_h)
        nonzero = (norm_h != 0) & (norm_r != 0)
        val[nonzero] /= norm_h[nonzero] * norm_r[nonzero]
        val = val.reshape(-1, 4) * self.penalty[:, None]
        # np.mean of a 4-vector, then / 1 reference, then x 10, as in CiderScorer.compute_cider
        return np.mean(val, axis=1) / 1 * 10.0


class _Segments:
    """Entries grouped in segments (sample x n-gram length), summed sequentially in entry order.

    The layout is a "staircase": segments sorted by length, longest first; column j holds the j-th entry of every
    segment longer than j. One gather brings all columns, then each column is added to the running sums of the
    segments it covers: every segment's sum is 0.0 + v0 + v1 + ... in entry order, as a Python `+=` loop gives.
    """

    def __init__(self, seg_of_entry: np.ndarray, n_segments: int) -> None:
        if len(seg_of_entry) and np.any(np.diff(seg_of_entry) < 0):
            raise ValueError("entries must be grouped by segment")
        lengths = np.bincount(seg_of_entry, minlength=n_segments)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        self.order = np.argsort(-lengths, kind="stable")
        sorted_lengths = lengths[self.order]
        longest = int(sorted_lengths[0]) if n_segments else 0
        self.active = np.searchsorted(-sorted_lengths, -np.arange(longest), side="left").tolist()
        sorted_starts = starts[self.order]
        self.gather = np.concatenate([sorted_starts[:k] + j for j, k in enumerate(self.active)] or [np.zeros(0, int)])
        self.n_segments = n_segments

    def sums(self, values: np.ndarray) -> np.ndarray:
        """The sequential sum of each segment's values (segments in their original order)."""
        columns = values[self.gather]
        acc = np.zeros(self.n_segments)
        at = 0
        for k in self.active:
            acc[:k] += columns[at: at + k]
            at += k
        out = np.empty(self.n_segments)
        out[self.order] = acc
        return out
