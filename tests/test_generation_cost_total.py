"""results.json's `timings.generation_cost_usd` is what generating the scored samples cost: every line of
predictions.jsonl counts (each was a call), so a billed failure that the same command then answered stays in the
total, for `harness run`, `harness score RUN_FOLDER` and `harness score RUN_FOLDER --output OTHER` alike (it counted
only the latest line of each sample).

The plugin `paid-models` (installed the way pip lays one out, tests/plugin_site.py) bills $0.5 for a refusal while
the file named by PAID_REFUSE exists and $0.25 for an answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_site import cli, install_plugin

PLUGIN = """\
from harness.hookspecs import hookimpl
from harness.registry import ModelInfo


@hookimpl
def register_models(register):
    register(ModelInfo(id="paid", loader="paid_models.impl:Paid", description="bills every call",
                       capabilities={"task_kinds": ["vqa"]}))
"""

IMPL = """\
import os

from harness.model_api import ModelPlugin
from harness.types import GenerationOutput


class Paid(ModelPlugin):
    default_batch_size = 2

    def generate(self, requests):
        if os.path.exists(os.environ["PAID_REFUSE"]):
            return [GenerationOutput(text="", error="refused by the provider", cost_usd=0.5) for _ in requests]
        return [GenerationOutput(text="yes", cost_usd=0.25) for _ in requests]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    install_plugin(site, "paid-models", "paid_models", {"__init__.py": "", "plugin.py": PLUGIN, "impl.py": IMPL})
    return site


def cost(folder: Path) -> float:
    return json.loads((folder / "results.json").read_text())["timings"]["generation_cost_usd"]


def test_a_billed_failure_answered_later_stays_in_the_runs_cost(site, tmp_path):
    refuse = tmp_path / "refuse"
    refuse.touch()
    env = {"PAID_REFUSE": str(refuse)}
    args = ["run", "--model", "paid", "--task", "phantom-vqa", "--limit", "3", "--judge", "exact",
            "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    first = cli(site, *args, env=env)
    assert first.returncode != 0 and "refused by the provider" in first.stdout + first.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert cost(run_dir) == 1.5
    refuse.unlink()
    again = cli(site, *args, env=env)
    assert again.returncode == 0, again.stderr
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 6
    assert cost(run_dir) == 2.25  # three refusals billed, then three answers (it said 0.75)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["errors"]["count"] == 0 and results["selection"]["n"] == 3

    scored = cli(site, "score", str(run_dir), "--judge", "exact", "--no-progress", env=env)
    assert scored.returncode == 0, scored.stderr
    assert cost(run_dir) == 2.25
    copied = cli(site, "score", str(run_dir), "--judge", "exact", "--output", str(tmp_path / "copy"),
                 "--no-progress", env=env)
    assert copied.returncode == 0, copied.stderr
    assert cost(tmp_path / "copy") == 2.25
    assert (tmp_path / "copy" / "predictions.jsonl").read_text().splitlines() == lines  # the refusals kept too
