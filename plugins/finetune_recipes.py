"""What `harness finetune` trains, and how: one recipe per kind of model plugin.

- `PeftRecipe`: a `hf` backend model (transformers). LoRA through PEFT on the modules a target preset names
  (plugins/lora_targets.py), or full training of the named parts; batches encoded with the backend's own
  prompting (plugins/finetune_data.py), each micro-batch weighted by its answer tokens.
- `PluginRecipe`: a model plugin that trains itself (`pefomed`): it exposes `trainable_modules()`,
  `training_loss(requests, targets)` and `save_trained(out_dir)` (plugins/pefomed_train.py). The requests are
  the ones `harness run` builds for the same samples; each micro-batch is weighted by its sample count.

The trainer (plugins/finetune_lora.py) only sees `model` (the trainable parameters, checkpointed by name),
`prepare`, `loss` and `save`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.plugins.finetune_data import StageData, TrainEncoder, answer_tokens, open_requests, to_device


def trains_itself(plugin_class: Any) -> bool:
    """True for model plugins with their own training hooks (pefomed)."""
    return all(callable(getattr(plugin_class, name, None))
               for name in ("trainable_modules", "training_loss", "save_trained"))


class PeftRecipe:
    """LoRA (PEFT) or full training of a transformers model loaded by the `hf` backend."""

    kind_lora, kind_full = "peft-lora-adapter", "full-model"

    def __init__(self, plugin: Any, plan: Any, rank: int, alpha: float, dropout: float) -> None:
        from harness.plugins.lora_targets import apply_plan

        self.plugin, self.plan = plugin, plan
        self.model = apply_plan(plugin.model, plan, rank, alpha, dropout)
        self.encoder = TrainEncoder(plugin)
        self.kind = self.kind_full if plan.method == "full" else self.kind_lora
        first = next(self.model.parameters())
        self.device, self.dtype = str(first.device), first.dtype

    @property
    def skipped(self) -> list[str]:
        return self.encoder.skipped

    @property
    def prefix_mismatches(self) -> int:
        return self.encoder.prefix_mismatches

    def counts(self) -> tuple[int, int]:
        from harness.plugins.lora_targets import parameter_counts

        return parameter_counts(self.model)

    def plan_info(self) -> dict[str, Any]:
        return self.plan.describe()

    def prepare(self, data: StageData, samples: list[Any]) -> tuple[Any, int] | None:
        enc = self.encoder.encode(data, samples)
        return None if enc is None else (enc, answer_tokens(enc))

    def loss(self, batch: Any) -> Any:
        return self.model(**to_device(batch, self.device, self.dtype)).loss

    def save(self, folder: Path, base_identity: dict[str, Any], model_id: str) -> None:
        if self.plan.method == "full":
            self.model.save_pretrained(folder)
            if self.plugin.processor is not None:
                self.plugin.processor.save_pretrained(folder)
            else:
                self.plugin.image_processor.save_pretrained(folder)
                self.plugin.tokenizer.save_pretrained(folder)
            return
        base_name = base_identity.get("hub_id") or base_identity.get("path") or model_id
        for config in self.model.peft_config.values():
            config.base_model_name_or_path = base_name
            config.revision = base_identity.get("revision") if base_identity.get("hub_id") else None
        # PEFT's model card (README.md) names the base by its config's _name_or_path: the folder it loaded from,
        # for a preset the local cache path; the card names what the adapter config names instead
        inner = self.model.get_base_model()
        loaded_from = inner.config._name_or_path, inner.__dict__.get("name_or_path")
        inner.config._name_or_path = inner.name_or_path = base_name
        try:  # adapters never train embeddings (vLLM-loadable): no check of the base's vocabulary on the hub
            self.model.save_pretrained(folder, save_embedding_layers=False)
        finally:
            inner.config._name_or_path, inner.name_or_path = loaded_from


class PluginRecipe:
    """A model plugin that trains itself: its trainable modules, its loss, its own output layout."""

    kind = "pefomed-adapter"

    def __init__(self, plugin: Any, model_id: str, hyper: Any, method: str) -> None:
        import torch

        if method != "lora":
            raise UserError(f"model '{model_id}' trains its projection and LoRA only: --method {method} is not "
                            "available for it")
        if hyper.targets != "llm-attn":
            raise UserError(f"model '{model_id}' trains LoRA on the language model's q/v projections (llm-attn) "
                            f"and its projection: --targets {hyper.targets} is not available for it")
        self.plugin = plugin
        self.model = torch.nn.ModuleDict(plugin.trainable_modules())
        self.skipped: list[str] = []
        self.prefix_mismatches = 0
        first = next(p for p in self.model.parameters() if p.requires_grad)
        self.device, self.dtype = str(first.device), first.dtype

    def counts(self) -> tuple[int, int]:
        trainable = sum(p.numel() for _, p in self.plugin.trainable_parameters())
        net = self.plugin.net
        total = sum(p.numel() for part in (net.vision, net.llama_proj, net.llm) for p in part.parameters())
        return trainable, total

    def plan_info(self) -> dict[str, Any]:
        lora = self.plugin.net.llm.peft_config["default"]
        modules = sorted(n for n, m in self.plugin.net.llm.named_modules() if hasattr(m, "lora_A")
                         and "default" in getattr(m, "lora_A", {}))
        return {"preset": "llm-attn", "method": "lora", "parts": {"projection": "llama_proj", "language": "llm"},
                "target_modules": sorted(lora.target_modules), "n_modules": len(modules),
                "first_modules": modules[:4], "also_trained": ["llama_proj (projection, full)"]}

    def prepare(self, data: StageData, samples: list[Any]) -> tuple[Any, int] | None:
        pairs = open_requests(data, samples, self.skipped)
        if not pairs:
            return None
        return ([r for _, r in pairs], [s.answer for s, _ in pairs]), len(pairs)

    def loss(self, batch: Any) -> Any:
        requests, targets = batch
        return self.plugin.training_loss(requests, targets)

    def save(self, folder: Path, base_identity: dict[str, Any], model_id: str) -> None:
        self.plugin.save_trained(folder)
