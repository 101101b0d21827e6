"""How the CPU-side pipeline scales with the size of a task and of a results folder (no model weights, no network).

Builds, in a temporary folder, a PathVQA release (original pickles) of `--questions` test questions asked about
`--images` noise JPEGs of `--side` px (PathVQA: about 7 questions per image) and times, as subprocesses of the
`harness` CLI (wall and CPU seconds, peak memory of the largest child):
  - `harness run --model prior --judge exact` (the prior ignores pixels but checks that each image decodes), the
    same with --batch-size 8 on a third and on all of the questions (does the time per batch grow?), and a run
    stopped halfway by SIGINT and by SIGKILL, then resumed: seconds until its `resuming` line and its first new
    batch, and whether every sample is there once;
  - the dataset fingerprint alone (in this process);
  - `harness score DIR` with exact and exact:multimedeval (bootstrapped recall/F1 over image clusters), `harness
    score FILE` of the bare predictions, `harness compare` of two runs overall and by answer type;
  - `harness publish` of `--runs` copies of a small run folder (each its own model label and run id);
  - the LLM judge cache with `--cache-entries` entries: put, get_many and claim per key, `harness cache`.

    python benchmarks/scale.py [--questions 30000] [--images 4500] [--side 256] [--runs 200] [--cache-entries 100000]

Run it against another checkout (PYTHONPATH) to get the figures before a change.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import pickle
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = "lesion nucleus tissue cell fibrosis necrosis stroma gland vessel mucosa".split()


def write_pathvqa(root: Path, questions: int, images: int, side: int) -> None:
    from PIL import Image

    rng = random.Random(0)
    for split, n in (("train", 2000), ("test", questions)):
        folder = root / "images" / split
        folder.mkdir(parents=True)
        k = min(images, n)
        for i in range(k):  # noise, upscaled: JPEGs of about 160 KB at --side 256 (512 px)
            Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).resize((2 * side, 2 * side)).save(
                folder / f"{split}_{i:05d}.jpg", quality=85)
        records = []
        for j in range(n):
            closed = rng.random() < 0.5
            records.append({"image": f"{split}_{rng.randrange(k):05d}",
                            "question": f"is there {rng.choice(WORDS)} in image {j}?" if closed else f"what is {j}?",
                            "answer": rng.choice(["yes", "no"]) if closed else rng.choice(WORDS)})
        (root / "qas" / split).mkdir(parents=True)
        (root / "qas" / split / f"{split}_qa.pkl").write_bytes(pickle.dumps(records))


def harness(*args: str) -> tuple[float, float, float, str]:
    """Run the CLI: (wall s, CPU s of the child, peak MB of the largest child so far, stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    quiet = ["--no-progress"] if args[0] in ("run", "score", "compare") else []
    proc = subprocess.run([sys.executable, "-m", "harness", *args, *quiet], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"harness {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, after.ru_maxrss / 1024, proc.stderr


def row(what: str, figures: tuple[float, float, float, str]) -> None:
    wall, cpu, peak, _ = figures
    print(f"| {what} | {wall:.2f} | {cpu:.2f} | {peak:.0f} |", flush=True)


def resume(data: Path, out: Path, sig: signal.Signals, questions: int) -> None:
    """Stop a run when half its predictions are written, run the same command again, time its start."""
    cmd = [sys.executable, "-m", "harness", "run", "--model", "prior", "--task", "pathvqa", "--data-dir", str(data),
           "--judge", "exact", "--output", str(out), "--no-progress"]
    pred = out / "predictions.jsonl"
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    while proc.poll() is None and (not pred.exists() or pred.read_bytes().count(b"\n") < questions // 2):
        time.sleep(0.05)
    proc.send_signal(sig)
    stopped = proc.wait()
    kept = pred.read_bytes().count(b"\n")
    start = time.perf_counter()
    size = pred.stat().st_size
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    while line and "resuming" not in line:
        line = proc.stderr.readline()
    said = time.perf_counter() - start
    while pred.stat().st_size <= size and proc.poll() is None:
        time.sleep(0.01)
    first = time.perf_counter() - start
    proc.communicate()
    total = time.perf_counter() - start
    ids = [json.loads(line)["id"] for line in pred.open()]
    print(f"| {sig.name} at {kept} lines (exit {stopped}), then the same command | `resuming` after {said:.2f} s, "
          f"first new batch {first:.2f} s, done {total:.2f} s | {len(ids)} lines, {len(set(ids))} samples |",
          flush=True)


def fingerprint_seconds(data: Path) -> float:
    from harness.plugin_manager import tasks
    from harness.task import Task

    task = Task(tasks().get("pathvqa"), data_dir=data)
    with contextlib.redirect_stderr(io.StringIO()):  # its size warning: the runs below print it
        task.samples("test")
    start = time.process_time()
    task.fingerprint("test")
    return time.process_time() - start


def publish_copies(small_run: Path, board: Path, n: int) -> None:
    for i in range(n):
        folder = board / f"run{i:03d}"
        folder.mkdir(parents=True)
        results = json.loads((small_run / "results.json").read_text())
        results["model"]["label"] = f"prior-copy{i}"
        results["run_id"] = f"{results['run_id']}{i:03d}"
        (folder / "results.json").write_text(json.dumps(results, indent=2))


def cache_figures(folder: Path, entries: int) -> None:
    from harness.providers.base import ChatResult
    from harness.providers.cache import LLMCache

    cache = LLMCache(folder / "llm-cache.sqlite")
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(entries)]
    start, cpu = time.perf_counter(), time.process_time()
    for key in keys:
        cache.put(key, "openai", "gpt-4o", ChatResult(text="Correctness: 1", input_tokens=120, output_tokens=5,
                                                      cost_usd=0.0003))
    put_wall, put_cpu = time.perf_counter() - start, time.process_time() - cpu
    asked = keys[-min(30000, entries):]
    start = time.perf_counter()
    hits = cache.get_many(asked)
    get_us = (time.perf_counter() - start) / len(asked) * 1e6
    start = time.perf_counter()
    claimed = cache.claim(asked)
    claim_us = (time.perf_counter() - start) / len(asked) * 1e6
    cache.close()
    print(f"| LLM cache, {entries} puts | {put_wall:.2f} | {put_cpu:.2f} | |")
    print(f"| LLM cache, get_many / claim of {len(asked)} keys ({len(hits)} hits, {len(claimed)} claimed) | "
          f"{get_us:.1f} / {claim_us:.1f} us per key | | |")
    os.environ["HARNESS_CACHE_DIR"] = str(folder)
    row(f"`harness cache` ({entries} entries)", harness("cache"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=30000)
    parser.add_argument("--images", type=int, default=4500)
    parser.add_argument("--side", type=int, default=256, help="noise of SIDE px, saved upscaled to 2 x SIDE")
    parser.add_argument("--runs", type=int, default=200, help="run folders to publish")
    parser.add_argument("--cache-entries", type=int, default=100000)
    args = parser.parse_args()
    import harness.cli as cli

    with tempfile.TemporaryDirectory(prefix="harness-scale-") as tmp:
        root = Path(tmp)
        os.environ["HARNESS_CACHE_DIR"] = str(root / "cache")
        data = root / "pvqa"
        write_pathvqa(data, args.questions, args.images, args.side)
        size = sum(p.stat().st_size for p in (data / "images" / "test").iterdir()) / 1e6
        print(f"harness from {Path(cli.__file__).parent}; {args.questions} questions on {args.images} images "
              f"({size:.0f} MB), {os.cpu_count()} CPUs\n")
        print(f"dataset fingerprint (CPU, in this process): {fingerprint_seconds(data):.2f} s\n")
        print("| step | wall s | CPU s | peak MB |\n|---|---|---|---|")
        a, b = root / "runs" / "a", root / "runs" / "b"
        base = ("run", "--model", "prior", "--task", "pathvqa", "--data-dir", str(data))
        row(f"`harness run --model prior --judge exact`, {args.questions} questions",
            harness(*base, "--judge", "exact", "--output", str(a)))
        row("the same command again (all done: read, score)", harness(*base, "--judge", "exact", "--output", str(a)))
        third = args.questions // 3
        for n in (third, args.questions):
            row(f"`--batch-size 8 --no-judge --limit {n}`",
                harness(*base, "--no-judge", "--batch-size", "8", "--limit", str(n), "--output", str(root / f"b8-{n}")))
        row("`harness score DIR --judge exact`", harness("score", str(a), "--judge", "exact"))
        row("`harness score DIR --judge exact:multimedeval`", harness("score", str(a), "--judge", "exact:multimedeval"))
        bare = root / "bare.jsonl"
        with bare.open("w") as fh:
            for line in (a / "predictions.jsonl").open():
                r = json.loads(line)
                keep = ("id", "question", "answer", "prediction", "answer_type")
                fh.write(json.dumps({k: r[k] for k in keep}) + "\n")
        row("`harness score FILE --task-type vqa --judge exact`",
            harness("score", str(bare), "--task-type", "vqa", "--judge", "exact", "--output", str(root / "bare")))
        harness(*base, "--model-args", "by=none", "--judge", "exact", "--output", str(b))
        row("`harness compare A B`", harness("compare", str(a), str(b)))
        row("`harness compare A B --breakdown answer_type`", harness("compare", str(a), str(b), "--breakdown",
                                                                     "answer_type"))
        small = root / "runs" / "small"
        harness(*base, "--judge", "exact", "--judge", "exact:llava-med", "--limit", "450", "--output", str(small))
        publish_copies(small, root / "board", args.runs)
        row(f"`harness publish` of {args.runs} run folders ({2 * args.runs} rows)",
            harness("publish", str(root / "board"), "-o", str(root / "lb.json")))
        row("the same again, into that leaderboard", harness("publish", str(root / "board"), "-o",
                                                             str(root / "lb.json")))
        cache_figures(root / "llm", args.cache_entries)
        print("\n| resume | start | predictions |\n|---|---|---|")
        for sig in (signal.SIGINT, signal.SIGKILL):
            shutil.rmtree(root / "runs" / "r", ignore_errors=True)
            resume(data, root / "runs" / "r", sig, args.questions)


if __name__ == "__main__":
    main()
