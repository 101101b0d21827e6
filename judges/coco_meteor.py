"""METEOR 1.5 as pycocoevalcap runs it, with pipelined I/O, and its scoring formula in Python.

pycocoevalcap's `Meteor` sends one `SCORE ||| ref ||| hyp` line per sample to `meteor-1.5.jar -stdio -l en -norm`,
waits for each reply (23 sufficient statistics), then sends one `EVAL` line with all statistics and reads the
segment scores and the corpus score. We send the very same SCORE lines, all at once from a writer thread (optionally
split over several METEOR processes: a line's statistics do not depend on the others), and compute what EVAL
computes in Python: `MeteorScorer.computeMetrics` (segment score from statistics) and `MeteorStats.addStats`
(corpus statistics are sums, except that a perfectly matched segment adds no chunk). The operations follow the
jar's bytecode order in IEEE doubles, so the results are bit-identical to the jar's output; keeping the statistics
lets any subset of samples get its corpus METEOR without Java.
"""

from __future__ import annotations

import math
import re
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.errors import UserError
from harness.judges.coco_java import JVM_FLAGS

# METEOR 1.5, language en, task "default" (what -l en selects): alpha, beta, gamma, delta and module weights
# (exact, stem, synonym, paraphrase)
ALPHA, BETA, GAMMA, DELTA = 0.85, 0.2, 0.6, 0.75
WEIGHTS = (1.0, 0.6, 0.8, 0.6)
STATS_LENGTH = 23  # testLength refLength testFunc refFunc, 4 x (tContent rContent tFunc rFunc), chunks tWM rWM


def score_line(hypothesis: str, reference: str) -> str:
    """pycocoevalcap `Meteor._stat`'s line for one hypothesis and its single reference."""
    hypothesis = hypothesis.replace("|||", "").replace("  ", " ")
    return " ||| ".join(("SCORE", reference, hypothesis))


class MeteorStopped(UserError):
    """The METEOR process ended before replying to every line: `done` lines were answered; `cause` is its exception
    (java.lang.OutOfMemoryError: Java heap space, for a text of tens of thousands of words) or how it ended."""

    def __init__(self, done: int, count: int, cause: str) -> None:
        self.done, self.count, self.cause = done, count, cause
        super().__init__(f"METEOR (Java) stopped after {done} of {count} lines ({cause})")


class MeteorProcess:
    """One `java -jar meteor-1.5.jar - - -stdio -l en -norm` process (pycocoevalcap's command line)."""

    def __init__(self, java: str, jar: Path, paraphrase: Path | None = None) -> None:
        cmd = [java, *JVM_FLAGS, "-jar", "-Xmx2G", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"]
        if paraphrase is not None:
            cmd += ["-a", str(paraphrase)]
        self.proc = subprocess.Popen(cmd, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._threads: list[threading.Thread] = []
        self._replies: list[bytes] = []

    def send(self, lines: Sequence[str]) -> None:
        """Write the SCORE lines and read the replies in background threads (collect them with `receive`)."""
        payload = "".join(f"{line}\n" for line in lines).encode()
        count = len(lines)

        def write() -> None:
            try:
                self.proc.stdin.write(payload)
                self.proc.stdin.flush()
            except OSError:  # a dead process shows up in receive() with its stderr
                pass

        def read() -> None:
            for _ in range(count):
                line = self.proc.stdout.readline()
                if not line:
                    return
                self._replies.append(line)

        self._threads = [threading.Thread(target=write, daemon=True), threading.Thread(target=read, daemon=True)]
        for thread in self._threads:
            thread.start()

    def receive(self, count: int) -> list[list[float]]:
        """The statistics of the lines given to `send`, in order."""
        for thread in self._threads:
            thread.join()
        if len(self._replies) < count:
            raise MeteorStopped(len(self._replies), count, self._failure())
        stats = []
        for line in self._replies[:count]:
            values = [float(x) for x in line.split()]
            if len(values) != STATS_LENGTH:
                raise UserError(f"unexpected METEOR (Java) reply {line[:200]!r}; score again")
            stats.append(values)
        return stats

    def _failure(self) -> str:
        """The Java exception the process died of (its first line that is no stack frame), else its exit status."""
        self.close()
        err = self.proc.stderr.read().decode(errors="replace").strip().splitlines() if self.proc.stderr else []
        said = [line.strip() for line in err if line.strip() and not line.strip().startswith(("at ", "..."))]
        thrown = [line for line in said if "Exception" in line or "Error" in line]
        first = (thrown or said or [f"exit {self.proc.returncode}"])[0]
        return re.sub(r'^Exception in thread "[^"]*" ', "", first)[:300]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.kill()
        self.proc.wait()


def _div(a: float, b: float) -> float:
    """Java's double division (IEEE: x/0 is +-Infinity, 0/0 is NaN) where Python would raise."""
    if b != 0.0:
        return a / b
    if a == 0.0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _total_matches(stats: Sequence[float]) -> tuple[float, float]:
    """MeteorStats(String): testTotalMatches and referenceTotalMatches summed over the 4 stages."""
    test = ref = 0.0
    for i in range(4):
        test += stats[4 + 4 * i]
        ref += stats[5 + 4 * i]
        test += stats[6 + 4 * i]
        ref += stats[7 + 4 * i]
    return test, ref


def meteor_score(stats: Sequence[float], total_matches: tuple[float, float] | None = None) -> float:
    """MeteorScorer.computeMetrics: the METEOR score of one statistics vector (a segment or a sum)."""
    test_len, ref_len, test_func, ref_func = stats[0], stats[1], stats[2], stats[3]
    chunks, test_word_matches, ref_word_matches = stats[20], stats[21], stats[22]
    test_total, ref_total = total_matches if total_matches is not None else _total_matches(stats)
    test_weighted_len = DELTA * (test_len - test_func) + (1.0 - DELTA) * test_func
    ref_weighted_len = DELTA * (ref_len - ref_func) + (1.0 - DELTA) * ref_func
    test_weighted = ref_weighted = 0.0
    for i in range(4):
        test_weighted += stats[4 + 4 * i] * WEIGHTS[i] * DELTA
    for i in range(4):
        ref_weighted += stats[5 + 4 * i] * WEIGHTS[i] * DELTA
    for i in range(4):
        test_weighted += stats[6 + 4 * i] * WEIGHTS[i] * (1.0 - DELTA)
    for i in range(4):
        ref_weighted += stats[7 + 4 * i] * WEIGHTS[i] * (1.0 - DELTA)
    precision = _div(test_weighted, test_weighted_len)
    recall = _div(ref_weighted, ref_weighted_len)
    f_mean = _div(1.0, _div(1.0 - ALPHA, precision) + _div(ALPHA, recall))
    if test_total == test_len and ref_total == ref_len and chunks == 1.0:
        frag = 0.0
    else:
        frag = _div(chunks, (test_word_matches + ref_word_matches) / 2.0)
    penalty = GAMMA * (math.nan if math.isnan(frag) else math.pow(frag, BETA))
    score = f_mean * (1.0 - penalty)
    if math.isnan(score):
        return 0.0
    return score if score > 0.0 else 0.0


def corpus_meteor(stats: np.ndarray) -> float | None:
    """The score METEOR's EVAL prints last for these segments (rows of an (n, 23) array): computeMetrics of the
    summed statistics. All statistics are integer counts, so the float sums are exact in any order."""
    if len(stats) == 0:
        return None
    test_total = stats[:, [4, 6, 8, 10, 12, 14, 16, 18]].sum(axis=1)
    ref_total = stats[:, [5, 7, 9, 11, 13, 15, 17, 19]].sum(axis=1)
    perfect = (test_total == stats[:, 0]) & (ref_total == stats[:, 1]) & (stats[:, 20] == 1.0)
    total = stats.sum(axis=0)
    total[20] = stats[~perfect, 20].sum()  # MeteorStats.addStats adds no chunk for a perfect match
    return meteor_score(total.tolist(), (float(test_total.sum()), float(ref_total.sum())))
