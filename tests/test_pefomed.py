"""The `pefomed` model on a tiny configuration of the real architecture: prompts, generation, CLI, training.

Weights, key mapping and conversion are tested in test_pefomed_weights.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_pefomed import convert, make_checkpoint_state, save_checkpoint

from harness import plugin_manager
from harness.errors import UserError
from harness.model_api import ModelContext
from harness.paths import cache_dir
from harness.plugins import pefomed_arch as arch
from harness.plugins.pefomed import PeFoMedModel
from harness.task import Task

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load(pefomed_tiny, adapter: Path | None = None, **args: str) -> PeFoMedModel:
    return PeFoMedModel(pefomed_tiny.model_args(**args), ModelContext(adapter=adapter, cache_dir=cache_dir()))


@pytest.fixture(scope="module")
def phantom():
    task = Task(plugin_manager.tasks().get("phantom-vqa"))
    _, template = task.prompt_template("pefomed")
    settings = task.generation_settings({"max_new_tokens": 8})
    samples = task.samples("test")[:8]
    requests = [task.build_request(s, template, settings, [ref.open() for ref in s.images]) for s in samples]
    return samples, requests


@pytest.fixture(scope="module")
def model(pefomed_tiny):
    return load(pefomed_tiny)


def texts(outputs) -> list[str]:
    assert all(o.error is None for o in outputs)
    return [o.text for o in outputs]


# ---- architecture pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "kind", "process", "expected"),
    [
        (
            "[vqa] Based on the image, respond to this question with a short answer: Is there an (aortic) "
            "aneurysm?",
            "vqa",
            True,
            "[vqa] based on the image, respond to this question with a short answer is there an aortic "
            "aneurysm?",
        ),
        (
            "Write the findings section of the radiology report.",
            "report",
            True,
            "[report] write the findings section of the radiology report",
        ),
        ("What is shown? Answer: one word.", "caption", False, "[caption] What is shown? Answer: one word."),
        (
            "[caption]  Briefly describe ~this~ image!!",
            "caption",
            True,
            "[caption] briefly describe this image",
        ),
    ],
)
def test_instruction_tags_and_pefomed_text_processing(prompt, kind, process, expected):
    assert arch.instruction_for(prompt, kind, process) == expected


def test_text_processor_keeps_fifty_words_and_prompt_layout():
    assert arch.pefomed_text(" ".join(f"w{i}" for i in range(60))) == " ".join(f"w{i}" for i in range(50))
    assert arch.prompt_segments("[vqa] q", 1) == ["[INST] <Img>", "</Img> [vqa] q [/INST]"]
    assert arch.prompt_segments("[report] r", 2) == [
        "[INST] <Img>",
        "</Img> <Img>",
        "</Img> [report] r [/INST]",
    ]


def test_image_transform_is_deterministic_resize_and_clip_normalization(model):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    px = model.pixel_values([img, img.convert("L").convert("RGB"), img])
    assert px.shape == (3, 3, 224, 224)
    assert torch.equal(px[0], px[2])
    manual = np.asarray(img.resize((224, 224), Image.BICUBIC), dtype=np.float32) / 255.0
    manual = (manual - np.array(arch.CLIP_MEAN, dtype=np.float32)) / np.array(arch.CLIP_STD, dtype=np.float32)
    assert np.allclose(px[0].permute(1, 2, 0).numpy(), manual, atol=1e-5)


def test_embed_requests_splices_bos_text_and_image_embeddings(model, phantom):
    _, requests = phantom
    request = requests[0]
    [embeds] = model.embed_requests([request])
    [[before, after]] = model.prompt_ids([request])
    table = model.net.embedding_layer()
    with torch.no_grad():
        image = model.net.encode_images(model.pixel_values(request.images))[0]
        expect = torch.cat([table(torch.tensor([model.bos_id] + before)), image, table(torch.tensor(after))])
    assert image.shape == (64, 64)  # 16x16 patches grouped by 4
    assert embeds.shape == (1 + len(before) + 64 + len(after), 64)
    assert torch.equal(embeds, expect)
    question = arch.pefomed_text(request.metadata["question"])
    assert model.tokenizer.decode(after).endswith(f"{question} [/INST]")


# ---- loading and generation ------------------------------------------------------------------------------


def test_checkpoint_and_converted_directory_give_identical_generations(pefomed_tiny, pefomed_converted, model, phantom):
    _, requests = phantom
    from_checkpoint = model.generate(requests)
    from_adapter = load(pefomed_tiny, adapter=pefomed_converted, checkpoint="").generate(requests)
    assert texts(from_checkpoint) == texts(from_adapter)
    assert [o.completion_tokens for o in from_checkpoint] == [o.completion_tokens for o in from_adapter]
    assert all(o.prompt_tokens > 64 for o in from_checkpoint)


def test_answers_that_reach_the_token_limit_are_marked_and_finished_ones_are_not(model, phantom):
    """An answer cut at max_new_tokens (no stop id, no stop string) is marked on its predictions line; one that
    stopped earlier by itself is not (the runner counts the marked ones in the run's summary)."""
    _, requests = phantom
    outputs = model.generate(requests)
    for out in outputs:
        assert out.details in (None, {"truncated": True})
        if out.completion_tokens < 8:  # stopped by itself (its stop id counted)
            assert out.details is None, out
    cut = [o for o in outputs if o.details]
    assert cut and all(o.completion_tokens == 8 for o in cut)
    from dataclasses import replace

    saved = model.stop_ids
    model.stop_ids = list(range(len(model.tokenizer)))  # whatever comes first ends the answer, at step 1 of 8 or 1
    try:
        for limit in (8, 1):
            settings = replace(requests[0].generation, max_new_tokens=limit)
            ended = model.generate([replace(r, generation=settings) for r in requests])
            assert all(o.details is None for o in ended), [(o.completion_tokens, o.details) for o in ended]
    finally:
        model.stop_ids = saved


def test_lora_changes_the_output_and_unmerged_equals_merged(pefomed_tiny, model, phantom, tmp_path):
    _, requests = phantom
    zero = save_checkpoint(tmp_path / "zero_b.pth", make_checkpoint_state(zero_b=True, peft_default=True))
    base = texts(load(pefomed_tiny, checkpoint=str(zero)).generate(requests))
    adapted = texts(model.generate(requests))
    assert sum(a != b for a, b in zip(base, adapted)) >= len(requests) // 2
    assert texts(load(pefomed_tiny, merge="false").generate(requests)) == adapted


def test_batched_generation_equals_one_by_one_and_static_cache_equals_dynamic(pefomed_tiny, model, phantom):
    _, requests = phantom
    batched = texts(model.generate(requests))
    assert batched[:4] == [texts(model.generate([r]))[0] for r in requests[:4]]
    static = load(pefomed_tiny, cache="static", compile="false")
    assert texts(static.generate(requests)) == batched
    assert texts(static.generate(requests[:3])) == batched[:3]  # the kept cache is for another batch size
    # a kept cache long enough for a shorter prompt is reused (no new cache, no recompiled step), same answers
    by_length = sorted(requests, key=lambda r: static.embed_requests([r])[0].shape[0], reverse=True)
    static.decoder.bucket = 1  # every prompt length its own bucket
    static.generate(by_length[:1])
    kept = static.decoder._static[2]
    assert texts(static.generate(by_length[-1:])) == texts(model.generate(by_length[-1:]))
    assert static.decoder._static[2] is kept

    def broken_compiled_step(**inputs):
        raise RuntimeError("inductor failed")

    static.decoder.compile, static.decoder._step = True, broken_compiled_step
    with pytest.warns(UserWarning, match="compiled decoding failed .* eager"):
        assert texts(static.generate(requests)) == batched
    assert static.decoder.compile is False

    def out_of_memory_step(**inputs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    # out of memory in the compiled step is not a compiler failure: halved down to one sample, then an error
    static.decoder.compile, static.decoder._step = True, out_of_memory_step
    outputs = static.generate(requests[:2])
    assert [o.error for o in outputs] == ["CUDA out of memory for this sample"] * 2
    assert static.decoder.compile is True


def test_images_transformed_ahead_by_prefetch_give_the_same_answers(model, phantom):
    import threading

    _, requests = phantom
    reference = texts(model.generate(requests))
    calls: list[tuple[str, int]] = []
    real = model._arrays
    model._arrays = lambda images: calls.append((threading.current_thread().name, len(images))) or real(images)
    try:
        model.prefetch(requests)  # what the runner does while the call before this one generates
        assert texts(model.generate(requests)) == reference
    finally:
        del model._arrays
    main = threading.current_thread().name
    ahead = [n for thread, n in calls if thread != main]
    assert ahead == [len(requests)], "every image was transformed on the prefetch thread"
    assert all(n == 0 for thread, n in calls if thread == main), "and none again in the call"


def test_embed_only_gives_the_same_embeddings_without_the_llm(pefomed_tiny, pefomed_converted, model, phantom):
    _, requests = phantom
    light = load(pefomed_tiny, adapter=pefomed_converted, checkpoint="", embed_only="true")
    assert light.decoder is None and light.adapter_path == pefomed_converted and light.llm_path == pefomed_tiny.llm_dir
    for a, b in zip(light.embed_requests(requests[:3]), model.embed_requests(requests[:3])):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="embed_only=true"):
        light.generate(requests[:1])
    assert load(pefomed_tiny, embed_only="true").adapter_path.joinpath("adapter_config.json").is_file()


def test_sampled_answers_do_not_depend_on_the_batch(model, phantom):
    """One generator per batch made a sample's draws depend on --batch-size; each sample now has its own."""
    from dataclasses import replace

    _, requests = phantom
    sampled = [replace(r, generation=replace(r.generation, do_sample=True, temperature=1.5, seed=5))
               for r in requests[:5]]
    batched = texts(model.generate(sampled))
    assert [texts(model.generate([r]))[0] for r in sampled] == batched
    assert texts(model.generate(sampled[::-1])) == batched[::-1]
    assert batched != texts(model.generate(requests[:5])), "the draws must differ from greedy decoding"


def test_out_of_memory_halves_the_batch(model, phantom, monkeypatch):
    _, requests = phantom
    expected = texts(model.generate(requests))
    real = model._generate_batch
    sizes = []

    def small_memory(batch):
        sizes.append(len(batch))
        if len(batch) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(batch)

    monkeypatch.setattr(model, "_generate_batch", small_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    assert texts(model.generate(requests)) == expected
    assert sizes == [8, 4, 2, 2, 4, 2, 2]


def test_sampling_is_reproducible_per_seed(model, phantom):
    from dataclasses import replace

    _, requests = phantom

    def sampled(seed: int) -> list[str]:
        settings = replace(requests[0].generation, do_sample=True, temperature=1.0, seed=seed)
        return texts(model.generate([replace(r, generation=settings) for r in requests]))

    greedy = texts(model.generate(requests))
    assert sampled(3) == sampled(3)
    assert sampled(3) != sampled(4) and sampled(3) != greedy


def test_stop_strings_cut_the_answer_before_them(model, phantom):
    from dataclasses import replace

    _, requests = phantom
    greedy = texts(model.generate(requests[:2]))
    word = next(t.split()[1] for t in greedy if len(t.split()) > 2)  # a word from inside an answer
    settings = replace(requests[0].generation, stop=["", word])
    cut = texts(model.generate([replace(r, generation=settings) for r in requests[:2]]))
    assert cut == [t[:t.index(word)].strip() if word in t else t for t in greedy] and cut != greedy


def test_decoder_matches_transformers_generate(model, phantom):
    _, requests = phantom
    embeds = model.embed_requests(requests[:4])
    width = max(e.shape[0] for e in embeds)
    padded = torch.zeros(4, width, 64)
    mask = torch.zeros(4, width, dtype=torch.long)
    for i, e in enumerate(embeds):
        padded[i, width - e.shape[0] :], mask[i, width - e.shape[0] :] = e, 1
    assert len({e.shape[0] for e in embeds}) > 1  # the batch really is padded
    with torch.no_grad():
        reference = model.net.llm.generate(
            inputs_embeds=padded, attention_mask=mask, max_new_tokens=10, min_new_tokens=10, do_sample=False
        )
    ours = model.decoder.generate(padded, mask, max_new_tokens=10, min_new_tokens=10, stop_ids=model.stop_ids)
    assert ours.tokens == reference.tolist()


# ---- errors ----------------------------------------------------------------------------------------------


def test_loading_mistakes_are_one_line_errors(pefomed_tiny, pefomed_converted, tmp_path):
    with pytest.raises(UserError, match="either checkpoint=... or --adapter"):
        load(pefomed_tiny, adapter=pefomed_converted)
    lacking = tmp_path / "no_projection"
    lacking.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (lacking / name).write_bytes((pefomed_converted / name).read_bytes())
    with pytest.raises(UserError, match="lacks projection.safetensors"):
        load(pefomed_tiny, adapter=lacking, checkpoint="")
    wide = make_checkpoint_state()
    wide["llama_proj.weight"] = torch.zeros(64, 256)
    with pytest.raises(UserError, match=r"need \(64, 128\)"):
        load(pefomed_tiny, checkpoint=str(save_checkpoint(tmp_path / "wide.pth", wide)))
    with pytest.raises(UserError, match="does not take --model-args temprature; it takes llm, llm_revision, "):
        load(pefomed_tiny, temprature="0")
    with pytest.raises(UserError, match=r"does not take --model-args dtype \(--dtype is a flag of harness run\)"):
        load(pefomed_tiny, dtype="float32")
    for value in ("nan", "inf", "x"):  # NaN made every LoRA output NaN; "x" was a traceback
        with pytest.raises(UserError, match=f"^--model-args lora_alpha={value}: expected a finite number >= 0$"):
            load(pefomed_tiny, lora_alpha=value)
    with pytest.raises(UserError, match="already holds a converted checkpoint"):
        convert(str(pefomed_tiny.checkpoint_path), "--out", str(pefomed_converted))
    bad_config = tmp_path / "vision_config.json"
    bad_config.write_text('{"hidden_size": "x"}')
    with pytest.raises(UserError, match="vision_config=.*: not a valid EVA-ViT config"):
        load(pefomed_tiny, vision_config=str(bad_config))
    not_causal = tmp_path / "not_causal"
    shutil.copytree(pefomed_tiny.llm_dir, not_causal)
    (not_causal / "config.json").write_text('{"model_type": "vit", "hidden_size": 64, "num_hidden_layers": 1, '
                                            '"num_attention_heads": 4, "intermediate_size": 128}')
    with pytest.raises(UserError, match="llm=.*: not a causal language model"):
        load(pefomed_tiny, llm=str(not_causal))
    partial = {k: v for k, v in make_checkpoint_state().items() if ".layers.1." not in k}  # LoRA on layer 0 only
    partial_path = save_checkpoint(tmp_path / "partial.pth", partial)
    with pytest.raises(UserError, match=r"lacks LoRA weights for 4 of the 8 LoRA tensors of LLM .*: "
                                        r"llama_model\.base_model\.model\.model\.layers\.1\.self_attn\.q_proj\.lora_A\.weight"):
        load(pefomed_tiny, checkpoint=str(partial_path))  # named as in the checkpoint, not with PEFT's '.default'
    assert convert(str(partial_path), "--out", str(tmp_path / "partial")) == 0
    with pytest.raises(UserError, match=r"does not fit LLM .*: 4 of its 8 LoRA tensors are missing \(base_model"):
        load(pefomed_tiny, adapter=tmp_path / "partial", checkpoint="")  # no '0 tensors match no module ()'
    with pytest.raises(UserError, match="^--model-args attn=bogus: expected sdpa, eager, flash_attention_2$"):
        load(pefomed_tiny, attn="bogus")  # was transformers' ValueError traceback
    with pytest.raises(UserError, match="llm_revision=abc: llm=.* is a local folder, which has no hub revisions"):
        load(pefomed_tiny, llm_revision="abc")  # was accepted, another run id of identical answers


def test_files_of_another_model_or_no_model_at_all_are_one_line_errors(pefomed_tiny, tmp_path):
    """Three inputs still ended in a 50-line traceback: a text file named .pth (whose bytes parse as a pickle of
    nothing), an EVA file of another width (ViT-L given for ViT-g) and an adapter converted for a wider LLM."""
    from tiny_pefomed import make_eva_state

    notes = tmp_path / "notes.pth"
    notes.write_text("this is not a checkpoint\n")
    for arg in ("checkpoint", "vision"):
        with pytest.raises(UserError, match=rf"{notes} cannot be read by torch.load \(not a PyTorch checkpoint\?"):
            load(pefomed_tiny, **{arg: str(notes)})
    wider = tmp_path / "eva_wider.pth"
    torch.save({k: torch.cat([v, v[..., :16]], -1) if v.dim() and v.shape[-1] == 32 else v
                for k, v in make_eva_state().items()}, wider)
    with pytest.raises(UserError, match=rf"^vision weights {wider} do not fit the EVA encoder of .*vision_config\.json "
                                        r"\(hidden size 32, \d+ blocks\): size mismatch for "):
        load(pefomed_tiny, vision=str(wider))
    g = torch.Generator().manual_seed(3)
    wide = {"llama_proj.weight": torch.randn(128, 128, generator=g), "llama_proj.bias": torch.randn(128, generator=g)}
    for layer in range(2):
        for proj in ("q_proj", "v_proj"):
            base = f"llama_model.base_model.model.model.layers.{layer}.self_attn.{proj}"
            wide[f"{base}.lora_A.weight"] = torch.randn(64, 128, generator=g)
            wide[f"{base}.lora_B.weight"] = torch.randn(128, 64, generator=g)
    assert convert(str(save_checkpoint(tmp_path / "wide.pth", wide)), "--out", str(tmp_path / "wide")) == 0
    with pytest.raises(UserError, match=rf"^--adapter {tmp_path / 'wide'} does not fit LLM .*size mismatch"):
        load(pefomed_tiny, adapter=tmp_path / "wide", checkpoint="")
    from harness.plugins.pefomed_load import _state_dict_mismatch  # a GPU out of memory is not "does not fit"

    assert not _state_dict_mismatch(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))


def test_the_default_llm_is_a_pinned_commit_and_enters_the_run_identity(pefomed_tiny, monkeypatch, tmp_path):
    from harness.plugins.pefomed import DEFAULT_LLM_REVISION

    assert len(DEFAULT_LLM_REVISION) == 40
    identity = PeFoMedModel.run_identity({"vision": "eva.pth"}, ModelContext())
    assert identity["llm_revision"] == DEFAULT_LLM_REVISION
    other = PeFoMedModel.run_identity({"llm": "me/llama", "vision": "eva.pth"}, ModelContext())
    assert other["llm_revision"] == "main"
    assert "llm_revision" not in PeFoMedModel.run_identity({"llm": str(tmp_path), "vision": "x"}, ModelContext())
    # a local LLM folder and the vision file enter it by their content: edited in place, another run
    llm, vision = tmp_path / "llm", tmp_path / "eva.pth"
    llm.mkdir()
    (llm / "model.safetensors").write_bytes(bytes(64))
    vision.write_bytes(bytes(32))
    first = PeFoMedModel.run_identity({"llm": str(llm), "vision": str(vision)}, ModelContext())
    (llm / "model.safetensors").write_bytes(bytes(63) + b"\x01")
    vision.write_bytes(bytes(31) + b"\x01")  # the same size: its name and size said nothing
    second = PeFoMedModel.run_identity({"llm": str(llm), "vision": str(vision)}, ModelContext())
    assert first["llm_fingerprint"] != second["llm_fingerprint"]
    assert first["vision_file"]["sha256"] != second["vision_file"]["sha256"]
    config = tmp_path / "vision_config.json"  # an image size edited in place resumed the run with another model
    config.write_text('{"image_size": 224}')
    before = PeFoMedModel.run_identity({"llm": str(llm), "vision_config": str(config)}, ModelContext())
    config.write_text('{"image_size": 112}')
    after = PeFoMedModel.run_identity({"llm": str(llm), "vision_config": str(config)}, ModelContext())
    assert before["vision_config_sha256"] != after["vision_config_sha256"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached: the hub id cannot resolve offline
    with pytest.raises(UserError, match=f"Llama-2-7b-chat-hf: cannot get revision {DEFAULT_LLM_REVISION}"):
        load(pefomed_tiny, llm="")


# ---- the command line and fine-tuning --------------------------------------------------------------------


def test_harness_run_pefomed_on_phantom_vqa(pefomed_tiny, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "run",
        "--model",
        "pefomed",
        "--model-args",
        pefomed_tiny.args_string(),
        "--task",
        "phantom-vqa",
        "--limit",
        "8",
        "--judge",
        "exact",
        "--prompt",
        "pefomed",
        "--max-new-tokens",
        "6",
        "--output",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["error"] is None and r["completion_tokens"] >= 1 for r in rows)
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["id"] == "pefomed"
    assert "accuracy" in json.dumps(results)


def test_training_lowers_the_loss_and_the_saved_directory_reloads(pefomed_tiny, phantom, tmp_path):
    samples, requests = phantom
    trainee = load(pefomed_tiny, train="true")
    named = dict(trainee.trainable_parameters())
    assert {"llama_proj.weight", "llama_proj.bias"} <= set(named) and len(named) == 10
    frozen = {n: p.detach().clone() for n, p in trainee.net.llm.named_parameters() if not p.requires_grad}
    frozen_vision = trainee.net.vision.encoder.layers[0].mlp.fc1.weight.detach().clone()
    optimizer = torch.optim.AdamW(named.values(), lr=3e-3)
    targets = [s.answer for s in samples[:4]]
    first = trainee.training_loss(requests[:4], targets)
    first.backward()
    for _ in range(10):
        optimizer.step()
        optimizer.zero_grad()
        trainee.training_loss(requests[:4], targets).backward()
    last = trainee.training_loss(requests[:4], targets).item()
    assert last < 0.5 * first.item()
    assert all(torch.equal(p, frozen[n]) for n, p in trainee.net.llm.named_parameters() if n in frozen)
    assert torch.equal(trainee.net.vision.encoder.layers[0].mlp.fc1.weight, frozen_vision)
    saved = trainee.save_trained(tmp_path / "trained")
    reloaded = load(pefomed_tiny, adapter=saved, checkpoint="")
    assert texts(reloaded.generate(requests[:4])) == texts(trainee.generate(requests[:4]))


def test_paths_spelt_otherwise_and_defaults_typed_out_are_the_same_run(pefomed_tiny, monkeypatch):
    """`./x`, `x/` and `/abs/x` and a default typed out named other runs, and a fine-tune could not resume with
    them; args that change nothing at evaluation are refused rather than naming another run."""
    canonical = PeFoMedModel.canonical_args
    plain = canonical(pefomed_tiny.model_args(), ModelContext(device="cpu"))
    monkeypatch.chdir(pefomed_tiny.root)
    respelt = pefomed_tiny.model_args(llm=f"./{pefomed_tiny.llm_dir.relative_to(pefomed_tiny.root)}/",
                                      vision=f"{pefomed_tiny.root}/./{pefomed_tiny.vision_path.name}",
                                      merge="true", cache="dynamic", attn="sdpa", text_processor="pefomed",
                                      lora_alpha="16")
    assert canonical(respelt, ModelContext(device="cpu")) == plain
    assert plain["llm"] == str(pefomed_tiny.llm_dir.resolve())
    # refused before anything is built, so also by a resumed run that has nothing left to generate (it was accepted)
    with pytest.raises(UserError, match="llm_revision=main: llm=.* is a local folder"):
        canonical(pefomed_tiny.model_args(llm_revision="main"), ModelContext(device="cpu"))
    with pytest.raises(UserError, match="embed_only=true loads no LLM and gives embeddings, not text"):
        canonical(pefomed_tiny.model_args(embed_only="true"), ModelContext(device="cpu"))
    relative = f"{pefomed_tiny.llm_dir.relative_to(pefomed_tiny.root)}/"  # results.json said "llm": "llm"
    assert load(pefomed_tiny, llm=relative).identity()["llm"] == str(pefomed_tiny.llm_dir.resolve())
    # a file behind a link (a hub cache's snapshots/<rev>/x.pth -> blobs/<sha>) keeps its own name and suffix
    link = pefomed_tiny.root / "linked" / "pefomed.pth"
    link.parent.mkdir(exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(pefomed_tiny.checkpoint_path)
    assert canonical(pefomed_tiny.model_args(checkpoint="linked/pefomed.pth"),
                     ModelContext(device="cpu"))["checkpoint"] == str(link)
    assert canonical(pefomed_tiny.model_args(merge="false"), ModelContext(device="cpu"))["merge"] == "false"
    with pytest.raises(UserError, match=r"--model-args lora_r, lora_dropout would change nothing here"):
        canonical(pefomed_tiny.model_args(lora_r="8", lora_dropout="0.3"), ModelContext(device="cpu"))
    with pytest.raises(UserError, match=r"--model-args lora_alpha would change nothing here"):
        canonical(pefomed_tiny.model_args(checkpoint="", lora_alpha="32"), ModelContext(device="cpu",
                                                                                        adapter="conv"))


def test_each_dtype_is_another_run():
    """bf16 and fp32 generations differ; bf16 (the GPU default) is left out of the identity so that the GPU runs
    and fine-tunes made before the dtype was recorded still resume."""
    from harness.model_api import ModelContext
    from harness.plugins.pefomed import PeFoMedModel

    cpu_default = PeFoMedModel.run_identity({}, ModelContext(device="cpu"))
    assert cpu_default["dtype"] == "float32"
    assert PeFoMedModel.run_identity({}, ModelContext(device="cpu", dtype="float32")) == cpu_default
    assert "dtype" not in PeFoMedModel.run_identity({}, ModelContext(device="cpu", dtype="bf16"))
    assert PeFoMedModel.run_identity({}, ModelContext(device="cpu", dtype="float16"))["dtype"] == "float16"


def test_the_readme_describes_every_model_arg():
    """The unknown-key error lists the keys and points to the README for what each does (it printed all of them
    with their descriptions: one 1,800-character line)."""
    from harness.plugins.pefomed_options import ARGS

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for key, description in ARGS.items():
        assert f"| `{key}` | {description} |" in readme, key

