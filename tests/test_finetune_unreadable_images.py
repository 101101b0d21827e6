"""A fine-tune on data with images that do not decode (the real VQA-RAD release with one image cut short): the
samples of that image are skipped and reported, a step whose whole batch was such samples records no loss (it
wrote NaN, which made the finished fine-tune impossible to publish), a resumed fine-tune reports the samples
skipped before the resume, one that read no sample is an error, and data without any image file is refused
before training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CUT = "synpic54610.jpg"  # the image of train samples 0, 14, 16 and 17


@pytest.fixture
def damaged(tmp_path, shared_data) -> Path:
    """The VQA-RAD release, linked, with CUT cut to its first 500 bytes."""
    source, data = shared_data / "vqa-rad", tmp_path / "vqa-rad"
    (data / "VQA_RAD Image Folder").mkdir(parents=True)
    (data / "VQA_RAD Dataset Public.json").symlink_to(source / "VQA_RAD Dataset Public.json")
    for image in (source / "VQA_RAD Image Folder").iterdir():
        target = data / "VQA_RAD Image Folder" / image.name
        if image.name == CUT:
            target.write_bytes(image.read_bytes()[:500])
        else:
            target.symlink_to(image)
    return data


def finetune(out: Path, data: Path, **options):
    from harness.plugins.finetune_config import FinetuneConfig
    from harness.plugins.finetune_lora import finetune

    limit = options.pop("limit", 18)
    cfg = FinetuneConfig(model="tiny-vlm", model_args={"base": "random"}, task="vqa-rad", data_dir=data, out=out,
                         limit=limit, seed=0, save_every=100, keep_checkpoints=True,
                         overrides={"batch_size": 1, "epochs": 1, **options})
    return finetune(cfg, progress=False)


def test_unreadable_images_are_skipped_reported_and_survive_a_resume(damaged, tiny_vlm, tmp_path, capsys):
    from harness.commands.finetune import report

    out = tmp_path / "adapter"
    manifest = finetune(out, damaged)
    assert sorted(manifest["skipped_samples"]) == ["0", "14", "16", "17"]
    losses = [point["loss"] for point in manifest["loss_curve"]]
    assert len(losses) == 18 and losses.count(None) == 4
    assert all(isinstance(loss, float) for loss in losses if loss is not None)
    assert json.loads((out / "manifest.json").read_text())["loss_curve"] == manifest["loss_curve"]
    printed = report(manifest, out)
    assert "skipped (image unreadable): 4 samples (" in printed
    # the use-line evaluates on the folder trained from (without it: the hub source, or offline an error)
    assert f"--adapter {out} --task vqa-rad --data-dir {damaged.resolve()} --source official)" in printed
    spaced = report(manifest, Path("my adapters") / "x")  # a use-line a shell takes as one argument per flag
    assert "--model-args base=random --adapter 'my adapters/x' --task vqa-rad" in spaced

    resumed = tmp_path / "resumed"  # killed after its last step: the output is written by the rerun
    resumed.mkdir()
    shutil.copytree(out / "checkpoints", resumed / "checkpoints")
    again = finetune(resumed, damaged)
    assert again["skipped_samples"] == manifest["skipped_samples"]  # not only those met after the resume
    assert (resumed / "adapter_model.safetensors").read_bytes() == (out / "adapter_model.safetensors").read_bytes()


def test_a_fine_tune_that_never_read_a_sample_is_an_error_not_an_adapter(damaged, tiny_vlm, tmp_path):
    out = tmp_path / "none"
    with pytest.raises(UserError, match=r"no training sample could be read \(1 sample skipped, the first 0: their "
                                        r"images do not decode\); repair the data and delete .* to train again"):
        finetune(out, damaged, epochs=2, limit=1)
    assert not (out / "manifest.json").exists() and not (out / "adapter_model.safetensors").exists()


def test_data_without_any_image_file_is_refused_before_training(tmp_path, shared_data):
    out = tmp_path / "adapter"
    with pytest.raises(UserError, match=r"no image file of task 'slake' exists under --data-dir .*: is the "
                                        r"dataset's image folder in place\?"):
        from harness.plugins.finetune_config import FinetuneConfig
        from harness.plugins.finetune_lora import finetune as run

        run(FinetuneConfig(model="tiny-vlm", model_args={"base": "random"}, task="slake",
                           data_dir=shared_data / "slake", out=out, limit=8, seed=0, overrides={}))
    assert not out.exists()
