"""Benchmark: the `lexical` judge against pycocoevalcap's own scorers on the same 1,000 real IU-Xray reports.

References are the IU-Xray test and validation reports (plus the first train reports to reach --n), predictions
are other train reports in a seeded shuffle. pycocoevalcap is run the way COCOEvalCap runs it (PTBTokenizer on
references and predictions, then Bleu(4), Meteor(), Rouge(), Cider()); the judge runs its full suite (those
metrics plus rouge-score ROUGE-1/2/L) and its corpus aggregation. Both run in this process, alternately, and the
numbers are compared for exact equality.

    .venv/bin/python benchmarks/bench_lexical.py [--n 1000] [--rounds 2] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    """User + system CPU of this process and of its finished child processes (the JVMs)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def load_pairs(data: Path, n: int) -> tuple[list[str], list[str]]:
    annotation = json.loads((data / "iu-xray" / "annotation.json").read_text())
    train = [x["report"] for x in annotation["train"]]
    references = [x["report"] for x in annotation["test"] + annotation["val"]]
    extra = max(0, n - len(references))
    references = (references + train[:extra])[:n]
    predictions = random.Random(0).sample(train[extra:], n)
    return references, predictions


def run_pycocoevalcap(references: list[str], predictions: list[str]) -> tuple[float, dict[str, float]]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    started = time.perf_counter()
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r}] for i, r in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
    out: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out.update({f"Bleu_{k + 1}": float(v) for k, v in enumerate(bleu)})
    meteor = Meteor()
    out["METEOR"] = float(meteor.compute_score(gts, res)[0])
    out["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    elapsed = time.perf_counter() - started
    del meteor
    return elapsed, out


def run_judge(references: list[str], predictions: list[str]) -> tuple[float, dict[str, float | None], object, list]:
    from harness.judge_api import JudgeOptions
    from harness.judges.lexical import LexicalJudge

    records = [{"id": str(i), "answer": r, "prediction": p} for i, (r, p) in enumerate(zip(references, predictions))]
    started = time.perf_counter()
    judge = LexicalJudge(JudgeOptions(convention="none", task_kind="report"))
    rows = judge.score(records)
    values = judge.aggregate(records, rows)
    elapsed = time.perf_counter() - started
    judge.close()
    return elapsed, values, judge, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each (the median is reported)")
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("HARNESS_SHARED_DATA") or REPO.parent / "shared" / "data"),
                        help="the shared data folder (default: $HARNESS_SHARED_DATA, else ../shared/data)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    references, predictions = load_pairs(args.data, args.n)

    from harness.judges.coco_java import PARAPHRASE_TABLE, coco_dir
    from harness.judges.meteor_paraphrase import load_index

    started = time.perf_counter()
    load_index(coco_dir() / PARAPHRASE_TABLE)
    print(f"paraphrase index ready in {time.perf_counter() - started:.1f} s (built once, then cached)")

    ours, theirs, ours_cpu, theirs_cpu = [], [], [], []
    for round_ in range(args.rounds):
        cpu = cpu_seconds()
        elapsed, coco = run_pycocoevalcap(references, predictions)
        theirs.append(elapsed)
        theirs_cpu.append(cpu_seconds() - cpu)
        print(f"round {round_ + 1}: pycocoevalcap {elapsed:.2f} s (CPU {theirs_cpu[-1]:.1f} s)", flush=True)
        cpu = cpu_seconds()
        elapsed, values, judge, rows = run_judge(references, predictions)
        ours.append(elapsed)
        ours_cpu.append(cpu_seconds() - cpu)
        print(f"round {round_ + 1}: lexical judge {elapsed:.2f} s (CPU {ours_cpu[-1]:.1f} s)", flush=True)

    print(f"\n{'metric':<10} {'pycocoevalcap':>22} {'lexical judge':>22}  identical")
    identical = True
    for name, expected in coco.items():
        got = values[name]
        same = got == expected
        identical &= same
        print(f"{name:<10} {expected:>22.17g} {got:>22.17g}  {'yes' if same else f'NO (diff {got - expected:.3g})'}")
    for name in ("rouge1_f", "rouge2_f", "rougeL_f"):
        print(f"{name:<10} {'(not in pycocoevalcap)':>22} {values[name]:>22.17g}")

    started = time.perf_counter()
    rng = random.Random(0)
    for _ in range(200):
        idx = [rng.randrange(len(rows)) for _ in rows]
        judge.aggregate([], [rows[i] for i in idx])
    bootstrap = time.perf_counter() - started

    t_ours, t_theirs = statistics.median(ours), statistics.median(theirs)
    print(f"\n{args.n} reports, median of {args.rounds} rounds:")
    print(f"  pycocoevalcap (PTB + Bleu + Meteor + Rouge + Cider): {t_theirs:.2f} s   runs: "
          + ", ".join(f"{t:.2f}" for t in theirs))
    print(f"  lexical judge (same + rouge-score, + aggregate):     {t_ours:.2f} s   runs: "
          + ", ".join(f"{t:.2f}" for t in ours))
    c_ours, c_theirs = statistics.median(ours_cpu), statistics.median(theirs_cpu)
    print(f"  CPU time (all processes, JVMs included): pycocoevalcap {c_theirs:.1f} s, lexical judge {c_ours:.1f} s")
    print(f"  ratio: {t_ours / t_theirs:.2f} of pycocoevalcap's wall time (target <= 0.50), {c_ours / c_theirs:.2f} of "
          f"its CPU time; numbers identical: {'yes' if identical else 'NO'}")
    print(f"  200 bootstrap aggregates (all corpus metrics, CIDEr IDF recomputed): {bootstrap:.2f} s")
    info = judge.describe()
    print(f"  METEOR workers: {info.get('meteor_workers')}; paraphrase table: {info.get('meteor_paraphrase_table')}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
