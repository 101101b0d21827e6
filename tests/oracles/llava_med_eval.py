"""Test oracle for the LLaVA-Med VQA scoring, restated (not copied) from the original.

Source:  https://github.com/microsoft/LLaVA-Med (v1.0 evaluation code)
Paths:   llava/eval/run_eval.py (`evaluate`), llava/eval/eval_metrics/evaluate_metrics.py (`calculate_f1score`),
         llava/eval/eval_metrics/utils.py (`split_sentence`), llava/eval/eval_metrics/glossary.py
         (`normalize_word`); commit ad758b687d4e79628dbfdb149dc545641ed29014 (glossary.py:
         356ba559f471af61fc0e95873bdbbf40705dabc6).
Licence: LLaVA-Med is under the Microsoft Research License Terms, which forbid redistributing its source
         code, so this module is NOT a verbatim copy. It restates the original computation step by step, in
         the original's order and with its data structures (per-word count dicts, the union word set, tp/fn
         sums), so that a reviewer can hold it against the upstream files line by line:
         - normalize_word is the same VQA-derived code as PeFoMed's processPunctuation + processDigitArticle
           followed by `.replace(",", "")`; it is taken from the BSD-licensed PeFoMed copy next to this file.
         - evaluate lowercases both strings, normalizes them once, scores CLOSED rows by `gt in pred` and
           OPEN rows by the recall of calculate_f1score, which normalizes both strings a second time.
         The closed rule follows shared/reference/metrics.md (substring test, every closed row counted);
         `closed_hit_v1_gate` restates the v1.0 file's gated variant for the documented difference.
"""

from __future__ import annotations

from collections import defaultdict

from .pefomed_vqa_eval import MedVQAEval


class _NoQuestions:
    """MedVQAEval's constructor asks its annotations for question ids; only its text methods are used here."""

    def getQuesIds(self) -> list:  # noqa: N802 (the original API's name)
        return []


_VQA_TOOLS = MedVQAEval(_NoQuestions(), None)


def normalize_word(token: str) -> str:
    """glossary.normalize_word: punctuation, periods, number words, articles, contractions, then drop ','."""
    return _VQA_TOOLS.processDigitArticle(_VQA_TOOLS.processPunctuation(token)).replace(",", "")


def split_sentence(sentence: str, n: int) -> dict[str, int]:
    """utils.split_sentence: counts of the n-grams of the lowercased, stripped, whitespace-split sentence."""
    words: dict[str, int] = defaultdict(int)
    tokens = sentence.lower().strip().split()
    for i in range(len(tokens) - n + 1):
        gram = " ".join(tokens[i : i + n])
        if gram:
            words[gram] += 1
    return words


def calculate_f1score(candidate: str, reference: str) -> tuple[float, float, float]:
    """evaluate_metrics.calculate_f1score: (f1, precision, recall) from unigram counts; zeros when empty."""
    candidate = normalize_word(candidate)
    reference = normalize_word(reference)
    candidate_words = split_sentence(candidate, 1)
    reference_words = split_sentence(reference, 1)
    word_set = set(candidate_words) | set(reference_words)
    tp = fp = fn = 0
    for word in word_set:
        if word in candidate_words and word in reference_words:
            tp += candidate_words[word]
        elif word in candidate_words and word not in reference_words:
            fp += candidate_words[word]
        elif word not in candidate_words and word in reference_words:
            fn += reference_words[word]
    if len(candidate_words) == 0 or len(reference_words) == 0:
        return 0, 0, 0
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    if tp == 0:
        return 0, 0, 0
    return 2 * precision * recall / (precision + recall), precision, recall


def evaluate(gt: list[dict], pred: list[dict]) -> dict[str, object]:
    """run_eval.evaluate, reduced to the published numbers: open recall and closed (yes/no) accuracy.

    gt items: {"answer": str, "answer_type": "OPEN"|"CLOSED"}; pred items: {"text": str}.
    Returns the per-row lists and their means (0.0 for an empty closed list, as the original).
    """
    closed_hits: list[int] = []
    open_recalls: list[float] = []
    for gt_item, pred_item in zip(gt, pred):
        gt_value = normalize_word(gt_item["answer"].lower())
        pred_value = normalize_word(pred_item["text"].lower())
        if gt_item["answer_type"] == "OPEN":
            open_recalls.append(calculate_f1score(pred_value, gt_value)[2])
        elif gt_item["answer_type"] == "CLOSED":
            closed_hits.append(1 if gt_value in pred_value else 0)
    return {
        "closed_hits": closed_hits,
        "open_recalls": open_recalls,
        "closed_accuracy": sum(closed_hits) / len(closed_hits) if closed_hits else 0.0,
        "open_recall": sum(open_recalls) / len(open_recalls) if open_recalls else None,
    }


def closed_hit_v1_gate(answer: str, prediction: str) -> int | None:
    """The v1.0 run_eval.py closed branch: None where that file appends nothing (dropped from the mean)."""
    gt_value, pred_value = normalize_word(answer.lower()), normalize_word(prediction.lower())
    if "yes" in pred_value or "no" in pred_value:
        return 1 if gt_value in pred_value else None
    return 0
