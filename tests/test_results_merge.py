"""results.json of a run directory reused by `harness run` (the run id ignores --limit and --judge): it records its
selection, keeps other judges' entries on the same selection, and is never shrunk by a smaller --limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).with_name("run_harness.py")
PHANTOM_VQA_TEST = 361


def harness(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True,
                          env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr
    return proc


def run_prior(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return harness("run", "--model", "prior", "--task", "phantom-vqa", "--output", str(out), "--no-progress", *extra)


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def judges(data: dict) -> list[tuple[str, str, int]]:
    return [(j["id"], j["convention"], j["n_scored"]) for j in data["judges"]]


def test_full_run_then_smaller_limit_then_another_judge(tmp_path):
    out = tmp_path / "run"
    run_prior(out, "--judge", "exact")
    full = results(out)
    assert full["selection"] == {"limit": None, "n": PHANTOM_VQA_TEST, "n_total": PHANTOM_VQA_TEST,
                                 "partial": False, "ids_hash": full["selection"]["ids_hash"]}
    before = (out / "results.json").read_bytes()

    # A smaller --limit prints its subset's metrics but leaves the larger recorded selection as it is.
    smaller = run_prior(out, "--judge", "exact:llava-med", "--limit", "50")
    assert "n=50" in smaller.stdout
    assert f"results.json keeps its {PHANTOM_VQA_TEST} scored samples (exact:pefomed)" in smaller.stderr
    assert (out / "results.json").read_bytes() == before
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(scores) == PHANTOM_VQA_TEST
    assert sum("exact/llava-med" in s["judges"] for s in scores) == 50, "per-sample verdicts are saved"
    assert len((out / "predictions.jsonl").read_text().splitlines()) == PHANTOM_VQA_TEST

    # Another judge on the same (full) selection is added next to the first, as `harness score` does.
    run_prior(out, "--judge", "exact:llava-med")
    assert judges(results(out)) == [("exact", "pefomed", PHANTOM_VQA_TEST), ("exact", "llava-med", PHANTOM_VQA_TEST)]
    harness("score", str(out), "--judge", "exact:multimedeval")
    assert [j[1] for j in judges(results(out))] == ["pefomed", "llava-med", "multimedeval"]
    # Running a judge again replaces only its own entry.
    run_prior(out, "--judge", "exact")
    assert [j[1] for j in judges(results(out))] == ["pefomed", "llava-med", "multimedeval"]
    assert results(out)["selection"]["partial"] is False


def test_limited_run_is_partial_and_a_larger_one_replaces_it(tmp_path):
    out = tmp_path / "run"
    first = run_prior(out, "--judge", "exact", "--limit", "30")
    assert f"partial results: 30 of the {PHANTOM_VQA_TEST} samples" in first.stderr
    data = results(out)
    assert data["task"]["n"] == 30
    assert {k: data["selection"][k] for k in ("limit", "n", "n_total", "partial")} == {
        "limit": 30, "n": 30, "n_total": PHANTOM_VQA_TEST, "partial": True}

    # The same selection again with another judge: both entries are kept.
    run_prior(out, "--judge", "exact:llava-med", "--limit", "30")
    assert judges(results(out)) == [("exact", "pefomed", 30), ("exact", "llava-med", 30)]

    # A larger selection replaces the recorded one; entries scored on the 30 only are dropped, with a notice.
    larger = run_prior(out, "--judge", "exact:llava-med", "--limit", "80")
    assert "results.json drops exact:pefomed (they scored 30 samples, not these 80)" in larger.stderr
    assert f"harness score {out} --judge exact:pefomed" in larger.stderr
    assert judges(results(out)) == [("exact", "llava-med", 80)]
    assert results(out)["selection"]["limit"] == 80

    # `harness score` scores every saved prediction (the 80): it joins the recorded selection.
    harness("score", str(out), "--judge", "exact")
    data = results(out)
    assert judges(data) == [("exact", "llava-med", 80), ("exact", "pefomed", 80)]
    assert data["selection"]["n"] == 80 and data["selection"]["partial"] is True


def test_a_replaced_judge_setup_is_said_by_what_changed():
    """The note printed both whole setups (prompt hashes, base URL, ...): `--judge-repeats 3` switching the
    temperature to 1.0 was hidden among them."""
    from harness.results import _replaced_setups

    old = {"id": "gpt4", "convention": "pefomed", "setup": {"model": "gpt-4o", "repeats": 1, "temperature": 0.0,
                                                             "prompt_sha256": "ab12", "seed": 0}}
    new = {**old, "setup": {**old["setup"], "repeats": 3, "temperature": 1.0, "max_tokens": 100}}
    del new["setup"]["seed"]
    assert _replaced_setups([old], [new]) == [
        "results.json replaces gpt4:pefomed's entry by one with another setup (max_tokens - -> 100, repeats 1 -> 3, "
        "seed 0 -> -, temperature 0.0 -> 1.0; harness publish it first to keep both on a leaderboard)"]
    assert _replaced_setups([old], [old]) == []
