"""Ctrl-C (or SIGTERM) while API calls are in flight: the calls already sent were paid for, so the run lets them
finish, caches their replies and saves their predictions before it stops; the rerun sends nothing twice. A second
Ctrl-C abandons them, and says so.

`harness run` (an API model) and `harness score --judge gpt4` run as real processes against a real HTTP server on
127.0.0.1 (tests/fake_llm_servers.py) that holds its replies until the test has sent the signal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cli_helpers import CTRL_C_AS_IN_A_TERMINAL
from fake_llm_servers import FakeLLMServer, echo_reply

KEY = "sk-test-SECRET123456"


class HeldReplies:
    """A reply function that answers only once `release` is set (the calls stay in flight until then)."""

    def __init__(self, text: str | None = None) -> None:
        self.release = threading.Event()
        self.text = text

    def __call__(self, body: dict) -> str:
        self.release.wait(30)
        return self.text if self.text is not None else echo_reply(body)


def start(args: list[str], cache: Path) -> tuple[subprocess.Popen, list[str]]:
    env = dict(os.environ, HARNESS_CACHE_DIR=str(cache), OPENAI_COMPATIBLE_API_KEY=KEY, OPENAI_API_KEY=KEY)
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_AS_IN_A_TERMINAL, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # Ctrl-C heard even under a CI runner
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]
    return proc, lines


def wait_until(condition, what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def interrupt(proc: subprocess.Popen, server: FakeLLMServer, held: HeldReplies, lines: list[str], *, in_flight: int,
              signum: int = signal.SIGINT, twice: bool = False) -> int:
    """Signal the process once `in_flight` calls are held by the server; release the replies after its message."""
    wait_until(lambda: server.in_flight == in_flight, f"{in_flight} calls in flight")
    proc.send_signal(signum)
    wait_until(lambda: any("already sent" in line for line in lines), "the message about the calls in flight")
    if twice:
        proc.send_signal(signum)
        wait_until(lambda: any("abandoning" in line for line in lines), "the message about abandoning them")
    held.release.set()
    return proc.wait(timeout=30)


def api_run(server: FakeLLMServer, runs: Path, *, concurrency: int, limit: int) -> list[str]:
    """`harness run` arguments of an API model on the fake server, `concurrency` calls at a time."""
    return ["run", "--model", "openai-compatible", "--model-args",
            f"base_url={server.openai_base_url},model=m,concurrency={concurrency}", "--task", "phantom-vqa",
            "--limit", str(limit), "--judge", "exact", "--runs-dir", str(runs), "--no-progress"]


def distinct(requests: list[dict]) -> bool:
    return len({json.dumps(body, sort_keys=True) for body in requests}) == len(requests)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_api_run_keeps_the_calls_in_flight_and_the_rerun_sends_nothing_twice(own_llm_cache, tmp_path,
                                                                                         signum):
    held = HeldReplies()
    with FakeLLMServer(reply=held) as server:
        args = api_run(server, tmp_path / "runs", concurrency=4, limit=8)
        proc, lines = start(args, own_llm_cache)
        rc = interrupt(proc, server, held, lines, in_flight=4, signum=signum)
        err = "".join(lines)
        assert rc == (130 if signum == signal.SIGINT else 143), err
        name = "interrupted" if signum == signal.SIGINT else "terminated"
        assert f"{name}: waiting for the 4 API call(s) already sent (paid for) to finish, at most 120 s" in err
        assert "again to abandon them" in err
        assert server.chat_calls == 4  # the 4 queued requests were never sent
        (run_dir,) = (tmp_path / "runs").iterdir()
        rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and all(r["error"] is None and r["prediction"].startswith("echo:") for r in rows)
        assert all(r["prompt_tokens"] > 0 for r in rows)
        listing = subprocess.run([sys.executable, "-m", "harness", "cache", "--json"], capture_output=True, text=True,
                                 env=dict(os.environ, HARNESS_CACHE_DIR=str(own_llm_cache)), check=True)
        assert json.loads(listing.stdout)["entries"] == 4

        again = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                               env=dict(os.environ, HARNESS_CACHE_DIR=str(own_llm_cache),
                                        OPENAI_COMPATIBLE_API_KEY=KEY))
        assert again.returncode == 0, again.stderr
        assert "4 of 8 samples already generated; generating 4" in again.stderr
        assert server.chat_calls == 8 and distinct(server.requests)  # nothing asked twice
        billed_in = sum(server.usage(body, echo_reply(body))[0] for body in server.requests)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["errors"]["count"] == 0 and results["task"]["n"] == 8
    assert results["timings"]["prompt_tokens"] == billed_in  # every call paid for is on a line, once
    assert not any(KEY in p.read_text(errors="replace") for p in run_dir.iterdir() if p.is_file())
    assert KEY not in err + again.stderr


def test_a_second_ctrl_c_abandons_the_calls_in_flight(own_llm_cache, tmp_path):
    held = HeldReplies()
    with FakeLLMServer(reply=held) as server:
        args = api_run(server, tmp_path / "runs", concurrency=2, limit=4)
        proc, lines = start(args, own_llm_cache)
        rc = interrupt(proc, server, held, lines, in_flight=2, twice=True)
    err = "".join(lines)
    assert rc == 130, err
    assert "interrupted again: abandoning the API calls in flight (their replies are lost" in err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (run_dir / "predictions.jsonl").exists() or not (run_dir / "predictions.jsonl").read_text().strip()


def test_interrupted_llm_judge_caches_the_calls_in_flight_and_the_rescore_sends_nothing_twice(own_llm_cache,
                                                                                              tmp_path):
    from harness.cli import main as cli_main

    runs = tmp_path / "runs"
    assert cli_main(["run", "--model", "prior", "--task", "phantom-vqa", "--limit", "6", "--judge", "exact",
                     "--runs-dir", str(runs), "--no-progress"]) == 0
    (run_dir,) = runs.iterdir()
    held = HeldReplies(text="Correctness: 1")
    with FakeLLMServer(reply=held) as server:
        args = ["score", str(run_dir), "--judge", "gpt4", "--judge-model", "judge-m", "--judge-provider",
                "openai-compatible", "--judge-base-url", server.openai_base_url, "--judge-concurrency", "2",
                "--no-progress"]
        proc, lines = start(args, own_llm_cache)
        rc = interrupt(proc, server, held, lines, in_flight=2)
        assert rc == 130, "".join(lines)
        first = server.chat_calls
        assert first == 2
        again = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                               env=dict(os.environ, HARNESS_CACHE_DIR=str(own_llm_cache)))
        assert again.returncode == 0, again.stderr
        assert distinct(server.requests)  # the 2 replies of the interrupted run came from the cache
        total = server.chat_calls
    (judge,) = [j for j in json.loads((run_dir / "results.json").read_text())["judges"] if j["id"] == "gpt4"]
    assert judge["metrics"]["failed_calls"]["value"] == 0
    assert judge["metrics"]["input_tokens"]["value"] == sum(server.usage(b, "Correctness: 1")[0]
                                                           for b in server.requests)
    assert total == len(server.requests)


def blocked_writing_to_a_pipe(pid: int) -> bool:
    return Path(f"/proc/{pid}/wchan").read_text().strip().endswith("pipe_write")  # anon_pipe_write on newer kernels


@pytest.mark.skipif(not Path("/proc/self/wchan").exists() or not hasattr(__import__("fcntl"), "F_SETPIPE_SZ"),
                    reason="needs Linux /proc and pipe sizes")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_ctrl_c_after_the_judge_calls_leaves_their_cost_to_the_rerun(own_llm_cache, tmp_path, signum):
    """Ctrl-C after an LLM judge's calls are done but before results.json records them: the rerun takes every
    reply from the cache and counts what they cost (before, the interrupted run had marked them as its own and then
    recorded nothing: paid_input_tokens 0, and no results file counted them). Killed outright (SIGKILL) it gives
    nothing back: its claims were final at once, and the cost was counted by no run."""
    import fcntl

    from harness.cli import main as cli_main

    runs = tmp_path / "runs"
    assert cli_main(["run", "--model", "prior", "--task", "phantom-vqa", "--limit", "6", "--judge", "exact",
                     "--runs-dir", str(runs), "--no-progress"]) == 0
    (run_dir,) = runs.iterdir()
    with FakeLLMServer(reply=lambda body: '{"correct": 1}') as server:
        server.served_model = "other-m"  # the judge's first stderr line, printed once its calls are done
        args = ["score", str(run_dir), "--judge", "gpt4", "--judge-model", "judge-m", "--judge-provider",
                "openai-compatible", "--judge-base-url", server.openai_base_url, "--no-progress"]
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
        os.write(write_end, b"." * fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ))  # full: that line's write waits
        env = dict(os.environ, HARNESS_CACHE_DIR=str(own_llm_cache), OPENAI_COMPATIBLE_API_KEY=KEY)
        proc = subprocess.Popen([sys.executable, "-c", CTRL_C_AS_IN_A_TERMINAL, *args], stdout=subprocess.DEVNULL,
                                stderr=write_end, env=env)
        os.close(write_end)
        wait_until(lambda: blocked_writing_to_a_pipe(proc.pid), "the judge's note after its calls")
        proc.send_signal(signum)
        with os.fdopen(read_end, "rb") as pipe:
            err = pipe.read().decode(errors="replace")
        assert proc.wait(timeout=30) == {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}[signum], err
        assert "finished work is saved" in err or signum == signal.SIGKILL
        first = server.chat_calls
        assert first > 0
        again = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env)
        assert again.returncode == 0, again.stderr
        assert server.chat_calls == first  # every reply from the cache
        paid_in = sum(server.usage(body, '{"correct": 1}')[0] for body in server.requests)
    (judge,) = [j for j in json.loads((run_dir / "results.json").read_text())["judges"] if j["id"] == "gpt4"]
    assert judge["metrics"]["paid_input_tokens"]["value"] == paid_in  # counted by the run that used them
