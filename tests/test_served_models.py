"""`served_models` names the model behind every reply a run's predictions and a judge's verdicts use, across
invocations and cache hits: a run whose first part a proxy answered with another model and that was then resumed,
a run that takes its replies from the cache, a judge re-scoring from the cache (before, each counted only the
replies made live by its last invocation). Against a real local HTTP server speaking the OpenAI wire format
(tests/fake_llm_servers.py), whose `served_model` is the model name its replies give."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from fake_llm_servers import FakeLLMServer

from harness.cli import main as cli_main


@pytest.fixture
def cache(own_llm_cache, monkeypatch) -> Path:
    monkeypatch.delenv("OPENAI_COMPATIBLE_API_KEY", raising=False)
    return own_llm_cache


def _run_args(server: FakeLLMServer, limit: int) -> list[str]:
    return ["run", "--model", "openai-compatible", "--model-args", f"base_url={server.openai_base_url},model=m",
            "--task", "phantom-vqa", "--limit", str(limit), "--judge", "exact", "--no-progress"]


def _judge_args(folder: Path, server: FakeLLMServer) -> list[str]:
    return ["score", str(folder), "--judge", "gpt4", "--judge-model", "judge-m", "--judge-provider",
            "openai-compatible", "--judge-base-url", server.openai_base_url, "--no-progress"]


def _answer_or_verdict(body: dict) -> str:
    """The model's answer, or the judge's verdict (the judge asks for JSON)."""
    return '{"reason": "r", "correct": 1}' if "response_format" in body else "yes"


def _served(folder: Path) -> tuple[dict[str, int], dict[str, int]]:
    """served_models of results.json and of model.json."""
    results = json.loads((folder / "results.json").read_text())
    model = json.loads((folder / "model.json").read_text())
    return results["model"]["loaded"]["served_models"], model["identity"]["served_models"]


def _judge_entry(folder: Path, judge_id: str) -> dict:
    (entry,) = [j for j in json.loads((folder / "results.json").read_text())["judges"] if j["id"] == judge_id]
    return entry


def test_a_resumed_run_and_a_run_from_the_cache_name_every_model_that_answered(cache, tmp_path, capsys):
    """The first 3 samples answered by a fallback model, the run resumed once the server answers as the model asked
    for: results.json counts both (it showed only the resumed part's model); another run folder taking every reply
    from the cache counts the same (it recorded none), and so does a re-score from the files."""
    runs = tmp_path / "runs"
    with FakeLLMServer(reply=lambda body: "yes") as server:
        server.served_model = "cheap-model"  # a proxy falling back to a cheaper model
        assert cli_main([*_run_args(server, 3), "--runs-dir", str(runs)]) == 0
        assert "answered as model 'cheap-model', not 'm'" in capsys.readouterr().err
        server.served_model = None  # now it answers as the model asked for
        assert cli_main([*_run_args(server, 8), "--runs-dir", str(runs)]) == 0
        err = capsys.readouterr().err
        assert "3 earlier prediction(s) of this run were answered as model 'cheap-model', not 'm'" in err, err
        calls = server.chat_calls
        assert cli_main([*_run_args(server, 8), "--output", str(tmp_path / "from-cache")]) == 0
        assert server.chat_calls == calls  # every reply from the cache
        assert "answered as model 'cheap-model', not 'm'" in capsys.readouterr().err
    (run_dir,) = runs.iterdir()
    assert _served(run_dir) == ({"m": 5, "cheap-model": 3}, {"m": 5, "cheap-model": 3})
    lines = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert [row["generation_details"]["served_model"] for row in lines] == ["cheap-model"] * 3 + ["m"] * 5
    assert _served(tmp_path / "from-cache") == ({"m": 5, "cheap-model": 3}, {"m": 5, "cheap-model": 3})
    assert cli_main(["score", str(run_dir), "--judge", "exact", "--no-progress"]) == 0  # from the files, no model
    assert _served(run_dir)[0] == {"m": 5, "cheap-model": 3}


def test_a_judge_rescored_from_the_cache_names_the_model_of_its_cached_verdicts(cache, tmp_path, capsys):
    """harness score with an LLM judge whose server answered as another model, then again with the server gone (every
    verdict from the cache): the judge's served_models still names that model, with the note (it recorded none)."""
    runs = tmp_path / "runs"
    assert cli_main(["run", "--model", "prior", "--task", "phantom-vqa", "--limit", "6", "--no-judge",
                     "--runs-dir", str(runs), "--no-progress"]) == 0
    (run_dir,) = runs.iterdir()
    with FakeLLMServer(reply=lambda body: '{"reason": "r", "correct": 1}') as server:
        server.served_model = "judge-fallback"
        args = _judge_args(run_dir, server)
        assert cli_main(args) == 0
        assert server.chat_calls > 0
    n = _judge_entry(run_dir, "gpt4")["n_scored"]
    assert n > 0 and _judge_entry(run_dir, "gpt4")["served_models"] == {"judge-fallback": n}
    capsys.readouterr()
    assert cli_main(args) == 0  # the server is down: no call is needed
    assert "answered as model 'judge-fallback', not 'judge-m'" in capsys.readouterr().err
    entry = _judge_entry(run_dir, "gpt4")
    assert entry["served_models"] == {"judge-fallback": n} and entry["metrics"]["paid_input_tokens"]["value"] == 0


def test_replies_cached_before_the_cache_kept_the_model_are_counted_as_unknown(cache, tmp_path):
    """A cache written by an older harness (no served_model column) is opened and its replies used, their model
    counted as unknown, never as the model asked for."""
    with FakeLLMServer(reply=_answer_or_verdict) as server:
        server.served_model = "cheap-model"
        assert cli_main([*_run_args(server, 4), "--output", str(tmp_path / "first")]) == 0
        first = tmp_path / "first"
        judge_calls = server.chat_calls
        assert cli_main(_judge_args(first, server)) == 0
        assert _judge_entry(first, "gpt4")["served_models"] == {"cheap-model": _judge_entry(first, "gpt4")["n_scored"]}
        calls = server.chat_calls
        assert calls > judge_calls
        with sqlite3.connect(cache / "llm-cache.sqlite") as db:  # as an older version left it: no served_model
            if "served_model" in {row[1] for row in db.execute("PRAGMA table_info(results)")}:
                db.execute("ALTER TABLE results DROP COLUMN served_model")
        db.close()
        second = tmp_path / "second"
        assert cli_main([*_run_args(server, 4), "--output", str(second)]) == 0
        assert cli_main(_judge_args(second, server)) == 0
        assert server.chat_calls == calls  # every reply, the model's and the judge's, from the cache
    assert _served(first) == ({"cheap-model": 4}, {"cheap-model": 4})
    assert _served(second) == ({"unknown": 4}, {"unknown": 4})
    assert _judge_entry(second, "gpt4")["served_models"] == {"unknown": _judge_entry(second, "gpt4")["n_scored"]}
