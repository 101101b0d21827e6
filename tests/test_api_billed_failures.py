"""A reply the provider billed but that is no answer (OpenAI finish_reason "content_filter" or a message.refusal,
Anthropic stop_reason "refusal") fails its sample, and its usage stays on the sample's line and in every total: the
run's usage line, model.json, results.json and `harness cache` (they recorded 0 tokens and $0). The LLM judges,
on the same provider layer, keep it too. Answers cut at the token limit (finish_reason "length", stop_reason
"max_tokens") are kept and scored, and recorded as cut (`generation_details.truncated`, a count and a note).

Real HTTP servers on 127.0.0.1 (tests/fake_llm_servers.py) send the providers' own reply shapes; nothing of ours
is patched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_llm_servers import FakeLLMServer, Fault

from harness.cli import main as cli_main

USAGE_IN, USAGE_OUT = 1234, 56


def openai_reply(finish: str, content: str | None, refusal: str | None = None) -> bytes:
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": content, "refusal": refusal}}],
        "usage": {"prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT,
                  "total_tokens": USAGE_IN + USAGE_OUT}}).encode()


def anthropic_reply(stop: str, text: str) -> bytes:
    return json.dumps({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
        "content": [{"type": "text", "text": text}] if text else [], "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT}}).encode()


BILLED_FAILURES = {
    "content_filter": ("openai-compatible", openai_reply("content_filter", "The image sh"), "content filter"),
    "refusal": ("openai-compatible", openai_reply("stop", None, "I can't help with that."), "refused"),
    "claude_refusal": ("claude", anthropic_reply("refusal", ""), "refused to answer"),
}


@pytest.fixture
def cache(own_llm_cache, monkeypatch) -> Path:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-SECRET654321")
    monkeypatch.delenv("OPENAI_COMPATIBLE_API_KEY", raising=False)
    return own_llm_cache


def run_args(model: str, server: FakeLLMServer, runs: Path, *extra: str) -> list[str]:
    url = server.openai_base_url if model == "openai-compatible" else server.anthropic_base_url
    return ["run", "--model", model, "--model-args", f"base_url={url}" + (",model=m" if model != "claude" else ""),
            "--task", "phantom-vqa", "--limit", "3", "--judge", "exact", "--runs-dir", str(runs), "--no-progress",
            *extra]


def cache_listing(cache: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "harness", "cache", "--json"], capture_output=True, text=True,
                          env=dict(os.environ, HARNESS_CACHE_DIR=str(cache)), check=True)
    return json.loads(proc.stdout)


@pytest.mark.parametrize("case", list(BILLED_FAILURES))
def test_a_billed_refusal_keeps_its_tokens_on_its_line_and_in_every_total(case, cache, tmp_path, capsys):
    model, body, why = BILLED_FAILURES[case]
    with FakeLLMServer(fault_fn=lambda request, index: Fault(body=body)) as server:
        cli_main(run_args(model, server, tmp_path / "runs"))
        calls = server.chat_calls
    err = capsys.readouterr().err
    assert calls == 3
    (run_dir,) = (tmp_path / "runs").iterdir()
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(why in (r["error"] or "") for r in rows)
    assert all((r["prompt_tokens"], r["completion_tokens"]) == (USAGE_IN, USAGE_OUT) for r in rows)
    assert all(r["cost_usd"] == 0.0 for r in rows)  # a custom base URL: no API fees, but counted (not null)
    assert f"3 requests, 0 from the cache, 3 failed; {3 * USAGE_IN} input + {3 * USAGE_OUT} output tokens" in err
    usage = json.loads((run_dir / "model.json").read_text())["identity"]["usage"]
    assert (usage["failed"], usage["input_tokens"], usage["output_tokens"]) == (3, 3 * USAGE_IN, 3 * USAGE_OUT)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["errors"]["count"] == 3 and results["timings"]["generation_cost_usd"] == 0.0
    (listed,) = cache_listing(cache)["models"]
    assert listed["entries"] == 0 and listed["billed_failures"] == 3  # counted, never served again


def test_a_billed_refusal_of_an_llm_judge_keeps_its_tokens(cache, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Is image {i} normal?", "answer": "yes",
                                         "prediction": "yes", "answer_type": "CLOSED"}) + "\n" for i in range(2)))
    body = openai_reply("content_filter", None)
    with FakeLLMServer(fault_fn=lambda request, index: Fault(body=body)) as server:
        cli_main(["score", str(preds), "--task-type", "vqa", "--judge", "gpt4", "--judge-base-url",
                  server.openai_base_url, "--judge-model", "judge-m", "--judge-provider", "openai-compatible",
                  "--output", str(tmp_path / "out"), "--no-progress"])
    assert "content filter" in capsys.readouterr().err
    (judge,) = json.loads((tmp_path / "out" / "results.json").read_text())["judges"]
    assert judge["metrics"]["failed_calls"]["value"] == 2
    assert judge["metrics"]["input_tokens"]["value"] == 2 * USAGE_IN  # billed: counted (it said 0)
    assert judge["metrics"]["output_tokens"]["value"] == 2 * USAGE_OUT
    (listed,) = cache_listing(cache)["models"]
    assert listed["billed_failures"] == 2


def test_a_billed_refusal_serving_two_identical_requests_is_paid_once(cache, tmp_path):
    """Two samples asking the same thing are one call at temperature 0; a refused reply was counted as paid by
    each copy (an answer was not)."""
    preds = tmp_path / "preds.jsonl"
    line = {"question": "Is the image normal?", "answer": "yes", "prediction": "yes", "answer_type": "CLOSED"}
    preds.write_text("".join(json.dumps({"id": f"q{i}", **line}) + "\n" for i in range(2)))
    body = openai_reply("content_filter", None)
    with FakeLLMServer(fault_fn=lambda request, index: Fault(body=body)) as server:
        cli_main(["score", str(preds), "--task-type", "vqa", "--judge", "gpt4", "--judge-base-url",
                  server.openai_base_url, "--judge-model", "judge-m", "--judge-provider", "openai-compatible",
                  "--output", str(tmp_path / "out"), "--no-progress"])
        assert server.chat_calls == 1
    (judge,) = json.loads((tmp_path / "out" / "results.json").read_text())["judges"]
    assert judge["metrics"]["paid_input_tokens"]["value"] == USAGE_IN  # one call, paid once
    assert cache_listing(cache)["models"][0]["billed_failures"] == 1


@pytest.mark.parametrize("model", ["openai-compatible", "claude"])
def test_an_answer_cut_at_the_token_limit_is_kept_and_recorded_as_cut(model, cache, tmp_path, capsys):
    body = (openai_reply("length", "The lesion is in the left") if model != "claude"
            else anthropic_reply("max_tokens", "The lesion is in the left"))
    with FakeLLMServer(fault_fn=lambda request, index: Fault(body=body) if index < 2 else None) as server:
        args = run_args(model, server, tmp_path / "runs", "--max-new-tokens", "7")
        assert cli_main(args) == 0
        first = capsys.readouterr()
        calls = server.chat_calls
        assert cli_main(args + ["--limit", "3"]) == 0  # all three from predictions.jsonl: nothing asked
        assert server.chat_calls == calls
    (run_dir,) = (tmp_path / "runs").iterdir()
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    cut = [r for r in rows if (r.get("generation_details") or {}).get("truncated") is True]
    assert len(cut) == 2 and all(r["prediction"] == "The lesion is in the left" and r["error"] is None for r in cut)
    assert sum(1 for r in rows if "truncated" not in (r.get("generation_details") or {})) == 1
    results = json.loads((run_dir / "results.json").read_text())
    assert results["timings"]["truncated_answers"] == 2 and results["errors"]["count"] == 0
    assert ("2 of 3 answers were cut at the token limit (7 tokens) and scored as cut (generation_details.truncated "
            "in predictions.jsonl); raise --max-new-tokens to let them finish (another run)") in first.out
    assert "2 cut at the token limit" in first.err  # the usage line
    assert json.loads((run_dir / "model.json").read_text())["identity"]["usage"]["truncated"] == 2


def test_a_cut_answer_served_from_the_cache_is_still_recorded_as_cut(cache, tmp_path):
    body = openai_reply("length", "The lesion is in the left")
    with FakeLLMServer(fault_fn=lambda request, index: Fault(body=body)) as server:
        assert cli_main(run_args("openai-compatible", server, tmp_path / "a")) == 0
        assert cli_main(run_args("openai-compatible", server, tmp_path / "b")) == 0  # another folder, same cache
        assert server.chat_calls == 3
    (run_dir,) = (tmp_path / "b").iterdir()
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [(r.get("generation_details") or {}).get("truncated") for r in rows] == [True] * 3


def test_a_reply_paid_for_while_another_process_stored_its_twin_is_counted_by_harness_cache(cache):
    """Two processes asking the same at once both pay; the cache keeps the first reply, and `harness cache` counted
    only that one's cost (the other call's spend was in no total once its run stopped before using it)."""
    from harness.providers.base import ChatResult
    from harness.providers.cache import LLMCache, cache_path

    official = "https://api.openai.com/v1"
    with LLMCache(cache_path()) as first, LLMCache(cache_path()) as second:  # two processes' handles
        first.put("k", "openai", "gpt-4o-2024-08-06", ChatResult(text="yes", input_tokens=100, output_tokens=2,
                                                                  cost_usd=0.25), base_url=official)
        second.put("k", "openai", "gpt-4o-2024-08-06", ChatResult(text="no", input_tokens=100, output_tokens=2,
                                                                   cost_usd=0.25), base_url=official)
        second.put("k", "openai", "gpt-4o-2024-08-06", ChatResult(text="yes", input_tokens=100, output_tokens=2,
                                                                   cost_usd=0.25), batch=True, base_url=official)
    (row,) = cache_listing(cache)["models"]
    assert row["entries"] == 1 and row["paid_twice"] == 1  # a batch's result collected again was paid once
    assert row["cost_usd"] == 0.5
