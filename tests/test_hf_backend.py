"""The `hf` backend on tiny random checkpoints built offline: batching, multi-image prompts, adapters,
captioners, presets and an end-to-end `harness run --model tiny-vlm`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import tiny_models

from harness import plugin_manager
from harness.errors import UserError
from harness.model_api import ModelContext
from harness.task import Task
from harness.types import GenerationSettings

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and a busy machine does not slow them down tenfold."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> dict[str, Path]:
    """Tiny checkpoints, built once for this module (the tiny-vlm cache goes where conftest puts caches)."""
    root = tmp_path_factory.mktemp("tiny-models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "harness-cache"))
        return {"llava": tiny_models.tiny_llava(root / "llava"),
                "ved": tiny_models.tiny_vision_encoder_decoder(root / "ved"),
                "blip": tiny_models.tiny_blip(root / "blip")}


def requests_for(task_id: str, n: int, settings: dict | None = None):
    task = Task(plugin_manager.tasks().get(task_id))
    _, template = task.prompt_template(None)
    generation = task.generation_settings(settings)
    samples = task.samples()[:n]
    return task, [task.build_request(s, template, generation, [r.open() for r in s.images]) for s in samples]


def hf_model(folder: Path, task: Task, adapter: Path | None = None, **args: str):
    from harness.plugins.hf import HFModel

    return HFModel({"model": str(folder), **args}, ModelContext(task=task, adapter=adapter))


def without_cut(details: dict | None) -> dict | None:
    """An output's details less `truncated` (a random tiny model's answers often take every token allowed)."""
    rest = {k: v for k, v in (details or {}).items() if k != "truncated"}
    return rest or None


def texts(outputs) -> list[str]:
    assert all(o.error is None for o in outputs), [o.error for o in outputs]
    return [o.text for o in outputs]


def test_batched_generation_equals_unbatched_and_keeps_request_order(models_dir):
    task, reqs = requests_for("phantom-vqa", 10)
    model = hf_model(models_dir["llava"], task)
    assert model.tokenizer.padding_side == "left"
    batched = model.generate(reqs)
    single = [model.generate([r])[0] for r in reqs]
    assert len({o.prompt_tokens for o in batched}) > 1, "the batch must mix prompt lengths"
    assert texts(batched) == texts(single)
    assert [o.completion_tokens for o in batched] == [o.completion_tokens for o in single]
    assert len(set(texts(batched))) > 5, "the tiny model should answer different prompts differently"
    reversed_out = model.generate(list(reversed(reqs)))
    assert texts(reversed_out) == list(reversed(texts(batched)))


def test_static_cache_and_micro_batches_give_the_same_answers(models_dir):
    task, reqs = requests_for("phantom-vqa", 7)
    reference = hf_model(models_dir["llava"], task).generate(reqs)
    static = hf_model(models_dir["llava"], task, cache="static")
    static.batcher.limit = 4  # micro-batches of 4 and 3 (padded to 4 with a repeat: one compiled shape)
    real_generate, sizes = static.model.generate, []
    static.model.generate = lambda **kw: sizes.append(len(kw["input_ids"])) or real_generate(**kw)
    outputs = static.generate(reqs)
    assert sizes == [4, 4]
    assert texts(outputs) == texts(reference)
    assert [o.prompt_tokens for o in outputs] == [o.prompt_tokens for o in reference]


def test_prefetched_next_call_gives_the_same_answers(models_dir):
    task, reqs = requests_for("phantom-vqa", 7)
    reference = texts(hf_model(models_dir["llava"], task).generate(reqs))
    model = hf_model(models_dir["llava"], task, cache="static")
    model.batcher.limit = 4
    encoded: list[str] = []
    real_encode = model._encode
    model._encode = lambda batch, processor=None: encoded.append(
        "ahead" if processor is model.ahead_encoder else "in call") or real_encode(batch, processor)
    model.prefetch(reqs)  # what the runner does while the call before this one generates
    assert texts(model.generate(reqs)) == reference
    assert encoded == ["ahead", "in call"], "the first micro-batch comes from the prefetch, the second not"
    encoded.clear()
    model.prefetch(reqs[:3])
    assert texts(model.generate([replace(r) for r in reqs[:3]])) == reference[:3]  # other requests: prepared anew
    assert "in call" in encoded
    model.prefetch([replace(r, images=[]) for r in reqs[:2]])  # prefetch work that fails is redone in the call
    assert texts(model.generate(reqs[:2])) == reference[:2]


def test_chunked_prefill_gives_the_same_answers(models_dir):
    task, reqs = requests_for("phantom-vqa", 6)
    reference = hf_model(models_dir["llava"], task, cache="static").generate(reqs)
    chunked = hf_model(models_dir["llava"], task, cache="static", prefill_chunk="16")
    lengths: list[int] = []
    chunked.model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    outputs = chunked.generate(reqs)
    assert texts(outputs) == texts(reference)
    assert lengths[0] == 16 and max(lengths) == 16, "the prompt went in 16-token chunks"
    assert chunked.identity()["prefill_chunk"] == 16
    with pytest.raises(UserError, match="prefill_chunk=big: expected a whole number"):
        hf_model(models_dir["llava"], task, prefill_chunk="big")


def test_two_images_per_sample_both_reach_the_model(models_dir):
    from PIL import Image

    task, reqs = requests_for("phantom-report", 3, {"max_new_tokens": 12})
    assert all(len(r.images) == 2 for r in reqs)
    model = hf_model(models_dir["llava"], task)
    two = model.generate(reqs)
    first_only = []
    for r in reqs:
        content = [p for p in r.messages[0]["content"] if p["type"] != "image"]
        first_only.append(replace(r, images=r.images[:1],
                                  messages=[{"role": "user", "content": [{"type": "image"}, *content]}]))
    one = model.generate(first_only)
    from harness.plugins.tiny_vlm import IMAGE_SIZE, PATCH_SIZE

    per_image = (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1  # image tokens and the newline after them
    assert [a.prompt_tokens - b.prompt_tokens for a, b in zip(two, one)] == [per_image] * 3
    flipped = [replace(r, images=[r.images[0], Image.new("RGB", (128, 128), "white")]) for r in reqs]
    assert texts(model.generate(flipped)) != texts(two), "the second view must change the report"


def test_out_of_memory_halves_the_batch_and_goes_on(models_dir):
    task, reqs = requests_for("phantom-vqa", 8)
    model = hf_model(models_dir["llava"], task)
    expected = texts(model.generate(reqs))
    real_generate = model.model.generate
    sizes = []

    def small_gpu(**kwargs):
        sizes.append(len(kwargs["input_ids"]))
        if len(kwargs["input_ids"]) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_generate(**kwargs)

    model.model.generate = small_gpu
    assert texts(model.generate(reqs)) == expected
    assert sizes[:3] == [8, 4, 2] and model.batcher.limit == 2 and model.batcher.halvings == 2
    assert model.identity()["micro_batch"] == 2

    def no_memory_at_all(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    model.model.generate = no_memory_at_all
    failed = model.generate(reqs[:2])
    assert [o.text for o in failed] == ["", ""] and all("out of memory" in o.error for o in failed)


def test_stop_strings_cut_the_answer(models_dir):
    task, reqs = requests_for("phantom-caption", 2)
    model = hf_model(models_dir["llava"], task)
    full = texts(model.generate(reqs))
    stop = full[0][5:9]
    settings = GenerationSettings(**{**reqs[0].generation.to_dict(), "stop": [stop]})
    cut = model.generate([replace(reqs[0], generation=settings)])[0].text
    assert cut == full[0][: full[0].index(stop)].strip()


def test_an_answer_that_reaches_the_token_limit_is_marked_truncated(models_dir):
    """A report cut at --max-new-tokens was kept and scored with no trace; it is marked on its line (and counted in
    the run's summary). An answer cut at a stop string is not."""
    task, reqs = requests_for("phantom-caption", 3, {"max_new_tokens": 6})
    model = hf_model(models_dir["llava"], task)
    outputs = model.generate(reqs)
    assert all(o.completion_tokens == 6 and o.details == {"truncated": True} for o in outputs), outputs
    longer = hf_model(models_dir["llava"], task).generate(requests_for("phantom-caption", 3, {"max_new_tokens": 12})[1])
    stop = texts(longer)[0][3:6]
    settings = GenerationSettings(**{**reqs[0].generation.to_dict(), "stop": [stop], "max_new_tokens": 12})
    cut = model.generate([replace(reqs[0], generation=settings)])[0]
    assert cut.text == texts(longer)[0][: texts(longer)[0].index(stop)].strip() and cut.details is None
    # an answer that ends by itself, even with its end-of-sequence token the last one allowed, is not cut
    model.eos_ids = set(range(len(model.tokenizer)))  # whatever comes first ends the answer
    for limit in (6, 1):
        ended = model.generate(requests_for("phantom-caption", 3, {"max_new_tokens": limit})[1])
        assert all(o.details is None and o.completion_tokens == 0 for o in ended), ended


def test_the_decoder_start_of_an_encoder_decoder_language_model_is_no_answer_token():
    """BLIP-2 / InstructBLIP with Flan-T5 return rows starting with T5's decoder-start id: it was counted as an
    answer token, and an answer ending exactly at the limit was marked truncated."""
    import torch
    from transformers import Blip2Config, GenerationConfig, LlavaConfig, T5Config

    from harness.plugins import hf_generation as gen
    from harness.types import GenerationSettings

    t5 = Blip2Config(text_config=T5Config(vocab_size=32, d_model=32, num_layers=1, num_heads=4,
                                          decoder_start_token_id=0).to_dict())
    skip = gen.leading_ids(t5, GenerationConfig(decoder_start_token_id=0, eos_token_id=1), "blip2")
    assert skip == {0} and gen.leading_ids(LlavaConfig(), GenerationConfig(bos_token_id=1), "chat") == set()

    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return " ".join(f"w{i}" for i in ids)

    rows = torch.tensor([[0, 5, 6, 7, 1], [0, 5, 6, 7, 8]])  # ended at the limit by itself; cut at the limit
    out = gen.decoded_outputs(rows, {}, Tok(), GenerationSettings(max_new_tokens=4), skip_leading=skip, eos={1})
    assert [(o.text, o.completion_tokens, o.details) for o in out] == [
        ("w5 w6 w7", 3, None), ("w5 w6 w7 w8", 4, {"truncated": True})]


def test_adapter_changes_outputs_and_merging_keeps_them(models_dir, tmp_path):
    task, reqs = requests_for("phantom-vqa", 6)
    adapter = tiny_models.lora_adapter(models_dir["llava"], tmp_path / "adapter")
    base = texts(hf_model(models_dir["llava"], task).generate(reqs))
    merged = hf_model(models_dir["llava"], task, adapter=adapter)
    unmerged = hf_model(models_dir["llava"], task, adapter=adapter, merge_adapter="false")
    assert type(unmerged.model).__name__ == "PeftModel" and type(merged.model).__name__ != "PeftModel"
    with_adapter = texts(merged.generate(reqs))
    assert with_adapter != base
    assert texts(unmerged.generate(reqs)) == with_adapter
    info = merged.identity()["adapter"]
    assert info["merged"] is True and info["probe_max_logit_change"] > 0
    # a DoRA adapter saves its magnitude vectors without ".weight": every tensor still counts as loaded
    dora = tiny_models.lora_adapter(models_dir["llava"], tmp_path / "dora", use_dora=True)
    assert texts(hf_model(models_dir["llava"], task, adapter=dora).generate(reqs)) != base


def test_adapter_matching_no_layer_is_a_user_error(models_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    task, _ = requests_for("phantom-vqa", 1)
    nothing = tiny_models.lora_adapter(models_dir["llava"], tmp_path / "a1")
    config = json.loads((nothing / "adapter_config.json").read_text())
    (nothing / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["not_a_layer"]}))
    with pytest.raises(UserError, match="adapter modules did not match any layer"):
        hf_model(models_dir["llava"], task, adapter=nothing)

    (nothing / "adapter_config.json").write_text('{"target_modules": ["q_proj",]}')  # a hand edit gone wrong
    with pytest.raises(UserError, match=r"adapter_config\.json: not valid JSON \(.* at line 1 column"):
        hf_model(models_dir["llava"], task, adapter=nothing)

    (nothing / "adapter_config.json").write_text(json.dumps({**config, "r": "eight"}))  # a value of a wrong type
    with pytest.raises(UserError, match=r"adapter_config\.json: a value PEFT cannot use"):
        hf_model(models_dir["llava"], task, adapter=nothing)

    # Module names that match but weight names with a wrapper prefix: PEFT only warns, the probe catches it.
    prefixed = tiny_models.lora_adapter(models_dir["llava"], tmp_path / "a2")
    weights = load_file(prefixed / "adapter_model.safetensors")
    renamed = {k.replace("base_model.model.", "base_model.model.llama_model."): v for k, v in weights.items()}
    save_file(renamed, prefixed / "adapter_model.safetensors")
    with pytest.raises(UserError, match=r"adapter modules did not match any layer.*unchanged.* \(saved as "
                                        r"base_model\.model\.llama_model\..*; this model's are named like "
                                        r"base_model\.model\.model\..*\) \(a wrapper prefix .* or an adapter of "
                                        r"another model\?\)"):
        hf_model(models_dir["llava"], task, adapter=prefixed)

    # Half the weights under a wrapper prefix: the other half changes the probe's logits, so the run went on with
    # half an adapter, recorded as the adapter's (PEFT's only sign was a raw UserWarning)
    half = tiny_models.lora_adapter(models_dir["llava"], tmp_path / "a4")
    weights = load_file(half / "adapter_model.safetensors")
    renamed = {(k.replace("base_model.model.", "base_model.model.wrapper.") if ".layers.0." in k else k): v
               for k, v in weights.items()}
    save_file(renamed, half / "adapter_model.safetensors")
    moved = sum(".layers.0." in k for k in weights)
    with pytest.raises(UserError, match=rf"a4 does not fit .*: {moved} of its {len(weights)} LoRA tensors match no "
                                        rf"module \(the first: base_model\.model\.wrapper\..*; {moved} of the "
                                        rf"{len(weights)} LoRA tensors of the layers it targets got no weights"):
        hf_model(models_dir["llava"], task, adapter=half)

    # weights of another rank than the config says, a damaged weights file, no weights, no peft_type: one line each
    other_rank = tiny_models.lora_adapter(models_dir["llava"], tmp_path / "a5")
    config = json.loads((other_rank / "adapter_config.json").read_text())
    (other_rank / "adapter_config.json").write_text(json.dumps({**config, "r": 4}))
    with pytest.raises(UserError, match=r"a5 does not fit .*: size mismatch for .*lora_A.* \(an adapter of another "
                                        r"model, or an adapter_config\.json of another rank\?\)"):
        hf_model(models_dir["llava"], task, adapter=other_rank)
    (other_rank / "adapter_config.json").write_text(json.dumps(config))
    (other_rank / "adapter_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"a5/adapter_model\.safetensors: not a readable safetensors file"):
        hf_model(models_dir["llava"], task, adapter=other_rank)
    (other_rank / "adapter_model.safetensors").unlink()
    with pytest.raises(UserError, match=r"a5: no adapter_model\.safetensors or adapter_model\.bin"):
        hf_model(models_dir["llava"], task, adapter=other_rank)
    (other_rank / "adapter_model.bin").write_bytes(b"garbage")  # a damaged pickle of the older format
    with pytest.raises(UserError, match=r"a5/adapter_model\.bin: not a readable PyTorch file"):
        hf_model(models_dir["llava"], task, adapter=other_rank)
    untyped = tiny_models.lora_adapter(models_dir["llava"], tmp_path / "a6")
    (untyped / "adapter_config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "peft_type"}))
    with pytest.raises(UserError, match=r"adapter_config\.json: field 'peft_type' is None; expected a PEFT"):
        hf_model(models_dir["llava"], task, adapter=untyped)

    # lora_alpha 0 scales every update to nothing: said as such, not blamed on module or weight names
    scaled_out = tiny_models.lora_adapter(models_dir["llava"], tmp_path / "a3")
    config = json.loads((scaled_out / "adapter_config.json").read_text())
    (scaled_out / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 0}))
    with pytest.raises(UserError, match=r"a3: lora_alpha is 0 in adapter_config\.json, which scales the adapter's "
                                        r"update to nothing"):
        hf_model(models_dir["llava"], task, adapter=scaled_out)


def test_an_adapter_trained_on_another_base_is_named_in_a_warning(models_dir, tmp_path, capsys):
    task, _ = requests_for("phantom-vqa", 1)
    adapter = tiny_models.lora_adapter(models_dir["llava"], tmp_path / "adapter")
    hf_model(models_dir["llava"], task, adapter=adapter)
    assert "warning:" not in capsys.readouterr().err  # its own base, by path
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "org/other"}))
    hf_model(models_dir["llava"], task, adapter=adapter)
    err = capsys.readouterr().err
    assert f"warning: --adapter {adapter} was trained on org/other (its adapter_config.json), not on " in err

    # harness finetune's manifest.json beside it records the base folder's contents: edited since is said
    from harness.file_digests import folder_fingerprint

    (adapter / "adapter_config.json").write_text(json.dumps(config))
    now = folder_fingerprint(models_dir["llava"])
    for recorded, warned in ((now, False), ("files-sha256:0123", False), ("content-sha256:0123456789abcdef", True)):
        (adapter / "manifest.json").write_text(json.dumps({"base_model": {"local_fingerprint": recorded}}))
        hf_model(models_dir["llava"], task, adapter=adapter)
        err = capsys.readouterr().err
        assert (f"warning: --adapter {adapter} was trained on {models_dir['llava']} when its files hashed "
                f"{recorded} (its manifest.json); they hash {now} now: edited since" in err) is warned, err
    # a base with a trainer's state file, recorded by a harness that still hashed it: not an edit
    state = models_dir["llava"] / "trainer_state.json"
    state.write_text("{}")
    try:
        older = folder_fingerprint(models_dir["llava"], leave_out=())
        assert older != now and folder_fingerprint(models_dir["llava"]) == now
        (adapter / "manifest.json").write_text(json.dumps({"base_model": {"local_fingerprint": older}}))
        hf_model(models_dir["llava"], task, adapter=adapter)
        assert "edited since" not in capsys.readouterr().err
    finally:
        state.unlink()


@pytest.mark.parametrize("name", ["ved", "blip"])
def test_captioners_batch_like_single_and_refuse_vqa(models_dir, name):
    task, reqs = requests_for("phantom-caption", 5)
    model = hf_model(models_dir[name], task)
    assert model.family == {"ved": "vision-encoder-decoder", "blip": "blip"}[name]
    batched = model.generate(reqs)
    assert texts(batched) == texts([model.generate([r])[0] for r in reqs])
    assert len(set(texts(batched))) > 1 and all(o.completion_tokens > 0 for o in batched)
    vqa_task, _ = requests_for("phantom-vqa", 1)
    with pytest.raises(UserError, match="cannot answer questions"):
        hf_model(models_dir[name], vqa_task)


def test_prepend_modality_adds_the_label_and_a_sample_without_one_is_asked_without_it(models_dir, capsys):
    task, reqs = requests_for("phantom-vqa", 4)
    plain = hf_model(models_dir["llava"], task).generate(reqs)
    model = hf_model(models_dir["llava"], task, prepend_modality="true")
    labelled = model.generate(reqs)
    label_tokens = [len(model.tokenizer(f"Imaging modality: {r.metadata['modality']}. ")["input_ids"])
                    for r in reqs]
    assert [b.prompt_tokens - a.prompt_tokens for a, b in zip(plain, labelled)] == label_tokens
    missing = replace(reqs[0], metadata={"question": "q"})
    # one sample without a label (a ROCOv2 image with no known modality concept) does not stop the run
    mixed = model.generate([replace(missing, id="no-label"), reqs[1]])
    assert mixed[0].prompt_tokens == plain[0].prompt_tokens and without_cut(mixed[0].details) == {
        "modality_label": None, "modality_from": "field modality"}
    assert mixed[1].details["modality_label"] == reqs[1].metadata["modality"]
    assert "sample 'no-label' has no modality in field 'modality' and is asked without the prefix" in \
        capsys.readouterr().err
    # predicted, as the ROCOv2 study did: a classifier fitted on the train split reads it from the image
    predicting = hf_model(models_dir["llava"], task, prepend_modality="predicted")
    prefixes = [predicting._prefix(r) for r in reqs]
    assert prefixes == [f"Imaging modality: {r.metadata['modality']}. " for r in reqs]  # the phantom ones: right
    assert predicting._prefix(missing) == prefixes[0]  # no field needed
    info = predicting.identity()["modality_classifier"]
    assert info["field"] == "modality" and info["heldout_accuracy"] >= 0.9
    # each output says which label its prompt was given (the predictions line's generation_details)
    details = [without_cut(o.details) for o in predicting.generate(reqs)]
    assert details == [{"modality_label": r.metadata["modality"], "modality_from": "classifier"} for r in reqs]
    assert [o.details for o in model.generate(reqs)][0]["modality_from"] == "field modality"
    assert without_cut(plain[0].details) is None and not predicting.modality_labels  # nothing kept once returned


def test_model_arg_mistakes_are_one_line_user_errors(models_dir):
    from harness.plugins.hf import HFModel
    from harness.plugins.hf_presets import get_preset

    task, _ = requests_for("phantom-vqa", 1)
    context = ModelContext(task=task)
    cases = [
        (HFModel, {}, "needs --model-args model="),
        (HFModel, {"model": str(models_dir["llava"]), "temperature": "1"}, "unknown to the hf backend"),
        (HFModel, {"model": str(models_dir["llava"]), "atn": "eager"}, r"atn unknown to the hf backend \(did you "
                                                                         r"mean 'attn'\?\); known:"),
        (HFModel.for_preset(get_preset("llava-1.5-7b")), {"model": "x"}, "another checkpoint use --model hf"),
        (HFModel, {"model": str(models_dir["llava"]), "cache": "huge"}, "cache=huge: expected one of"),
        (HFModel, {"model": str(models_dir["llava"]), "prepend_modality": "maybe"},
         r"true \(or known\), false or predicted"),
        (HFModel, {"model": "no-such-org/no-such-model"}, "no-such-org/no-such-model"),
        (HFModel, {"model": "/no/such/folder"}, "no such folder"),
    ]
    for cls, args, message in cases:
        with pytest.raises(UserError, match=message) as raised:
            cls(args, context)
        assert "\n" not in str(raised.value), "a user error is one line"
    with pytest.raises(UserError, match="--dtype int4"):
        HFModel({"model": str(models_dir["llava"])}, ModelContext(task=task, dtype="int4"))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            HFModel({"model": str(models_dir["llava"])}, ModelContext(task=task, device="cuda"))


def test_run_identity_names_checkpoint_revision_and_dtype_without_loading(models_dir, tmp_path):
    import shutil

    from harness.plugins.hf import HFModel
    from harness.plugins.hf_presets import get_preset

    preset_cls = HFModel.for_preset(get_preset("llava-1.5-7b"))
    identity = preset_cls.run_identity({}, ModelContext(dtype="bf16"))  # offline, no weights: nothing loaded
    assert identity["hub_id"] == "llava-hf/llava-1.5-7b-hf" and identity["dtype"] == "bfloat16"
    assert identity["revision"] == "b234b804b114d9e37bb655e11cbbb5f5e971b7a9"  # the preset's pinned commit
    other = preset_cls.run_identity({"revision": "0123abc"}, ModelContext())
    assert other["revision"] == "0123abc"  # another revision is another run
    copy = shutil.copytree(models_dir["llava"], tmp_path / "copy")
    local = HFModel.run_identity({"model": str(copy)}, ModelContext(device="cpu"))
    assert local["revision"] == "local" and local["dtype"] == "float32"
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # a changed weight gives another run id
    weights.write_bytes(bytes(data))
    changed = HFModel.run_identity({"model": str(copy)}, ModelContext())
    assert changed["local_fingerprint"] != local["local_fingerprint"]
    # a weight in the middle of a file over a few MiB (a LoRA merged into a middle layer and saved back), with the
    # file's modification time put back: another run id all the same
    big = copy / "extra.safetensors"
    big.write_bytes(bytes(12 << 20))
    before = HFModel.run_identity({"model": str(copy)}, ModelContext())["local_fingerprint"]
    stat = big.stat()
    with open(big, "r+b") as fh:
        fh.seek(6 << 20)
        fh.write(b"\x01")
    os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = HFModel.run_identity({"model": str(copy)}, ModelContext())["local_fingerprint"]
    assert after.startswith("content-sha256:") and after != before
    assert HFModel.run_identity({"model": str(copy)}, ModelContext())["local_fingerprint"] == after  # cached


def test_preset_that_cannot_load_names_its_pinned_commit_and_cli_exits_with_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # nothing cached: cannot load
    out = subprocess.run([sys.executable, "-m", "harness", "run", "--model", "qwen2-vl-2b", "--task", "phantom-vqa",
                          "--limit", "2", "--judge", "exact", "--out", str(tmp_path / "runs")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    error = out.stderr.strip().splitlines()[-1]
    assert "Qwen/Qwen2-VL-2B-Instruct" in error and "895c3a49bc3fa70a340399125c650a463535e71c" in error
    # offline, the revision's files are not in the hub cache: how to get them (revision=main would not help)
    assert "hf download Qwen/Qwen2-VL-2B-Instruct --revision 895c3a" in error


def test_pin_note_only_for_branches_and_tags():
    from harness.plugins.hf_presets import pin_note

    assert pin_note("main") is not None and "revision=<40-hex sha>" in pin_note("main")
    assert pin_note("v1.0") is not None
    assert pin_note("b234b804b114d9e37bb655e11cbbb5f5e971b7a9") is None


def test_presets_register_without_heavy_imports():
    code = ("import sys, json; from harness.plugins import hf_presets as p; infos = p.model_infos(); "
            "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
            "print(json.dumps({'heavy': heavy, 'infos': [i.describe() for i in infos]}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert data["heavy"] == []
    by_id = {i["id"]: i for i in data["infos"]}
    for preset_id, hub_id in [("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf"),
                              ("qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct"),
                              ("vit-gpt2", "nlpconnect/vit-gpt2-image-captioning"),
                              ("blip2-opt-2.7b", "Salesforce/blip2-opt-2.7b")]:
        caps = by_id[preset_id]["capabilities"]
        assert caps["hub_id"] == hub_id
    for info in data["infos"]:  # every preset pins a full commit sha
        caps = info["capabilities"]
        if "hub_id" in caps and info["id"] not in ("hf", "tiny-vlm"):
            assert re.fullmatch(r"[0-9a-f]{40}", caps["revision"]), info["id"]
    assert by_id["vit-gpt2"]["capabilities"]["task_kinds"] == ["caption", "report"]
    assert {"hf", "tiny-vlm"} <= set(by_id)


def test_tiny_vlm_build_is_deterministic(tmp_path):
    from harness.plugins.tiny_vlm import ensure_tiny_vlm

    first, second = ensure_tiny_vlm(tmp_path / "a", "random"), ensure_tiny_vlm(tmp_path / "b", "random")
    for name in ("tokenizer.json", "model.safetensors", "config.json", "chat_template.jinja"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert ensure_tiny_vlm(tmp_path / "a", "random") == first
    leftovers = [p.name for p in (tmp_path / "a" / "tiny-vlm").iterdir()]
    assert leftovers == [first.name], "no temporary folder is left behind"


@pytest.mark.slow
def test_harness_run_tiny_vlm_end_to_end(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["run", "--model", "tiny-vlm", "--model-args", "base=random", "--task", "phantom-vqa", "--limit", "20",
            "--judge", "exact",
            "--output", str(out), "--no-progress"]
    proc = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and all(r["error"] is None for r in rows)
    assert all(r["prompt_tokens"] > 16 and r["completion_tokens"] >= 0 for r in rows)  # 16 image tokens + text
    loaded = json.loads((out / "model.json").read_text())["identity"]
    assert loaded["hub_id"] == "tiny-vlm" and loaded["padding_side"] == "left"
    assert loaded["model_class"] == "LlavaForConditionalGeneration"
    results = json.loads((out / "results.json").read_text())
    assert results["task"]["n"] == 20


def test_settings_a_captioner_or_this_machine_cannot_honour_are_one_line_errors(models_dir):
    """prepend_modality on a BLIP/ViT-GPT2 captioner changed nothing (they take no prompt) yet labelled the run as
    using it; --device mps/xpu/meta on a machine without them were tracebacks from torch."""
    from harness.plugins.hf_presets import resolve_device

    task = Task(plugin_manager.tasks().get("phantom-caption"))
    for family in ("blip", "ved"):
        for value in ("true", "predicted"):
            with pytest.raises(UserError, match=rf"prepend_modality={value}: .* captioner, which takes no prompt"):
                hf_model(models_dir[family], task, prepend_modality=value)
    for device, expected in (("meta", "expected cpu, cuda, cuda:N or mps"), ("xpu", "no Intel XPU device"),
                             ("mps", "no Apple MPS device")):
        if device == "mps" and torch.backends.mps.is_available():
            continue
        with pytest.raises(UserError, match=f"^--device {device}: {expected}"):
            resolve_device(device)


def test_a_wrong_family_a_missing_backend_and_an_uncached_preset_say_what_to_do(models_dir, monkeypatch):
    """family=blip on a LLaVA checkpoint and image_backend=torchvision without torchvision were tracebacks or a
    silent PIL run recorded as torchvision; a preset not in the hub cache offline was told to try revision=main."""
    import importlib.util

    from harness.plugins.hf import HFModel
    from harness.plugins.hf_presets import get_preset

    task = Task(plugin_manager.tasks().get("phantom-caption"))
    with pytest.raises(UserError, match=r"^--model-args family=blip: .*llava is a chat checkpoint \(its "
                                        r"config\.json\); expected family=chat or auto$"):
        hf_model(models_dir["llava"], task, family="blip")
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(UserError, match="image_backend=torchvision: torchvision is not installed"):
            hf_model(models_dir["llava"], task, image_backend="torchvision")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preset = get_preset("llava-1.5-7b")
    with pytest.raises(UserError) as err:
        HFModel.for_preset(preset)({}, ModelContext(task=task, device="cpu"))
    message = str(err.value)
    assert message.startswith(f"cannot load model {preset.hub_id} at revision {preset.revision}: ")
    assert message.endswith(f"fetch them where there is internet (hf download {preset.hub_id} "
                            f"--revision {preset.revision}), or give a folder: --model hf --model-args model=DIR")
    assert "revision=main" not in message


def test_a_single_image_model_says_it_uses_the_first_of_several_views(models_dir, capsys):
    """A BLIP or ViT-GPT2 captioner given IU-Xray's two views used the first one silently; the run recorded both."""
    from dataclasses import replace

    from PIL import Image

    task, reqs = requests_for("phantom-caption", 3)
    model = hf_model(models_dir["ved"], task)
    two = [replace(r, images=[r.images[0], Image.new("RGB", (64, 64), "white")]) for r in reqs]
    assert texts(model.generate(two)) == texts(model.generate(reqs))  # the second view is not seen
    err = capsys.readouterr().err
    assert err.count("which takes one image: samples with several") == 1 and f"(the first: {reqs[0].id}, 2" in err
    assert model.identity()["images_per_sample"] == "the first only"


def test_settings_that_would_only_change_the_run_id_are_refused(models_dir):
    """revision= on a local folder and modality_field= without prepend_modality changed nothing but started
    another run (and leaderboard row) of the same outputs."""
    task = Task(plugin_manager.tasks().get("phantom-caption"))
    with pytest.raises(UserError, match=r"^--model-args revision=abc: model=.* is a local folder, which has no hub "
                                        r"revisions; drop revision$"):
        hf_model(models_dir["llava"], task, revision="abc")
    with pytest.raises(UserError, match="modality_field=organ is read only with prepend_modality=true or predicted"):
        hf_model(models_dir["llava"], task, modality_field="organ")


def test_typed_out_defaults_keep_the_run_id_and_label(models_dir, tmp_path, monkeypatch):
    """attn=auto, prepend_modality=false, the preset's own revision, merge_adapter= without an adapter, the family
    the checkpoint is (a run goes on only then), or one local folder typed another way started another run (and
    leaderboard row) of the same outputs."""
    from harness import runner
    from harness.plugins.hf_presets import get_preset

    def prepared(model: str = "hf", **args: str) -> dict:
        spec = runner.RunSpec(model=model, task="phantom-vqa", output=tmp_path / "run", progress=False,
                              model_args=({"model": str(models_dir["llava"])} if model == "hf" else {}) | args)
        return runner.prepare(spec)[2]

    plain = prepared()
    typed = prepared(attn="auto", prepend_modality="false", cache="auto", image_backend="pil", merge_adapter="true",
                     min_new_tokens="0", prefill_chunk="0", family="chat")  # the family its config.json says
    assert typed["run_id"] == plain["run_id"] and typed["model"]["label"] == plain["model"]["label"]
    assert typed["model"]["args"]["attn"] == "auto"  # what was typed is still recorded
    other = prepared(attn="eager")
    assert other["run_id"] != plain["run_id"] and "attn=eager" in other["model"]["label"]
    # one flag in several spellings (known is the same as true) is one run
    spellings = {prepared(prepend_modality=v)["run_id"] for v in ("true", "known", "TRUE", "yes")}
    assert len(spellings) == 1 and spellings != {plain["run_id"]}
    monkeypatch.chdir(models_dir["llava"].parent)  # the same folder typed relative, with ./, and absolute
    for typed_path in ("llava", "./llava", f"{models_dir['llava'].parent}/./llava"):
        spec = runner.RunSpec(model="hf", task="phantom-vqa", output=tmp_path / "run", progress=False,
                              model_args={"model": typed_path})
        again = runner.prepare(spec)[2]
        assert again["run_id"] == plain["run_id"] and again["model"]["label"] == plain["model"]["label"]
    assert plain["model"]["label"] == f"hf[model={models_dir['llava'].resolve()}]"
    preset = get_preset("llava-1.5-7b")
    own = prepared(preset.id, revision=preset.revision)
    assert own["run_id"] == prepared(preset.id)["run_id"] and own["model"]["label"] == preset.id


def test_sampled_answers_do_not_depend_on_the_batch(models_dir):
    """With --temperature > 0 each micro-batch was seeded once, so a sample's draws depended on --batch-size and
    on the samples beside it; each sample now has its own generator (seed, sample id)."""
    task, reqs = requests_for("phantom-vqa", 6, {"temperature": 1.5, "do_sample": True, "seed": 3})
    model = hf_model(models_dir["llava"], task)
    batched = texts(model.generate(reqs))
    assert texts([model.generate([r])[0] for r in reqs]) == batched
    assert texts(model.generate(list(reversed(reqs)))) == list(reversed(batched))
    _, greedy = requests_for("phantom-vqa", 6)
    assert batched != texts(model.generate(greedy)), "the draws must differ from greedy decoding"
    _, reseeded = requests_for("phantom-vqa", 6, {"temperature": 1.5, "do_sample": True, "seed": 4})
    assert texts(model.generate(reseeded)) != batched, "another --seed draws otherwise"
    assert "independent of the batch" in model.identity()["sampling_seed"]
    assert "sampling" in type(model).run_identity({"model": str(models_dir["llava"])},
                                                  ModelContext(generation=reqs[0].generation))


def test_tiny_vlm_keeps_its_base_in_the_run_id_and_label(tmp_path):
    """base= is tiny-vlm's own arg: the hf backend's canonical args refused it (the README's demo command failed)."""
    from harness import runner

    def prepared(**args: str) -> dict:
        spec = runner.RunSpec(model="tiny-vlm", task="phantom-vqa", output=tmp_path / "run", progress=False,
                              model_args=args)
        return runner.prepare(spec)[2]

    plain, random_base = prepared(), prepared(base="random")
    assert random_base["model"]["label"] == "tiny-vlm[base=random]" and random_base["run_id"] != plain["run_id"]
    typed = prepared(base="pretrained", attn="auto")
    assert typed["run_id"] == plain["run_id"] and typed["model"]["label"] == "tiny-vlm"


def test_the_checkpoints_own_sampling_and_penalty_defaults_are_not_applied(models_dir, tmp_path):
    """transformers fills every generation setting left at its default from the checkpoint's generation_config.json,
    so a checkpoint's repetition_penalty (Qwen2-VL ships 1.05) changed 'greedy' answers; only token ids are kept."""
    import shutil

    task, reqs = requests_for("phantom-vqa", 6)
    plain = texts(hf_model(models_dir["llava"], task).generate(reqs))
    penalised = shutil.copytree(models_dir["llava"], tmp_path / "penalised")
    config = json.loads((penalised / "generation_config.json").read_text())
    config.update(repetition_penalty=5.0, no_repeat_ngram_size=1, top_k=1)
    (penalised / "generation_config.json").write_text(json.dumps(config))
    model = hf_model(penalised, task)
    assert texts(model.generate(reqs)) == plain
    assert model.model.generation_config.repetition_penalty == 5.0  # put back: a model saved later keeps it
    ignored = model.identity()["checkpoint_generation_ignored"]
    assert ignored["repetition_penalty"] == 5.0 and ignored["no_repeat_ngram_size"] == 1
    # BLIP generates through its text decoder, BLIP-2 through its language model: their own configs count too
    from harness.plugins.hf_generation import tokens_only

    caption_task, _ = requests_for("phantom-caption", 1)
    from harness.plugins.hf_generation import token_ids_only

    blip = hf_model(models_dir["blip"], caption_task).model
    blip.text_decoder.generation_config.repetition_penalty = 5.0
    with token_ids_only(blip):
        configs = [m.generation_config for m in blip.modules() if getattr(m, "generation_config", None) is not None]
        assert len(configs) >= 2 and all(tokens_only(c)[1] == {} for c in configs)
    assert blip.text_decoder.generation_config.repetition_penalty == 5.0


def test_a_prompt_variant_a_captioner_never_reads_is_said(models_dir, capsys):
    """BLIP and ViT-GPT2 caption without a prompt (BLIP-2 asks its own "Question: ... Answer:"): --prompt another
    variant was recorded as what the model was asked, without a word."""
    from harness.plugins.hf import HFModel

    task = Task(plugin_manager.tasks().get("phantom-caption"))
    variants = [name for name in task.config.prompts if name != task.prompt_template(None)[0]]
    for variant, warned in ((None, False), (variants[0], True)):
        template = task.prompt_template(variant)[1]
        HFModel({"model": str(models_dir["blip"])}, ModelContext(task=task, prompt_template=template))
        assert ("warning: the prompt template is not read by blip models" in capsys.readouterr().err) == warned
