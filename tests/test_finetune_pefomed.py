"""`harness finetune --model pefomed`: projection + LoRA trained in two stages (captioning, then VQA) on the
tiny PeFoMed-shaped model; the output loads back into `pefomed` and carries what was learned; an interrupted
fine-tune resumes to the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import plugin_manager
from harness.errors import UserError
from harness.model_api import ModelContext
from harness.paths import cache_dir
from harness.plugins.finetune_config import FinetuneConfig
from harness.plugins.finetune_lora import finetune
from harness.plugins.pefomed import PeFoMedModel
from harness.task import Task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(pefomed_tiny, out: Path, **settings) -> FinetuneConfig:
    overrides = {"batch_size": 4, "epochs": 2, "lr": 3e-3, "stage1_lr": 3e-3, "stage1_lr_end": 1e-3, **settings}
    return FinetuneConfig(model="pefomed", task="phantom-vqa", out=out, stage1_task="phantom-caption", limit=8,
                          prompt="pefomed", model_args=pefomed_tiny.model_args(checkpoint=""), overrides=overrides)


def training_loss(pefomed_tiny, adapter: Path | None) -> float:
    """Loss of the first 8 phantom-vqa train samples under `adapter` (None: a fresh projection and LoRA)."""
    torch.manual_seed(0)
    model = PeFoMedModel(pefomed_tiny.model_args(checkpoint="", train="true", lora_dropout="0"),
                         ModelContext(adapter=adapter, cache_dir=cache_dir()))
    task = Task(plugin_manager.tasks().get("phantom-vqa"))
    _, template = task.prompt_template("pefomed")
    samples = task.train_samples()[:8]
    requests = [task.build_request(s, template, task.generation_settings(), [r.open() for r in s.images])
                for s in samples]
    model.net.llm.eval()
    with torch.no_grad():
        return float(model.training_loss(requests, [s.answer for s in samples]))


def test_two_stage_pefomed_finetune_writes_a_directory_pefomed_loads(pefomed_tiny, tmp_path):
    out = tmp_path / "adapters" / "pefomed"
    manifest = finetune(config(pefomed_tiny, out), progress=False)
    assert manifest["kind"] == "pefomed-adapter"
    assert [s["task"]["id"] for s in manifest["stages"]] == ["phantom-caption", "phantom-vqa"]
    # stage 1 asked with PeFoMed's '[caption] ...' prompt, as --prompt pefomed asks stage 2 with '[vqa] ...'
    assert [s["task"]["prompt_variant"] for s in manifest["stages"]] == ["pefomed", "pefomed"]
    assert [c["stage"] for c in manifest["loss_curve"]] == [1, 1, 2, 2, 2, 2]
    assert manifest["hyperparameters"]["rank"] == 64 and manifest["hyperparameters"]["alpha"] == 16
    assert manifest["base_model"]["args"]["train"] == "true"
    identity = manifest["base_model"]["identity"]  # what the base says of itself (it was {})
    assert identity["architecture"].startswith("minigpt-v2") and identity["llm"] == str(pefomed_tiny.llm_dir.resolve())
    # PeFoMed trains the projection and LoRA on q/v only: 2 layers x (q, v) x (A, B) + weight and bias.
    proj = 4 * tiny_vision_width(pefomed_tiny) * 64 + 64  # four visual tokens concatenated -> the LLM's width
    lora = 2 * 2 * 64 * (64 + 64)
    assert manifest["trainable_parameters"] == proj + lora
    assert manifest["targets"]["target_modules"] == ["q_proj", "v_proj"] and manifest["targets"]["n_modules"] == 4
    from harness.commands.finetune import report

    assert ("LoRA on target preset 'llm-attn' (q_proj, v_proj: 4 modules; also trained: llama_proj (projection, "
            "full))") in report(manifest, tmp_path / "out")  # 'llm-attn' alone never said it means q/v
    assert (out / "adapter_config.json").is_file() and (out / "projection.safetensors").is_file()
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["r"] == 64 and adapter_config["lora_alpha"] == 16 and not adapter_config["modules_to_save"]
    # what was learned is in the directory: lower loss on the training data than a fresh start
    assert training_loss(pefomed_tiny, out) < 0.8 * training_loss(pefomed_tiny, None)

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "harness", "run", "--model", "pefomed", "--model-args",
           pefomed_tiny.args_string(checkpoint=""), "--adapter", os.path.relpath(out, tmp_path), "--task",
           "phantom-vqa", "--prompt", "pefomed", "--limit", "4", "--max-new-tokens", "4", "--judge", "exact",
           "--output", str(run_dir), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["error"] is None for r in rows)
    # a relative --adapter is recorded as the folder it named (it was recorded as typed)
    assert json.loads((run_dir / "results.json").read_text())["model"]["adapter"] == str(out.resolve())


def tiny_vision_width(pefomed_tiny) -> int:
    return json.loads(Path(pefomed_tiny.vision_config_path).read_text())["hidden_size"]


def test_interrupted_pefomed_finetune_resumes_to_the_same_weights(pefomed_tiny, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from harness.plugins.finetune_recipes import PluginRecipe

    whole = tmp_path / "whole"
    finetune(config(pefomed_tiny, whole, epochs=1, stage1_epochs=1), progress=False)
    cut = tmp_path / "cut"
    cfg = config(pefomed_tiny, cut, epochs=1, stage1_epochs=1)
    cfg.save_every = 1
    calls = {"n": 0}
    real_loss = PluginRecipe.loss

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:  # during step 4 (stage 2's second); every step is checkpointed
            raise KeyboardInterrupt
        return real_loss(self, batch)

    monkeypatch.setattr(PluginRecipe, "loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, progress=False)
    monkeypatch.setattr(PluginRecipe, "loss", real_loss)
    assert not (cut / "manifest.json").exists() and (cut / "checkpoints").is_dir()
    manifest = finetune(cfg, progress=False)
    assert manifest["resumed_at_steps"] == [3]
    for name in ("adapter_model.safetensors", "projection.safetensors"):
        a, b = load_file(str(whole / name)), load_file(str(cut / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_pefomed_refuses_targets_and_methods_it_cannot_train(pefomed_tiny, tmp_path):
    with pytest.raises(UserError, match="--targets llm-all-linear is not available"):
        finetune(config(pefomed_tiny, tmp_path / "a", targets="llm-all-linear"), progress=False)
    cfg = config(pefomed_tiny, tmp_path / "b")
    cfg.method = "full"
    with pytest.raises(UserError, match="--method full is not available"):
        finetune(cfg, progress=False)


def test_a_finetune_continuing_a_checkpoint_records_its_rank_and_refuses_another(pefomed_tiny, tmp_path):
    """From a rank-16 checkpoint every run trained rank 16, but the manifest said the --rank given (64 by default;
    --rank 32, silently ignored), and each made another config hash for the same weights."""
    from tiny_pefomed import make_checkpoint_state, save_checkpoint

    state = make_checkpoint_state()
    rank16 = save_checkpoint(tmp_path / "rank16.pth", {
        k: (v[:16] if ".lora_A" in k else v[:, :16] if ".lora_B" in k else v) for k, v in state.items()})
    cfg = FinetuneConfig(model="pefomed", task="phantom-vqa", out=tmp_path / "out", limit=4, prompt="pefomed",
                         model_args=pefomed_tiny.model_args(checkpoint=str(rank16)),
                         overrides={"batch_size": 4, "epochs": 1})
    manifest = finetune(cfg, progress=False)
    assert manifest["hyperparameters"]["rank"] == 16 and manifest["config"]["hyper"]["rank"] == 16
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["r"] == 16
    cfg.overrides["rank"] = 32
    with pytest.raises(UserError, match=r"^--rank 32: the LoRA this fine-tune continues \(--model-args\) has rank 16, "
                                        r"which it keeps; drop --rank, or give --rank 16$"):
        finetune(cfg, progress=False)
    cfg.overrides["rank"] = 16  # the same fine-tune: already trained
    assert finetune(cfg, progress=False)["config_hash"] == manifest["config_hash"]


def test_a_finetune_adapter_on_another_base_of_the_same_shapes_is_warned(pefomed_tiny, tmp_path, capsys):
    """A fine-tune's projection and LoRA loaded silently onto another EVA (or LLM) of the same shapes, though its
    manifest.json names the base it trained on by content."""
    from tiny_pefomed import make_eva_state

    out = tmp_path / "out"
    finetune(FinetuneConfig(model="pefomed", task="phantom-vqa", out=out, limit=4, prompt="pefomed",
                            model_args=pefomed_tiny.model_args(checkpoint=""),
                            overrides={"batch_size": 4, "epochs": 1}), progress=False)
    capsys.readouterr()
    PeFoMedModel(pefomed_tiny.model_args(checkpoint=""), ModelContext(adapter=out, cache_dir=cache_dir()))
    assert "warning" not in capsys.readouterr().err  # its own base: nothing to say
    other = tmp_path / "other_eva.pth"
    torch.save(make_eva_state(seed=7), other)
    PeFoMedModel(pefomed_tiny.model_args(checkpoint="", vision=str(other)),
                 ModelContext(adapter=out, cache_dir=cache_dir()))
    assert (f"warning: --adapter {out} was trained on another base than the one loaded now (its vision weights "
            "differ from its manifest.json's): these scores are of a pairing nobody trained") in capsys.readouterr().err
