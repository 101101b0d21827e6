"""PeFoMed weights: the LAVIS EVA key mapping, checkpoint reading and `harness convert pefomed-checkpoint`."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import torch
from tiny_pefomed import (
    TINY_VISION,
    LavisEvaViT,
    convert,
    lavis_interpolate,
    make_checkpoint_state,
    save_checkpoint,
)

from harness.errors import UserError
from harness.plugins import pefomed_arch as arch
from harness.plugins import pefomed_checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_eva_key_mapping_reproduces_the_lavis_encoder(pefomed_tiny):
    """LAVIS-layout weights (coarser grid, q/v biases, a surplus block) in Blip2VisionModel: LAVIS' output."""
    state = torch.load(pefomed_tiny.vision_path)
    config = arch.vision_config(TINY_VISION)
    ln = {"ln_vision.weight": torch.rand(32) + 0.5, "ln_vision.bias": torch.randn(32)}
    vision = arch.build_vision(config, ckpt.map_lavis_eva(state, config, ln_vision=ln))
    reference = LavisEvaViT(224, 14, 32, 2, 2, 64)
    ref_state = {k: v for k, v in state.items() if not k.startswith("blocks.2.")}
    assert state["pos_embed"].shape == (1, 65, 32)
    ref_state["pos_embed"] = lavis_interpolate(state["pos_embed"], 16)
    reference.load_state_dict(ref_state)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = torch.nn.functional.layer_norm(
            reference(x), (32,), ln["ln_vision.weight"], ln["ln_vision.bias"], eps=1e-5
        )
        got = vision(pixel_values=x).last_hidden_state
    assert got.shape == (2, 257, 32)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


def test_the_published_eva_vit_g_layout_fits_the_eva_config():
    """eva_vit_g.pth's shapes (224 px, 40 blocks) map onto Blip2VisionModel(EVA ViT-g/14 at 448, depth 39)."""
    from transformers import Blip2VisionModel

    width, mlp = 1408, 6144
    shapes = {"cls_token": (1, 1, width), "pos_embed": (1, 257, width),
              "patch_embed.proj.weight": (width, 3, 14, 14), "patch_embed.proj.bias": (width,)}
    vector = (width,)
    block = {"norm1.weight": vector, "norm1.bias": vector, "attn.q_bias": vector, "attn.v_bias": vector,
             "attn.qkv.weight": (3 * width, width), "attn.proj.weight": (width, width),
             "attn.proj.bias": vector, "norm2.weight": vector, "norm2.bias": vector,
             "mlp.fc1.weight": (mlp, width), "mlp.fc1.bias": (mlp,), "mlp.fc2.weight": (width, mlp),
             "mlp.fc2.bias": vector}
    for i in range(40):
        shapes.update({f"blocks.{i}.{name}": shape for name, shape in block.items()})
    config = arch.vision_config()
    mapped = ckpt.map_lavis_eva({k: torch.empty(s, device="meta") for k, s in shapes.items()}, config)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Blip2VisionModel(config).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == expected
    assert expected["embeddings.position_embedding"] == (1, 1025, width) and config.num_hidden_layers == 39


def test_eva_weights_with_missing_or_foreign_keys_are_refused(pefomed_tiny):
    state = torch.load(pefomed_tiny.vision_path)
    config = arch.vision_config(TINY_VISION)
    with pytest.raises(UserError, match=r"missing encoder\.layers\.1\.mlp\.fc2\.weight"):
        ckpt.map_lavis_eva({k: v for k, v in state.items() if k != "blocks.1.mlp.fc2.weight"}, config)
    with pytest.raises(UserError, match="not LAVIS EVA-ViT weights: text_proj.weight"):
        ckpt.map_lavis_eva({**state, "text_proj.weight": torch.zeros(2)}, config)


def test_conversion_writes_a_standard_peft_adapter(pefomed_tiny, pefomed_converted):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    assert sorted(p.name for p in pefomed_converted.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "projection.safetensors",
    ]
    config = json.loads((pefomed_converted / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 64, 16)
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"] and config["modules_to_save"] is None
    lora = load_file(str(pefomed_converted / "adapter_model.safetensors"))
    assert len(lora) == 8 and all(k.startswith("base_model.model.model.layers.") for k in lora)
    source = make_checkpoint_state()
    assert torch.equal(
        load_file(str(pefomed_converted / "projection.safetensors"))["llama_proj.weight"], source["llama_proj.weight"]
    )
    # PEFT's own loader on the plain LLaMA gives W + alpha/r * B @ A, computed here from the checkpoint
    peft = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(pefomed_tiny.llm_dir),
                                     str(pefomed_converted)).eval()
    by_hand = LlamaForCausalLM.from_pretrained(pefomed_tiny.llm_dir).eval()
    plain = LlamaForCausalLM.from_pretrained(pefomed_tiny.llm_dir).eval()
    with torch.no_grad():
        for layer in range(2):
            for proj in ("q_proj", "v_proj"):
                base = f"llama_model.base_model.model.model.layers.{layer}.self_attn.{proj}"
                delta = source[f"{base}.lora_B.weight"] @ source[f"{base}.lora_A.weight"] * (16 / 64)
                getattr(by_hand.model.layers[layer].self_attn, proj).weight += delta
        ids = torch.randint(3, by_hand.config.vocab_size, (2, 12))
        got, want, base_logits = peft(ids).logits, by_hand(ids).logits, plain(ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(base_logits, want, atol=1e-2)


def test_converting_a_checkpoint_without_projection_names_the_missing_keys(tmp_path):
    bad = save_checkpoint(tmp_path / "no_projection.pth", make_checkpoint_state(projection=False))
    with pytest.raises(UserError) as err:
        convert(str(bad), "--out", str(tmp_path / "out"))
    message = str(err.value)
    assert "missing llama_proj.weight, llama_proj.bias" in message and "\n" not in message
    assert not (tmp_path / "out" / "adapter_config.json").exists()


def test_checkpoints_with_python_objects_need_trust(tmp_path):
    path = tmp_path / "with_namespace.pth"
    torch.save({"model": make_checkpoint_state(), "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(UserError, match="--trust-pickle"):
        ckpt.read_state_dict(path)
    assert "llama_proj.weight" in ckpt.read_state_dict(path, trust_pickle=True)
    blocked = tmp_path / "blocked.pth"  # a blocked module (os): the same hint, not "not a PyTorch checkpoint?"
    torch.save({"model": make_checkpoint_state(), "hook": argparse.Namespace(run=os.getcwd)}, blocked)
    with pytest.raises(UserError, match="holds Python objects besides tensors; if you trust the file"):
        ckpt.read_state_dict(blocked)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pth cannot be read by torch.load") as err:
        ckpt.read_state_dict(junk)
    assert "\n" not in str(err.value)


def test_conversion_refuses_an_out_folder_that_holds_other_files(pefomed_tiny, pefomed_converted, tmp_path):
    """A fine-tuned adapter folder (or any folder with other files) is never written into, --force or not; a
    directory given as the checkpoint says it is one."""
    ckpt_path = str(pefomed_tiny.checkpoint_path)
    finetuned = tmp_path / "finetuned"
    finetuned.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (finetuned / name).write_bytes((pefomed_converted / name).read_bytes())
    (finetuned / "manifest.json").write_text('{"steps": 100}')
    before = {p.name: p.read_bytes() for p in finetuned.iterdir()}
    for extra in ((), ("--force",)):
        with pytest.raises(UserError, match=r"holds files that are not a converted checkpoint \(manifest.json\)"):
            convert(ckpt_path, "--out", str(finetuned), *extra)
    assert {p.name: p.read_bytes() for p in finetuned.iterdir()} == before
    with pytest.raises(UserError, match="is a directory"):
        convert(str(tmp_path), "--out", str(tmp_path / "new"))
    again = tmp_path / "again"
    assert convert(ckpt_path, "--out", str(again)) == 0
    with pytest.raises(UserError, match="already holds a converted checkpoint: pass --force"):
        convert(ckpt_path, "--out", str(again))
    assert convert(ckpt_path, "--out", str(again), "--force") == 0


def test_a_checkpoint_missing_some_layers_lora_is_refused_at_conversion(tmp_path):
    state = make_checkpoint_state()
    for ab in "AB":
        del state[f"llama_model.base_model.model.model.layers.0.self_attn.v_proj.lora_{ab}.weight"]
    bad = save_checkpoint(tmp_path / "partial.pth", state)
    with pytest.raises(UserError) as err:
        convert(str(bad), "--out", str(tmp_path / "out"))
    message = str(err.value)
    assert "lacks the LoRA of 1 module(s)" in message and "model.layers.0.self_attn.v_proj" in message
    assert "\n" not in message and not (tmp_path / "out" / "adapter_config.json").exists()


def test_a_projection_of_another_llm_size_is_refused_at_conversion(tmp_path):
    state = make_checkpoint_state()
    width = state["llama_proj.weight"].shape[1]
    state["llama_proj.weight"], state["llama_proj.bias"] = torch.zeros(7, width), torch.zeros(7)
    with pytest.raises(UserError, match=r"llama_proj.weight maps to 7 features but the LoRA of .* adapts a hidden "
                       r"size of \d+"):
        convert(str(save_checkpoint(tmp_path / "wide.pth", state)), "--out", str(tmp_path / "out"))
    state["llama_proj.bias"] = torch.zeros(3)
    with pytest.raises(UserError, match=r"do not form a linear layer"):
        convert(str(save_checkpoint(tmp_path / "bias.pth", state)), "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_non_finite_weights_are_refused_at_conversion_and_at_load(tmp_path):
    """A NaN in the projection made every answer empty, scored as wrong answers without a word."""
    state = make_checkpoint_state()
    state["llama_proj.weight"][0, 0] = float("nan")
    with pytest.raises(UserError, match=r"nan.pth: tensor llama_proj.weight holds NaN or infinite values"):
        convert(str(save_checkpoint(tmp_path / "nan.pth", state)), "--out", str(tmp_path / "out"))
    assert convert(str(save_checkpoint(tmp_path / "fine.pth", make_checkpoint_state())), "--out",
                   str(tmp_path / "fine")) == 0
    from safetensors.torch import load_file, save_file

    lora_file = tmp_path / "fine" / "adapter_model.safetensors"
    tensors = load_file(str(lora_file))
    first = sorted(tensors)[0]
    tensors[first][0, 0] = float("inf")
    save_file(tensors, str(lora_file))
    with pytest.raises(UserError, match=rf"adapter_model.safetensors: tensor {first} holds NaN or infinite"):
        ckpt.read_converted(tmp_path / "fine")


def test_a_damaged_safetensors_file_is_one_line(tmp_path):
    assert convert(str(save_checkpoint(tmp_path / "fine.pth", make_checkpoint_state())), "--out",
                   str(tmp_path / "fine")) == 0
    projection = tmp_path / "fine" / "projection.safetensors"
    projection.write_bytes(projection.read_bytes()[:40])
    with pytest.raises(UserError, match=r"--adapter file .*projection.safetensors cannot be read as safetensors"):
        ckpt.read_converted(tmp_path / "fine")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(b"\x10\x00")
    with pytest.raises(UserError, match=r"checkpoint .*cut.safetensors cannot be read as safetensors"):
        ckpt.read_state_dict(cut)


def test_conversion_is_byte_reproducible_and_saved_buffers_are_ignored(tmp_path):
    """safetensors wrote its metadata in a random order: each conversion of one .pth had another adapter hash
    (another run id); a checkpoint saved with transformers 4.28 holds rotary inv_freq buffers, which were refused."""
    from harness.fingerprint import adapter_hash

    state = make_checkpoint_state()
    state["llama_model.base_model.model.model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    path = save_checkpoint(tmp_path / "with_buffers.pth", state)
    outs = [tmp_path / f"out{i}" for i in range(4)]
    for out in outs:
        assert convert(str(path), "--out", str(out)) == 0
    assert len({adapter_hash(out) for out in outs}) == 1
    assert len({(out / "adapter_model.safetensors").read_bytes() for out in outs}) == 1
