"""How the `hf` backend sizes its micro-batch on a GPU: memory free after loading, the task's measured prompt
length (image and text tokens as generation pads them), the KV cache of the new tokens and the prefill."""

from __future__ import annotations

import pytest
import tiny_models

from harness import plugin_manager
from harness.model_api import ModelContext
from harness.task import Task

pytest.importorskip("transformers")

def test_default_batch_size_fills_a_gpu_and_stays_small_on_the_cpu():
    from types import SimpleNamespace

    from harness.plugins import hf_generation as gen

    llama_7b = SimpleNamespace(text_config=SimpleNamespace(num_hidden_layers=32, num_attention_heads=32,
                                                           num_key_value_heads=32, hidden_size=4096))
    kv = gen.kv_bytes_per_token(llama_7b, 2)
    assert kv == 2 * 32 * 4096 * 2  # keys and values, 32 layers, 4096 wide, bf16: 0.5 MiB per token
    h100 = 85_000_000_000  # what torch reports for an H100 80GB
    free = h100 - 7_060_000_000 * 2 - 600_000_000  # after loading LLaVA-1.5-7B in bf16 (and the CUDA context)

    def size(new_tokens: int, free: int = free, **kw) -> int:
        return gen.pick_batch_size(n_params=7_060_000_000, dtype_bytes=2, kv_per_token=kv, new_tokens=new_tokens,
                                   gpu_free=free, gpu_total=h100, hidden_size=4096, **kw)

    # LLaVA-1.5 prompts measured at 601 tokens, padded to 640: batch 128, the setting of the reference's best
    # static-cache figures for 16-token answers and 128-token reports on an H100
    assert size(16, prompt_tokens=640) == 128 and size(128, prompt_tokens=640) == 128
    # without a measurement: a typical prompt per image, so two-view reports get a smaller batch
    vqa, two_view_reports = size(16), size(128, images_per_sample=2)
    assert 64 <= vqa <= 128 and vqa % 16 == 0
    assert 16 <= two_view_reports < vqa and two_view_reports % 16 == 0
    assert size(128, prompt_tokens=1280) < size(128, prompt_tokens=640)
    # memory another process holds on the card is not counted on
    shared = size(128, free=free - 40_000_000_000, prompt_tokens=640)
    assert 16 <= shared <= 64
    assert size(16, free=10**9, prompt_tokens=640) == 1  # less free than the reserve: one at a time
    assert gen.pick_batch_size(n_params=7_060_000_000, dtype_bytes=4, kv_per_token=kv, new_tokens=16,
                               gpu_free=None) == 1


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    return tiny_models.tiny_llava(tmp_path_factory.mktemp("tiny-models") / "llava")


@pytest.mark.parametrize(("task_id", "cache"), [("phantom-vqa", "dynamic"), ("phantom-report", "static")])
def test_measured_prompt_length_is_the_longest_encoded_prompt(tiny_llava, task_id, cache):
    from harness.plugins import hf_generation as gen
    from harness.plugins.hf import HFModel

    task = Task(plugin_manager.tasks().get(task_id))
    model = HFModel({"model": str(tiny_llava), "cache": cache}, ModelContext(task=task))
    _, template = task.prompt_template(None)
    settings = task.generation_settings({"max_new_tokens": 1})
    requests = [task.build_request(sample, template, settings, [r.open() for r in sample.images])
                for sample in task.samples()[:16]]
    lengths = [output.prompt_tokens for output in model.generate(requests)]  # each prompt's own tokens
    measured = gen.measure_prompt_tokens(task, model._encode)
    if cache == "static":  # padded to a multiple of 64 tokens, as the static cache's prompts are
        assert measured % 64 == 0 and max(lengths) <= measured < max(lengths) + 64
    else:
        assert measured == max(lengths)
    from harness.plugins.tiny_vlm import IMAGE_SIZE, PATCH_SIZE

    image_tokens = ((IMAGE_SIZE // PATCH_SIZE) ** 2 + 1) * len(task.samples()[0].images)
    assert measured > image_tokens


def test_the_runs_prompt_and_split_are_measured(tiny_llava):
    from harness.plugins import hf_generation as gen
    from harness.plugins.hf import HFModel

    task = Task(plugin_manager.tasks().get("phantom-vqa"))
    model = HFModel({"model": str(tiny_llava)}, ModelContext(task=task))
    default = gen.measure_prompt_tokens(task, model._encode)
    wordy = gen.measure_prompt_tokens(task, model._encode, template="{question} " + "Explain your answer. " * 20)
    assert wordy > default + 60  # a run with a longer --prompt variant gets its own length measured
    assert gen.measure_prompt_tokens(task, model._encode, split="train") is not None
    assert gen.measure_prompt_tokens(task, model._encode, split="no-such-split") is None  # a guess, no crash
