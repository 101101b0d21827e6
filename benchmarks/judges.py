"""Judge benchmarks in one run: LLM-judge calls/s against a local 200 ms server (concurrency 1 and 64), then the
time to score 1,000 IU-Xray reports with the full lexical suite next to pycocoevalcap's own scorers.

    python benchmarks/judges.py            # both; figures go to stdout (record them in benchmarks/README.md)
Each part is also a script of its own (bench_llm_judge.py, bench_lexical.py) with more options.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="more options: bench_llm_judge.py --help, "
                            "bench_lexical.py --help").parse_args()
    status = 0
    for script in ("bench_llm_judge.py", "bench_lexical.py"):
        print(f"== {script}", flush=True)
        status |= subprocess.run([sys.executable, str(HERE / script)], check=False).returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
