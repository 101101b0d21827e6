"""A third-party plugin's members other than __init__, generate and score: an exception there, or a value of the
wrong kind, is one line naming the plugin, its package and the member (exit 2, work already written kept), never a
traceback; a close() that raises comes after the work and costs none of it (a warning, exit 0).

The plugin `hook-bugs` is installed the way pip lays one out (tests/plugin_site.py), one model or judge per bug.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import error_line
from plugin_site import cli, install_plugin

PLUGIN = """\
from harness.hookspecs import hookimpl
from harness.registry import JudgeInfo, ModelInfo

MODELS = ("PrefetchRaise", "CloseRaise", "IdentityRaise", "IdentityNotJson", "CanonNone", "CanonList",
          "RunIdentityNan", "BatchZero", "BatchNegative", "BatchText")
JUDGES = ("CloseJudge", "ScoreAndCloseJudge")


@hookimpl
def register_models(register):
    for name in MODELS:
        register(ModelInfo(id=name.lower(), loader=f"hook_bugs.impl:{name}", description=name,
                           capabilities={"task_kinds": ["vqa"]}))


@hookimpl
def register_judges(register):
    for name in JUDGES:
        register(JudgeInfo(id=name.lower(), loader=f"hook_bugs.impl:{name}", description=name,
                           capabilities={"task_kinds": ["vqa"]}))
"""

IMPL = """\
from harness.judge_api import JudgePlugin
from harness.model_api import ModelPlugin
from harness.types import GenerationOutput


class Yes(ModelPlugin):
    default_batch_size = 2

    def generate(self, requests):
        return [GenerationOutput(text="yes") for _ in requests]


class PrefetchRaise(Yes):
    calls = 0

    def prefetch(self, requests):  # the second batch's announcement, while the first generates
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("prefetch failed")


class CloseRaise(Yes):
    def close(self):
        raise RuntimeError("close failed")


class IdentityRaise(Yes):
    def identity(self):
        raise RuntimeError("identity failed")


class IdentityNotJson(Yes):
    def identity(self):
        return {"loaded_from": object()}


class CanonNone(Yes):
    @classmethod
    def canonical_args(cls, args, context):
        return None


class CanonList(Yes):
    @classmethod
    def canonical_args(cls, args, context):
        return sorted(args.items())


class RunIdentityNan(Yes):
    @classmethod
    def run_identity(cls, args, context):
        return {"scale": float("nan")}


class BatchZero(Yes):
    default_batch_size = 0


class BatchNegative(Yes):
    default_batch_size = -4


class BatchText(Yes):
    default_batch_size = "8"


class CloseJudge(JudgePlugin):
    task_kinds = ("vqa",)

    def score(self, records):
        return [{"metrics": {"m": 1.0}} for _ in records]

    def close(self):
        raise RuntimeError("judge close failed")


class ScoreAndCloseJudge(CloseJudge):
    def score(self, records):
        raise KeyError("answer_norm")
"""

WHO = "(plugin 'hook-bugs', package hook-bugs==0.1)"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    install_plugin(site, "hook-bugs", "hook_bugs", {"__init__.py": "", "plugin.py": PLUGIN, "impl.py": IMPL})
    return site


def run(site: Path, out: Path, model: str, *args: str) -> object:
    return cli(site, "run", "--model", model, "--task", "phantom-vqa", "--limit", "6", "--output", str(out),
               "--no-progress", *args)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(("model", "expected"), [
    ("identityraise", "identity() raised RuntimeError: identity failed at "),
    ("identitynotjson", "identity() returned {'loaded_from': <object object at "),
    ("canonnone", "canonical_args() returned None (NoneType); expected a dict of the --model-args as they enter the "
                  "run id"),
    ("canonlist", "canonical_args() returned [] (list); expected a dict of the --model-args"),
    ("runidentitynan", "run_identity() returned {'scale': nan} (dict), which is not plain JSON data (Out of range "
                       "float values are not JSON compliant"),
    ("batchzero", "default_batch_size is 0 (int); expected a whole number of at least 1 (or give --batch-size)"),
    ("batchnegative", "default_batch_size is -4 (int); expected a whole number of at least 1"),
    ("batchtext", "default_batch_size is '8' (str); expected a whole number of at least 1"),
])
def test_a_models_member_that_raises_or_returns_the_wrong_kind_is_one_line(site, tmp_path, model, expected):
    line = error_line(run(site, tmp_path / "run", model, "--judge", "exact"))
    assert line.startswith(f"error: model '{model}' {WHO}: {expected}"), line
    if "raised" in expected:
        assert "hook_bugs/impl.py:" in line and "(a bug in the plugin; " in line
    if model == "identitynotjson":
        assert line.endswith("expected a dict of facts about the loaded model: text, finite numbers, bools, None, "
                             "lists and dicts")
    if model.startswith(("canon", "runidentity", "batch")):  # refused before any folder or model is made
        assert not (tmp_path / "run").exists()


def test_given_batch_size_leaves_a_bad_default_unused(site, tmp_path):
    proc = run(site, tmp_path / "run", "batchzero", "--judge", "exact", "--batch-size", "3")
    assert proc.returncode == 0, proc.stderr
    assert len(rows(tmp_path / "run" / "predictions.jsonl")) == 6


def test_a_prefetch_that_raises_is_one_line_and_keeps_the_batches_generated(site, tmp_path):
    line = error_line(run(site, tmp_path / "run", "prefetchraise", "--judge", "exact"))
    assert line.startswith(f"error: model 'prefetchraise' {WHO}: prefetch() raised RuntimeError: prefetch failed at "
                           ) and "hook_bugs/impl.py:" in line, line
    assert len(rows(tmp_path / "run" / "predictions.jsonl")) == 2  # the first batch, generated meanwhile


def test_a_models_close_that_raises_is_a_warning_after_scoring(site, tmp_path):
    out = tmp_path / "run"
    proc = run(site, out, "closeraise", "--judge", "exact")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    (warning,) = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: model 'closeraise' {WHO}: close() raised RuntimeError: close failed at ")
    assert "(its predictions are kept and scored; what it holds (GPU memory, a server or a process) may not " in warning
    results = json.loads((out / "results.json").read_text())
    assert results["judges"][0]["metrics"]["accuracy"]["n"] == 6
    assert len(rows(out / "scores.jsonl")) == 6


def test_a_judges_close_that_raises_is_a_warning_and_its_scores_are_saved(site, tmp_path):
    out = tmp_path / "run"
    proc = run(site, out, "prior", "--judge", "closejudge", "--judge", "exact")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    (warning,) = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: judge 'closejudge' {WHO}: close() raised RuntimeError: judge close failed "
                              "at ") and "(its scores are kept; " in warning, warning
    results = json.loads((out / "results.json").read_text())
    assert [j["id"] for j in results["judges"]] == ["closejudge", "exact"]
    assert all(set(row["judges"]) == {"closejudge", "exact/pefomed"} for row in rows(out / "scores.jsonl"))


def test_a_judge_whose_score_and_close_raise_reports_score_as_the_error(site, tmp_path):
    out = tmp_path / "run"
    proc = run(site, out, "prior", "--judge", "exact", "--judge", "scoreandclosejudge")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("warning:", "error:"))]
    assert lines[0].startswith(f"warning: judge 'scoreandclosejudge' {WHO}: close() raised RuntimeError: ")
    assert "its scores are kept" not in lines[0]
    assert lines[-1].startswith(f"error: judge 'scoreandclosejudge' {WHO}: score() raised KeyError: 'answer_norm' at ")
    assert [j["id"] for j in json.loads((out / "results.json").read_text())["judges"]] == ["exact"]  # kept
