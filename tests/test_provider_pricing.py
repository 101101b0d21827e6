"""Cost of LLM calls: list prices only at the provider's own API; a custom base URL (self-hosted server, proxy)
is recorded at $0, alike in results.json, scores.jsonl and `harness cache`.

The judge runs against a real HTTP server on 127.0.0.1 (tests/fake_llm_servers.py); nothing of ours is patched.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fake_llm_servers import FakeLLMServer

from harness.providers import make_client, pricing
from harness.providers.base import ChatResult
from harness.providers.cache import LLMCache

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

ROWS = [
    {"id": f"q{i}", "question": f"Is there a lesion in image {i}?", "answer": "yes",
     "prediction": "yes" if i % 2 else "no", "answer_type": "CLOSED"}
    for i in range(6)
]


def cli(*args: str, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env["HARNESS_CACHE_DIR"] = str(cache_dir)
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_list_prices_apply_only_at_the_providers_own_api(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-anthropic-key")
    assert pricing.cost_usd("gpt-4o-2024-08-06", 1000, 100) == pytest.approx((1000 * 2.50 + 100 * 10.00) / 1e6)
    assert pricing.cost_usd("gpt-4o-2024-08-06", 1000, 100, batch=True) == pytest.approx(
        0.5 * (1000 * 2.50 + 100 * 10.00) / 1e6)
    assert pricing.cost_usd("some-local-model", 1000, 100) == 0.0
    assert pricing.priced_endpoint("openai", "https://api.openai.com/v1")
    assert pricing.priced_endpoint("openai", "https://api.openai.com/v1/")
    assert pricing.priced_endpoint("anthropic", "https://api.anthropic.com")
    assert not pricing.priced_endpoint("openai", "http://localhost:8765/v1")
    assert not pricing.priced_endpoint("openai", "https://my-proxy.example.org/v1")
    assert not pricing.priced_endpoint("openai-compatible", "http://127.0.0.1:8000/v1")

    usage = ChatResult(text="Correctness: 1", input_tokens=1000, output_tokens=100)
    # no call is made: only the client's pricing is read (a model without a shutdown date: valid on any day)
    official = make_client({"model": "claude-haiku-4-5"})
    assert official.priced and official.cost_usd(usage) == pytest.approx((1000 * 1.00 + 100 * 5.00) / 1e6)
    assert official.describe()["prices_as_of"] == pricing.PRICES_AS_OF and "pricing" not in official.describe()
    batch = make_client({"model": "claude", "batch": True})
    assert batch.cost_usd(usage) == pytest.approx(0.5 * (1000 * 3.00 + 100 * 15.00) / 1e6)
    # the same pinned model behind another base URL (the README's `--judge gpt4 --judge-base-url ...`)
    local = make_client({"model": "gpt4", "base_url": "http://localhost:8765/v1"})
    assert local.model == "gpt-4-0613" and local.provider == "openai"
    assert not local.priced and local.cost_usd(usage) == 0.0
    assert local.describe()["pricing"] == pricing.UNPRICED_NOTE and "prices_as_of" not in local.describe()


def test_judge_behind_a_custom_base_url_costs_nothing_everywhere(tmp_path):
    """The user's report: `--judge gpt4 --convention pefomed --judge-base-url http://localhost:.../v1` recorded
    cost_usd 1.89 and `harness cache` showed "est. $1.85 spent"."""
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cache_dir = tmp_path / "cache"
    out = tmp_path / "scored"
    with FakeLLMServer(reply=lambda body: "Correctness: 1") as server:
        url = server.openai_base_url
        args = ["score", str(preds), "--task-type", "vqa", "--judge", "gpt4", "--convention", "pefomed",
                "--judge-base-url", server.openai_base_url, "--judge-repeats", "2", "--output", str(out)]
        proc = cli(*args, cache_dir=cache_dir)
        assert proc.returncode == 0, proc.stderr
        assert server.chat_calls == 12
        assert all(body["model"] == "gpt-4-0613" for body in server.requests)  # a list-priced model id

        (judge,) = json.loads((out / "results.json").read_text())["judges"]
        assert judge["model"] == "gpt-4-0613" and judge["base_url"] == server.openai_base_url
        assert judge["metrics"]["input_tokens"]["value"] > 0
        assert judge["metrics"]["cost_usd"]["value"] == 0.0
        assert judge["client"]["pricing"] == pricing.UNPRICED_NOTE and "prices_as_of" not in judge["client"]
        rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
        details = [row["judges"]["gpt4/pefomed"]["details"] for row in rows]
        assert len(details) == 6 and all(d["input_tokens"] > 0 and d["cost_usd"] == 0.0 for d in details)

        listing = cli("cache", "--json", cache_dir=cache_dir)
        assert listing.returncode == 0, listing.stderr
        (model,) = json.loads(listing.stdout)["models"]
        assert (model["provider"], model["model"], model["entries"]) == ("openai", "gpt-4-0613", 12)
        assert model["cost_usd"] == 0.0 and model["unpriced_entries"] == 12
        assert model["base_urls"] == [server.openai_base_url] and model["pricing"] == pricing.UNPRICED_NOTE
        text = cli("cache", cache_dir=cache_dir)
        assert ("openai:gpt-4-0613  12 entries, est. $0.0000 spent (12 through a custom base URL: no API fees "
                "counted)") in text.stdout
        assert text.stdout.splitlines()[-1] == "spent:   est. $0.0000 in all (list prices)"  # the README's total

        # a cache written by an earlier version: no endpoint column, the list price wrongly applied
        db_path = cache_dir / "llm-cache.sqlite"
        with sqlite3.connect(db_path) as db:
            db.execute("ALTER TABLE results DROP COLUMN base_url")
            db.execute("UPDATE results SET cost_usd = 0.15")
        stale = json.loads(cli("cache", "--json", cache_dir=cache_dir).stdout)["models"][0]
        assert stale["cost_usd"] == pytest.approx(1.8) and stale["base_urls"] == []  # endpoint unknown yet
        again = cli(*args, cache_dir=cache_dir)  # re-scoring: every reply from the cache, none paid
        assert again.returncode == 0, again.stderr
        assert server.chat_calls == 12
    (judge,) = json.loads((out / "results.json").read_text())["judges"]
    assert judge["metrics"]["cost_usd"]["value"] == 0.0
    fixed = json.loads(cli("cache", "--json", cache_dir=cache_dir).stdout)["models"][0]
    assert fixed["cost_usd"] == 0.0 and fixed["unpriced_entries"] == 12
    assert fixed["base_urls"] == [url]


def test_old_cache_without_endpoints_opens_and_counts(tmp_path):
    path = tmp_path / "llm-cache.sqlite"
    with sqlite3.connect(path) as db:  # the results table as earlier versions created it
        db.execute("CREATE TABLE results (key TEXT PRIMARY KEY, provider TEXT NOT NULL, model TEXT NOT NULL, "
                   "text TEXT NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, "
                   "cost_usd REAL NOT NULL, batch INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL)")
        db.execute("INSERT INTO results VALUES ('k1', 'openai', 'gpt-4o-2024-08-06', 'yes', 10, 1, 0.5, 0, 0)")
    with LLMCache(path) as cache:
        cache.put("k2", "openai", "gpt-4o-2024-08-06", ChatResult(text="no", input_tokens=3, output_tokens=1,
                                                                  cost_usd=0.25),
                  base_url="https://api.openai.com/v1")
        cache.put("k3", "openai", "gpt-4o-2024-08-06", ChatResult(text="no", input_tokens=3, output_tokens=1),
                  base_url="http://127.0.0.1:9/v1")
        (row,) = cache.stats()["models"]
        assert cache.get_many(["k1"])["k1"].text == "yes"
        assert cache.get_many(["k1"])["k1"].cached  # entries of older versions were used: never counted again
    assert row["entries"] == 3 and row["cost_usd"] == pytest.approx(0.75) and row["unpriced_entries"] == 1
    assert row["base_urls"] == ["http://127.0.0.1:9/v1", "https://api.openai.com/v1"]


def test_identical_requests_in_one_run_are_one_call_paid_once(monkeypatch, tmp_path):
    """Two samples that send the same request share one call: the second is marked as served without a call of
    its own, so per-sample costs and tokens add up to what was called (they counted the call twice)."""
    from harness.providers import ChatRequest

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    with FakeLLMServer() as server:
        client = make_client({"model": "gpt-4o", "base_url": server.openai_base_url})
        asks = [ChatRequest(messages=[{"role": "user", "content": text}]) for text in ("same", "same", "other")]
        results = client.run(asks, progress=False)
        billed = [server.usage(body, f"echo: {body['messages'][0]['content']}") for body in server.requests]
    assert server.chat_calls == 2 and [r.text for r in results] == ["echo: same", "echo: same", "echo: other"]
    assert [r.cached for r in results] == [False, True, False]
    paid = [r for r in results if not r.cached]
    assert sum(r.input_tokens for r in paid) == sum(n_in for n_in, _ in billed)
    assert sum(r.output_tokens for r in paid) == sum(n_out for _, n_out in billed)


def test_a_reply_paid_once_is_counted_by_one_run_whatever_shares_the_cache(monkeypatch, tmp_path):
    """A reply one process stored and has not handed over yet (a long judge scoring), or one an interrupted run
    left, is counted by whichever run claims it first; every other run sees it as `cached` (it cost them nothing)."""
    from harness.providers import ChatRequest

    path = tmp_path / "llm-cache.sqlite"
    with LLMCache(path) as a:
        a.put("k", "openai", "gpt-4o-2024-08-06", ChatResult(text="yes", cost_usd=1.0))
    with LLMCache(path) as b, LLMCache(path) as c:
        assert not b.get_many(["k"])["k"].cached and not c.get_many(["k"])["k"].cached  # both may take it over
        assert b.claim(["k"]) == {"k"} and c.claim(["k"]) == set()  # only the first to claim counts it
        assert c.get_many(["k"])["k"].cached

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache2"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    with FakeLLMServer() as server:
        client = make_client({"model": "gpt-4o", "base_url": server.openai_base_url})
        asks = [ChatRequest(messages=[{"role": "user", "content": f"q{i}"}]) for i in range(3)]
        assert not any(r.cached for r in client.run(asks, progress=False))  # its own calls: counted here
        assert all(r.cached for r in client.run(asks, progress=False))  # handed on, claimed: never again
        assert server.chat_calls == 3


def test_a_reply_another_running_process_stored_is_counted_by_that_process_only(tmp_path):
    """Run B took run A's reply from the cache while A was still scoring (A claims its calls when it hands them on):
    both counted it, so the costs of two runs added up to more than was paid. While A runs, B sees it as cached;
    once A is gone without claiming (killed), the reply is the next run's to count."""
    path = tmp_path / "llm-cache.sqlite"
    store = (f"from harness.providers.cache import LLMCache; from harness.providers.base import ChatResult; "
             f"c = LLMCache({str(path)!r}); c.put('k', 'openai', 'gpt-4o-2024-08-06', ChatResult(text='yes', "
             "cost_usd=1.0)); c.close(); print('stored', flush=True); import sys; sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", store], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "stored\n"
        with LLMCache(path) as cache:
            assert cache.get_many(["k"])["k"].cached  # the process that paid for it runs: it counts the reply
    finally:
        other.kill()
        other.wait()
    with LLMCache(path) as cache:
        assert not cache.get_many(["k"])["k"].cached  # it ended without claiming: this run counts it
        assert cache.claim(["k"]) == {"k"}


def test_an_owner_pid_now_another_process_does_not_hold_its_entries():
    """A pid reused after the owner ended, or another container's process under the same pid and host name, is not
    the owner: its start time differs (where /proc tells it)."""
    import socket

    from harness.processes import process_started
    from harness.providers.entry_owner import held_by_another_live_process

    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        started = process_started(other.pid)
        if started is None:
            pytest.skip("no /proc here: the pid alone names the owner")
        host = socket.gethostname()
        assert held_by_another_live_process(f"{host}:{other.pid}:{started}")
        assert not held_by_another_live_process(f"{host}:{other.pid}:{int(started) + 1}")
        assert not held_by_another_live_process(f"another-host:{other.pid}:{started}")
    finally:
        other.kill()
        other.wait()


def test_a_call_this_run_paid_is_counted_even_if_another_process_stored_the_same_reply_first(monkeypatch, tmp_path):
    """Two runs asking the same at the same time both pay: each counts its own call (the reply another process
    stored and claimed meanwhile is kept, never reopened for a third run to count)."""
    from harness.providers import ChatRequest

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    ask = ChatRequest(messages=[{"role": "user", "content": "same"}])

    def reply(body: dict) -> str:  # while this call is under way, another process stores and claims the same
        with LLMCache() as other:
            other.put(client.key(ask), "openai", client.model, ChatResult(text="theirs", cost_usd=1.0))
            assert other.claim([client.key(ask)]) == {client.key(ask)}
        return "ours"

    with FakeLLMServer(reply=reply) as server:
        client = make_client({"model": "gpt-4o", "base_url": server.openai_base_url})
        (mine,) = client.run([ask], progress=False)
        assert mine.text == "ours" and not mine.cached  # paid by this run: counted by it
        (later,) = client.run([ask], progress=False)
    assert later.text == "theirs" and later.cached and server.chat_calls == 1


def test_a_cache_dir_that_is_a_file_is_named_not_shown_empty(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    proc = cli("cache", cache_dir=blocker)
    assert proc.returncode == 2 and proc.stderr == (f"error: LLM cache {blocker / 'llm-cache.sqlite'}: {blocker} is "
                                                    "a file, not a folder (check HARNESS_CACHE_DIR)\n")
    assert blocker.read_text() == "mine"


def test_a_rescore_from_the_cache_says_what_its_replies_cost_and_which_model_gave_them(monkeypatch, tmp_path):
    """Re-scoring from the cache recorded cost_usd 0 in place of the first scoring's cost: the file no longer said
    what its verdicts cost. cost_usd stays what this run paid; replies_cost_usd is what the replies cost."""
    from harness.judge_api import JudgeOptions
    from harness.judges.gpt4 import GPT4Judge

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    with FakeLLMServer() as server:
        judge = GPT4Judge(JudgeOptions(convention="pefomed", task_kind="vqa", settings={
            "model": "gpt-4o", "base_url": server.openai_base_url}))
        paid = ChatResult(text="Correctness: 1", input_tokens=100, output_tokens=5, cost_usd=0.25)
        rows = [judge._row([paid], [1]), judge._row([ChatResult(**{**paid.__dict__, "cached": True})], [1])]
        judge.close()
    assert [r["details"]["cost_usd"] for r in rows] == [0.25, 0.0]
    assert [r["details"]["replies_cost_usd"] for r in rows] == [0.25, 0.25]
    assert [r["details"]["paid_input_tokens"] for r in rows] == [100, 0]
    assert {r["details"]["judge_model"] for r in rows} == {"gpt-4o-2024-08-06"}
    corpus = judge.aggregate(ROWS[:2], rows)
    assert (corpus["cost_usd"], corpus["replies_cost_usd"], corpus["input_tokens"]) == (0.25, 0.5, 200)
