"""Third-party plugins are discovered through the `harness` entry-point group, without touching the core.

CI installs examples/harness-plugin-example (see .ci/run); this test proves its model and task appear.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


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
    version = plugins["example"]["version"]
    assert results["model"]["distribution"] == f"harness-plugin-example=={version}"  # which code made them
    assert "distribution" not in results["judges"][0]  # the built-in exact judge: the harness's own version


def test_an_upgraded_plugin_makes_a_new_run_and_built_in_run_ids_do_not_move(monkeypatch):
    """A run resumed after `pip install -U` of the model's plugin would mix two versions' predictions: the
    plugin's package version is part of the run id (built-in models' ids stay what they were)."""
    from harness import plugin_manager
    from harness.runner import RunSpec, prepare

    spec = RunSpec(model="constant", task="example-mini-vqa", model_args={"answer": "no"})
    before = prepare(spec)[2]["run_id"]
    name, _ = plugin_manager.DISTRIBUTIONS["example"]
    monkeypatch.setitem(plugin_manager.DISTRIBUTIONS, "example", (name, "999.0"))
    assert prepare(spec)[2]["run_id"] != before
    prior = prepare(RunSpec(model="prior", task="phantom-vqa"))[2]
    assert "distribution" not in prior["model"]


def test_allow_list_keeps_third_party_plugins_out():
    data = json.loads(cli("list", "--json", env={"HARNESS_PLUGINS": ""}).stdout)
    assert "constant" not in {m["id"] for m in data["models"]}
    assert "prior" in {m["id"] for m in data["models"]}
    data = json.loads(cli("list", "--json", env={"HARNESS_PLUGINS": "example"}).stdout)
    assert "constant" in {m["id"] for m in data["models"]}


# ------------------------------------------------------------------ task YAMLs of a third-party plugin: clashes
TASK = """\
id: {id}
version: "1"
kind: vqa
aliases: [{aliases}]
sources:
  - {{name: embedded, format: phantom, closed_rule: answer_type, options: {{seed: 7, n_train: 8, n_test: 6}}}}
prompts:
  default: "{prompt}"
judges: [exact]
metadata: {{citation: "a third-party package", license: Apache-2.0, credentialed: false}}
"""

PLUGIN = """\
from pathlib import Path

from harness.hookspecs import hookimpl


@hookimpl
def register_tasks(register):
    for name in ("alias-clash", "bad-prompt", "twice-kind", "fine"):
        register(Path(__file__).parent / f"{name}.yaml")
"""


def _install_tasks_plugin(site: Path) -> None:
    """Lay out a `clashing` plugin as pip would: a package and a .dist-info with a `harness` entry point."""
    package = site / "clashing_tasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(PLUGIN)
    files = {"alias-clash": TASK.format(id="my-slake", aliases="slake", prompt="{question}"),
             "bad-prompt": TASK.format(id="bad-prompt", aliases="", prompt="{question} {nosuch}"),
             "twice-kind": TASK.format(id="twice-kind", aliases="", prompt="{question}").replace(
                 "kind: vqa\n", "kind: vqa\nkind: report\n"),
             "fine": TASK.format(id="fine-vqa", aliases="fine, my-slake", prompt="{question}")}
    for name, text in files.items():
        (package / f"{name}.yaml").write_text(text)
    info = site / "clashing_tasks-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: clashing-tasks\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness]\nclashing = clashing_tasks.plugin\n")


def test_plugin_task_yaml_mistakes_are_one_warning_line_each_naming_file_and_line(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _install_tasks_plugin(site)
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "HARNESS_PLUGINS": "clashing"}
    listing = cli("list", "--json", env=env)
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr
    warnings = listing.stderr.strip().splitlines()
    assert len(warnings) == 3, listing.stderr
    package = site / "clashing_tasks"
    by_file = {name: next(w for w in warnings if f"{name}.yaml" in w) for name in ("alias-clash", "bad-prompt",
                                                                                  "twice-kind")}
    # an alias that is a built-in id: an error like a repeated id, naming the first registrant and the repeater
    assert by_file["alias-clash"].startswith(
        f"warning: plugin 'clashing': task file alias-clash.yaml skipped: {package / 'alias-clash.yaml'}:4: the "
        "alias 'slake' of task 'my-slake' clashes: 'slake' is already registered by plugin 'harness.builtin_tasks' (")
    assert by_file["alias-clash"].endswith("slake.yaml)")
    assert by_file["bad-prompt"] == (
        f"warning: plugin 'clashing': task file bad-prompt.yaml skipped: {package / 'bad-prompt.yaml'}:8: field "
        "'prompts.default': unknown placeholder {nosuch}; allowed placeholders: {question} (write {{ and }} for a "
        "literal brace)")
    assert by_file["twice-kind"] == (
        f"warning: plugin 'clashing': task file twice-kind.yaml skipped: {package / 'twice-kind.yaml'}:4: duplicate "
        "key 'kind' (first given at line 3); each key may appear once in a mapping: keep one")
    tasks = {t["id"]: t for t in json.loads(listing.stdout)["tasks"]}
    assert tasks["slake"]["plugin"] == "harness.builtin_tasks" and tasks["fine-vqa"]["plugin"] == "clashing"
    assert {"my-slake", "bad-prompt", "twice-kind"}.isdisjoint(tasks)
    # the skipped task's alias was not taken, so a later task may use it; asking for a skipped task says why
    run = cli("run", "--model", "prior", "--task", "bad-prompt", "--output", str(tmp_path / "run"), env=env)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("error: task 'bad-prompt' was skipped because broken: plugin 'clashing': task file "
                            "bad-prompt.yaml skipped: ") and "unknown placeholder {nosuch}" in error
    assert "twice-kind.yaml" not in error  # only its own file, not every broken one
    assert not (tmp_path / "run").exists()


def test_registry_alias_clashes_are_errors_and_register_nothing():
    from harness.errors import UserError
    from harness.registry import Registry

    registry = Registry("task")
    registry.add("vqa-rad", object(), ["vqarad", "vqa-rad", "vqarad"])  # its own id and a repeat are harmless
    for item_id, aliases, said in (
        ("other", ["vqa-rad"], "the alias 'vqa-rad' of task 'other' clashes: 'vqa-rad' is already registered by"),
        ("other", ["x", "vqarad"], "the alias 'vqarad' of task 'other' clashes: 'vqarad' is already an alias of "
                                   "task 'vqa-rad', registered by"),
        ("vqarad", [], "the task id 'vqarad' is already an alias of task 'vqa-rad', registered by"),
    ):
        with pytest.raises(UserError, match=said):
            registry.add(item_id, object(), aliases)
    assert registry.ids() == ["vqa-rad"] and "x" not in registry and "other" not in registry
