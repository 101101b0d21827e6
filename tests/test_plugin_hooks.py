"""Mistakes in a third-party plugin's hooks are one `warning:` line each, naming the plugin and what was expected.

A hook name that is no hookspec (`register_model` for `register_models`), a hook function without `@hookimpl`, a
hook argument other than `register`, and an item of the wrong kind (a JudgeInfo given to `register_models`) used to
be silently ignored or to fail later with a traceback; a line about a skipped item or the rest of a hook says
which was skipped, not "plugin skipped". The plugins are laid out as pip would (a package and a `.dist-info` with
a `harness` entry point) in a folder put on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGINS = {
    "misnamed": """\
from harness.hookspecs import hookimpl
from harness.registry import ModelInfo


@hookimpl
def register_model(register):  # singular: no such hook
    register(ModelInfo(id="mn-model", loader="nowhere:Model"))
""",
    "undecorated": """\
from harness.registry import ModelInfo


def register_models(register):  # forgot @hookimpl
    register(ModelInfo(id="ud-model", loader="nowhere:Model"))
""",
    "halfmarked": """\
from harness.hookspecs import hookimpl
from harness.registry import ModelInfo


@hookimpl
def register_tasks(register):
    pass


def register_models(register):  # forgot @hookimpl on this one only
    register(ModelInfo(id="hm-model", loader="nowhere:Model"))
""",
    "wrongarg": """\
from harness.hookspecs import hookimpl


@hookimpl
def register_tasks(reg):
    pass
""",
    "wrongkind": """\
from harness.hookspecs import hookimpl
from harness.registry import JudgeInfo, ModelInfo


@hookimpl
def register_models(register):
    register(JudgeInfo(id="wk-judge", loader="nowhere:Judge", capabilities={"task_kinds": ["vqa"]}))
    register(ModelInfo(id="wk-model", loader="nowhere:Model"))


@hookimpl
def register_judges(register):
    register(ModelInfo(id="wk-model-as-judge", loader="nowhere:Model"))


@hookimpl
def register_tasks(register):
    register(42)
""",
    "raising": """\
from harness.hookspecs import hookimpl
from harness.registry import ModelInfo


@hookimpl
def register_models(register):
    register(ModelInfo(id="rs-first", loader="nowhere:Model"))
    raise RuntimeError("no more models")
""",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    for name, text in PLUGINS.items():
        package = site / f"{name}_pkg"
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "plugin.py").write_text(text)
        info = site / f"{name}_pkg-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-pkg\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[harness]\n{name} = {name}_pkg.plugin\n")
    return site


def cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "HARNESS_PLUGINS": ",".join(PLUGINS)}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def warnings(proc: subprocess.CompletedProcess, plugin: str) -> list[str]:
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith(f"warning: plugin '{plugin}'")]


def test_a_hook_name_that_is_no_hookspec_is_a_warning_with_a_suggestion(site, tmp_path):
    listing = cli(site, "list", "models")
    assert warnings(listing, "misnamed") == [
        "warning: plugin 'misnamed' (entry point 'misnamed_pkg.plugin'): unknown hook 'register_model' "
        "(did you mean 'register_models'?); it is never called"]
    plugins = {p["name"]: p for p in json.loads(cli(site, "plugins").stdout)}
    assert plugins["misnamed"]["problems"] == [
        "unknown hook 'register_model' (did you mean 'register_models'?); it is never called"]
    run = cli(site, "run", "--model", "mn-model", "--task", "phantom-vqa", "--output", str(tmp_path / "run"))
    error = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 2 and error.startswith("error: unknown model 'mn-model'")
    assert "plugin 'misnamed': unknown hook 'register_model' (did you mean 'register_models'?)" in error


def test_hook_functions_without_hookimpl_are_warnings(site):
    listing = cli(site, "list", "models")
    assert warnings(listing, "undecorated") == [
        "warning: plugin 'undecorated' (entry point 'undecorated_pkg.plugin'): defines no harness hooks (missing "
        "@hookimpl? register_models has none: `from harness.hookspecs import hookimpl`, then @hookimpl above each "
        "hook function)"]
    assert warnings(listing, "halfmarked") == [
        "warning: plugin 'halfmarked' (entry point 'halfmarked_pkg.plugin'): function 'register_models' has no "
        "@hookimpl; it is never called"]
    plugins = {p["name"]: p for p in json.loads(cli(site, "plugins").stdout)}
    assert plugins["undecorated"]["hooks"] == [] and "defines no harness hooks" in plugins["undecorated"]["problems"][0]
    assert plugins["halfmarked"]["hooks"] == ["register_tasks"] and len(plugins["halfmarked"]["problems"]) == 1


def test_a_wrong_hook_argument_is_one_line_with_pluggys_reason(site):
    lines = warnings(cli(site, "list", "models"), "wrongarg")
    assert len(lines) == 1
    assert lines[0].startswith("warning: plugin 'wrongarg' skipped: entry point 'wrongarg_pkg.plugin' could not be "
                               "registered: PluginValidationError: ")
    assert "Argument(s) {'reg'} are declared in the hookimpl but can not be found in the hookspec" in lines[0]
    assert lines[0].endswith("(expected: def register_tasks(register))")


def test_an_item_of_the_wrong_kind_is_refused_at_registration_naming_the_expected_type(site, tmp_path):
    listing = cli(site, "list", "--json")
    assert warnings(listing, "wrongkind") == [
        "warning: plugin 'wrongkind': a task entry skipped: register_tasks was given 42 (type int); expected the "
        "path of a task YAML file",
        "warning: plugin 'wrongkind': model 'wk-judge' skipped: register_models was given a JudgeInfo; expected a "
        "harness.registry.ModelInfo (a judge goes to register_judges)",
        "warning: plugin 'wrongkind': judge 'wk-model-as-judge' skipped: register_judges was given a ModelInfo; "
        "expected a harness.registry.JudgeInfo (a model goes to register_models)",
    ]
    data = json.loads(listing.stdout)
    models = {m["id"]: m for m in data["models"]}
    assert models["wk-model"]["plugin"] == "wrongkind"  # the rest of the hook still registers
    assert "wk-judge" not in models and "wk-model-as-judge" not in {j["id"] for j in data["judges"]}
    run = cli(site, "run", "--model", "wk-judge", "--task", "phantom-vqa", "--output", str(tmp_path / "run"))
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "register_models was given a JudgeInfo" in run.stderr.strip().splitlines()[-1]


def test_a_hook_that_raises_says_that_the_rest_of_that_hook_was_skipped(site):
    listing = cli(site, "list", "models", "--json")
    assert warnings(listing, "raising") == [
        "warning: plugin 'raising': the rest of its register_models hook skipped: it raised RuntimeError: no more "
        "models"]
    assert {m["id"]: m for m in json.loads(listing.stdout)["models"]}["rs-first"]["plugin"] == "raising"


def test_each_problem_is_said_once(site):
    proc = cli(site, "plugins")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert all(line.startswith("warning: plugin '") for line in lines), proc.stderr
    assert len(lines) == len(set(lines)) == 8, proc.stderr
