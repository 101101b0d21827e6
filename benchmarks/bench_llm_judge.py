"""Throughput of the LLM provider layer: calls/s against a fake provider answering after a fixed latency.

The fake server (tests/fake_llm_servers.py) runs in its own process so that it does not share this process's
interpreter lock. Each call goes through the whole path a judge uses: cache lookup, scheduler, official SDK,
HTTP, cache write. Target: >= 150 calls/s at concurrency 64 with 200 ms latency (the ideal is 64 / 0.2 = 320).

    .venv/bin/python benchmarks/bench_llm_judge.py [--calls 1000] [--latency 0.2] [--provider openai]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_SERVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from fake_llm_servers import FakeLLMServer
server = FakeLLMServer(reply=lambda body: "Correctness: 1", latency=float(sys.argv[2])).start()
print(server.url, flush=True)
sys.stdin.read()  # runs until the benchmark closes our stdin
server.stop()
"""


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(REPO / "tests"), str(latency)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip() if proc.stdout else ""
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit("the fake server did not start")
    return proc, url


def measure(url: str, provider: str, concurrency: int, calls: int, tag: str) -> dict[str, float]:
    from harness.providers import ChatRequest, make_client

    base = url + "/v1" if provider == "openai" else url
    model = "gpt-4o" if provider == "openai" else "claude"
    client = make_client({"model": model, "provider": provider, "base_url": base, "concurrency": concurrency})
    requests = [ChatRequest(messages=[
        {"role": "system", "content": "You are a strict grader of medical VQA answers."},
        {"role": "user", "content": f"[{tag}] Question {i}: is there a fracture? Reference: yes. "
                                    f"Prediction: yes. Reply 'Correctness: 1' or 'Correctness: 0'."}],
        max_tokens=8) for i in range(calls)]
    start = time.perf_counter()
    cpu = time.process_time()
    results = client.run(requests, progress=False)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    failed = sum(r.text is None for r in results)
    return {"provider": provider, "concurrency": concurrency, "calls": calls, "seconds": round(wall, 3),
            "calls_per_s": round(calls / wall, 1), "client_cpu_ms_per_call": round(1000 * cpu / calls, 2),
            "failed": failed, "cached": sum(r.cached for r in results)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000, help="calls at concurrency 64 (default 1000)")
    parser.add_argument("--serial-calls", type=int, default=20, help="calls at concurrency 1 (default 20)")
    parser.add_argument("--latency", type=float, default=0.2, help="server reply latency in s (default 0.2)")
    parser.add_argument("--provider", choices=["openai", "anthropic", "both"], default="both")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    os.environ.setdefault("ANTHROPIC_API_KEY", "sk-bench")
    providers = ["openai", "anthropic"] if args.provider == "both" else [args.provider]
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        os.environ["HARNESS_CACHE_DIR"] = cache  # a fresh cache: every call goes to the server
        proc, url = start_server(args.latency)
        try:
            for provider in providers:
                measure(url, provider, 8, 16, "warm-up")  # imports, first connections
                rows.append(measure(url, provider, 1, args.serial_calls, "serial"))
                rows.append(measure(url, provider, 64, args.calls, "c64"))
                rows.append(measure(url, provider, 64, args.calls, "c64") | {"note": "rerun: all from cache"})
        finally:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(10)
    print(f"fake provider latency {args.latency * 1000:.0f} ms; ideal at concurrency c: c / latency calls/s")
    print(f"{'provider':<10} {'conc':>4} {'calls':>6} {'seconds':>8} {'calls/s':>8} {'cpu ms/call':>11}  note")
    for row in rows:
        print(f"{row['provider']:<10} {row['concurrency']:>4} {row['calls']:>6} {row['seconds']:>8.2f} "
              f"{row['calls_per_s']:>8.1f} {row['client_cpu_ms_per_call']:>11.2f}  "
              f"{row.get('note', '')}{' FAILED: ' + str(row['failed']) if row['failed'] else ''}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
