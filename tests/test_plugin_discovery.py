"""Third-party plugins are discovered through the `harness` entry-point group, without touching the core.

CI installs examples/harness-plugin-example (see .ci/run); this test proves its model and task appear.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_example_plugin_is_discovered_and_runs(tmp_path):
    listing = cli("list", "--json")
    data = json.loads(listing.stdout)
    models = {m["id"]: m for m in data["models"]}
    tasks = {t["id"]: t for t in data["tasks"]}
    assert models["constant"]["plugin"] == "example"
    assert tasks["example-mini-vqa"]["plugin"] == "example"
    plugins = {p["name"]: p for p in json.loads(cli("plugins").stdout)}
    assert plugins["example"]["distribution"] == "harness-plugin-example"
    assert plugins["example"]["hooks"] == ["register_models", "register_tasks"]
    assert plugins["harness.plugins.builtin"]["builtin"] is True

    run = cli("run", "--model", "constant", "--model-args", "answer=no", "--task", "example-mini-vqa",
              "--judge", "exact", "--output", str(tmp_path / "run"), "--no-progress")
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["model"]["plugin"] == "example"
    assert 0.0 <= results["judges"][0]["metrics"]["accuracy"]["value"] <= 1.0


def test_allow_list_keeps_third_party_plugins_out():
    data = json.loads(cli("list", "--json", env={"HARNESS_PLUGINS": ""}).stdout)
    assert "constant" not in {m["id"] for m in data["models"]}
    assert "prior" in {m["id"] for m in data["models"]}
    data = json.loads(cli("list", "--json", env={"HARNESS_PLUGINS": "example"}).stdout)
    assert "constant" in {m["id"] for m in data["models"]}
