# ruff: noqa: E501
"""LLM judges `gpt4` and `likert` end to end against real local HTTP servers speaking the OpenAI and Anthropic
wire formats (tests/fake_llm_servers.py): verdicts, repeats, unscored replies, caching, data protection, and
the byte-exact PeFoMed prompts."""

from __future__ import annotations

import hashlib
import json
import re
import statistics

import pytest
from fake_llm_servers import FakeLLMServer, prompt_text

from harness.errors import UserError
from harness.judge_api import JudgeOptions
from harness.judges.gpt4 import GPT4Judge
from harness.judges.likert import LikertJudge
from harness.judges.llm_judge_common import wasm
from harness.judges.llm_prompts import PEFOMED_LIKERT, PEFOMED_VQA, fill, template_sha256
from harness.judges.llm_replies import parse_default, parse_reply

EXPECTED_PEFOMED_VQA = """Given a question about an medical image, there is a correct answer to the question and an answer to be determined. If the answer to be determined matches the correct answer or is a good enough answer to the question, output 1; otherwise output 0. Evaluate the answer to be determined (1 or 0).

Question:
- question about the medical image: Is there a fracture?

Answers:
- correct answer(ground truth): yes
answer to be determined: No.

Task:
- Given a question about an medical image, there is a correct answer to the question and an answer to be determined. If the answer to be determined matches the correct answer or is a good enough answer to the question, output 1; otherwise output 0. Evaluate the answer to be determined (1 or 0).

Output Format:
Correctness: your answer"""

EXPECTED_PEFOMED_LIKERT_TAIL = """

actual medical report:
- actual medical report: No acute disease.

generated medical report:
- generated medical report to be determined: Heart size normal.

Task:
- Given a actual medical report on a medical image and a generated medical report that needs to be determined, evaluate the generated report to be determined (0 or 1 or 2 or 3 or 4).

Output Format(Only "Score:" and a rating number can be output):
Score: your answer"""


@pytest.fixture(autouse=True)
def _dummy_keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-dummy")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-dummy")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------------------ prompt text
def test_pefomed_prompts_are_byte_exact_and_frozen():
    filled = fill(PEFOMED_VQA, question="Is there a fracture?", true_answer="yes", generated_answer="No.")
    assert filled == EXPECTED_PEFOMED_VQA
    assert template_sha256(PEFOMED_VQA) == "617ac7b6af7105d42f451ccdb97bbb6baa74d77fd48e5060f2808b6cf491ec55"
    assert template_sha256(PEFOMED_LIKERT) == "73b77b1b34a56cd23c5220bd7fd4e95666294263c11e1d7b7fb33b6c1c721b84"
    report = fill(PEFOMED_LIKERT, ground_truth="No acute disease.", generated_report="Heart size normal.")
    assert report.endswith(EXPECTED_PEFOMED_LIKERT_TAIL)
    assert "compared to the actual  report" in report  # the original's double space is kept
    assert report.startswith("Given a actual medical report on a medical image and a generated medical report")


def test_fill_leaves_braces_in_texts_alone():
    filled = fill(PEFOMED_VQA, question="{true_answer}?", true_answer="a {b}", generated_answer="{question}")
    assert "- question about the medical image: {true_answer}?\n" in filled
    assert "- correct answer(ground truth): a {b}\nanswer to be determined: {question}\n" in filled


# ---------------------------------------------------------------------------------------- reply parsing
@pytest.mark.parametrize("reply, verdict", [
    ("Correctness: 1", 1),
    ("Correctness: 0", 0),
    ("Correctness: your answer is 1", 1),
    ("The answer is right.\nCorrectness: 1 (matches)", 1),
    ("Correctness: 3", 0),  # PeFoMed: every number other than 1 counted as incorrect
    ("Correctness: 1.0", None),  # PeFoMed's int() raised: the sample went uncounted
    ("Correctness: yes", None),
    ("correctness: 1", None),  # the marker is case-sensitive, as in the original split()
    ("1", None),  # no marker
    ("", None),
    (None, None),
])
def test_pefomed_binary_parsing(reply, verdict):
    assert parse_reply(reply, "binary", "pefomed") == verdict


@pytest.mark.parametrize("reply, score", [
    ("Score: 4", 4), ("Score: 0", 0), ("Score: 2\nThe report misses the effusion.", 2),
    ("Score: 5", None),  # outside 0..4: PeFoMed left it out of the counts
    ("Score: 3.5", None), ("I would rate this report 3", None),
])
def test_pefomed_likert_parsing(reply, score):
    assert parse_reply(reply, "likert", "pefomed") == score


@pytest.mark.parametrize("reply, verdict", [
    ('{"reason": "same finding", "correct": 1}', 1),
    ('```json\n{"reason": "wrong side", "correct": 0}\n```', 0),
    ('Here you go: {"reason": "ok", "correct": true}', 1),
    ('{"reason": "x", "correct": 2}', None),
    ('{"reason": "cut off mid-sent', None),
    ('"correct": 0, "reason": "truncat', 0),
    ("Correctness: 1", 1),
    ("0", 0),
    ("I am not sure.", None),
])
def test_default_binary_parsing(reply, verdict):
    assert parse_reply(reply, "binary", "default") == verdict


def test_default_likert_parsing():
    assert parse_default('{"reason": "r", "score": 3}', "score", (0, 1, 2, 3, 4), "Score") == 3
    assert parse_default('{"reason": "r", "score": "4"}', "score", (0, 1, 2, 3, 4), "Score") == 4
    assert parse_default("Score: 2", "score", (0, 1, 2, 3, 4), "Score") == 2
    assert parse_default('{"text": "no idea"}', "score", (0, 1, 2, 3, 4), "Score") is None
    assert parse_default('{"reason": "r", "score": 7}', "score", (0, 1, 2, 3, 4), "Score") is None
    assert parse_reply('{"reason": "r", "score": true}', "likert", "default") is None  # no rating, not a 1
    assert parse_reply('"score": false, "reason": "cut', "likert", "default") is None


@pytest.mark.parametrize("reply, kind, value", [
    ("<think>Maybe score: 1? No, it matches well.</think>\nScore: 4", "likert", 4),
    ("<think>Is it correct: 1? No, a contradiction.</think>\nCorrectness: 0", "binary", 0),
    ('<think>{"score": 0} would be too harsh</think>{"reason": "close", "score": 3}', "likert", 3),
    ("<think>The answer says left, score: 2 maybe", "likert", None),  # cut off while thinking: no verdict
    ("Let me weigh it. Score: 2 seems low, Score: 3 maybe.\n</think>\n\nScore: 3", "likert", 3),  # opened by template
    ('{"correct": 1, "reason": "the prediction \'yes</think>\' matches"}', "binary", 1),  # a quoted tag
    ("Correctness: 1\nNote: the candidate ends with a stray </think> tag.", "binary", 1),
    ("**Score:** 3", "likert", 3),
    ("Score: **3**", "likert", 3),
    ("**Correctness:** 1", "binary", 1),
    ("Score: 1 at first sight, but on reflection Score: 4", "likert", None),  # two verdicts: unscored
    ("Score: 2. Reason: one finding missing; score: 2 stands.", "likert", 2),
])
def test_default_parsing_of_reasoning_and_markdown_replies(reply, kind, value):
    assert parse_reply(reply, kind, "default") == value


def test_wasm_published_checks():
    assert round(wasm([22, 118, 267, 449, 324]), 2) == 2.79
    assert round(wasm([1048, 79, 33, 20, 0]), 2) == 0.17
    assert wasm([0, 0, 0, 0, 0]) is None


# ------------------------------------------------------------------------------------ gpt4, OpenAI format
def _vqa_records() -> list[dict]:
    """20 records: 5 right, 5 wrong, 5 the judge wavers on (wrong on repeat 1), 2 it never answers
    parsably, 3 it answers unparsably on repeat 1 only (and right otherwise)."""
    records = []
    for i in range(20):
        answer = f"answer {i}"
        prediction = {0: answer, 1: f"something else {i}", 2: "FLAKY"}.get(i % 4)
        if i % 4 == 3:
            prediction = "UNPARSABLE" if i < 8 else "HALF"
        records.append({"id": f"s{i}", "question": f"What is shown in image {i}?", "answer": answer,
                        "prediction": prediction, "answer_type": "OPEN" if i < 10 else "CLOSED"})
    return records


SEED = 100


def _pefomed_vqa_reply(body: dict) -> str:
    """Scripted from the request: 1 when the prediction equals the reference in the prompt text."""
    text = prompt_text(body)
    truth = re.search(r"^- correct answer\(ground truth\): (.*)$", text, re.M).group(1)
    generated = re.search(r"^answer to be determined: (.*)$", text, re.M).group(1)
    repeat = body["seed"] - SEED
    if generated == "UNPARSABLE" or (generated == "HALF" and repeat == 1):
        return "I cannot tell without seeing the image."
    if generated in ("FLAKY", "HALF"):
        return f"Correctness: {0 if repeat == 1 else 1}"
    return f"Correctness: {int(generated == truth)}"


def _gpt4(server: FakeLLMServer, **settings) -> GPT4Judge:
    base = {"model": "gpt4", "base_url": server.openai_base_url, "repeats": 3, "seed": str(SEED),
            "concurrency": 8, "timeout": 10, "retry_base_delay": 0.01}
    return GPT4Judge(JudgeOptions(convention="pefomed", task_kind="vqa", settings={**base, **settings}))


def test_repeats_that_agree_keep_the_repeats_interval_method_and_a_zero_spread():
    """With --judge-repeats 3 the interval was Wilson's when every repeat agreed on every sample and a bootstrap over
    repeats when one wavered: one setup, two methods by chance; the std of agreeing repeats was 6.8e-17."""
    from harness.aggregate import summarize_slice

    records = [r for r in _vqa_records() if r["prediction"] not in ("FLAKY", "HALF", "UNPARSABLE")]
    with FakeLLMServer(reply=_pefomed_vqa_reply) as server:
        agreeing = _gpt4(server).score(records)
        assert all(len(set(row["details"]["verdicts"])) == 1 for row in agreeing)
        summary = summarize_slice(_gpt4(server), records, agreeing)
        once = _gpt4(server, repeats=1, temperature=0)
        single = summarize_slice(once, records, once.score(records))
    assert summary["accuracy"]["ci_method"] == "bootstrap-corpus-expanded" and summary["accuracy_std"]["value"] == 0.0
    assert single["accuracy"]["ci_method"] == "wilson"  # asked once: a share of 0/1 verdicts
    from harness.judges.llm_judge_common import mean_std

    assert mean_std([0.7] * 3) == (0.7, 0.0)  # summed, 0.7 three times gave a std of 1.4e-16


def test_gpt4_pefomed_repeats_unscored_and_rerun_without_calls():
    records = _vqa_records()
    with FakeLLMServer(reply=_pefomed_vqa_reply) as server:
        judge = _gpt4(server)
        rows = judge.score(records)
        assert server.chat_calls == 60

        # what was sent: one user message with the PeFoMed text, the pinned model, 100 tokens, API default temp
        body = server.requests[0]
        assert body["model"] == "gpt-4-0613"
        assert body["temperature"] == 1.0
        assert body.get("max_completion_tokens", body.get("max_tokens")) == 100
        assert "response_format" not in body
        assert [m["role"] for m in body["messages"]] == ["user"]
        sent = {prompt_text(b) for b in server.requests}
        assert judge.prompt(records[0]) in sent and len(sent) == 20
        assert {b["seed"] for b in server.requests} == {100, 101, 102}

        by_id = {r["id"]: row for r, row in zip(records, rows)}
        assert by_id["s0"]["metrics"] == {"accuracy": 1.0}
        assert by_id["s1"]["metrics"] == {"accuracy": 0.0}
        assert by_id["s2"]["metrics"]["accuracy"] == pytest.approx(2 / 3)
        assert by_id["s2"]["details"]["verdicts"] == [1, 0, 1]
        assert by_id["s3"]["metrics"] == {"accuracy": None}  # every repeat unscored: None, not 0
        assert by_id["s3"]["details"]["unscored"] == 3
        assert by_id["s3"]["details"]["replies"] == ["I cannot tell without seeing the image."] * 3
        assert by_id["s11"]["details"]["verdicts"] == [1, None, 1]
        assert by_id["s11"]["metrics"] == {"accuracy": 1.0}

        # per repeat: r0 and r2 score 18 samples (13 right), r1 scores 15 (5 right)
        per_repeat = [13 / 18, 5 / 15, 13 / 18]
        agg = judge.aggregate(records, rows)
        assert agg["accuracy"] == pytest.approx(statistics.mean(per_repeat))
        assert agg["accuracy_std"] == pytest.approx(statistics.stdev(per_repeat))
        assert agg["repeats"] == 3
        assert agg["unscored_replies"] == 9
        expected_in = sum(len(prompt_text(b).split()) for b in server.requests)
        expected_out = sum(len(row["details"]["replies"][k].split()) for row in rows for k in range(3))
        assert agg["input_tokens"] == expected_in and agg["output_tokens"] == expected_out
        assert agg["cost_usd"] == 0.0  # a judge behind a custom base URL costs no API fees (test_pricing.py)

        # any subset (a breakdown slice): the 5 wavering samples alone
        flaky = [i for i, r in enumerate(records) if r["prediction"] == "FLAKY"]
        sub = judge.aggregate([records[i] for i in flaky], [rows[i] for i in flaky])
        assert sub["accuracy"] == pytest.approx(2 / 3)
        assert sub["accuracy_std"] == pytest.approx(statistics.stdev([1, 0, 1]))
        assert sub["unscored_replies"] == 0

        # a rerun (a new judge object, the same cache) makes zero calls and gives the same rows
        server.reset_counters()
        again = _gpt4(server).score(records)
        assert server.chat_calls == 0
        assert [r["details"]["verdicts"] for r in again] == [r["details"]["verdicts"] for r in rows]
        assert all(r["details"]["cached"] == 3 for r in again)

        # one more repeat asks only for the new repeat
        more = _gpt4(server, repeats=4).score(records)
        assert server.chat_calls == 20
        assert all(len(r["details"]["verdicts"]) == 4 for r in more)


def test_gpt4_default_convention_sends_a_schema_and_reads_json():
    def reply(body):
        text = prompt_text(body)
        truth = re.search(r"^Reference answer: (.*)$", text, re.M).group(1)
        candidate = re.search(r"^Candidate answer: (.*)$", text, re.M).group(1)
        return json.dumps({"reason": "compared", "correct": int(truth == candidate)})

    records = _vqa_records()[:8]
    with FakeLLMServer(reply=reply) as server:
        judge = GPT4Judge(JudgeOptions(task_kind="vqa", settings={"base_url": server.openai_base_url}))
        assert judge.convention == "default"
        rows = judge.score(records)
        body = server.requests[0]
        assert body["model"] == "gpt-4o-2024-08-06"
        assert body["temperature"] == 0.0  # one repeat of the default preset: greedy
        schema = body["response_format"]["json_schema"]["schema"]
        assert schema["properties"]["correct"]["enum"] == [0, 1]
    assert [row["metrics"]["accuracy"] for row in rows] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    agg = judge.aggregate(records, rows)
    assert agg["accuracy"] == pytest.approx(2 / 8) and agg["accuracy_std"] is None and agg["repeats"] == 1


def test_describe_records_the_resolved_judge_and_no_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-describe")
    with FakeLLMServer() as server:
        judge = _gpt4(server, temperature="0.7")
        info = judge.describe()
        base_url = server.openai_base_url
    assert info["id"] == "gpt4" and info["convention"] == "pefomed"
    assert info["model"] == "gpt-4-0613" and info["provider"] == "openai"
    assert info["base_url"] == base_url
    assert info["prompt_sha256"] == template_sha256(PEFOMED_VQA)
    assert (info["temperature"], info["seed"], info["max_tokens"], info["repeats"]) == (0.7, 100, 100, 3)
    assert "SECRET" not in json.dumps(info)


# ------------------------------------------------------------------------------- likert, Anthropic format
def test_likert_through_anthropic_counts_levels_and_wasm():
    def reply(body):
        generated = re.search(r"^Generated: (.*)$", prompt_text(body), re.M).group(1)
        level = re.search(r"level (\d)", generated)
        return json.dumps({"reason": "r", "score": int(level.group(1))}) if level else "no idea"

    levels = [0, 1, 2, 3, 4, 4, 3, 3, None, None]
    records = [{"id": f"r{i}", "answer": f"reference report {i}",
                "prediction": f"generated report level {lv}" if lv is not None else "garbled"}
               for i, lv in enumerate(levels)]
    with FakeLLMServer(reply=reply) as server:
        judge = LikertJudge(JudgeOptions(task_kind="report", settings={
            "model": "claude", "base_url": server.anthropic_base_url, "repeats": "2"}))
        rows = judge.score(records)
        assert server.counts["POST /v1/messages"] == 20
        body = server.requests[0]
        assert body["model"] == "claude-sonnet-4-6"
        assert body["tool_choice"]["type"] == "tool"  # the JSON schema as a forced tool
        assert body.get("temperature", 1.0) == 1.0  # repeats need sampling (1.0 is also Anthropic's default)
    assert [row["metrics"]["wasm"] for row in rows] == [0.0, 1.0, 2.0, 3.0, 4.0, 4.0, 3.0, 3.0, None, None]
    assert rows[0]["details"]["scores"] == [0, 0]
    agg = judge.aggregate(records, rows)
    counts = [2, 2, 2, 6, 4]
    assert [agg[f"likert_{i}"] for i in range(5)] == counts
    assert agg["wasm"] == pytest.approx(wasm(counts)) and agg["wasm_std"] == pytest.approx(0.0)
    assert agg["unscored_replies"] == 4
    assert agg["input_tokens"] > 0 and agg["cost_usd"] == 0.0  # a custom base URL: no list price


def test_likert_pefomed_through_anthropic_sends_the_paper_text():
    with FakeLLMServer(reply=lambda body: "Score: 3") as server:
        judge = LikertJudge(JudgeOptions(convention="pefomed", task_kind="report", settings={
            "model": "claude", "base_url": server.anthropic_base_url}))
        rows = judge.score([{"id": "a", "answer": "No acute disease.", "prediction": "Heart size normal."}])
        body = server.requests[0]
    assert prompt_text(body) == fill(PEFOMED_LIKERT, ground_truth="No acute disease.",
                                     generated_report="Heart size normal.")
    assert body["max_tokens"] == 100 and "tools" not in body
    assert rows[0]["details"]["scores"] == [3]


# --------------------------------------------------------------------------------------- data protection
def test_credentialed_task_refuses_an_external_judge_but_allows_a_local_one(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    options = JudgeOptions(convention="pefomed", task_kind="vqa", credentialed=True, settings={"model": "gpt4"})
    with pytest.raises(UserError, match=r"credentialed.*gpt-4-0613.*--allow-external-judge"):
        GPT4Judge(options)
    with pytest.raises(UserError, match="credentialed.*--allow-external-judge"):
        LikertJudge(JudgeOptions(task_kind="report", credentialed=True, settings={"model": "claude"}))

    # allowed explicitly: no refusal (the missing key is the next thing the user hears about)
    allowed = JudgeOptions(convention="pefomed", task_kind="vqa", credentialed=True,
                           settings={"model": "gpt-5", "allow_external": True})
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        GPT4Judge(allowed)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-dummy")
    assert GPT4Judge(allowed).client.is_local is False

    # a judge served on this machine may see credentialed data, and scores it
    with FakeLLMServer(reply=lambda body: "Correctness: 1") as server:
        local = GPT4Judge(JudgeOptions(convention="pefomed", task_kind="vqa", credentialed=True, settings={
            "model": "my-local-judge", "base_url": server.openai_base_url.replace("127.0.0.1", "localhost")}))
        rows = local.score([{"id": "x", "question": "q", "answer": "a", "prediction": "a"}])
    assert local.client.provider == "openai-compatible"
    assert rows[0]["metrics"] == {"accuracy": 1.0}


def test_bad_settings_and_task_kinds_are_user_errors():
    with pytest.raises(UserError, match=r"repeats='zero'"):
        GPT4Judge(JudgeOptions(task_kind="vqa", settings={"repeats": "zero"}))
    with pytest.raises(UserError, match=r"temperature='hot'"):
        GPT4Judge(JudgeOptions(task_kind="vqa", settings={"temperature": "hot"}))
    with pytest.raises(UserError, match="scores vqa tasks, not 'report'"):
        GPT4Judge(JudgeOptions(task_kind="report"))
    with pytest.raises(UserError, match="no convention 'llava-med'"):
        LikertJudge(JudgeOptions(convention="llava-med", task_kind="report"))


def test_gpt4_batch_mode_goes_through_the_batch_api():
    records = _vqa_records()[:6]
    with FakeLLMServer(reply=_pefomed_vqa_reply) as server:
        judge = _gpt4(server, batch=True, batch_poll_interval=0.01, repeats=2)
        rows = judge.score(records)
        assert server.counts["POST /v1/batches"] == 1 and server.counts["POST /v1/chat/completions"] == 0
    assert [row["details"]["verdicts"] for row in rows] == [[1, 1], [0, 0], [1, 0], [None, None], [1, 1], [0, 0]]
    agg = judge.aggregate(records, rows)
    assert agg["input_tokens"] > 0 and agg["cost_usd"] == 0.0  # a custom base URL: no list price


def test_the_model_that_judged_and_its_server_are_recorded(tmp_path, capsys):
    """A proxy or server answering with another model than the judge model asked for is noted and recorded, with
    what an OpenAI-compatible server says of the model and itself; a re-score from the cache asks nothing, and
    still names and notes the model that made the cached verdicts (it recorded none: the cache kept no name)."""
    from harness.cli import main

    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in _vqa_records()))
    with FakeLLMServer(reply=lambda body: '{"reason": "r", "correct": 1}') as server:
        server.served_model = "another-model"
        server.model_cards = [{"id": "judge-m", "object": "model", "root": "/models/judge-m", "parent": None}]
        server.server_version = "0.32.0"
        args = ["score", str(preds), "--task-type", "vqa", "--judge", "gpt4", "--judge-base-url",
                server.openai_base_url, "--judge-model", "judge-m", "--judge-provider", "openai-compatible"]
        assert main([*args, "--output", str(tmp_path / "first")]) == 0
        assert "answered as model 'another-model', not 'judge-m'" in capsys.readouterr().err
        calls = server.chat_calls
        assert main([*args, "--output", str(tmp_path / "again")]) == 0
        assert server.chat_calls == calls
        assert "answered as model 'another-model', not 'judge-m'" in capsys.readouterr().err
    (entry,) = json.loads((tmp_path / "first" / "results.json").read_text())["judges"]
    assert entry["served_models"] == {"another-model": len(_vqa_records())}
    assert entry["server"] == {"model_card": {"id": "judge-m", "root": "/models/judge-m", "parent": None},
                               "server_version": "0.32.0"}
    assert "served_model" not in json.dumps(entry["setup"])  # not the setup: a leaderboard row stays one row
    (again,) = json.loads((tmp_path / "again" / "results.json").read_text())["judges"]
    assert again["served_models"] == {"another-model": len(_vqa_records())}
    assert "server" not in again and again["setup"] == entry["setup"]  # the server was not asked again
