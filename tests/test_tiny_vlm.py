"""tiny-vlm's two bases: the model args that choose one, the text-only turns of the pretraining (exactly what
phantom-vqa sends the model, less the image), and a killed pretraining that resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from harness.errors import UserError


def test_base_model_arg_is_checked_and_recorded():
    from harness.file_digests import folder_fingerprint
    from harness.model_api import ModelContext
    from harness.plugins.tiny_vlm import TinyVLM, ensure_tiny_vlm, version

    context = ModelContext(task=None, device="cpu", dtype="float32", cache_dir=None)
    assert TinyVLM.run_identity({}, context)["revision"] == f"{version()}-pretrained"
    assert TinyVLM.run_identity({"base": "random"}, context)["revision"] == f"{version()}-random"
    with pytest.raises(UserError, match="base=raw: tiny-vlm's base is one of pretrained, random"):
        TinyVLM.run_identity({"base": "raw"}, context)
    with pytest.raises(UserError, match=r"model args bass unknown to tiny-vlm \(did you mean 'base'\?\); known: "
                                        r"base, family, "):
        TinyVLM.run_identity({"bass": "random"}, context)  # a misspelt base= is named with base among the known
    with pytest.raises(UserError, match="takes no model= or revision="):
        TinyVLM({"model": "x"}, context)
    loaded = TinyVLM({"base": "random"}, context).identity()  # model.json and a fine-tune's manifest record this
    assert loaded["revision"] == f"{version()}-random"
    assert loaded["weights"] == folder_fingerprint(ensure_tiny_vlm(base="random"))  # the weights built here


def test_text_turns_equal_the_vqa_prompt_without_the_image(tiny_vlm):
    from transformers import AutoTokenizer

    from harness.plugins.tiny_vlm_pretrain import text_batch

    tokenizer = AutoTokenizer.from_pretrained(tiny_vlm)
    prompt = "Is there a lesion in this image? Answer with a single word or short phrase."
    longer = f"How many lesions are seen in the left lung of this chest radiograph? {prompt.split('? ')[1]}"
    batch = text_batch(tokenizer, [(prompt, "yes"), (longer, "2")])
    first = batch["input_ids"][0][batch["attention_mask"][0].bool()]
    assert tokenizer.decode(first) == f"<s>USER: {prompt} ASSISTANT: yes</s>"
    answer = batch["labels"][0][batch["labels"][0] != -100]
    assert tokenizer.decode(answer) == " yes</s>"  # the loss covers the answer and the end of sequence only
    assert batch["attention_mask"][1].all() and not batch["attention_mask"][0][-1]  # right-padded
    assert (batch["labels"][0][~batch["attention_mask"][0].bool()] == -100).all()


def test_killed_pretraining_resumes_to_the_same_model(tiny_vlm, tmp_path, one_torch_thread):
    """The 8-minute build must not start over after a kill: it goes on from its last checkpoint."""
    import torch
    from safetensors.torch import load_file

    from harness.plugins.tiny_vlm_pretrain import Recipe, pretrain

    small = {"cases": 8, "steps": 40, "batch": 4}
    recipe = Recipe(**small)
    pretrain(tiny_vlm, tmp_path / "whole", tmp_path / "whole.pt", recipe, save_every=2)

    checkpoint = tmp_path / "killed.pt"
    script = ("from pathlib import Path\nfrom harness.plugins.tiny_vlm_pretrain import Recipe, pretrain\n"
              f"pretrain(Path({str(tiny_vlm)!r}), Path({str(tmp_path / 'killed')!r}), "
              f"Path({str(checkpoint)!r}), Recipe(**{small!r}), save_every=2)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not checkpoint.exists():
        assert proc.poll() is None, "the pretraining ended before its first checkpoint"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed").exists()
    killed_at = torch.load(checkpoint, weights_only=True)["step"]
    assert 0 < killed_at < 40

    pretrain(tiny_vlm, tmp_path / "resumed", checkpoint, recipe, save_every=2)
    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert whole.keys() == resumed.keys()
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], msg=name)
    before = load_file(str(tiny_vlm / "model.safetensors"))
    assert before.keys() == whole.keys()
    assert sum(not torch.equal(whole[k], before[k]) for k in whole) > len(whole) // 2  # it did train


def test_a_damaged_build_is_named_and_builds_use_one_thread_whatever_the_environment(tiny_vlm, tmp_path):
    """A build cut short was trusted forever (a safetensors traceback, or "Directory not empty" naming a temporary
    folder); OMP_NUM_THREADS=2 pretrained other weights under the same run id (closed accuracy 0.32, not 0.19)."""
    import shutil

    import torch

    from harness.plugins.tiny_vlm import _build_threads, ensure_tiny_vlm, version

    folder = tmp_path / "tiny-vlm" / f"{version()}-random"
    shutil.copytree(tiny_vlm, folder)
    assert ensure_tiny_vlm(tmp_path, base="random") == folder
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.truncate(weights.stat().st_size - 100)
    with pytest.raises(UserError, match=f"the tiny-vlm build {folder} is damaged \\(model.safetensors: .*\\); delete "
                                        "that folder and run again to build it anew"):
        ensure_tiny_vlm(tmp_path, base="random")
    (folder / "config.json").unlink()
    with pytest.raises(UserError, match=r"is damaged \(config.json missing\)"):
        ensure_tiny_vlm(tmp_path, base="random")

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with _build_threads():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_a_predicted_modality_and_sampling_enter_tiny_vlms_run_identity():
    """tiny-vlm's run identity left out the modality classifier and its training data (the hf backend's has them):
    a task copy with other training labels reused the run of the old labels."""
    from harness.model_api import ModelContext
    from harness.plugin_manager import tasks
    from harness.plugins.tiny_vlm import TinyVLM
    from harness.task import Task

    task = Task(tasks().get("phantom-vqa"))
    greedy = ModelContext(task=task, device="cpu", dtype="float32", generation=task.generation_settings({}))
    plain = TinyVLM.run_identity({"base": "random"}, greedy)
    predicted = TinyVLM.run_identity({"base": "random", "prepend_modality": "predicted"}, greedy)
    assert "modality_classifier" not in plain and predicted["modality_classifier"]
    assert predicted["modality_train_fingerprint"].startswith("v2-text-sha256:")
    sampled = ModelContext(task=task, device="cpu", dtype="float32",
                           generation=task.generation_settings({"temperature": 0.7}))
    assert "sampling" in TinyVLM.run_identity({"base": "random"}, sampled) and "sampling" not in plain
