"""A metric a judge declares a 0/1 verdict (`proportion_metrics`) holds 0, 1, or a share of repeated verdicts
between them: a value outside [0, 1] is one line naming the judge, its package, the metric, the sample and the
value (exit 2), before anything of that judge is saved; it used to be reported as a proportion of 1.2 with a
bootstrap interval in place of Wilson's.

The plugin `verdicts` is installed the way pip lays one out (tests/plugin_site.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import error_line
from plugin_site import cli, install_plugin

PLUGIN = """\
from harness.hookspecs import hookimpl
from harness.registry import JudgeInfo


@hookimpl
def register_judges(register):
    register(JudgeInfo(id="verdict", loader="verdicts.judge:VerdictJudge", description="test-only",
                       capabilities={"task_kinds": ["vqa"]}))
"""

JUDGE = """\
from harness.judge_api import JudgePlugin


class VerdictJudge(JudgePlugin):
    \"\"\"Declares `correct` a 0/1 verdict; the first record's value is --judge-arg first=X (a plugin bug when X is
    not between 0 and 1).\"\"\"

    task_kinds = ("vqa",)
    accepted_settings = ("first",)
    proportion_metrics = ("correct",)

    def score(self, records):
        first = float(self.options.settings.get("first", 1))
        return [{"metrics": {"correct": first if i == 0 else 1.0}} for i, _ in enumerate(records)]
"""


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> tuple[Path, Path]:
    """(plugin site, a run of the prior scored by exact)."""
    site = tmp_path_factory.mktemp("site")
    install_plugin(site, "verdicts", "verdicts", {"__init__.py": "", "plugin.py": PLUGIN, "judge.py": JUDGE})
    out = tmp_path_factory.mktemp("runs") / "run"
    proc = cli(site, "run", "--model", "prior", "--task", "phantom-vqa", "--limit", "6", "--output", str(out),
               "--judge", "exact", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return site, out


@pytest.mark.parametrize("value", ["2.0", "-1", "1.5"])
def test_a_declared_verdict_outside_0_1_is_refused_naming_judge_metric_sample_and_value(scored, value):
    site, out = scored
    before = {name: (out / name).read_text() for name in ("scores.jsonl", "results.json")}
    first = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])["id"]
    line = error_line(cli(site, "score", str(out), "--judge", "verdict", "--judge-arg", f"first={value}",
                          "--no-progress"))
    assert line == (f"error: judge 'verdict' (plugin 'verdicts', package verdicts==0.1): score() returned, for sample "
                    f"'{first}', metric 'correct' = {float(value)}, outside [0, 1]; the judge declares 'correct' a 0/1 "
                    "verdict (proportion_metrics): expected 0 or 1 (or a share of repeated verdicts between them), or "
                    "None for unscored")
    assert {name: (out / name).read_text() for name in before} == before  # nothing of the judge saved


def test_a_share_of_repeated_verdicts_is_kept(scored):
    site, out = scored
    proc = cli(site, "score", str(out), "--judge", "verdict", "--judge-arg", "first=0.5", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    entry = next(j for j in json.loads((out / "results.json").read_text())["judges"] if j["id"] == "verdict")
    correct = entry["metrics"]["correct"]
    assert correct["value"] == pytest.approx(5.5 / 6) and correct["ci_method"] == "bootstrap-mean-expanded"
