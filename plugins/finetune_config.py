"""Settings of `harness finetune`: what the user asked for, and the hyperparameters after defaults.

Defaults follow PeFoMed (LoRA r=64, alpha 16, dropout 0.05, AdamW, cosine decay; stage 2 lr 3e-5 -> 1e-5,
stage 1 lr 1e-4 -> 8e-5), except the number of epochs (PeFoMed ran 50 on VQA data with a 7B model; the
default here is 3, pass --epochs 50 to match). Models can carry their own defaults: `tiny-vlm`, a very small
model pretrained for minutes, needs a far larger learning rate, LoRA on all its linear layers and more epochs
to learn the phantom tasks in CPU minutes.
The identity hash covers everything that changes the trained weights, so rerunning the same command resumes
and a changed command is refused instead of mixing two trainings in one folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.flags import SEED_MAX

SCHEDULES = ("cosine", "linear", "constant")
LORA_ONLY = ("rank", "alpha", "dropout")
DEFAULT_SAVE_EVERY = 100

GENERIC: dict[str, Any] = {
    "rank": 64, "alpha": 16.0, "dropout": 0.05,
    "lr": 3e-5, "lr_end": 1e-5, "stage1_lr": 1e-4, "stage1_lr_end": 8e-5,
    "epochs": 3, "stage1_epochs": 1, "batch_size": 8, "micro_batch_size": None, "warmup_steps": 0,
    "schedule": "cosine", "weight_decay": 0.0, "max_grad_norm": 1.0, "max_steps": None,
}
# The target preset by model family: decoder LoRA for chat VLMs (PeFoMed), decoder-only for captioners (BLIP).
FAMILY_TARGETS = {"chat": "llm-attn", "blip": "decoder-only", "vision-encoder-decoder": "decoder-only",
                  "blip2": "llm-attn", "instructblip": "llm-attn"}
# Per-model defaults (model id -> overrides). tiny-vlm is barely pretrained: LoRA must reach its vision tower
# too, at a rank that covers its narrow layers, with a learning rate far above a large model's (measured on
# phantom-vqa on a 2-core CPU: 3e-3 diverges to a constant answer, 1e-3 learns; teacher-forced closed accuracy
# 0.66 after 6 epochs, 0.74 after 8, which take about 2 minutes; ARCHITECTURE.md has the study).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny-vlm": {"targets": "full", "rank": 128, "alpha": 128.0, "dropout": 0.0, "lr": 1e-3, "lr_end": 0.0,
                 "stage1_lr": 1e-3, "stage1_lr_end": 5e-4, "epochs": 8, "stage1_epochs": 3, "batch_size": 8,
                 "warmup_steps": 0, "weight_decay": 0.01},
}


def _check_dir(flag: str, path: Path | None) -> None:
    if path is None:
        return
    full = Path(path).expanduser()
    if not full.is_dir():
        what = "not a directory" if full.exists() else "no such directory"
        shown = f"{path} ({full.resolve()})" if str(full.resolve()) != str(path) else str(path)
        raise UserError(f"{flag} {shown}: {what} (expected the folder with your local copy of the dataset)")


@dataclass
class Hyper:
    """Hyperparameters after defaults; `stage(i, n)` gives one stage's learning-rate settings."""

    targets: str
    rank: int
    alpha: float
    dropout: float
    lr: float
    lr_end: float
    stage1_lr: float
    stage1_lr_end: float
    epochs: int
    stage1_epochs: int
    batch_size: int
    micro_batch_size: int | None
    warmup_steps: int
    schedule: str
    weight_decay: float
    max_grad_norm: float
    max_steps: int | None

    def stage(self, index: int, n_stages: int) -> dict[str, Any]:
        first = n_stages > 1 and index == 0
        return {"lr": self.stage1_lr if first else self.lr,
                "lr_end": self.stage1_lr_end if first else self.lr_end,
                "epochs": self.stage1_epochs if first else self.epochs, "batch_size": self.batch_size,
                "micro_batch_size": self.micro_batch_size, "warmup_steps": self.warmup_steps,
                "schedule": self.schedule, "weight_decay": self.weight_decay,
                "max_grad_norm": self.max_grad_norm,
                "max_steps": None if first else self.max_steps}

    def settings(self, method: str) -> dict[str, Any]:
        """The settings this method uses: full training has no LoRA rank, alpha or dropout."""
        out = asdict(self)
        if method == "full":
            for key in LORA_ONLY:
                out.pop(key)
        return out

    def describe(self, n_stages: int, method: str) -> dict[str, Any]:
        out = self.settings(method)
        out.update(optimizer="AdamW(betas=(0.9, 0.999), eps=1e-8)", loss="cross-entropy on answer tokens")
        if n_stages < 2:
            for key in ("stage1_lr", "stage1_lr_end", "stage1_epochs"):
                out.pop(key)
        return out


@dataclass
class FinetuneConfig:
    """What the user asked for (None: the model's or the generic default)."""

    model: str
    task: str
    out: Path
    model_args: dict[str, str] = field(default_factory=dict)
    stage1_task: str | None = None
    data_dir: Path | None = None
    source: str | None = None
    prompt: str | None = None
    stage1_data_dir: Path | None = None
    stage1_source: str | None = None
    stage1_prompt: str | None = None
    limit: int | None = None
    method: str = "lora"
    seed: int = 0
    save_every: int | None = None  # None: DEFAULT_SAVE_EVERY
    keep_checkpoints: bool = False
    device: str | None = None
    dtype: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # targets, rank, alpha, lr, epochs, ...

    def validate(self) -> None:
        from harness.plugins.lora_targets import check_preset, check_rank

        o = {k: v for k, v in self.overrides.items() if v is not None}
        unknown = sorted(set(o) - set(GENERIC) - {"targets"})
        if unknown:
            raise UserError(f"unknown fine-tune settings: {', '.join(unknown)}")
        if "rank" in o:
            check_rank(o["rank"])
        check_preset(o.get("targets", "llm-attn"), self.method)
        self._check_unused(o)
        for key in ("lr", "lr_end", "stage1_lr", "stage1_lr_end", "alpha", "weight_decay", "max_grad_norm"):
            if key in o and not 0 <= o[key] < math.inf:  # NaN and inf too: they would train, then fail to be written
                above = "> 0" if key in ("lr", "stage1_lr", "alpha") else ">= 0"
                raise UserError(f"--{key.replace('_', '-')} must be a finite number {above}, got {o[key]}")
        for key in ("lr", "stage1_lr"):  # a zero learning rate trains nothing: an adapter with no effect
            if key in o and o[key] == 0:
                raise UserError(f"--{key.replace('_', '-')} 0 would train nothing (an adapter equal to its start); "
                                "expected a learning rate > 0")
        if o.get("alpha") == 0:  # LoRA's update is (alpha / rank) * B @ A
            raise UserError("--alpha 0 scales the LoRA update to nothing (an adapter with no effect, which "
                            "`harness run --adapter` refuses); expected alpha > 0")
        for key in ("epochs", "stage1_epochs", "batch_size", "micro_batch_size", "max_steps"):
            if key in o and o[key] < 1:
                raise UserError(f"--{key.replace('_', '-')} must be at least 1, got {o[key]}")
        if "warmup_steps" in o and o["warmup_steps"] < 0:
            raise UserError(f"--warmup-steps must be >= 0, got {o['warmup_steps']}")
        if "dropout" in o and not 0.0 <= o["dropout"] < 1.0:
            raise UserError(f"--dropout must be in [0, 1), got {o['dropout']}")
        if o.get("schedule", "cosine") not in SCHEDULES:
            raise UserError(f"--schedule {o['schedule']}: expected one of {', '.join(SCHEDULES)}")
        if not 0 <= self.seed <= SEED_MAX:
            raise UserError(f"--seed must be a whole number from 0 to {SEED_MAX} (a 64-bit seed), got {self.seed}")
        if self.save_every is not None and self.save_every < 1:
            raise UserError(f"--save-every must be at least 1, got {self.save_every}")
        if not self.stage1_task:
            given = [flag for flag, value in (("--stage1-data-dir", self.stage1_data_dir),
                                              ("--stage1-source", self.stage1_source),
                                              ("--stage1-prompt", self.stage1_prompt)) if value is not None]
            given += [f"--{key.replace('_', '-')}" for key in ("stage1_lr", "stage1_lr_end", "stage1_epochs")
                      if key in o]  # settings of a stage that would not run
            if given:
                raise UserError(f"{', '.join(given)} given without --stage1-task (the captioning task of stage 1)")
        if self.out.exists() and not self.out.is_dir():  # before any model loads
            raise UserError(f"--out {self.out} is a file; expected a new or empty folder for the adapter")
        _check_dir("--data-dir", self.data_dir)
        _check_dir("--stage1-data-dir", self.stage1_data_dir)
        if self.stage1_task:
            self._check_stage1_source()

    def _check_unused(self, o: dict[str, Any]) -> None:
        """Settings that would change nothing are refused rather than recorded as if they had been used."""
        if self.method == "full":
            unused = [f"--{key}" for key in LORA_ONLY if key in o]
            if unused:
                raise UserError(f"{', '.join(unused)} given with --method full, which trains the weights "
                                f"themselves (no LoRA adapter); drop {_them(unused)}, or use --method lora")
        if o.get("schedule") == "constant":
            ends = [f"--{key.replace('_', '-')}" for key in ("lr_end", "stage1_lr_end") if key in o]
            if ends:
                raise UserError(f"{', '.join(ends)} given with --schedule constant, which keeps the peak rate "
                                f"(nothing decays); drop {_them(ends)}, or use --schedule cosine or linear")

    def stage1_prompt_variant(self, stage1_prompts: Any) -> tuple[str | None, str | None]:
        """(variant, note) of stage 1's prompt: --stage1-prompt; else --prompt when stage 1's task has that
        variant (PeFoMed's `[caption]` stage before its `[vqa]` one), else the default, with a note saying so."""
        if self.stage1_prompt is not None or self.prompt in (None, "default"):
            return self.stage1_prompt, None
        if self.prompt in stage1_prompts:
            return self.prompt, None
        return None, (f"note: stage 1 ({self.stage1_task}) uses its 'default' prompt: it has no '{self.prompt}' "
                      f"variant (its variants: {', '.join(sorted(stage1_prompts))}; choose with --stage1-prompt)")

    def _check_stage1_source(self) -> None:
        """Stage 1's task, source and data folder, checked up front with errors naming the --stage1-* flags."""
        from harness import plugin_manager
        from harness.task import Task

        with self.stage1_errors():
            stage1 = Task(plugin_manager.task_config(self.stage1_task), source=self.stage1_source,
                          data_dir=self.stage1_data_dir)
        if stage1.id == plugin_manager.task_config(self.task).id:  # also under another name (an alias)
            raise UserError(f"--stage1-task {self.stage1_task} is the same task as --task {self.task}; "
                            "stage 1 is the captioning stage")
        if stage1.kind == "vqa":
            raise UserError(f"--stage1-task {self.stage1_task} is a VQA task; stage 1 trains on captions or "
                            "reports (e.g. phantom-caption, rocov2)")

    @contextmanager
    def stage1_errors(self) -> Iterator[None]:
        """Errors about stage 1's data name the --stage1-* flags (the task's messages name `harness run`'s)."""
        try:
            yield
        except UserError as exc:
            message = str(exc).replace("--data-dir", "--stage1-data-dir").replace("--source", "--stage1-source")
            raise UserError(f"--stage1-task {self.stage1_task}: {message}") from None

    def hyperparameters(self, model_id: str, family: str) -> Hyper:
        values = {**GENERIC, "targets": FAMILY_TARGETS.get(family, "llm-attn"),
                  **MODEL_DEFAULTS.get(model_id, {}),
                  **{k: v for k, v in self.overrides.items() if v is not None}}
        if values["schedule"] == "constant":  # the rate stays at the peak: record no end rate that is not used
            values.update(lr_end=values["lr"], stage1_lr_end=values["stage1_lr"])
        return Hyper(**values)

    def check_settings(self, model_id: str) -> None:
        """Checks of the settings after this model's defaults, before the model loads: a micro-batch is a part of
        a batch; the schedule decays from lr to lr_end, so an end rate above the peak is a mistake (often a
        default's left under a small --lr)."""
        values = asdict(self.hyperparameters(model_id, ""))
        given = {key for key, value in self.overrides.items() if value is not None}
        micro, batch = values["micro_batch_size"], values["batch_size"]
        if micro is not None and micro > batch:
            batch_is = "--batch-size" if "batch_size" in given else "the batch size (this model's default)"
            raise UserError(f"--micro-batch-size {micro} is above {batch_is} {batch}: a micro-batch is a part of a "
                            "batch (gradient accumulation); expected at most the batch size")
        if values["schedule"] == "constant":
            return
        for prefix in ("", "stage1_") if self.stage1_task else ("",):
            lr, end = values[f"{prefix}lr"], values[f"{prefix}lr_end"]
            if end > lr:
                flag = f"--{prefix.replace('_', '-')}lr"
                end_is = "" if f"{prefix}lr_end" in given else " (this model's default)"
                raise UserError(f"{flag}-end {end:g}{end_is} is above {flag} {lr:g}: the schedule decays from "
                                f"{flag} to {flag}-end, so expected {flag}-end <= {flag}")


def _them(flags: list[str]) -> str:
    return "it" if len(flags) == 1 else "them"


def hashed_config(cfg: FinetuneConfig, hyper: Hyper, base: dict[str, Any],
                  stages: list[dict[str, Any]], main_samples: int | None) -> dict[str, Any]:
    """What changes the trained weights (not the device, checkpoint cadence or progress bar). Settings the
    data makes moot count as not given: a --max-steps at or above the main stage's steps (on `main_samples`), a
    --micro-batch-size not below the batch size (the same training, so the same fine-tune to resume)."""
    from dataclasses import replace

    moot: dict[str, Any] = {}  # main_samples None: the settings as given (the hash of fine-tunes made before)
    if main_samples is not None and hyper.max_steps is not None \
            and hyper.max_steps >= math.ceil(main_samples / hyper.batch_size) * hyper.epochs:
        moot["max_steps"] = None
    if main_samples is not None and hyper.micro_batch_size is not None and hyper.micro_batch_size >= hyper.batch_size:
        moot["micro_batch_size"] = None
    settings = replace(hyper, **moot).settings(cfg.method)
    config = {"base": base, "stages": stages, "hyper": settings, "method": cfg.method, "seed": cfg.seed,
              "limit": cfg.limit}
    return json.loads(json.dumps(config, default=str))  # as checkpoints and the manifest record it (same hash)


def continued_rank(plugin: Any, hyper: Hyper, cfg: FinetuneConfig) -> Hyper:
    """`hyper` with the rank of the LoRA a self-training plugin loaded to continue (pefomed `checkpoint=`: it keeps
    its own rank, whatever --rank says), so that the manifest and config hash record what is trained; `hyper` itself
    when they agree. A --rank given that differs is refused (it would change nothing)."""
    from dataclasses import replace

    loaded = (getattr(plugin, "lora_info", None) or {}).get("r")
    if not loaded or int(loaded) == hyper.rank:
        return hyper
    if cfg.overrides.get("rank") is not None:
        plugin.close()
        raise UserError(f"--rank {hyper.rank}: the LoRA this fine-tune continues (--model-args) has rank {loaded}, "
                        f"which it keeps; drop --rank, or give --rank {loaded}")
    return replace(hyper, rank=int(loaded))
