"""Provider replies of odd shapes, outages across small batches, failed judge calls, the credentialed guard of
the LLM judges, the progress bar and long waits: against real local servers (tests/fake_llm_servers.py)."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest
from fake_llm_servers import FakeLLMServer, Fault, prompt_text

from harness.cli import main as cli_main
from harness.errors import UserError
from harness.judge_api import JudgeOptions
from harness.judges.gpt4 import GPT4Judge
from harness.providers import ChatRequest, ProviderUnavailable, make_client
from harness.providers.cache import LLMCache

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")
KEY = "sk-test-FAULTS-5x7Yq2Lw"
FAST = {"retry_base_delay": 0.01, "retry_max_delay": 0.02}


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY + "-ant")


def ask(text: str) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": text}])


def client(server: FakeLLMServer, provider: str = "openai", **settings):
    url = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
    model = "claude" if provider == "anthropic" else "gpt-4o"
    return make_client({"model": model, "base_url": url, **FAST, **settings})


ODD = {
    "openai": [b'{"choices": ["oops"]}', b'{"choices": [{"message": {"content": 5}}]}',
               b'{"choices": [{"message": {"content": "yes"}}], "usage": {"prompt_tokens": "n/a"}}',
               b'{"choices": [{"message": {"content": "yes"}}], "usage": {"completion_tokens": -5}}',
               b'{"choices": [{"message": ["yes"]}]}', b'{"choices": {}}', b'[1, 2]'],
    "anthropic": [b'{"content": ["oops"]}', b'{"content": [{"type": "text", "text": 5}]}',
                  b'{"content": [{"type": "text", "text": "yes"}], "usage": {"input_tokens": "n/a"}}',
                  b'{"content": [{"type": "text", "text": "yes"}], "usage": {"output_tokens": -5}}',
                  b'{"content": [{"type": "tool_use", "input": "x"}]}', b'{"content": "yes"}'],
}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_valid_json_of_an_unexpected_shape_is_a_retried_malformed_reply_never_cached(provider):
    with FakeLLMServer() as server:
        bodies = ODD[provider]
        server.fault_fn = lambda body, i: Fault(body=bodies[int(prompt_text(body)[1:])])
        requests = [ask(f"q{i}") for i in range(len(bodies))]
        results = client(server, provider, max_retries=1, down_after=100).run(requests, progress=False)
        assert all(r.text is None and "malformed reply" in r.error for r in results), results
        assert server.chat_calls == 2 * len(bodies)  # retried once each
        with LLMCache() as cache:
            assert cache.stats()["entries"] == 0
        server.fault_fn = None  # the provider answers properly now: asked again, not served from a cache
        again = client(server, provider).run(requests, progress=False)
    assert [r.text for r in again] == [f"echo: q{i}" for i in range(len(bodies))]
    assert not any(r.cached for r in again)


WITHHELD = {
    "openai": b'{"choices": [{"index": 0, "finish_reason": "content_filter", "message": {"role": "assistant", '
              b'"content": null, "refusal": null}}], "usage": {"prompt_tokens": 9, "completion_tokens": 0}}',
    "anthropic": b'{"type": "message", "role": "assistant", "content": [], "stop_reason": "refusal", '
                 b'"usage": {"input_tokens": 9, "output_tokens": 0}}',
}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_reply_withheld_by_a_content_filter_or_refusal_is_a_failed_call_never_an_empty_answer(provider):
    """It was recorded as the answer "" (scored wrong, cached, so never asked again)."""
    with FakeLLMServer() as server:
        server.add_faults(Fault(body=WITHHELD[provider]))
        first = client(server, provider).run([ask("q0")], progress=False)[0]
        assert first.text is None and ("content filter" in first.error or "refused" in first.error), first
        with LLMCache() as cache:
            assert cache.stats()["entries"] == 0
        again = client(server, provider).run([ask("q0")], progress=False)[0]
    assert again.text == "echo: q0" and not again.cached


def test_outage_is_detected_across_small_runs_and_reset_by_a_success():
    with FakeLLMServer() as server:
        server.fault_fn = lambda body, i: Fault(status=500, message="down")
        c = client(server, max_retries=0, down_after=3, concurrency=1)
        assert all(r.text is None for r in c.run([ask("a"), ask("b")], progress=False))
        with pytest.raises(ProviderUnavailable, match="3 requests in a row failed"):
            c.run([ask("c"), ask("d")], progress=False)
        assert server.chat_calls == 3
        # a success in between resets the count
        server.fault_fn = lambda body, i: None if "ok" in prompt_text(body) else Fault(status=500)
        c = client(server, max_retries=0, down_after=3, concurrency=1)
        for batch in (["e", "f"], ["ok1", "g"], ["h", "ok2"]):
            c.run([ask(x) for x in batch], progress=False)


def judge(server: FakeLLMServer, **settings) -> GPT4Judge:
    base = {"model": "gpt-4o", "base_url": server.openai_base_url, "max_retries": 0, "down_after": 100, **FAST}
    return GPT4Judge(JudgeOptions(convention="pefomed", task_kind="vqa", settings={**base, **settings}))


RECORDS = [{"id": f"s{i}", "question": f"q{i}", "answer": "yes", "prediction": "yes"} for i in range(6)]


def test_failed_judge_calls_are_counted_apart_with_a_note(capsys):
    def fault(body, i):
        text = prompt_text(body)
        if "q1" in text or "q2" in text:
            return Fault(status=500, message="upstream error for key {key}")
        if "q3" in text:
            return Fault(text="I cannot tell.")
        return None

    with FakeLLMServer(reply=lambda body: "Correctness: 1", fault_fn=fault) as server:
        j = judge(server)
        rows = j.score(RECORDS)
    details = [row["details"] for row in rows]
    assert [d["failed_calls"] for d in details] == [0, 1, 1, 0, 0, 0]
    assert [d["unscored"] for d in details] == [0, 0, 0, 1, 0, 0]
    agg = j.aggregate(RECORDS, rows)
    assert agg["failed_calls"] == 2 and agg["unscored_replies"] == 1 and agg["accuracy"] == 1.0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 2 and "2 of 6 calls failed" in notes[0] and "HTTP 500" in notes[0]
    assert "run the same command again to retry them" in notes[0] and KEY[4:] not in err
    assert "1 of 6 replies of gpt-4o-2024-08-06 could not be read as a verdict (first: 'I cannot tell.')" in notes[1]


def test_a_judge_whose_every_call_failed_ends_the_command_with_exit_code_2(tmp_path, capsys):
    """A script or CI must not take a judge that scored nothing for a result; what was recorded stays."""
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({**r, "answer_type": "CLOSED"}) + "\n" for r in RECORDS))
    with FakeLLMServer(reply=lambda body: "Correctness: 1",
                       fault_fn=lambda body, i: Fault(status=400, message="bad request")) as server:
        score = ["score", str(preds), "--task-type", "vqa", "--judge", "gpt4", "--judge-base-url",
                 server.openai_base_url, "--judge-model", "gpt-4o", "--output", str(tmp_path / "out"), "--no-progress"]
        assert cli_main(score) == 2
        err = capsys.readouterr().err
        assert err.splitlines()[-1] == ("error: judge gpt4 (default) scored no sample: 6 of its calls failed and no "
                                        "reply was scored (the note above says why); fix the cause and run the same "
                                        "command to retry them")
        assert (tmp_path / "out" / "results.json").exists()
        server.fault_fn = None
        assert cli_main(score) == 0  # the same command again: the calls are made again and scored


def test_a_judge_none_of_whose_replies_could_be_read_ends_with_exit_code_2(tmp_path, capsys):
    """A model behind a base URL that does not follow the judge prompt scored nothing, with exit 0 and no word."""
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({**r, "answer_type": "CLOSED"}) + "\n" for r in RECORDS))
    with FakeLLMServer(reply=lambda body: "I think the answer is probably fine, maybe.") as server:
        score = ["score", str(preds), "--task-type", "vqa", "--judge", "gpt4", "--judge-base-url",
                 server.openai_base_url, "--judge-model", "gpt-4o", "--output", str(tmp_path / "out"), "--no-progress"]
        assert cli_main(score) == 2
    lines = capsys.readouterr().err.splitlines()
    assert ("note: judge 'gpt4': 6 of 6 replies of gpt-4o-2024-08-06 could not be read as a verdict (first: 'I think "
            "the answer is probably fine, maybe.'); their samples are unscored") in "\n".join(lines)
    assert lines[-1] == ("error: judge gpt4 (default) scored no sample: none of its 6 replies could be read as a "
                         "verdict or score (the note above shows one); is the judge model one that follows the judge "
                         "prompt?")
    assert (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize("settings", [{"model": "claude"}, {"model": "gpt-4o"}, {"model": "gpt4"},
                                      {"model": "m", "provider": "openai"}])
def test_credentialed_data_is_refused_by_a_provider_model_behind_a_loopback_url(settings):
    with FakeLLMServer() as server:
        url = server.anthropic_base_url if settings["model"] == "claude" else server.openai_base_url
        options = JudgeOptions(convention="pefomed", task_kind="vqa", credentialed=True,
                               settings={**settings, "base_url": url})
        with pytest.raises(UserError, match="credentialed.*--allow-external-judge"):
            GPT4Judge(options)
        assert server.chat_calls == 0
        allowed = GPT4Judge(JudgeOptions(convention="pefomed", task_kind="vqa", credentialed=True,
                                         settings={**settings, "base_url": url, "allow_external": True}))
        assert allowed.client.base_url == url
        local = GPT4Judge(JudgeOptions(convention="pefomed", task_kind="vqa", credentialed=True,
                                       settings={"model": "m", "provider": "openai-compatible", "base_url": url}))
        assert local.client.provider == "openai-compatible"


def test_no_progress_bar_unless_asked_and_the_error_starts_its_own_line(tmp_path, capsys):
    from harness.scoring import build_judges

    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({**r, "answer_type": "CLOSED"}) + "\n" for r in RECORDS))
    with FakeLLMServer(reply=lambda body: "Correctness: 1") as server:
        score = ["score", str(preds), "--task-type", "vqa", "--judge", "gpt4", "--judge-base-url",
                 server.openai_base_url, "--judge-model", "gpt-4o"]
        assert cli_main([*score, "--output", str(tmp_path / "a")]) == 0  # stderr is no terminal: no bar
        assert "gpt-4o-2024-08-06:" not in capsys.readouterr().err
        settings = {"model": "gpt-4o", "base_url": server.openai_base_url, "cache": False}
        (quiet,) = build_judges(["gpt4"], None, settings, "vqa", False, progress=False)  # --no-progress
        assert quiet._progress() is False
        (shown,) = build_judges(["gpt4"], None, settings, "vqa", False, progress=True)
        server.api_key = "another-key"  # 401: the run stops while the bar is shown
        with pytest.raises(UserError):
            shown.score([{**r, "answer_type": "CLOSED"} for r in RECORDS])
    err = capsys.readouterr().err
    assert "openai:gpt-4o-2024-08-06" in err and err.endswith("\n")  # the bar was drawn and kept its own line
    assert KEY not in err


def test_a_long_retry_after_is_announced_once(caplog):
    caplog.set_level(logging.WARNING, logger="harness.providers")
    with FakeLLMServer() as server:
        server.add_faults(Fault(status=429, retry_after="10"), Fault(status=429, retry_after="10"))
        started = time.monotonic()
        results = client(server, concurrency=2).run([ask("a"), ask("b")], progress=False)
    assert [r.text for r in results] == ["echo: a", "echo: b"] and time.monotonic() - started >= 10
    waits = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert len(waits) == 1 and re.match(r"waiting 1[01] s ", waits[0]) and "retry-after" in waits[0], waits


def test_an_llm_judge_asked_once_per_sample_gets_wilson_intervals_like_other_shares(tmp_path):
    """6 of 6 judged correct: Wilson's [0.61, 1], not a bootstrap's [1, 1]; asked twice with differing verdicts
    (per-sample values of 0.5) it stays a bootstrap of the judge's aggregate."""
    from harness.aggregate import summarize_slice, wilson_interval

    with FakeLLMServer(reply=lambda body: "Correctness: 1") as server:
        once = judge(server)
        rows = once.score(RECORDS)
        server.fault_fn = lambda body, i: Fault(text="Correctness: 0") if body["seed"] % 2 else None  # repeat 2
        twice = judge(server, repeats=2, seed=0, cache=False)
        rows2 = twice.score(RECORDS)
    assert {row["metrics"]["accuracy"] for row in rows2} == {0.5}
    accuracy = summarize_slice(once, RECORDS, rows)["accuracy"]
    assert accuracy["ci_method"] == "wilson" and accuracy["ci95"] == wilson_interval(6, 6)
    assert accuracy["ci95"][0] < 0.7
    shares = summarize_slice(twice, RECORDS, rows2)["accuracy"]  # a bootstrap, of no spread here: no interval
    assert shares["value"] == 0.5 and shares["ci_method"] is None and shares["ci95"] is None


def test_a_likert_rating_that_happens_to_be_0_or_1_everywhere_is_no_proportion():
    """WASM is a 0-4 mean: 1s and 0s must not make it a share with a Wilson interval capped at 1."""
    from harness.aggregate import summarize_slice
    from harness.judges.likert import LikertJudge

    reports = [{"id": f"r{i}", "question": None, "answer": f"finding {i}", "prediction": f"guess {i}"}
               for i in range(8)]
    with FakeLLMServer(reply=lambda body: "Score: 0" if "guess 0" in json.dumps(body) else "Score: 1") as server:
        likert = LikertJudge(JudgeOptions(convention="pefomed", task_kind="report", settings={
            "model": "gpt-4o", "base_url": server.openai_base_url, **FAST}))
        rows = likert.score(reports)
    wasm = summarize_slice(likert, reports, rows)["wasm"]
    assert wasm["value"] == 7 / 8 and wasm["ci_method"] == "bootstrap-corpus-expanded" and wasm["ci95"][1] == 1.0


def test_identical_samples_are_separate_draws_when_the_judge_samples():
    """PeFoMed asked once per sample at temperature 1: twenty samples with the same question, answer and prediction
    are twenty draws (a shared reply made the spread across repeats and the intervals wrong); at temperature 0
    they stay one call; a rerun is served from the cache."""
    same = [{"id": f"d{i}", "question": "Is there a lesion?", "answer": "yes", "prediction": "yes"}
            for i in range(20)]
    with FakeLLMServer(reply=lambda body: "Correctness: 1") as server:
        sampled = judge(server, temperature=1.0)
        rows = sampled.score(same)
        assert server.chat_calls == 20 and all(row["details"]["cached"] == 0 for row in rows)
        sampled.score(same)
        assert server.chat_calls == 20  # every draw is cached under its own key
        judge(server, temperature=0.0).score(same)
        assert server.chat_calls == 21
        # seeded: every draw and repeat its own seed, or a seeded server (vLLM) returns copies of one reply
        seeded = GPT4Judge(JudgeOptions(convention="pefomed", task_kind="vqa", settings={
            "model": "gpt-4o", "base_url": server.openai_base_url, "temperature": "1.0", "seed": "5",
            "repeats": "3", **FAST}))
        seeded.score(same[:4])
        seeds = [body["seed"] for body in server.requests[21:]]
        assert sorted(seeds) == list(range(5, 17))


def test_an_anthropic_judge_records_no_temperature_and_refuses_one():
    """The Anthropic API takes no temperature or seed: recording 0.7 (or caching by it) claimed a choice not made."""
    with FakeLLMServer() as server:
        base = {"model": "claude", "base_url": server.anthropic_base_url}
        claude = GPT4Judge(JudgeOptions(convention="default", task_kind="vqa", settings=base))
        assert (claude.setup()["temperature"], claude.setup()["seed"]) == (None, None)
        assert (claude.describe()["temperature"], claude.describe()["seed"]) == (None, None)  # the entry said 0.0
        assert GPT4Judge.resolve_setup(base, "default") == claude.setup()
        for given in ({"temperature": "0.7"}, {"seed": "3"}):
            with pytest.raises(UserError, match=r"takes no temperature or seed, so claude-.* samples at its default"):
                GPT4Judge(JudgeOptions(convention="default", task_kind="vqa", settings={**base, **given}))
        gpt = GPT4Judge(JudgeOptions(convention="default", task_kind="vqa", settings={
            "model": "gpt-4o", "base_url": server.openai_base_url, "temperature": "0.7"}))
        assert gpt.setup()["temperature"] == 0.7


def test_a_provider_that_is_down_keeps_the_results_of_the_judges_that_finished(tmp_path, capsys):
    """`--judge exact --judge gpt4` with the provider down: exit 2 and no results.json, though exact had scored."""
    run = ["run", "--model", "prior", "--task", "phantom-vqa", "--limit", "6", "--judge", "exact", "--judge", "gpt4",
           "--judge-model", "gpt-4o", "--judge-arg", "max_retries=0", "--judge-arg", "down_after=2",
           "--judge-arg", "concurrency=1", "--output", str(tmp_path / "run"), "--no-progress"]
    with FakeLLMServer(fault_fn=lambda body, i: Fault(status=500, message="upstream down")) as server:
        assert cli_main([*run, "--judge-base-url", server.openai_base_url]) == 2
    err = capsys.readouterr().err
    assert "note: results.json records the judge(s) that finished (exact)" in err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [(j["id"], j["convention"]) for j in results["judges"]] == [("exact", "pefomed")]
    assert results["judges"][0]["metrics"]["accuracy"]["value"] is not None
