"""Judge settings (--judge-arg KEY=VALUE and the --judge-* flags) are shared by the selected judges: a key that
none of them accepts is a one-line error naming it and the keys they do accept, never silently dropped."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import error_line
from fake_llm_servers import FakeLLMServer

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

REPORTS = [{"id": "r1", "answer": "no acute cardiopulmonary process", "prediction": "no acute process"}]
VQA = [{"id": f"q{i}", "question": "Is there a lesion?", "answer": "yes", "prediction": "yes" if i else "no",
        "answer_type": "CLOSED"} for i in range(3)]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=300)


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_misspelt_judge_arg_is_an_error_listing_the_accepted_keys(tmp_path):
    preds = write(tmp_path / "preds.jsonl", REPORTS)
    line = error_line(cli("score", str(preds), "--task-type", "report", "--judge", "lexical",
                              "--judge-arg", "rouge_stemer=true", "--output", str(tmp_path / "out")))
    assert "--judge-arg rouge_stemer=true" in line and "lexical" in line
    assert "Did you mean 'rouge_stemmer'?" in line
    assert "meteor_table, meteor_workers, rouge_stemmer, spice" in line
    assert not (tmp_path / "out" / "results.json").exists()


def test_the_judge_arg_example_in_help_works(tmp_path):
    preds = write(tmp_path / "preds.jsonl", REPORTS)
    examples = {"".join(re.findall(r"e\.g\. --judge-arg (\w+=\w+)", re.sub(r"\s+", " ", cli(c, "--help").stdout)))
                for c in ("run", "score")}  # one shared option group
    assert len(examples) == 1 and "" not in examples
    proc = cli("score", str(preds), "--task-type", "report", "--judge", "lexical", "--judge-arg", examples.pop(),
               "--output", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr


def test_judge_without_settings_and_dedicated_flags(tmp_path):
    preds = write(tmp_path / "preds.jsonl", VQA)
    score = ["score", str(preds), "--task-type", "vqa", "--output", str(tmp_path / "out")]
    line = error_line(cli(*score, "--judge", "exact", "--judge-arg", "strict=true"))
    assert "--judge-arg strict=true" in line and "exact" in line and "no --judge-arg keys" in line
    # a flag of the LLM judges given to a judge that has no use for it
    line = error_line(cli(*score, "--judge", "exact", "--judge-model", "gpt4"))
    assert line.startswith("error: --judge-model gpt4: not used by the selected judge exact")
    allowed = cli(*score, "--judge", "exact", "--allow-external-judge")  # a permission: harmless here
    assert allowed.returncode == 0, allowed.stderr


def test_a_key_one_selected_judge_accepts_goes_to_that_judge_only(tmp_path):
    preds = write(tmp_path / "preds.jsonl", VQA)
    out = tmp_path / "out"
    with FakeLLMServer(reply=lambda body: "Correctness: 1") as server:
        url = server.openai_base_url
        proc = cli("score", str(preds), "--task-type", "vqa", "--judge", "exact", "--judge", "gpt4",
                   "--convention", "pefomed", "--judge-base-url", url,
                   "--judge-arg", "max_tokens=20", "--output", str(out))
        assert proc.returncode == 0, proc.stderr
        assert {body["max_completion_tokens"] for body in server.requests} == {20}
    exact, gpt4 = json.loads((out / "results.json").read_text())["judges"]
    assert exact["id"] == "exact" and exact["settings"] == {}
    assert gpt4["id"] == "gpt4" and gpt4["settings"]["max_tokens"] == "20"
    assert gpt4["settings"]["base_url"] == url
    # the resolved choices that move the numbers, defaults included (the leaderboard keys rows on them)
    assert exact["setup"] == {}
    assert {k: gpt4["setup"][k] for k in ("provider", "model", "base_url", "temperature", "max_tokens", "repeats",
                                          "seed", "structured_output")} == {
        "provider": "openai", "model": "gpt-4-0613", "base_url": url, "temperature": 1.0, "max_tokens": 20,
        "repeats": 1, "seed": None, "structured_output": False}
    # the same key given to both selected judges' union, misspelt: an error naming both
    line = error_line(cli("score", str(preds), "--task-type", "vqa", "--judge", "exact,gpt4",
                              "--judge-arg", "max_token=20", "--output", str(out)))
    assert "judges exact, gpt4 do not accept 'max_token'" in line and "Did you mean 'max_tokens'?" in line


def test_harness_run_checks_settings_before_generating_and_task_defaults_pass(tmp_path):
    runs = tmp_path / "runs"
    base = ["run", "--model", "prior", "--task", "phantom-vqa", "--limit", "3", "--no-progress",
            "--runs-dir", str(runs)]
    # phantom-vqa's default judge is exact, which takes no settings
    line = error_line(cli(*base, "--judge-arg", "convention=llava-med"))
    assert "--judge-arg convention=llava-med" in line and "exact" in line
    assert not runs.exists() or not any(runs.rglob("predictions.jsonl"))
    # the task's default judges with no settings given never trip the check
    proc = cli(*base)
    assert proc.returncode == 0, proc.stderr
    (results,) = runs.rglob("results.json")
    assert [j["id"] for j in json.loads(results.read_text())["judges"]] == ["exact"]


def test_nan_and_infinite_judge_numbers_are_refused_before_generating_or_calling(tmp_path):
    """--judge-timeout nan passed the check: the run generated, the judge's calls were attempted, and only then
    did results.json fail to be written ('the value at judges.0.settings.timeout is nan')."""
    runs = tmp_path / "runs"
    with FakeLLMServer(reply=lambda body: "Correctness: 1") as server:
        base = ["run", "--model", "prior", "--task", "phantom-vqa", "--limit", "2", "--no-progress", "--runs-dir",
                str(runs), "--judge", "gpt4", "--judge-base-url", server.openai_base_url]
        for extra, expected in [
            (["--judge-timeout", "nan"], "LLM setting timeout=nan (--judge-timeout or --judge-arg timeout): "
                                         "expected a finite number >= 0.001"),
            (["--judge-timeout", "inf"], "LLM setting timeout=inf (--judge-timeout or --judge-arg timeout): "
                                         "expected a finite number >= 0.001"),
            (["--judge-concurrency", "100000"], "LLM setting concurrency=100000 (--judge-concurrency or "
                                                "--judge-arg concurrency): expected an integer from 1 to 65535"),
            (["--judge-arg", "retry_base_delay=inf"], "LLM setting retry_base_delay='inf' (--judge-arg "
                                                      "retry_base_delay): expected a finite number >= 0"),
            (["--judge-arg", "retry_max_delay=nan"], "LLM setting retry_max_delay='nan' (--judge-arg "
                                                     "retry_max_delay): expected a finite number >= 0"),
            (["--judge-arg", "temperature=nan"], "judge setting temperature='nan': expected a finite number from "
                                                 "0 to 2"),
            (["--judge-arg", f"seed={2**64}"], f"judge setting seed='{2**64}': expected an integer from 0 to "
                                               f"{2**63 - 1}"),
        ]:
            assert error_line(cli(*base, *extra)) == f"error: {expected}"
        assert server.chat_calls == 0
    assert not runs.exists() or not any(runs.rglob("predictions.jsonl"))


def test_a_convention_for_a_judge_without_conventions_is_refused_or_not_applied(tmp_path):
    """`semantic:foo` or `--convention` for judges that have none was recorded as their convention (a leaderboard
    row of its own); with another judge that has conventions, the shared --convention goes to that one only."""
    pytest.importorskip("sentence_transformers", reason="scores with the semantic judge: needs the 'semantic' extra")
    pytest.importorskip("pycocoevalcap", reason="scores with the lexical judge: needs the 'lexical' extra")
    preds = write(tmp_path / "preds.jsonl", REPORTS)
    score = ["score", str(preds), "--task-type", "report", "--output", str(tmp_path / "out")]
    line = error_line(cli(*score, "--judge", "semantic:foo"))
    assert line == "error: --judge semantic:foo: judge 'semantic' has no conventions; drop ':foo'"
    line = error_line(cli(*score, "--judge", "semantic", "--convention", "r2gen"))
    assert line == "error: --convention r2gen: the selected judge semantic has no conventions; drop --convention"
    assert not (tmp_path / "out").exists()
    proc = cli(*score, "--judge", "lexical,semantic", "--convention", "r2gen")
    assert proc.returncode == 0, proc.stderr
    results_file = tmp_path / "out" / "results.json"
    judges = json.loads(results_file.read_text())["judges"]
    assert [(j["id"], j["convention"]) for j in judges] == [("lexical", "r2gen"), ("semantic", None)]
    # results written before: the semantic entry labelled r2gen is the same entry and the same leaderboard row
    data = json.loads(results_file.read_text())
    data["judges"][1]["convention"] = "r2gen"
    results_file.write_text(json.dumps(data))
    board = tmp_path / "board.json"
    assert cli("publish", str(results_file), "-o", str(board)).returncode == 0
    rows = json.loads(board.read_text())["rows"]
    assert sorted((r["judge"], r["convention"] or "") for r in rows) == [("lexical", "r2gen"), ("semantic", "")]
    # a leaderboard that already holds both rows (published before and after the fix): one is kept, the newer
    board_data = json.loads(board.read_text())
    semantic = next(r for r in board_data["rows"] if r["judge"] == "semantic")
    older = json.loads(json.dumps(semantic))
    older["convention"], older["provenance"]["created"] = "r2gen", "2025-01-01T00:00:00+00:00"
    board_data["rows"].append(older)
    board.write_text(json.dumps(board_data))
    assert cli("publish", str(results_file), "-o", str(board)).returncode == 0
    rows = [r for r in json.loads(board.read_text())["rows"] if r["judge"] == "semantic"]
    assert len(rows) == 1 and rows[0]["provenance"]["created"] == semantic["provenance"]["created"]
    # results holding both entries (scored before and after): re-scoring leaves one
    data = json.loads(results_file.read_text())
    data["judges"][1]["convention"] = None
    data["judges"].append(dict(data["judges"][1], convention="r2gen"))
    results_file.write_text(json.dumps(data))
    assert cli(*score, "--judge", "semantic").returncode == 0
    judges = json.loads(results_file.read_text())["judges"]
    assert [(j["id"], j["convention"]) for j in judges] == [("lexical", "r2gen"), ("semantic", None)]
