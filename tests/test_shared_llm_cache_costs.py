"""Two runs sharing one LLM cache that ask the same question at the same moment each pay for their own call, and
every call paid for is counted by one run (results.json's `paid_input_tokens`), also when one of them is stopped.

Real processes against a real HTTP server on 127.0.0.1 (tests/fake_llm_servers.py) that holds each reply until
the test lets it go, so the order of events is forced, not timed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from cli_helpers import CTRL_C_AS_IN_A_TERMINAL
from fake_llm_servers import FakeLLMServer
from test_api_interrupt import KEY, wait_until

VERDICT = '{"correct": 1}'


class HeldInArrivalOrder:
    """Replies that each wait for their own release: `release[i]` lets the i-th call to arrive be answered."""

    def __init__(self, calls: int) -> None:
        self.release = [threading.Event() for _ in range(calls)]
        self._arrived = 0
        self._lock = threading.Lock()

    def __call__(self, body: dict) -> str:
        with self._lock:
            index, self._arrived = self._arrived, self._arrived + 1
        self.release[index].wait(30)
        return VERDICT


def paid_input_tokens(run_dir: Path) -> int:
    (judge,) = [j for j in json.loads((run_dir / "results.json").read_text())["judges"] if j["id"] == "gpt4"]
    return judge["metrics"]["paid_input_tokens"]["value"]


def test_a_reply_an_interrupted_run_paid_for_is_counted_though_another_run_asked_the_same_meanwhile(own_llm_cache,
                                                                                                     tmp_path):
    """Run A is interrupted while its call is in flight (its reply is cached, unused); run B asked the same
    question at the same time and got its own reply. B used to claim A's cache entry along with its own call, so
    A's rerun took the reply as already counted (paid_input_tokens 0): one call paid for, counted by no run."""
    from harness.cli import main as cli_main

    first = tmp_path / "run-a"
    assert cli_main(["run", "--model", "prior", "--task", "phantom-vqa", "--limit", "1", "--no-judge", "--output",
                     str(first), "--no-progress"]) == 0
    second = tmp_path / "run-b"  # the same predictions in another folder: the same judge question
    shutil.copytree(first, second)
    held = HeldInArrivalOrder(2)
    with FakeLLMServer(reply=held) as server:
        env = dict(os.environ, HARNESS_CACHE_DIR=str(own_llm_cache), OPENAI_COMPATIBLE_API_KEY=KEY)

        def score(run_dir: Path) -> list[str]:
            return [sys.executable, "-c", CTRL_C_AS_IN_A_TERMINAL, "score", str(run_dir), "--judge", "gpt4",
                    "--judge-model", "judge-m", "--judge-provider", "openai-compatible", "--judge-base-url",
                    server.openai_base_url, "--no-progress"]

        a = subprocess.Popen(score(first), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        a_lines: list[str] = []
        threading.Thread(target=lambda: a_lines.extend(a.stderr), daemon=True).start()  # type: ignore[arg-type]
        wait_until(lambda: server.in_flight == 1, "run A's call in flight")
        b = subprocess.Popen(score(second), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        wait_until(lambda: server.in_flight == 2, "run B's call of the same question in flight")
        a.send_signal(signal.SIGINT)
        wait_until(lambda: any("already sent" in line for line in a_lines), "run A waiting for its call")
        held.release[0].set()  # A's reply arrives: cached, unused, and A stops
        assert a.wait(timeout=30) == 130, "".join(a_lines)
        held.release[1].set()  # then B's own reply to the same question
        _, b_err = b.communicate(timeout=60)
        assert b.returncode == 0, b_err
        again = subprocess.run(score(first), capture_output=True, text=True, env=env)  # A, run again
        assert again.returncode == 0, again.stderr
        assert server.chat_calls == 2  # A's rerun took A's reply from the cache
        billed = sum(server.usage(body, VERDICT)[0] for body in server.requests)
    assert paid_input_tokens(second) == billed // 2  # B paid for its own call
    assert paid_input_tokens(first) == billed // 2  # A's rerun counts the call A paid for and never used
    # `harness cache` counts both calls: B's reply found A's stored first (one entry kept), billed all the same
    listing = subprocess.run([sys.executable, "-m", "harness", "cache"], capture_output=True, text=True, env=env)
    assert "1 entries" in listing.stdout and "1 replies paid for twice (two runs asked the same at once)" in \
        listing.stdout, listing.stdout
