"""The lexical judge where it fails or remembers: METEOR's Java process dying on a sample, and the per-sample CIDEr-D
scores that `coco_ngram.CiderCorpus` keeps for recent reference multisets (used by harness compare's resamples)."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest

pytest.importorskip("pycocoevalcap")
pytest.importorskip("rouge_score")
if shutil.which("java") is None:
    pytest.skip("Java is not installed", allow_module_level=True)

from harness.errors import UserError  # noqa: E402
from harness.judge_api import JudgeOptions  # noqa: E402
from harness.judges.lexical import LexicalJudge  # noqa: E402

FAKE_JAVA = """#!/bin/sh
# `java -version`, and a METEOR that answers one SCORE line, then dies as METEOR 1.5 does on a huge text
case "$*" in *-version*) echo 'openjdk version "17.0.2"' >&2; exit 0;; esac
read line
echo "1 1 0 0 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1 1 1"
read line
echo 'Exception in thread "main" java.lang.OutOfMemoryError: Java heap space' >&2
printf '\\tat java.util.Arrays.copyOf(Unknown Source)\\n\\tat Meteor.main(Unknown Source)\\n' >&2
exit 1
"""


def test_meteor_dying_names_the_sample_and_the_java_exception(monkeypatch, tmp_path):
    """Its stack frames said nothing (the last three lines), and "score again" failed again the same way."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").write_text(FAKE_JAVA)
    (bin_dir / "java").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    judge = LexicalJudge(JudgeOptions(task_kind="report", settings={"tokenizer": "split", "meteor_table": "full"}))
    records = [{"id": "short", "answer": "heart normal", "prediction": "heart normal"},
               {"id": "huge", "answer": "no effusion", "prediction": "the lungs are clear " * 50}]
    with pytest.raises(UserError) as err:
        judge.score(records)
    message = str(err.value)
    assert message.startswith("METEOR (Java) stopped at sample 'huge' (200 words predicted, 2 in the reference): "
                              "java.lang.OutOfMemoryError: Java heap space") and "shorten that prediction" in message
    assert "\n" not in message and "Unknown Source" not in message


def test_cider_of_a_multiset_is_the_same_from_its_remembered_idf():
    """Rows sharing a reference (two runs' rows of one sample) share the IDF of any multiset drawn over them, and
    scores() remembers it: the values equal a fresh corpus's, whichever multiset was asked before."""
    from harness.judges.lexical_corpus import LexicalCorpus

    rng = random.Random(5)
    vocab = "heart lungs clear normal effusion nodule left right lobe small mild no".split()
    refs = [" ".join(rng.choice(vocab) for _ in range(rng.randint(4, 12))) for _ in range(30)]
    hyps = [" ".join(w for w in r.split() if rng.random() < p) for p in (0.5, 0.9) for r in refs]

    def corpus() -> LexicalCorpus:
        return LexicalCorpus(refs + refs, hyps, {"ROUGE_L": [0.0] * 60}, [[0.0] * 23] * 60)

    remembering = corpus()
    for _ in range(10):
        draw = np.array([rng.randrange(30) for _ in range(30)])
        for positions in (draw, draw + 30, np.where(np.array([rng.random() < 0.5 for _ in range(30)]),
                                                     np.arange(30), np.arange(30) + 30)):
            assert remembering.metrics(positions)["CIDEr"] == corpus().metrics(positions)["CIDEr"]
    # the same samples drawn another number of times: another IDF
    for positions in ([0, 1, 2], [0, 0, 1, 2], [0, 1, 1, 2], [30, 1, 32]):
        assert remembering.metrics(positions)["CIDEr"] == corpus().metrics(positions)["CIDEr"]
