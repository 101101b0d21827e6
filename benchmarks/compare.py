"""Benchmark: `harness compare` of two runs of real IU-Xray reports scored with the `lexical` judge.

References are IU-Xray reports (test, validation, then train, to reach --n); run A predicts each with another
train report (a seeded shuffle), run B with the reference cut to its first half, so that B is better on every
metric. Both are scored with `harness score FILE --judge lexical` (Java), then compared with `harness compare`
(1,000 draws by default, overall and per `--breakdown view`, a field of two values). Prints seconds per step.

    .venv/bin/python benchmarks/compare.py [--n 7000] [--resamples 1000] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def reports(data: Path, n: int) -> list[str]:
    annotation = json.loads((data / "iu-xray" / "annotation.json").read_text())
    texts = [x["report"] for split in ("test", "val", "train") for x in annotation[split]]
    return (texts * (n // len(texts) + 1))[:n]


def write_runs(folder: Path, n: int, data: Path) -> tuple[Path, Path]:
    refs = reports(data, n)
    others = random.Random(0).sample(refs, len(refs))
    files = []
    def half(i: int, r: str) -> str:
        return " ".join(r.split()[: len(r.split()) // 2])

    for name, predict in (("a", lambda i, r: others[i]), ("b", half)):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"id": f"r{i}", "answer": r, "prediction": predict(i, r),
                                            "view": "frontal" if i % 2 else "lateral"}) + "\n"
                                for i, r in enumerate(refs)))
        files.append(path)
    return files[0], files[1]


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        sys.exit(f"harness {' '.join(args)} failed: {proc.stderr.strip()}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=7000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("HARNESS_SHARED_DATA",
                                                                         REPO.parent / "shared" / "data")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        folder = Path(tmp)
        a, b = write_runs(folder, args.n, args.data)
        for path in (a, b):
            seconds = timed(["score", str(path), "--task-type", "report", "--task-name", "bench", "--judge",
                             "lexical", "--output", str(folder / f"{path.stem}-scored"), "--no-progress"])
            print(f"score {path.stem}: {args.n} reports, {seconds:.1f} s")
        pair = [str(folder / "a-scored"), str(folder / "b-scored")]
        common = ["--resamples", str(args.resamples), "--no-progress", "-o", str(folder / "c.json")]
        overall = timed(["compare", *pair, *common])
        print(f"compare, overall: {overall:.1f} s ({args.resamples} draws)")
        sliced = timed(["compare", *pair, *common, "--breakdown", "view"])
        print(f"compare, overall and 2 slices: {sliced:.1f} s")
        report = json.loads((folder / "c.json").read_text())
        cider = next(c for c in report["comparisons"] if c["metric"] == "CIDEr" and c["breakdown"] is None)
        print(f"CIDEr A {cider['a']:.4f} B {cider['b']:.4f} B - A {cider['difference']:+.4f} "
              f"[{cider['ci95'][0]:+.4f}, {cider['ci95'][1]:+.4f}] p {cider['p_value']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
