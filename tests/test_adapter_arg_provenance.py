"""A model plugin whose `adapter_arg` names the --model-args key of an adapter folder (vllm's `adapter=DIR`) has
that adapter's training recorded in results.json (`model.adapter_trained`) and the untrained-prompt warning given,
as `--adapter DIR` has: runs of `--model vllm --model-args adapter=DIR` recorded neither.

The plugin `adapter-arg-models` is installed the way pip lays one out (tests/plugin_site.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_site import cli, install_plugin

from harness.fingerprint import adapter_hash, text_hash
from harness.run_files import FINETUNE_FORMAT

PLUGIN = """\
from harness.hookspecs import hookimpl
from harness.registry import ModelInfo


@hookimpl
def register_models(register):
    register(ModelInfo(id="adapter-arg", loader="adapter_arg_models.impl:AdapterArg", description="adapter=DIR",
                       capabilities={"task_kinds": ["vqa"]}))
"""

IMPL = """\
from pathlib import Path

from harness.model_api import ModelPlugin
from harness.types import GenerationOutput


class AdapterArg(ModelPlugin):
    adapter_arg = "adapter"
    accepted_args = ("adapter",)

    def generate(self, requests):
        assert (Path(self.args["adapter"]) / "adapter_config.json").is_file()
        return [GenerationOutput(text="yes") for _ in requests]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    install_plugin(site, "adapter-arg-models", "adapter_arg_models",
                   {"__init__.py": "", "plugin.py": PLUGIN, "impl.py": IMPL})
    return site


def trained_adapter(folder: Path, prompt: str) -> dict:
    """An adapter folder with the manifest harness finetune writes: one stage on phantom-vqa with `prompt`."""
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    manifest = {"format": FINETUNE_FORMAT + "1", "config_hash": "cfg-1", "steps": 12,
                "adapter_hash": adapter_hash(folder), "base_model": {"id": "tiny-vlm", "revision": None},
                "stages": [{"name": "main", "steps": 12, "epochs": 1,
                            "task": {"id": "phantom-vqa", "split": "train", "n_samples": 24,
                                     "prompt_variant": "mine", "prompt_hash": text_hash(prompt)}}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_an_adapter_named_by_the_plugins_adapter_arg_is_recorded_as_an_adapter_is(site, tmp_path):
    trained_adapter(tmp_path / "lora", "{question} Answer in one word.")
    proc = cli(site, "run", "--model", "adapter-arg", "--model-args", f"adapter={tmp_path / 'lora'}", "--task",
               "phantom-vqa", "--limit", "2", "--output", str(tmp_path / "run"), "--judge", "exact", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert (f"warning: --model-args adapter={tmp_path / 'lora'} was trained on phantom-vqa with its 'mine' prompt; "
            "this run asks with 'default'") in proc.stderr
    trained = json.loads((tmp_path / "run" / "results.json").read_text())["model"]["adapter_trained"]
    assert trained["config_hash"] == "cfg-1" and trained["steps"] == 12
    assert [(s["id"], s["prompt_variant"]) for s in trained["stages"]] == [("phantom-vqa", "mine")]


def test_the_vllm_plugin_names_its_adapter_arg():
    from harness.plugins.vllm_backend import VLLMModel  # imports no vllm until a model loads

    assert VLLMModel.adapter_arg == "adapter"
