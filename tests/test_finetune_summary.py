"""What `harness finetune` prints and records is what it trained: one loss line per stage, the rate a constant
schedule used, stage 1 asked with the main task's prompt variant, clamped warm-ups said, the data fingerprint and
hyperparameters in the summary, and an adapter card that names the base as the adapter config does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(out: Path, stage1_task: str | None = "phantom-caption", prompt: str | None = None, **settings) -> dict:
    from harness.plugins.finetune_config import FinetuneConfig
    from harness.plugins.finetune_lora import finetune

    cfg = FinetuneConfig(model="tiny-vlm", model_args={"base": "random"}, task="phantom-vqa", out=out, limit=4,
                         stage1_task=stage1_task, prompt=prompt,
                         overrides={"batch_size": 2, "epochs": 1, "stage1_epochs": 1 if stage1_task else None,
                                    **settings})
    return finetune(cfg, progress=False)


def test_two_stages_print_a_loss_line_each_with_the_data_and_settings(tmp_path, tiny_vlm, capsys):
    """The single loss line compared stage 1's first steps (captions) with stage 2's last (answers)."""
    from harness.commands.finetune import report

    out = tmp_path / "two"
    manifest = run(out, warmup_steps=5)
    err = capsys.readouterr().err
    for task in ("phantom-caption", "phantom-vqa"):  # 2 steps a stage: the warm-up is cut, and that is said
        assert f"note: --warmup-steps 5 is not shorter than the 2 steps of {task}: it starts at the peak rate (no " \
            "warm-up)" in err
    assert [s["warmup_steps"] for s in manifest["stages"]] == [1, 1]
    text = report(manifest, out).splitlines()
    curve = manifest["loss_curve"]
    for number, name in ((1, "stage1"), (2, "stage2")):
        losses = [c["loss"] for c in curve if c["stage"] == number]
        assert f"  {name} loss: {losses[0]:.4f} (first step) -> {losses[-1]:.4f} (last step)" in text
    assert not any(line.startswith("loss:") for line in text)
    fingerprint = manifest["stages"][0]["task"]["fingerprint"]
    assert any(line.startswith("stage1: phantom-caption (train split, 4 samples, prompt 'default', data "
                               f"{fingerprint}): 2 steps, 1 epoch, ") for line in text)
    assert ("hyperparameters: rank 128, alpha 128, dropout 0, batch 2, warm-up 5 steps (cut to 1: shorter stages), "
            "weight decay 0.01, "
            "grad-norm clip 1, seed 0") in text
    assert f"fine-tune config: {manifest['config_hash']} ({out / 'manifest.json'} has every setting)" in text
    assert not any("revision None" in line for line in text)
    n_modules = manifest["targets"]["n_modules"]  # what the preset's name stands for, said beside it
    assert ("base model: tiny-vlm (tiny-vlm, revision v6-phantom1-random); LoRA on target preset 'full' "
            f"({n_modules} modules)") in text and n_modules > 10


def test_a_constant_schedule_records_and_prints_the_rate_it_used(tmp_path, tiny_vlm):
    """The manifest said lr 0.0001 -> 0.0005 (tiny-vlm's stage-1 default end rate) for a rate that never moved."""
    from harness.commands.finetune import report

    out = tmp_path / "constant"
    manifest = run(out, schedule="constant", stage1_lr=1e-4, lr=1e-5)
    assert [(s["lr"], s["lr_end"]) for s in manifest["stages"]] == [(1e-4, 1e-4), (1e-5, 1e-5)]
    assert {c["lr"] for c in manifest["loss_curve"]} == {1e-4, 1e-5}
    hyper = json.loads((out / "manifest.json").read_text())["hyperparameters"]
    assert (hyper["lr_end"], hyper["stage1_lr_end"]) == (1e-5, 1e-4)
    text = report(manifest, out)
    stages = [line for line in text.splitlines() if line.startswith("stage")]
    assert "1 epoch, lr 0.0001 (constant), " in stages[0] and "1 epoch, lr 1e-05 (constant), " in stages[1]
    assert not any("->" in line for line in stages)


def test_stage1_is_asked_with_the_main_prompt_variant_when_it_has_one(tmp_path, tiny_vlm, capsys):
    """`--prompt pefomed` trained stage 1 on the 'default' caption prompt, not PeFoMed's '[caption] ...'."""
    manifest = run(tmp_path / "pefomed", prompt="pefomed")
    assert [s["task"]["prompt_variant"] for s in manifest["stages"]] == ["pefomed", "pefomed"]
    assert "note: stage 1" not in capsys.readouterr().err


def test_stage1_without_the_main_prompt_variant_says_it_uses_its_default(tmp_path):
    from harness.plugins.finetune_config import FinetuneConfig

    def variant(prompt: str | None, stage1_prompt: str | None = None) -> tuple[str | None, str | None]:
        cfg = FinetuneConfig(model="tiny-vlm", task="slake", out=tmp_path, stage1_task="rocov2", prompt=prompt,
                             stage1_prompt=stage1_prompt)
        return cfg.stage1_prompt_variant({"default": "Describe.", "pefomed": "[caption] Describe."})

    assert variant("pefomed") == ("pefomed", None)
    assert variant(None) == variant("default") == (None, None)
    assert variant("pefomed", stage1_prompt="default") == ("default", None)  # the user's choice stands
    assert variant("llava-med") == (None, "note: stage 1 (rocov2) uses its 'default' prompt: it has no 'llava-med' "
                                          "variant (its variants: default, pefomed; choose with --stage1-prompt)")


def test_the_adapter_card_names_the_base_as_the_adapter_config_does(tmp_path, tiny_vlm):
    """PEFT's README.md named the local cache folder of tiny-vlm (a path of this machine) as the base model."""
    out = tmp_path / "card"
    run(out, stage1_task=None)
    card = (out / "README.md").read_text()
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == "tiny-vlm"
    assert "base_model: tiny-vlm\n" in card and "base_model:adapter:tiny-vlm" in card
    assert str(tiny_vlm.parent) not in card and "cache" not in card


def test_settings_the_data_makes_moot_are_said_and_recorded_as_used(tmp_path, tiny_vlm, capsys):
    """A batch of 16 on 4 samples was recorded as 16; --max-steps and --save-every beyond the run, a clip of 0 and a
    one-step stage (its loss printed twice, as 'first steps -> last steps') went unsaid."""
    from harness.commands.finetune import report
    from harness.plugins.finetune_config import FinetuneConfig
    from harness.plugins.finetune_lora import finetune

    out = tmp_path / "moot"
    cfg = FinetuneConfig(model="tiny-vlm", model_args={"base": "random"}, task="phantom-vqa", out=out, limit=4,
                         save_every=500, overrides={"batch_size": 16, "epochs": 1, "max_steps": 50,
                                                    "max_grad_norm": 0.0, "warmup_steps": 10})
    manifest = finetune(cfg, progress=False)
    err = capsys.readouterr().err
    assert "note: the batch size 16 is above the 4 training samples of phantom-vqa: each step trains on all 4" in err
    assert "note: --max-steps 50 is above the 1 step of 1 epoch of phantom-vqa: it stops after those" in err
    assert "note: --save-every 500 is not below the run's 1 step: checkpoints are written only at the end of " \
           "each stage" in err
    (stage,) = manifest["stages"]
    assert (stage["steps"], stage["batch_size"]) == (1, 4)
    text = report(manifest, out).splitlines()
    assert f"loss: {manifest['loss_curve'][0]['loss']:.4f} (its one step)" in text
    assert any("): 1 step, 1 epoch, lr " in line for line in text)
    assert any(line.startswith("hyperparameters: ") and ", no grad-norm clip, " in line for line in text)
    assert any(", warm-up 10 steps (cut to 0: shorter stages), " in line for line in text)  # printed as 10
    assert manifest["base_model"]["family"] == manifest["base_model"]["identity"]["family"] == "chat"


def test_a_target_preset_that_matches_nothing_leaves_no_output_folder(tmp_path, tiny_vlm):
    from harness.errors import UserError

    out = tmp_path / "nothing"
    with pytest.raises(UserError, match="re:nomatch"):
        run(out, stage1_task=None, targets="re:nomatch")
    assert not out.exists()


def test_the_loss_line_says_it_shows_means_of_steps():
    """A single step's loss is noisy (2.26, 3.47, 1.34 in a row): the line shows means, and says over what."""
    from harness.commands.finetune import _loss

    curve = [{"step": i, "loss": float(i)} for i in range(1, 31)]
    assert _loss(curve, "loss") == "loss: 5.5000 (mean of the first 10 steps) -> 25.5000 (of the last 10)"
    assert _loss(curve[:6], "loss") == "loss: 2.0000 (mean of the first 3 steps) -> 5.0000 (of the last 3)"


def test_the_use_line_of_a_full_fine_tune_keeps_the_prompt_args_it_was_trained_with(tmp_path, tiny_vlm):
    """A full fine-tune with prepend_modality=true printed `--model-args model=<out>`: following it evaluated the
    model on prompts without the modality prefix it was trained with."""
    import shlex
    import subprocess
    import sys

    from harness.commands.finetune import report
    from harness.plugins.finetune_config import FinetuneConfig
    from harness.plugins.finetune_lora import finetune

    out = tmp_path / "full"
    cfg = FinetuneConfig(model="tiny-vlm", model_args={"base": "random", "prepend_modality": "true"},
                         task="phantom-vqa", out=out, limit=2, method="full",
                         overrides={"batch_size": 2, "epochs": 1})
    use = report(finetune(cfg, progress=False), out).splitlines()[-1]
    command = shlex.split(use.split("(use: harness ", 1)[1].rstrip(")"))
    assert command[:4] == ["run", "--model", "hf", "--model-args"] and "base=" not in command[4]
    result = subprocess.run([sys.executable, "-m", "harness", *command, "--limit", "1", "--judge", "exact",
                             "--runs-dir", str(tmp_path / "runs"), "--no-progress"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], timeout=600)
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(x) for x in next((tmp_path / "runs").glob("*/predictions.jsonl")).read_text().splitlines()]
    assert line["generation_details"]["modality_label"], line  # asked as it was trained: with the modality


def test_a_run_of_a_fully_fine_tuned_model_says_what_it_was_trained_on(tmp_path, tiny_vlm):
    """A LoRA adapter's runs recorded what it learnt from (adapter_trained); a model folder of --method full
    loaded with --model-args model=<folder> recorded nothing, so the full-training rows of an ablation lost it."""
    import subprocess
    import sys

    from harness.plugins.finetune_config import FinetuneConfig
    from harness.plugins.finetune_lora import finetune

    out = tmp_path / "full"
    cfg = FinetuneConfig(model="tiny-vlm", model_args={"base": "random"}, task="phantom-vqa", out=out, limit=2,
                         method="full", prompt="pefomed", overrides={"batch_size": 2, "epochs": 1})
    manifest = finetune(cfg, progress=False)

    def harness(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1], timeout=600)

    done = harness("run", "--model", "hf", "--model-args", f"model={out}", "--task", "phantom-vqa", "--limit", "1",
                   "--judge", "exact", "--output", str(tmp_path / "run"), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert (f"warning: the model {out} was trained on phantom-vqa with its 'pefomed' prompt; this run asks with "
            "'default'") in done.stderr
    trained = json.loads((tmp_path / "run" / "results.json").read_text())["model"]["model_trained"]
    assert trained["config_hash"] == manifest["config_hash"] and trained["base_model"]["id"] == "tiny-vlm"
    assert [(s["id"], s["prompt_variant"]) for s in trained["stages"]] == [("phantom-vqa", "pefomed")]
    published = harness("publish", str(tmp_path / "run"), "-o", str(tmp_path / "board.json"))
    assert published.returncode == 0, published.stderr
    (row,) = json.loads((tmp_path / "board.json").read_text())["rows"]
    assert row["provenance"]["model_trained"] == trained
