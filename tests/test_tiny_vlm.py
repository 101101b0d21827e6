"""tiny-vlm's two bases: the model args that choose one, and the text-only turns of the pretraining, which must
be exactly what phantom-vqa sends the model, less the image."""

from __future__ import annotations

import pytest

from harness.errors import UserError


@pytest.fixture(scope="module")
def random_base(tmp_path_factory):
    from harness.plugins.tiny_vlm import ensure_tiny_vlm

    return ensure_tiny_vlm(tmp_path_factory.getbasetemp() / "harness-cache", base="random")


def test_base_model_arg_is_checked_and_recorded():
    from harness.model_api import ModelContext
    from harness.plugins.tiny_vlm import TinyVLM, version

    context = ModelContext(task=None, device="cpu", dtype="float32", cache_dir=None)
    assert TinyVLM.run_identity({}, context)["revision"] == f"{version()}-pretrained"
    assert TinyVLM.run_identity({"base": "random"}, context)["revision"] == f"{version()}-random"
    with pytest.raises(UserError, match="base=raw: tiny-vlm's base is one of pretrained, random"):
        TinyVLM.run_identity({"base": "raw"}, context)
    with pytest.raises(UserError, match="takes no model= or revision="):
        TinyVLM({"model": "x"}, context)


def test_text_turns_equal_the_vqa_prompt_without_the_image(random_base):
    from transformers import AutoTokenizer

    from harness.plugins.tiny_vlm_pretrain import text_batch

    tokenizer = AutoTokenizer.from_pretrained(random_base)
    prompt = "Is there a lesion in this image? Answer with a single word or short phrase."
    longer = f"How many lesions are seen in the left lung of this chest radiograph? {prompt.split('? ')[1]}"
    batch = text_batch(tokenizer, [(prompt, "yes"), (longer, "2")])
    first = batch["input_ids"][0][batch["attention_mask"][0].bool()]
    assert tokenizer.decode(first) == f"<s>USER: {prompt} ASSISTANT: yes</s>"
    answer = batch["labels"][0][batch["labels"][0] != -100]
    assert tokenizer.decode(answer) == " yes</s>"  # the loss covers the answer and the end of sequence only
    assert batch["attention_mask"][1].all() and not batch["attention_mask"][0][-1]  # right-padded
    assert (batch["labels"][0][~batch["attention_mask"][0].bool()] == -100).all()
