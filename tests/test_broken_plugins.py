"""A broken third-party plugin does not block the harness: the broken part is skipped with a warning.

The test installs two plugins by putting a package and its `.dist-info` (with `entry_points.txt`, group
`harness`) on PYTHONPATH, the way pip lays them out: `half-broken` registers one good task, one task YAML with
a wrong field, a task YAML and a model whose ids clash with built-ins; `unimportable` fails when its module is imported;
`shaky-yamls` registers task YAMLs that used to hang every command or skip the plugin's other tasks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from plugin_site import cli, install_plugin

GOOD_TASK = """\
id: third-party-vqa
version: "1"
kind: vqa
description: A small synthetic task from a third-party package
sources:
  - {name: embedded, format: phantom, closed_rule: answer_type, options: {seed: 7, n_train: 8, n_test: 6}}
prompts:
  default: "{question} Answer with one word."
judges: [exact]
metadata: {citation: "a third-party package", license: Apache-2.0, credentialed: false}
"""

PLUGIN = """\
from pathlib import Path

from harness.hookspecs import hookimpl
from harness.registry import JudgeInfo, ModelInfo


@hookimpl
def register_tasks(register):
    here = Path(__file__).parent
    register(here / "broken.yaml")
    register(here / "good.yaml")
    register(here / "clash.yaml")


@hookimpl
def register_models(register):
    register(ModelInfo(id="prior", loader="nowhere:Nothing", description="clashes with the built-in"))
    register(ModelInfo(id="unshipped", loader="half_broken.not_shipped:Model", description="module not in the wheel"))
    register(ModelInfo(id="not-a-class", loader="half_broken.plugin:LIMIT", description="names a number"))


LIMIT = 5


@hookimpl
def register_judges(register):
    register(JudgeInfo(id="renamed", loader="half_broken.plugin:OldJudgeName", description="class renamed",
                       capabilities={"task_kinds": ["vqa"]}))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    broken = GOOD_TASK.replace("id: third-party-vqa", "id: broken-vqa").replace("kind: vqa", "kind: quiz")
    clash = GOOD_TASK.replace("id: third-party-vqa", "id: slake")
    install_plugin(site, "half-broken", "half_broken", {"__init__.py": "", "plugin.py": PLUGIN,
                                                        "good.yaml": GOOD_TASK, "broken.yaml": broken,
                                                        "clash.yaml": clash})
    install_plugin(site, "unimportable", "unimportable",
                   {"__init__.py": "", "plugin.py": "import a_module_that_is_not_installed\n"})
    return site


def test_list_works_and_warns_once_per_broken_part(site):
    proc = cli(site, "list", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    tasks = {t["id"]: t for t in data["tasks"]}
    assert tasks["third-party-vqa"]["plugin"] == "half-broken"  # the good file after the broken one still loads
    assert "slake" in tasks and "broken-vqa" not in tasks
    prior = {m["id"]: m for m in data["models"]}["prior"]
    assert prior["plugin"] == "harness.plugins.builtin"  # the clash does not replace the built-in
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert len(warnings) == 4, proc.stderr
    assert all(line.startswith("warning: plugin '") for line in warnings)
    broken_yaml = next(line for line in warnings if "broken.yaml" in line)
    assert "half-broken" in broken_yaml and ":3: field 'kind'" in broken_yaml
    assert any(line.startswith("warning: plugin 'unimportable' skipped: entry point 'unimportable.plugin' could not "
                               "be loaded: ") and "a_module_that_is_not_installed" in line for line in warnings)
    # only one model of the plugin is skipped, and the line says which
    assert ("warning: plugin 'half-broken': model 'prior' skipped: the model id 'prior' is already registered by "
            "plugin 'harness.plugins.builtin'") in warnings
    assert broken_yaml.startswith("warning: plugin 'half-broken': task file broken.yaml skipped: ")
    clash = next(line for line in warnings if "clash.yaml" in line)  # the file that repeats the id is named
    assert "task id 'slake' is already registered by plugin 'harness.builtin_tasks' (" in clash
    assert clash.rstrip(")").endswith("slake.yaml")
    assert tasks["slake"]["plugin"] == "harness.builtin_tasks"


def test_plugins_lists_problems_per_plugin(site):
    plugins = {p["name"]: p for p in json.loads(cli(site, "plugins").stdout)}
    assert plugins["half-broken"]["distribution"] == "half-broken"
    assert plugins["half-broken"]["tasks"] == ["third-party-vqa"]
    assert len(plugins["half-broken"]["problems"]) == 3
    assert "ModuleNotFoundError" in plugins["unimportable"]["problems"][0]
    assert plugins["unimportable"]["distribution"] == "unimportable"  # the package to fix, though it did not load
    assert "problems" not in plugins["harness.plugins.builtin"]


def test_other_tasks_still_run_and_the_broken_one_says_why(site, tmp_path):
    run = cli(site, "run", "--model", "prior", "--task", "third-party-vqa", "--judge", "exact",
              "--output", str(tmp_path / "run"), "--no-progress")
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "run" / "results.json").read_text())["task"]["id"] == "third-party-vqa"
    refused = cli(site, "run", "--model", "prior", "--task", "broken-vqa", "--judge", "exact",
                  "--output", str(tmp_path / "refused"), "--no-progress")
    assert refused.returncode == 2
    error = refused.stderr.strip().splitlines()[-1]  # this file, not a close other id and every broken file
    assert error.startswith("error: task 'broken-vqa' was skipped because broken: plugin 'half-broken': task file "
                            "broken.yaml skipped: ")
    assert "broken.yaml:3: field 'kind'" in error and "clash.yaml" not in error and "Did you mean" not in error
    other = cli(site, "run", "--model", "prior", "--task", "brokn-vqa", "--output", str(tmp_path / "x"))
    assert other.stderr.strip().splitlines()[-1].startswith("error: unknown task 'brokn-vqa'.")


def test_a_model_of_a_plugin_that_failed_to_import_says_why_it_is_missing(site, tmp_path):
    refused = cli(site, "run", "--model", "unimportable-model", "--task", "phantom-vqa", "--judge", "exact",
                  "--output", str(tmp_path / "run"), "--no-progress")
    assert refused.returncode == 2
    error = refused.stderr.strip().splitlines()[-1]
    assert error.startswith("error: unknown model 'unimportable-model'")
    assert "plugin 'unimportable'" in error and "a_module_that_is_not_installed" in error


def test_a_registered_plugin_whose_code_cannot_be_loaded_is_one_line(site, tmp_path):
    """The registration worked, but the loader points at a module the package does not ship or a renamed class."""
    cases = [(["--model", "unshipped", "--judge", "exact"],
              "error: model 'unshipped' of plugin 'half-broken' cannot be loaded from "
              "'half_broken.not_shipped:Model': ModuleNotFoundError: No module named 'half_broken.not_shipped' "
              "(fix or reinstall that plugin)"),
             (["--model", "not-a-class", "--judge", "exact"],
              "error: model 'not-a-class' of plugin 'half-broken' cannot be loaded from 'half_broken.plugin:LIMIT': "
              "TypeError: it names int '5', not a class (fix or reinstall that plugin)"),
             (["--model", "prior", "--judge", "renamed"],
              "error: judge 'renamed' of plugin 'half-broken' cannot be loaded from 'half_broken.plugin:OldJudgeName': "
              "AttributeError: ")]
    for args, expected in cases:
        proc = cli(site, "run", *args, "--task", "phantom-vqa", "--output", str(tmp_path / "run"), "--no-progress")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith(expected)
        assert not (tmp_path / "run").exists()


SHAKY_PLUGIN = """\
from pathlib import Path

from harness.hookspecs import hookimpl


@hookimpl
def register_tasks(register):
    for name in ("bomb.yaml", "latin1.yaml", "apply.yaml", "fine.yaml"):
        register(Path(__file__).parent / name)
"""


def test_task_yamls_that_hang_or_are_not_utf8_or_run_code_skip_only_themselves(tmp_path):
    """A "billion laughs" file used to hang even `harness list`; a Latin-1 file or a !!python tag skipped the plugin's
    other tasks with a UnicodeDecodeError / ConstructorError that named no file."""
    def task(name: str) -> str:
        return GOOD_TASK.replace("id: third-party-vqa", f"id: {name}")

    laughs = ["  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    laughs += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    metadata = "metadata:\n" + "\n".join(laughs) + "\n  citation: *l9\n  license: MIT\n  credentialed: false\n"
    bomb = task("bomb-vqa").replace(GOOD_TASK.splitlines()[-1] + "\n", metadata)  # citation: 9**10 values
    apply = task("apply-vqa").replace("kind: vqa", 'kind: !!python/object/apply:os.system ["echo pwned"]')
    install_plugin(tmp_path, "shaky-yamls", "shaky_yamls", {"__init__.py": "", "plugin.py": SHAKY_PLUGIN,
                                                          "bomb.yaml": bomb, "apply.yaml": apply,
                                                          "fine.yaml": task("fine-vqa")})
    folder = tmp_path / "shaky_yamls"
    (folder / "latin1.yaml").write_bytes(task("latin-vqa").replace("A small", "A caf\u00e9").encode("latin-1"))
    started = time.monotonic()
    proc = cli(tmp_path, "list", "--json")
    assert time.monotonic() - started < 60 and proc.returncode == 0, proc.stderr
    assert "pwned" not in proc.stdout + proc.stderr
    tasks = {t["id"]: t for t in json.loads(proc.stdout)["tasks"]}
    assert tasks["fine-vqa"]["plugin"] == "shaky-yamls"  # registered after the three broken ones
    assert not {"bomb-vqa", "latin-vqa", "apply-vqa"} & set(tasks)
    skipped = "warning: plugin 'shaky-yamls': task file {} skipped: {}:{}: "
    over = bomb.splitlines().index(laughs[4]) + 1  # l4 = nine *l3 of 6,561 values each: the first over 10,000
    assert proc.stderr.splitlines() == [
        skipped.format("bomb.yaml", folder / "bomb.yaml", over) + "the file holds more than 10000 values once aliases "
        "are expanded (at alias *l3); a task file needs a few hundred: write the values out instead of nesting aliases",
        skipped.format("latin1.yaml", folder / "latin1.yaml", 4) + "not UTF-8 text (byte 0xe9 at offset "
        f"{(folder / 'latin1.yaml').read_bytes().index(0xE9)}); save it as UTF-8",
        skipped.format("apply.yaml", folder / "apply.yaml", 3) + "tag !!python/object/apply:os.system is not allowed "
        "in a task file (plain YAML values only: text, numbers, true/false, lists, mappings)",
    ]
