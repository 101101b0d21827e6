"""Loading the `pefomed` model's parts: tokenizer, LLaMA (+ LoRA), EVA encoder, projection.

The LoRA of a PeFoMed / MiniGPT-v2 `checkpoint=` is applied the way PeFoMed does it (PEFT's LoRA wrapper
around the LLM, then the checkpoint's tensors loaded by name); a converted `--adapter DIR` goes through
`PeftModel.from_pretrained`. Either way every LoRA tensor must find its module and every module its tensor,
otherwise loading stops with a one-line error (an adapter that matches nothing would silently give the base
model). With `embed_only=true` only the LLM's input embedding table is read (for backends such as vLLM that
run the LLM themselves and only need the prompt embeddings).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.io import read_json_object
from harness.plugins import pefomed_arch as arch
from harness.plugins import pefomed_checkpoint as ckpt


@dataclass
class LoadSpec:
    llm_path: Path
    vision: str
    vision_config: str | None
    checkpoint: Path | None
    adapter_dir: Path | None
    device: Any
    dtype: Any
    options: dict[str, Any]
    train: bool = False


@dataclass
class Parts:
    vision: Any
    llama_proj: Any
    llm: Any
    tokenizer: Any
    lora_info: dict[str, Any]


def llm_revision(args: dict[str, str], default_llm: str, default_revision: str) -> str:
    """The hub revision of `llm=`: `llm_revision=`, else the pinned commit of the default LLaMA, else main."""
    if args.get("llm_revision"):
        return args["llm_revision"]
    return default_revision if (args.get("llm") or default_llm) == default_llm else "main"


def resolve_llm_path(name: str, revision: str | None = None) -> Path:
    """A local directory as is; a hub id at `revision` through the HF cache (downloaded unless
    HF_HUB_OFFLINE=1)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists() or name.startswith((".", "/", "~")):
        raise UserError(f"--model-args llm={name}: not a directory with an HF-format LLaMA")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, revision=revision,
                                      allow_patterns=["*.json", "*.safetensors", "tokenizer.model"]))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; the user needs one line
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(f"--model-args llm={name}: cannot get revision {revision or 'main'} from the "
                        f"Hugging Face hub ({type(exc).__name__}: {first})") from exc


class EmbeddingOnlyLM:
    """Stands in for the LLM when only prompt embeddings are needed: its config and input embeddings."""

    def __init__(self, llm_path: Path, device: Any, dtype: Any) -> None:
        import torch
        from safetensors import safe_open
        from transformers import AutoConfig, GenerationConfig

        self.config = AutoConfig.from_pretrained(str(llm_path))
        try:
            self.generation_config = GenerationConfig.from_pretrained(str(llm_path))
        except OSError:
            self.generation_config = None
        key, file = "model.embed_tokens.weight", llm_path / "model.safetensors"
        index = llm_path / "model.safetensors.index.json"
        if index.is_file():
            file = llm_path / json.loads(index.read_text())["weight_map"].get(key, "model.safetensors")
        if not file.is_file():
            raise UserError(f"embed_only=true needs {key} in safetensors files under {llm_path}")
        with safe_open(str(file), "pt") as fh:
            weight = fh.get_tensor(key)
        weight = weight.to(device=device, dtype=dtype)
        self.embed_tokens = torch.nn.Embedding.from_pretrained(weight, freeze=True)

    def get_input_embeddings(self):
        return self.embed_tokens

    def eval(self) -> EmbeddingOnlyLM:
        return self


def load_parts(spec: LoadSpec) -> Parts:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    opts = spec.options
    overrides = None
    if spec.vision_config:
        path = Path(spec.vision_config).expanduser()
        if not path.is_file():
            raise UserError(f"--model-args vision_config={path}: no such file")
        overrides = read_json_object(path)
    from huggingface_hub.errors import StrictDataclassError

    try:
        config = arch.vision_config(overrides, attn="eager" if opts["attn"] == "eager" else "sdpa")
    except (TypeError, ValueError, StrictDataclassError) as exc:  # a field of the wrong type ({"hidden_size": "x"})
        raise UserError(f"--model-args vision_config={spec.vision_config}: not a valid EVA-ViT config "
                        f"({str(exc).splitlines()[0][:200]})") from None
    tokenizer = AutoTokenizer.from_pretrained(str(spec.llm_path))
    if opts.get("embed_only"):
        llm: Any = EmbeddingOnlyLM(spec.llm_path, spec.device, spec.dtype)
        projection, lora_info = _projection_only(spec)
    else:
        try:
            llm = AutoModelForCausalLM.from_pretrained(str(spec.llm_path), dtype=spec.dtype,
                                                       attn_implementation=opts["attn"])
        except ValueError as exc:
            if "Unrecognized configuration class" not in str(exc):
                raise
            raise UserError(f"--model-args llm={spec.llm_path}: not a causal language model (PeFoMed's LLM is "
                            "LLaMA-2-chat in Hugging Face format)") from None
        llm.to(spec.device).eval()
        llm.requires_grad_(False)
        projection, llm, lora_info = _apply_lora(spec, llm)
    vision_sd = ckpt.map_lavis_eva(
        ckpt.read_state_dict(spec.vision, opts["trust_pickle"], what="vision weights"), config,
        ln_vision={k: v for k, v in projection.items() if k in ckpt.LN_VISION_KEYS}, source=spec.vision)
    try:
        vision = arch.build_vision(config, vision_sd, device=str(spec.device), dtype=spec.dtype)
    except RuntimeError as exc:  # an EVA of another width or depth (ViT-L given for ViT-g); not out of memory
        if not _state_dict_mismatch(exc):
            raise
        what = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), _last_line(exc))
        raise UserError(f"vision weights {spec.vision} do not fit the EVA encoder of "
                        f"{spec.vision_config or 'EVA ViT-g/14'} (hidden size {config.hidden_size}, "
                        f"{config.num_hidden_layers} blocks): {what[:300]}") from None
    hidden, in_features = llm.config.hidden_size, config.hidden_size * arch.GROUP
    llama_proj = torch.nn.Linear(in_features, hidden, device=spec.device, dtype=spec.dtype)
    if "llama_proj.weight" in projection:
        weight, bias = projection["llama_proj.weight"], projection["llama_proj.bias"]
        if tuple(weight.shape) != (hidden, in_features) or tuple(bias.shape) != (hidden,):
            raise UserError(f"projection llama_proj.weight has shape {tuple(weight.shape)}; encoder width "
                            f"{config.hidden_size} x {arch.GROUP} and LLM width {hidden} need "
                            f"({hidden}, {in_features}): wrong vision or llm for these weights")
        with torch.no_grad():
            llama_proj.weight.copy_(weight)
            llama_proj.bias.copy_(bias)
    llama_proj.requires_grad_(False)
    return Parts(vision, llama_proj, llm, tokenizer, lora_info)


def _read_checkpoint(spec: LoadSpec) -> ckpt.PeFoMedWeights:
    assert spec.checkpoint is not None
    sd = ckpt.read_state_dict(spec.checkpoint, spec.options["trust_pickle"])
    return ckpt.split_checkpoint(sd, str(spec.checkpoint))


def _projection_only(spec: LoadSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    if spec.checkpoint is not None:
        weights = _read_checkpoint(spec)
        info = {"r": weights.rank, "alpha": spec.options["lora_alpha"], "targets": weights.targets}
        return weights.projection, {**info, "merged": False}
    if spec.adapter_dir is None:
        raise UserError("embed_only=true needs checkpoint=... or --adapter DIR")
    projection, config = ckpt.read_converted(spec.adapter_dir)
    targets = config.get("target_modules") or []
    info = {"r": config.get("r"), "alpha": config.get("lora_alpha"),
            "targets": sorted(targets) if isinstance(targets, list) else targets, "merged": False}
    return projection, info


def _apply_lora(spec: LoadSpec, llm) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """Projection tensors and the LLM with LoRA applied (merged unless merge=false or training)."""
    opts = spec.options
    if spec.checkpoint is not None:
        weights = _read_checkpoint(spec)
        peft_model = _inject_checkpoint_lora(spec, llm, weights)
        projection = weights.projection
    elif spec.adapter_dir is not None:
        projection, _ = ckpt.read_converted(spec.adapter_dir)
        peft_model = _load_adapter_dir(spec, llm)
    else:  # training from scratch: a fresh LoRA (B = 0); the projection keeps its fresh initialization
        from peft import get_peft_model

        projection = {}
        config = ckpt.lora_config(opts.get("lora_r", 64), ["q_proj", "v_proj"], opts["lora_alpha"],
                                  opts.get("lora_dropout", ckpt.DEFAULT_LORA_DROPOUT))
        peft_model = get_peft_model(llm, config)
    cfg = peft_model.peft_config["default"]
    merge = opts["merge"] and not spec.train
    info = {"r": cfg.r, "alpha": cfg.lora_alpha, "targets": sorted(cfg.target_modules), "merged": merge}
    return projection, (peft_model.merge_and_unload() if merge else peft_model), info


def _inject_checkpoint_lora(spec: LoadSpec, llm, weights: ckpt.PeFoMedWeights):
    """PeFoMed's own way: wrap the LLM with PEFT's LoRA and load the checkpoint's tensors by name."""
    from peft import get_peft_model

    config = ckpt.lora_config(weights.rank, weights.targets, spec.options["lora_alpha"])
    peft_model = get_peft_model(llm, config)
    named = {k.replace(".lora_A.weight", ".lora_A.default.weight")
              .replace(".lora_B.weight", ".lora_B.default.weight"): v for k, v in weights.lora.items()}
    own = {k for k in peft_model.state_dict() if ".lora_" in k}
    stray = sorted(set(named) - own)
    if stray:
        raise UserError(f"checkpoint {spec.checkpoint}: LoRA weights for modules that LLM {spec.llm_path} "
                        f"does not have: {ckpt.short_list(stray)}")
    try:
        peft_model.load_state_dict(named, strict=False)
    except RuntimeError as exc:
        raise UserError(f"checkpoint {spec.checkpoint} does not fit LLM {spec.llm_path}: "
                        f"{str(exc).splitlines()[-1].strip()}") from exc
    lacking = sorted(own - set(named))
    if lacking:  # named as the checkpoint names its keys, not as PEFT's own state dict does
        published = ["llama_model." + k.replace(".default.", ".") for k in lacking]
        raise UserError(f"checkpoint {spec.checkpoint} lacks LoRA weights for {len(lacking)} of the "
                        f"{len(own)} LoRA tensors of LLM {spec.llm_path}: {ckpt.short_list(published)}")
    return peft_model


def _state_dict_mismatch(exc: RuntimeError) -> bool:
    """Whether torch's error is of weights that do not fit the module (torch.OutOfMemoryError is a RuntimeError too:
    reported as "does not fit", it sent the user to the wrong file)."""
    text = str(exc)
    return "size mismatch" in text or "Error(s) in loading state_dict" in text


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _load_adapter_dir(spec: LoadSpec, llm):
    from peft import PeftModel
    from safetensors import safe_open

    assert spec.adapter_dir is not None
    try:
        peft_model = PeftModel.from_pretrained(llm, str(spec.adapter_dir), is_trainable=spec.train)
    except RuntimeError as exc:  # LoRA tensors of another LLM's width (an out-of-memory error stays what it is)
        if not _state_dict_mismatch(exc):
            raise
        raise UserError(f"--adapter {spec.adapter_dir} does not fit LLM {spec.llm_path}: "
                        f"{_last_line(exc)[:300]}") from None
    file = spec.adapter_dir / ckpt.ADAPTER_WEIGHTS[0]
    if file.is_file():
        with safe_open(str(file), "pt") as fh:
            names = set(fh.keys())
        own = {k.replace(".default.", ".") for k in peft_model.state_dict() if ".lora_" in k}
        if names != own:
            extra, lacking = sorted(names - own), sorted(own - names)
            parts = [f"{len(extra)} tensors match no module ({ckpt.short_list(extra, 3)})"] if extra else []
            parts += [f"{len(lacking)} of its {len(own)} LoRA tensors are missing ({ckpt.short_list(lacking, 3)})"
                      ] if lacking else []
            raise UserError(f"--adapter {spec.adapter_dir} does not fit LLM {spec.llm_path}: {', '.join(parts)}")
    return peft_model


#: what a harness finetune manifest records of the base it trained on, compared with the base loaded now
BASE_PARTS = {"llm_fingerprint": "its LLM folder's files", "llm_revision": "its LLM's hub revision",
              "vision_file": "its vision weights", "vision_config_sha256": "its vision config"}


def warn_other_base(adapter: Path, now: dict[str, Any]) -> None:
    """A warning when harness finetune's manifest.json beside `adapter` says it was trained on another LLM or vision
    encoder than the one loaded now (`now`: the run identity), by content: the same shapes load silently, and the
    scores would be of a pairing nobody trained."""
    try:
        trained = json.loads((adapter / "manifest.json").read_text(encoding="utf-8"))["base_model"]
    except (OSError, ValueError, KeyError, TypeError):  # not ours (harness convert writes none)
        return
    if not isinstance(trained, dict):
        return
    differ = []
    for key, what in BASE_PARTS.items():
        then, loaded = trained.get(key), now.get(key)
        if isinstance(then, dict) and isinstance(loaded, dict):  # vision_file: {name, sha256}
            then, loaded = then.get("sha256"), loaded.get("sha256")
        if then is not None and loaded is not None and then != loaded:
            differ.append(what)
    if differ:
        print(f"warning: --adapter {adapter} was trained on another base than the one loaded now "
              f"({' and '.join(differ)} differ from its manifest.json's): these scores are of a pairing nobody "
              "trained", file=sys.stderr)
