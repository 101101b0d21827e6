"""What the API models make of replies: one with no text (content "" or null: a reasoning parser keeping the
answer out of `content`, an empty Anthropic text block) fails its sample (it was scored as a wrong answer and
cached, so no rerun asked again); the model a reply says answered is recorded, with a note when it is not the one
asked for (a proxy serving another model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_llm_servers import FakeLLMServer

from harness.cli import main as cli_main


@pytest.fixture
def cache(own_llm_cache, monkeypatch) -> Path:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0000")
    monkeypatch.delenv("OPENAI_COMPATIBLE_API_KEY", raising=False)
    return own_llm_cache


@pytest.mark.parametrize("model", ["openai-compatible", "claude"])
def test_a_reply_without_text_fails_its_sample_and_is_asked_again(model, cache, tmp_path, capsys):
    answer = {"text": ""}
    with FakeLLMServer(reply=lambda body: answer["text"]) as server:
        url = server.openai_base_url if model == "openai-compatible" else server.anthropic_base_url
        args = ["run", "--model", model, "--model-args", f"base_url={url}" + (",model=m" if model != "claude" else ""),
                "--task", "phantom-vqa", "--limit", "3", "--judge", "exact", "--runs-dir", str(tmp_path / "runs"),
                "--no-progress"]
        cli_main(args)
        err = capsys.readouterr().err
        assert "the reply has no text" in err, err
        (run_dir,) = list((tmp_path / "runs").iterdir())
        rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
        assert len(rows) == 3 and all("the reply has no text" in (r["error"] or "") for r in rows)
        assert all(r["prompt_tokens"] > 0 for r in rows)  # billed: kept on the sample's line
        usage = json.loads((run_dir / "model.json").read_text())["identity"]["usage"]
        assert usage["failed"] == 3 and usage["input_tokens"] > 0  # paid for, so counted
        answer["text"] = "yes"
        calls = server.chat_calls
        assert cli_main(args) == 0
        assert server.chat_calls == calls + 3  # asked again, not served from the cache
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    latest = {r["id"]: r for r in rows}
    assert all(r["prediction"] == "yes" and r["error"] is None for r in latest.values())


def test_the_reasoning_field_is_named_when_content_is_null_and_the_tokens_still_count():
    from harness.providers.openai_client import OpenAIBackend

    backend = OpenAIBackend("openai-compatible", "m", "http://127.0.0.1:1/v1", "", 5.0)
    reply = {"choices": [{"message": {"content": None, "reasoning_content": "The answer is yes."},
                          "finish_reason": "length"}], "usage": {"prompt_tokens": 120, "completion_tokens": 32}}
    result = backend.parse(reply)
    assert result.text is None and (result.input_tokens, result.output_tokens) == (120, 32)  # billed all the same
    assert "no text (finish_reason length; its message.reasoning_content has text" in result.error
    assert result.error.endswith("a reasoning model may need more output tokens (--max-new-tokens for a model))")


@pytest.mark.parametrize("model", ["openai-compatible", "claude"])
def test_the_model_that_answered_is_recorded_and_another_one_noted(model, cache, tmp_path, capsys):
    with FakeLLMServer(reply=lambda body: "yes") as server:
        server.served_model = "some-other-model"
        url = server.openai_base_url if model == "openai-compatible" else server.anthropic_base_url
        args = ["run", "--model", model, "--model-args", f"base_url={url}" + (",model=m" if model != "claude" else ""),
                "--task", "phantom-vqa", "--limit", "3", "--judge", "exact", "--runs-dir", str(tmp_path / "runs"),
                "--no-progress"]
        assert cli_main(args) == 0
    err = capsys.readouterr().err
    assert err.count("answered as model 'some-other-model', not") == 1, err
    (run_dir,) = list((tmp_path / "runs").iterdir())
    loaded = json.loads((run_dir / "results.json").read_text())["model"]["loaded"]
    assert loaded["served_models"] == {"some-other-model": 3}


def test_a_served_adapter_and_the_server_version_are_recorded(cache, tmp_path):
    """Against `harness serve` (vLLM), model=a names an adapter: the record says which folder and base model
    answered and the server's vLLM version, as /v1/models and /version tell (not the run id: a new port is the
    same server)."""
    with FakeLLMServer(reply=lambda body: "yes") as server:
        server.model_cards = [{"id": "/models/base", "object": "model", "root": "/models/base", "parent": None},
                              {"id": "a", "object": "model", "root": "/adapters/a64", "parent": "/models/base",
                               "max_model_len": 512}]
        server.server_version = "0.32.0"
        args = ["run", "--model", "openai-compatible", "--model-args", f"base_url={server.openai_base_url},model=a",
                "--task", "phantom-vqa", "--limit", "2", "--judge", "exact", "--runs-dir", str(tmp_path / "runs"),
                "--no-progress"]
        assert cli_main(args) == 0
        server.server_version = None  # another server: no /version, no card for the name asked
        server.model_cards = []
        assert cli_main([*args[:-3], "--runs-dir", str(tmp_path / "other"), "--no-progress"]) == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    loaded = json.loads((run_dir / "results.json").read_text())["model"]["loaded"]
    assert loaded["model_card"] == {"id": "a", "root": "/adapters/a64", "parent": "/models/base",
                                    "max_model_len": 512}
    assert loaded["server_version"] == "0.32.0"
    (other,) = list((tmp_path / "other").iterdir())
    loaded = json.loads((other / "results.json").read_text())["model"]["loaded"]
    assert "model_card" not in loaded and "server_version" not in loaded


def test_asking_the_server_about_itself_follows_no_redirect_with_the_key():
    """A redirect from /v1/models or /version to another host would carry the key there (urllib copies headers):
    nothing is followed, and /version is asked without the key."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from harness.providers.openai_client import OpenAIBackend

    seen: list[tuple[str, str | None]] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"version": "9.9", "data": [{"id": "m", "root": "/stolen"}]}')

        def log_message(self, *args) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)

    class Redirecting(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{other.server_port}{self.path}")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    first = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    for server in (other, first):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = OpenAIBackend("openai-compatible", "m", f"http://127.0.0.1:{first.server_port}/v1",
                                "sk-secret-123", 5.0)
        assert backend.server_description() == {}
    finally:
        for server in (other, first):
            server.shutdown()
    assert seen == [("/v1/models", "Bearer sk-secret-123"), ("/version", None)]  # never the other host


def test_a_billed_failure_counts_in_the_generation_cost():
    from harness.results import timing_summary

    rows = [{"id": "a", "error": None, "cost_usd": 0.002, "time_s": 1.0, "prompt_tokens": 10},
            {"id": "b", "error": "openai: the reply has no text (finish_reason length)", "cost_usd": 0.001,
             "time_s": 1.0, "prompt_tokens": 10}]
    summary = timing_summary(rows)
    assert summary["generation_cost_usd"] == 0.003 and summary["prompt_tokens"] == 10  # tokens: generated only


def test_content_as_a_list_of_text_parts_is_the_reply_and_a_key_in_the_model_name_is_masked(cache, tmp_path,
                                                                                            monkeypatch, capsys):
    """`content: [{"type": "text", ...}]` (some servers and proxies) was a malformed reply retried seven times per
    sample; a proxy naming itself with the request's key put the key into the note, model.json and results.json."""
    from fake_llm_servers import Fault

    key = "sk-compat-abcdefghijklmnopqrstuvwxyz0123"
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", key)
    reply = {"id": "c1", "object": "chat.completion", "model": f"proxy-for {key}",
             "choices": [{"index": 0, "finish_reason": "stop",
                          "message": {"role": "assistant", "content": [{"type": "text", "text": "y"},
                                                                       {"type": "text", "text": "es"}]}}],
             "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
    with FakeLLMServer() as server:
        server.add_faults(*[Fault(body=json.dumps(reply).encode()) for _ in range(2)])
        args = ["run", "--model", "openai-compatible", "--model-args", f"base_url={server.openai_base_url},model=m",
                "--task", "phantom-vqa", "--limit", "2", "--judge", "exact", "--runs-dir", str(tmp_path / "runs"),
                "--no-progress"]
        assert cli_main(args) == 0
        assert server.chat_calls == 2  # no retry
    err = capsys.readouterr().err
    assert key not in err and "answered as model 'proxy-for ***'" in err, err
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert [json.loads(line)["prediction"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()] \
        == ["yes", "yes"]
    for path in run_dir.iterdir():
        assert key not in path.read_text(), path


def test_other_weights_served_under_the_same_name_are_another_run_not_cached_answers(cache, tmp_path):
    """An adapter retrained and served again under the same name (`harness serve --adapter a=DIR`, the server's
    /v1/models `root` now another folder) got the first adapter's answers from the cache, recorded as the second's;
    the same command into the same runs folder said everything was generated."""
    with FakeLLMServer(reply=lambda body: "yes") as server:
        server.model_cards = [{"id": "a", "object": "model", "root": "/ft/run1", "parent": "/models/base"}]
        args = ["run", "--model", "openai-compatible", "--model-args", f"base_url={server.openai_base_url},model=a",
                "--task", "phantom-vqa", "--limit", "3", "--judge", "exact", "--runs-dir", str(tmp_path / "runs"),
                "--no-progress"]
        assert cli_main(args) == 0
        assert server.chat_calls == 3
        server.reply = lambda body: "no"
        server.model_cards = [{"id": "a", "object": "model", "root": "/ft/run2", "parent": "/models/base"}]
        assert cli_main(args) == 0
        assert server.chat_calls == 6  # asked again, not answered from the cache
        assert cli_main(args) == 0 and server.chat_calls == 6  # the same weights again: resumed, nothing asked
    answers = {}
    for run_dir in (tmp_path / "runs").iterdir():
        results = json.loads((run_dir / "results.json").read_text())
        root = results["model"]["identity"]["served"]["root"]
        assert results["model"]["identity"]["served"] == {"root": root, "parent": "/models/base"}
        assert results["model"]["loaded"]["model_card"]["root"] == root
        lines = (run_dir / "predictions.jsonl").read_text().splitlines()
        answers[root] = {json.loads(line)["prediction"] for line in lines}
    assert answers == {"/ft/run1": {"yes"}, "/ft/run2": {"no"}}


def test_an_adapter_retrained_into_the_same_folder_is_another_run_not_cached_answers(cache, tmp_path):
    """`rm -rf adapters/rad`, a new `harness finetune --out adapters/rad`, `harness serve --adapter rad=adapters/rad`:
    /v1/models names the same `root` folder, so the run id and cache keys were those of the first adapter and the
    same command resumed its answers (all samples "already generated"). A folder on this machine of a loopback
    server enters them by content."""
    adapter = tmp_path / "adapters" / "rad"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (adapter / "adapter_model.safetensors").write_bytes(b"first training")
    with FakeLLMServer(reply=lambda body: "yes") as server:
        server.model_cards = [{"id": "rad", "object": "model", "root": str(adapter), "parent": "/models/base"}]
        args = ["run", "--model", "openai-compatible", "--model-args", f"base_url={server.openai_base_url},model=rad",
                "--task", "phantom-vqa", "--limit", "3", "--judge", "exact", "--runs-dir", str(tmp_path / "runs"),
                "--no-progress"]
        assert cli_main(args) == 0 and server.chat_calls == 3
        (adapter / "adapter_model.safetensors").write_bytes(b"second training")  # retrained in place
        server.reply = lambda body: "no"
        assert cli_main(args) == 0
        assert server.chat_calls == 6  # asked again, not answered from the cache
        assert cli_main(args) == 0 and server.chat_calls == 6  # the same weights again: resumed, nothing asked
    answers = {}
    for run_dir in (tmp_path / "runs").iterdir():
        served = json.loads((run_dir / "results.json").read_text())["model"]["identity"]["served"]
        assert served["root"] == str(adapter) and served["root_content"].startswith("files-sha256:")
        lines = (run_dir / "predictions.jsonl").read_text().splitlines()
        answers[served["root_content"]] = {json.loads(line)["prediction"] for line in lines}
    assert sorted(answers.values(), key=str) == [{"no"}, {"yes"}]


def test_one_endpoint_spelt_two_ways_is_one_run(cache, tmp_path):
    """`.../v1/` and `HTTP://...` were each a run folder of their own (and the upper-case one new paid calls)."""
    with FakeLLMServer(reply=lambda body: "yes") as server:
        url = server.openai_base_url
        for spelt in (url, url + "/", url.replace("http://", "HTTP://")):
            args = ["run", "--model", "openai-compatible", "--model-args", f"base_url={spelt},model=m", "--task",
                    "phantom-vqa", "--limit", "2", "--judge", "exact", "--runs-dir", str(tmp_path / "runs"),
                    "--no-progress"]
            assert cli_main(args) == 0
        assert server.chat_calls == 2
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "results.json").read_text())["model"]["args"]["base_url"] == url


def test_a_server_down_is_one_line_for_a_model_and_no_obstacle_to_a_judge_from_the_cache(cache, tmp_path, capsys):
    """The weights a server serves are part of an API model's run id: with the server down the run id named none
    (a new run folder, every cached reply missed). A model now says so in one line; an LLM judge, whose cache keys
    leave them out, still re-scores from the cache with its server off."""
    from harness.providers import ChatRequest, make_client

    ask = ChatRequest(messages=[{"role": "user", "content": "Score this report"}], max_tokens=8)
    with FakeLLMServer(reply=lambda body: "yes") as server:
        server.model_cards = [{"id": "m", "object": "model", "root": "/models/m"}]
        url = server.openai_base_url
        args = ["run", "--model", "openai-compatible", "--model-args", f"base_url={url},model=m", "--task",
                "phantom-vqa", "--limit", "2", "--judge", "exact", "--runs-dir", str(tmp_path / "runs"),
                "--no-progress"]
        assert cli_main(args) == 0
        judge = {"model": "m", "provider": "openai-compatible", "base_url": url, "max_retries": 0, "timeout": 2}
        assert make_client(judge).run([ask], progress=False)[0].text == "yes"
    capsys.readouterr()
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: model 'openai-compatible': no answer from {url} to GET /models (") \
        and err.count("\n") == 1, err
    assert len(list((tmp_path / "runs").iterdir())) == 1
    (again,) = make_client(judge).run([ask], progress=False)
    assert again.text == "yes" and again.cached

