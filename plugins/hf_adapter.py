"""How the `hf` backend loads `--adapter DIR`: a PEFT adapter, checked on a fixed probe input to change the
logits (adapters whose module names match nothing fail silently in many tools; here they stop the run), merged by
default, with a warning when its adapter_config.json names another base model or revision than the one loaded.

A mixin of `HFModel` (plugins/hf.py).
"""

from __future__ import annotations

import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.fingerprint import ADAPTER_WEIGHTS
from harness.io import read_json_object
from harness.plugins import hf_generation as gen
from harness.plugins.hf_prompting import PROBE_ID


class HFAdapters:
    """Adapter loading for HFModel (uses its model, opts, context, device, family and _encode)."""

    model: Any
    opts: dict[str, Any]
    context: Any
    device: str
    family: str
    adapter_info: dict[str, Any] | None

    def _load_adapter(self, folder: Path) -> None:
        """Load a PEFT adapter, check on a probe input that it changes the logits, merge it (by default)."""
        from peft import PeftModel, PeftType
        from safetensors import SafetensorError

        config_path = folder / "adapter_config.json"
        if not config_path.is_file():
            raise UserError(f"--adapter {folder}: no adapter_config.json (expected a folder saved by PEFT)")
        config = read_json_object(config_path)
        if not any((folder / name).is_file() for name in ADAPTER_WEIGHTS):
            raise UserError(f"--adapter {folder}: no adapter_model.safetensors or adapter_model.bin (the weights "
                            "PEFT saves beside adapter_config.json)")
        if config.get("peft_type") not in {t.value for t in PeftType}:
            raise UserError(f"{config_path}: field 'peft_type' is {config.get('peft_type')!r}; expected a PEFT "
                            "adapter type (LORA for the adapters harness finetune writes)")
        targets = config.get("target_modules")
        _warn_other_base(folder, config, self.run_identity(self.identity_args(), self.context), self.opts["model"])
        no_match = (f"adapter modules did not match any layer of {self.opts['model']}: --adapter {folder} "
                    f"(target_modules {targets!r})")
        try:
            with warnings.catch_warnings():  # said in one line below, with counts
                warnings.filterwarnings("ignore", message="Found missing adapter keys")
                model = PeftModel.from_pretrained(self.model, str(folder), is_trainable=False)
        except TypeError as exc:  # a value of the wrong type in the config ("r": "eight")
            raise UserError(f"{config_path}: a value PEFT cannot use ({gen.first_line(exc)}); expected the "
                            "adapter_config.json PEFT saved") from exc
        except ValueError as exc:
            if type(exc).__name__ == "NoMatchingPeftModuleError" or "not found in the base model" in str(exc):
                raise UserError(f"{no_match} names no module of this model") from exc
            raise UserError(f"--adapter {folder} does not fit {self.opts['model']}: {gen.first_line(exc)}"
                            ) from exc
        except (RuntimeError, pickle.UnpicklingError) as exc:  # "size mismatch for ...", a damaged .bin
            if gen.is_out_of_memory(exc):
                raise
            if isinstance(exc, pickle.UnpicklingError) or "PytorchStreamReader" in str(exc):
                raise UserError(f"{folder / 'adapter_model.bin'}: not a readable PyTorch file ({gen.first_line(exc)})"
                                "; a damaged or partial copy?") from exc
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
            said = next((line for line in lines if line.startswith("size mismatch")), lines[0])[:400]
            raise UserError(f"--adapter {folder} does not fit {self.opts['model']}: {said} (an adapter of another "
                            "model, or an adapter_config.json of another rank?)") from exc
        except SafetensorError as exc:
            raise UserError(f"{folder / 'adapter_model.safetensors'}: not a readable safetensors file "
                            f"({gen.first_line(exc)}); a damaged or partial copy?") from exc
        model.eval()
        with_adapter = self._probe_logits(model)
        with model.disable_adapter():
            without = self._probe_logits(model)
        change = float((with_adapter - without).abs().max())
        if not change > 0.0:
            alpha = config.get("lora_alpha")
            if isinstance(alpha, (int, float)) and alpha == 0:
                raise UserError(f"--adapter {folder}: lora_alpha is 0 in {config_path.name}, which scales the "
                                "adapter's update to nothing (the logits of a probe input are unchanged); expected "
                                "an adapter trained with alpha > 0")
            names = _lora_names(folder, model)
            where = (f" (saved as {min(names[0])}; this model's are named like {min(names[1])})"
                     if names and names[0] and names[1] and not names[0] & names[1] else "")
            raise UserError(f"{no_match} leaves the logits of a fixed probe input unchanged: its weights did "
                            f"not load onto any layer{where} (a wrapper prefix in the weight names, or an adapter "
                            "of another model?) or are all zero")
        _check_every_tensor_loaded(folder, model, self.opts["model"])
        merged = self.opts["merge_adapter"]
        self.model = model.merge_and_unload() if merged else model
        self.adapter_info = {"path": str(folder.expanduser().resolve()), "target_modules": targets, "merged": merged,
                             "probe_max_logit_change": change}

    def _probe_logits(self, model: Any) -> Any:
        import torch

        enc = dict(self._encode([gen.probe_request(PROBE_ID)]).to(self.device))
        start = model.generation_config.decoder_start_token_id or model.generation_config.bos_token_id or 0
        if self.family == "vision-encoder-decoder":
            enc["decoder_input_ids"] = torch.tensor([[start]], device=self.device)
        elif "input_ids" not in enc:
            enc["input_ids"] = torch.tensor([[start]], device=self.device)
        with torch.inference_mode():
            return model(**enc).logits.float()


def _check_every_tensor_loaded(folder: Path, model: Any, name: str) -> None:
    """Every LoRA tensor of the adapter file must have loaded onto a module, and every LoRA module must have got
    one: half an adapter still changes the probe's logits, and its scores were recorded as the adapter's."""
    names = _lora_names(folder, model)
    if names is None:
        return
    saved, own = names
    unused, lacking = sorted(saved - own), sorted(own - saved)
    if unused or lacking:
        parts = [f"{len(unused)} of its {len(saved)} LoRA tensors match no module (the first: {unused[0]})"
                 ] if unused else []
        parts += [f"{len(lacking)} of the {len(own)} LoRA tensors of the layers it targets got no weights (the "
                  f"first: {lacking[0]})"] if lacking else []
        raise UserError(f"--adapter {folder} does not fit {name}: {'; '.join(parts)}")


def _lora_names(folder: Path, model: Any) -> tuple[set[str], set[str]] | None:
    """The LoRA tensor names of the adapter's safetensors file and those of the loaded model's LoRA modules (PEFT's
    adapter name taken out, as saved); None without a safetensors file."""
    file = folder / "adapter_model.safetensors"
    if not file.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(file), "pt") as fh:
        saved = {k for k in fh.keys() if ".lora_" in k}
    own = {k.replace(".default.", ".").replace(".default", "") for k in model.state_dict() if ".lora_" in k}
    return saved, {k.removesuffix(".weight") if k.endswith(".lora_magnitude_vector.weight") else k  # DoRA's, as saved
                   for k in own}


def _warn_other_base(folder: Path, config: dict[str, Any], loaded: dict[str, Any], model: str) -> None:
    """A warning when an adapter's config names another base model or revision than the one loaded (names
    compared by the last part of the hub id or path, so a local copy of the same model is not flagged): its
    scores would belong to a pairing nobody trained."""
    trained_on, revision = config.get("base_model_name_or_path"), config.get("revision")

    def name(value: Any) -> str:
        return Path(str(value).rstrip("/")).name.lower()

    names = {name(v) for v in (loaded.get("hub_id"), loaded.get("path"), model) if v}
    other = isinstance(trained_on, str) and trained_on and name(trained_on) not in names
    if not other and revision and loaded.get("revision") not in (None, "local") and revision != loaded["revision"]:
        trained_on, other = f"{trained_on} at revision {revision}", True
        model = f"{model} at revision {loaded['revision']}"
    if other:
        print(f"warning: --adapter {folder} was trained on {trained_on} (its adapter_config.json), not on {model}, "
              "the model loaded now", file=sys.stderr)
        return
    _warn_edited_base(folder, loaded.get("local_fingerprint"), model)


def _warn_edited_base(folder: Path, now: Any, model: str) -> None:
    """A warning when harness finetune's manifest.json beside the adapter says the local base folder it trained on
    had other contents than `model` has now (edited in place since): the same name, another model."""
    import json

    try:
        trained = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["base_model"]["local_fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):  # no manifest (not ours), or one without a local base
        return
    same_kind = isinstance(trained, str) and isinstance(now, str) and trained.split(":")[0] == now.split(":")[0]
    if same_kind and trained != now and Path(model).is_dir():  # of one kind (not of a harness that hashed otherwise)
        from harness.file_digests import folder_fingerprint

        if folder_fingerprint(Path(model), leave_out=()) == trained:  # hashed before trainer files were left out
            return
        print(f"warning: --adapter {folder} was trained on {model} when its files hashed {trained} (its "
              f"manifest.json); they hash {now} now: edited since, so these scores are of another pairing",
              file=sys.stderr)
