"""Fine-tuning hooks of the `pefomed` model (used by `harness finetune --model pefomed`).

PeFoMed trains the projection and the LoRA matrices (r=64, alpha 16, dropout 0.05 on q_proj/v_proj); the
vision encoder and the LLM stay frozen. Build the model with `--model-args ...,train=true` (LoRA kept unmerged
and trainable; the starting point is checkpoint=..., --adapter DIR, or with neither a fresh LoRA and
projection),
optimize `trainable_parameters()` on `training_loss(requests, targets)` and write the result with
`save_trained(out_dir)`: the same directory layout as `harness convert pefomed-checkpoint`, so
`harness run --model pefomed --adapter out_dir` evaluates it.

The loss is PeFoMed's: cross-entropy on the target tokens only, the input being the evaluation prompt
(BOS, `[INST] <Img>` image `</Img> instruction [/INST]`) followed by the target and `</s>`; like PeFoMed, the
target goes through its text processor (lowercase, .!"()*#:;~ removed, first 50 words) unless
text_processor=none.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.plugins import pefomed_arch as arch
from harness.plugins import pefomed_checkpoint as ckpt
from harness.types import GenerationRequest

if TYPE_CHECKING:
    import torch
    from torch import nn


class TrainingMixin:
    """Methods for training; mixed into PeFoMedModel (attributes come from it)."""

    net: Any
    tokenizer: Any
    options: dict[str, Any]
    train_mode: bool
    process_text: bool
    device: Any
    dtype: Any

    def _require_train_mode(self) -> None:
        from harness.errors import UserError

        if not getattr(self, "train_mode", False):
            raise UserError("model 'pefomed' was built for inference (LoRA merged): build it with train=true")
        if not getattr(self, "_training_ready", False):
            proj = self.net.llama_proj
            proj.to(dtype=self._master_dtype())
            proj.requires_grad_(True)
            self._training_ready = True

    def _master_dtype(self):
        import torch

        return torch.float32

    def trainable_modules(self) -> dict[str, nn.Module]:
        """{"llama_proj": the projection, "llm": the PEFT-wrapped LLM (only its LoRA matrices train)}."""
        self._require_train_mode()
        return {"llama_proj": self.net.llama_proj, "llm": self.net.llm}

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """(name, parameter) of everything PeFoMed trains: projection weight/bias and every LoRA A/B."""
        self._require_train_mode()
        params = [(f"llama_proj.{n}", p) for n, p in self.net.llama_proj.named_parameters()]
        params += [(n, p) for n, p in self.net.llm.named_parameters() if p.requires_grad]
        return params

    def training_loss(self, requests: Sequence[GenerationRequest], targets: Sequence[str]) -> torch.Tensor:
        """Mean cross-entropy over the target tokens of a batch (requests as `harness run` builds them)."""
        import contextlib

        import torch

        self._require_train_mode()
        if len(requests) != len(targets):
            raise ValueError(f"{len(requests)} requests but {len(targets)} targets")
        self.net.llm.train()
        texts = [arch.pefomed_text(t) if self.process_text else t.strip() for t in targets]
        target_ids = [
            ids + [self.tokenizer.eos_token_id]
            for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        ]
        on_cuda = self.device.type == "cuda" and self.dtype != torch.float32
        autocast = torch.autocast("cuda", dtype=self.dtype) if on_cuda else contextlib.nullcontext()
        with autocast:
            prompts = self._embed(requests)
            embed = self.net.embedding_layer()
            rows, labels = [], []
            for prompt, ids in zip(prompts, target_ids):
                tgt = torch.tensor(ids, device=self.device)
                rows.append(torch.cat([prompt, embed(tgt).to(prompt.dtype)], dim=0))
                labels.append(torch.cat([torch.full((prompt.shape[0],), -100, device=self.device), tgt]))
            width = max(r.shape[0] for r in rows)
            hidden = rows[0].shape[1]
            inputs = rows[0].new_zeros(len(rows), width, hidden)
            mask = torch.zeros(len(rows), width, dtype=torch.long, device=self.device)
            label_t = torch.full((len(rows), width), -100, dtype=torch.long, device=self.device)
            for i, (row, lab) in enumerate(zip(rows, labels)):  # right padding, as PeFoMed trains
                inputs[i, : row.shape[0]] = row
                mask[i, : row.shape[0]] = 1
                label_t[i, : row.shape[0]] = lab
            out = self.net.llm(inputs_embeds=inputs, attention_mask=mask, labels=label_t, use_cache=False)
        return out.loss

    def save_trained(self, out_dir: Path | str) -> Path:
        """Write projection + LoRA as a converted directory (PEFT adapter + projection.safetensors)."""
        import torch
        from peft import get_peft_model_state_dict

        self._require_train_mode()
        cfg = self.net.llm.peft_config["default"]
        lora = {k: v.detach().cpu() for k, v in get_peft_model_state_dict(self.net.llm).items()}
        proj = self.net.llama_proj
        projection = {
            "llama_proj.weight": proj.weight.detach().float().cpu(),
            "llama_proj.bias": proj.bias.detach().float().cpu(),
        }
        ln = self.net.vision.post_layernorm
        if not (bool(torch.all(ln.weight == 1)) and bool(torch.all(ln.bias == 0))):
            projection["ln_vision.weight"] = ln.weight.detach().float().cpu()
            projection["ln_vision.bias"] = ln.bias.detach().float().cpu()
        weights = ckpt.PeFoMedWeights(
            projection=projection,
            lora=lora,
            rank=int(cfg.r),
            targets=sorted(cfg.target_modules),
            source="harness-finetune",
        )
        llm_path = getattr(self, "llm_path", None)
        return ckpt.save_converted(
            weights, Path(out_dir), alpha=cfg.lora_alpha, base_model=str(llm_path) if llm_path else None
        )
