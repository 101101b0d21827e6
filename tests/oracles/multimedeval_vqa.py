# ruff: noqa
# Test oracle: copy of MultiMedEval's VQA scoring (normalization + VQA.evaluate).
#   Source:  https://github.com/corentin-ryr/MultiMedEval
#   Paths:   multimedeval/utils.py (commit 04578b234adecb05dc72bf09eaf0b4a3dff2f55b): contractions, manual_map,
#              articles, period_strip, comma_strip, punct, clean_str -- verbatim.
#            multimedeval/task_families.py (commit 0044b1fd7ebbf7c5f90aa6b2ca81c016dd0d40dc): VQA._preprocess
#              and VQA.evaluate -- verbatim except that the unigram BLEU (torchmetrics BLEUScore) is removed
#              (marked "removed:"), as it plays no part in the accuracy/recall numbers.
#            multimedeval/vqa.py (commit 422ed3045cedd2f9a2a160a365888976192b5847): VQARad.get_correct_answer.
#   Glue (not from the source, marked below): a minimal Benchmark stand-in holding the samples.
#
# MIT License
#
# Copyright (c) 2024 Corentin Royer
#
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to deal
# in the Software without restriction, including without limitation the rights
# to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
# copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in all
# copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
# SOFTWARE.

import re
from dataclasses import dataclass
from typing import Dict, List, Optional


# ---- from multimedeval/utils.py -------------------------------------------------------------------------


@dataclass
class EvaluationOutput:
    """Dataclass for storing the output of the evaluation."""

    metrics: Dict[str, float]
    answer_log: Optional[List[tuple]] = None


contractions = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}

manual_map = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
articles = ["a", "an", "the"]
period_strip = re.compile(r"(?!<=\d)(\.)(?!\d)")  # noqa
comma_strip = re.compile(r"(\d)(\,)(\d)")  # noqa
punct = [
    ";",
    r"/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]


def clean_str(token):
    """Cleans a string (removes punctuation, lowers...).

    Args:
        token: The string to clean.

    Returns:
        The cleaned string.
    """
    token = token.lower()
    _token = token
    for p in punct:
        if (p + " " in token or " " + p in token) or (
            re.search(comma_strip, token) is not None
        ):
            _token = _token.replace(p, "")
        else:
            _token = _token.replace(p, " ")
    token = period_strip.sub("", _token, re.UNICODE)

    _token = []
    temp = token.lower().split()
    for word in temp:
        word = manual_map.setdefault(word, word)
        if word not in articles:
            _token.append(word)
    for i, word in enumerate(_token):
        if word in contractions:
            _token[i] = contractions[word]
    token = " ".join(_token)
    token = token.replace(",", "")
    return token


# ---- glue (not from the source): the parts of utils.Benchmark that VQA.evaluate uses ---------------------


class Benchmark:
    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, idx):
        return {"idx": idx, "sample": self.dataset[idx]}


# ---- from multimedeval/task_families.py ------------------------------------------------------------------


class VQA(Benchmark):
    """A benchmark for Visual Question Answering tasks."""

    def _preprocess(self, text):
        tokenized_text = set(text.split())
        tokenized_text.discard("")
        return tokenized_text

    # from multimedeval/vqa.py, VQARad
    def get_correct_answer(self, sample):
        """Get the correct answer for the VQA-Rad task.

        Args:
            sample: The dataset sample.

        Returns:
            The correct answer.
        """
        return sample["answer"].lower().strip()

    def evaluate(self, predictions):
        """Evaluate the predictions against the ground truth.

        Args:
            predictions: The predictions made by the model.

        Returns:
            The evaluation output.
        """
        answers_log = [
            [
                "correct",
                "predicted",
                "F1",
                "BLEU",
                "recall",
                "correct tokens",
                "predicted tokens",
            ]
        ]
        bleu_scores = []
        f1 = []
        recall = []
        closed_questions = []
        closed_questions_correct = 0

        for prediction in predictions:
            answer = prediction["answer"]
            idx = prediction["idx"]
            sample = self[idx]["sample"]

            # Compute the number of tokens recalled in the answer
            clean_correct = clean_str(self.get_correct_answer(sample))
            clean_predicted = clean_str(answer)

            predicted_tokens = self._preprocess(clean_predicted)
            correct_tokens = self._preprocess(clean_correct)

            current_precision = (
                len(predicted_tokens.intersection(correct_tokens))
                / len(predicted_tokens)
                if len(predicted_tokens) > 0
                else 0
            )
            current_recall = (
                len(predicted_tokens.intersection(correct_tokens)) / len(correct_tokens)
                if len(correct_tokens) > 0
                else 0
            )
            current_f1 = (
                2
                * (current_precision * current_recall)
                / (current_precision + current_recall + 1e-8)
            )
            f1.append(current_f1)
            recall.append(current_recall)

            # removed: current_bleu = self.bleu([clean_predicted], [[clean_correct]]).item()
            # removed: bleu_scores.append(current_bleu)
            current_bleu = None

            # If the question is closed, decide if it is correct or not
            if clean_correct in ["yes", "no"]:
                closed_questions.append(True)

                if correct_tokens == {"no"}:
                    correct_tokens.add("not")

                closed_q_recall = (
                    len(predicted_tokens.intersection(correct_tokens))
                    / len(correct_tokens)
                    if len(correct_tokens) > 0
                    else 0
                )
                if closed_q_recall >= 0.4:
                    closed_questions_correct += 1
            else:
                closed_questions.append(False)

            answers_log.append(
                (
                    self.get_correct_answer(sample),
                    answer,
                    current_f1,
                    current_bleu,
                    current_recall,
                    correct_tokens,
                    predicted_tokens,
                )
            )

        # Compute the accuracy for closed questions
        open_questions_recall = []
        open_questions_accuracy = 0
        for idx, is_closed in enumerate(closed_questions):
            if not is_closed:
                open_questions_recall.append(recall[idx])
                if recall[idx] >= 0.75:
                    open_questions_accuracy += 1

        metrics = {
            # removed: "bleu": sum(bleu_scores) / len(bleu_scores) if len(bleu_scores) > 0 else 0,
            "F1": sum(f1) / len(f1) if len(f1) > 0 else 0,
            "recall": sum(recall) / len(recall) if len(recall) > 0 else 0,
            "closedQuestionsAccuracy": (
                closed_questions_correct / sum(closed_questions)
                if sum(closed_questions) > 0
                else 0
            ),
            "openQuestionsRecall": (
                sum(open_questions_recall) / len(open_questions_recall)
                if len(open_questions_recall) > 0
                else 0
            ),
            "openQuestionsAccuracy": (
                open_questions_accuracy / len(open_questions_recall)
                if len(open_questions_recall) > 0
                else 0
            ),
        }

        return EvaluationOutput(answer_log=answers_log, metrics=metrics)
