"""A model plugin that declares `accepted_args` has any other --model-args key refused in one line with a
did-you-mean (exit 2), by `harness run` and `harness finetune`, before anything loads; its `transport_args` are
read too; a plugin that declares nothing gets every key, as before; a declaration that is no tuple of names is one
line naming the plugin.

The plugin `args-models` is installed the way pip lays one out (tests/plugin_site.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import error_line
from plugin_site import cli, install_plugin

PLUGIN = """\
from harness.hookspecs import hookimpl
from harness.registry import ModelInfo

MODELS = {"declared": "Declared", "undeclared": "Undeclared", "reads-none": "ReadsNone", "bad-declaration": "Bad",
          "self-training": "SelfTraining"}


@hookimpl
def register_models(register):
    for model_id, name in MODELS.items():
        register(ModelInfo(id=model_id, loader=f"args_models.impl:{name}", description=name,
                           capabilities={"task_kinds": ["vqa"]}))
"""

IMPL = """\
from harness.model_api import ModelPlugin
from harness.types import GenerationOutput


class Undeclared(ModelPlugin):
    default_batch_size = 4

    def generate(self, requests):
        return [GenerationOutput(text=self.args.get("answer", "yes")) for _ in requests]


class Declared(Undeclared):
    accepted_args = ("answer", "temperature_scale")
    transport_args = ("pace",)


class ReadsNone(Undeclared):
    accepted_args = ()


class Bad(Undeclared):
    accepted_args = "answer"  # a string, not a tuple of names


class SelfTraining(Declared):
    \"\"\"Has the training hooks harness finetune looks for; loading it would fail the test.\"\"\"

    def __init__(self, args, context):
        raise AssertionError("loaded despite a misspelt --model-args key")

    def trainable_modules(self):
        return {}

    def training_loss(self, requests, targets):
        return 0.0

    def save_trained(self, folder):
        pass
"""

WHO = "(plugin 'args-models', package args-models==0.1)"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    install_plugin(site, "args-models", "args_models", {"__init__.py": "", "plugin.py": PLUGIN, "impl.py": IMPL})
    return site


def run(site: Path, out: Path, model: str, args: str) -> object:
    return cli(site, "run", "--model", model, "--model-args", args, "--task", "phantom-vqa", "--limit", "4",
               "--output", str(out), "--judge", "exact", "--no-progress")


def test_a_misspelt_key_is_refused_with_a_did_you_mean_before_anything_runs(site, tmp_path):
    line = error_line(run(site, tmp_path / "run", "declared", "answr=2,pace=1"))
    assert line == (f"error: --model-args answr: model 'declared' {WHO} does not read 'answr' (did you mean "
                    "'answer'?); it reads answer, pace, temperature_scale")
    assert not (tmp_path / "run").exists()


def test_declared_and_transport_keys_run(site, tmp_path):
    proc = run(site, tmp_path / "run", "declared", "answer=no,pace=1")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert {row["prediction"] for row in rows} == {"no"}


def test_a_model_that_reads_no_args_refuses_every_key(site, tmp_path):
    line = error_line(run(site, tmp_path / "run", "reads-none", "answer=2"))
    assert line == (f"error: --model-args answer: model 'reads-none' {WHO} does not read 'answer'; it reads no "
                    "--model-args")


def test_a_model_that_declares_nothing_keeps_every_key(site, tmp_path):
    proc = run(site, tmp_path / "run", "undeclared", "answr=2")
    assert proc.returncode == 0, proc.stderr
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["model"]["label"] == "undeclared[answr=2]"


def test_a_declaration_that_is_no_tuple_of_names_is_one_line(site, tmp_path):
    line = error_line(run(site, tmp_path / "run", "bad-declaration", "answer=2"))
    assert line == (f"error: model 'bad-declaration' {WHO}: accepted_args is 'answer' (str); expected a tuple of the "
                    "--model-args names it reads, e.g. ('answer',) (or None: any key)")


def test_finetune_refuses_a_misspelt_key_before_loading(site, tmp_path):
    out = tmp_path / "adapter"
    line = error_line(cli(site, "finetune", "--model", "self-training", "--model-args", "temprature_scale=2",
                          "--task", "phantom-vqa", "--out", str(out), "--no-progress"))
    assert line == (f"error: --model-args temprature_scale: model 'self-training' {WHO} does not read "
                    "'temprature_scale' (did you mean 'temperature_scale'?); it reads answer, pace, temperature_scale")
    assert not out.exists()
