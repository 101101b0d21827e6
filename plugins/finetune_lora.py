"""LoRA (or full) fine-tuning of a `hf` model on a task's train split: the engine of `harness finetune`.

A plain, deterministic torch loop: AdamW, linear warm-up then cosine decay to `lr_end` (PeFoMed's schedule),
gradient clipping, the loss on answer tokens only (plugins/finetune_data.py), the example order a function of
(seed, stage, epoch). With `--stage1-task` a captioning stage runs first and the same adapter goes on to the
main task (PeFoMed's two stages, each with its own learning rate and schedule).

Every `save_every` steps, and at the end of each stage, an atomic checkpoint (plugins/finetune_checkpoint.py)
records the trainable weights, optimizer, scheduler, random states and step; running the same command again
after a kill continues from the last one and ends with the same adapter as an uninterrupted run. SIGINT
(Ctrl-C) and SIGTERM checkpoint the step just completed before stopping, so they lose no finished step. The
output folder holds a standard PEFT adapter (`adapter_config.json`, `adapter_model.safetensors`; no
`modules_to_save`, a vLLM rank) or, with `--method full`, a complete `save_pretrained` model, plus
`manifest.json`, published last (plugins/finetune_output.py: a kill while finishing is finished by a rerun).
"""

from __future__ import annotations

import math
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import Terminated, UserError
from harness.fingerprint import config_hash as harness_config_hash
from harness.folder_lock import exclusive
from harness.plugins import finetune_checkpoint as ckpt
from harness.plugins.finetune_config import DEFAULT_SAVE_EVERY, FinetuneConfig, Hyper, continued_rank, hashed_config
from harness.plugins.finetune_data import StageData, epoch_order
from harness.plugins.finetune_guard import check_loss
from harness.plugins.finetune_manifest import base_identity, build_manifest
from harness.plugins.finetune_output import CHECKPOINTS, MANIFEST, check_out, held_config_hash, out_lock, publish
from harness.summary import plural

__all__ = ["CHECKPOINTS", "MANIFEST", "Trainer", "finetune", "lr_factor"]


def lr_factor(step: int, total: int, warmup: int, lr: float, lr_end: float, schedule: str) -> float:
    """Multiplier of the peak learning rate before optimizer step `step` (0-based) of `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = lr_end / lr if lr > 0 else 0.0
    if schedule == "linear":
        return floor + (1.0 - floor) * (1.0 - progress)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def peak_memory(device: str) -> dict[str, Any]:
    import torch

    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated(torch.device(device))
        return {"bytes": int(peak), "what": "cuda max allocated"}
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"bytes": int(rss if sys.platform == "darwin" else rss * 1024),
            "what": "process peak resident memory"}


def resolve_model(cfg: FinetuneConfig, task: Any) -> tuple[Any, Any, dict[str, str], Any]:
    """(registration, plugin class, model args, context) for --model: a registered id, or a local folder or
    hub id for the `hf` backend. Only transformers models and plugins with training hooks can be trained."""
    from harness import plugin_manager
    from harness.model_api import ModelContext
    from harness.model_args import check_model_args
    from harness.paths import cache_dir
    from harness.plugins.finetune_recipes import trains_itself
    from harness.plugins.hf import HFModel

    models = plugin_manager.models()
    args = dict(cfg.model_args)
    if cfg.model in models:
        info = models.get(cfg.model)
    elif Path(cfg.model).expanduser().is_dir() or (cfg.model.count("/") == 1 and not cfg.model.startswith(
            ("/", "~", "."))):
        info, args = models.get("hf"), {"model": cfg.model, **args}
    elif cfg.model.startswith(("/", "~", ".")) or cfg.model.count("/") > 1:  # a folder, not a model id
        raise UserError(f"--model {cfg.model}: no such folder (expected a model id of harness list models, a "
                        "checkpoint folder or a hub id such as org/name)")
    else:
        info = models.get(cfg.model)  # raises the unknown-model error with suggestions
    cls = info.load()
    if not (isinstance(cls, type) and (issubclass(cls, HFModel) or trains_itself(cls))):
        raise UserError(f"model '{info.id}' cannot be fine-tuned here: fine-tuning needs the hf backend (a "
                        "preset such as tiny-vlm or llava-1.5-7b, or a checkpoint folder) or pefomed")
    check_model_args(info.id, info.plugin, cls, cfg.model_args)  # the user's keys, before the model loads
    kinds = info.capabilities.get("task_kinds")
    if kinds and task.kind not in kinds:
        raise UserError(f"model '{info.id}' handles {'/'.join(kinds)} tasks, not '{task.kind}' ({task.id})")
    return info, cls, args, ModelContext(task=task, device=cfg.device, dtype=cfg.dtype, cache_dir=cache_dir())


class Trainer:
    """Runs the stages, step by step, with checkpoints; `state` is what a checkpoint resumes."""

    def __init__(self, cfg: FinetuneConfig, hyper: Hyper, recipe: Any, stages: list[StageData],
                 config_hash: str, config: dict[str, Any] | None = None) -> None:
        self.cfg, self.hyper, self.recipe, self.stages = cfg, hyper, recipe, stages
        self.model = recipe.model
        self.root = cfg.out / CHECKPOINTS
        self.state: dict[str, Any] = {
            "config_hash": config_hash, "config": config, "stage": 0, "stage_step": 0, "loss_curve": [],
            "stage_time_s": [0.0] * len(stages), "stage_steps_timed": [0] * len(stages), "resumed_at": [],
            "peak_memory_bytes": 0}
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # interruption bookkeeping: the last checkpointed step, the random states of the last step boundary,
        # and whether the weights are being updated or a checkpoint written (no consistent state to save then)
        self._saved_at, self._rng_at_boundary, self._updating, self._saving = -1, None, False, False
        self._mismatches_before = 0  # prompt-prefix mismatches counted before a resume
        import torch

        self.dtype, self.device = recipe.dtype, recipe.device
        self.torch = torch

    def stage_plan(self, index: int) -> dict[str, Any]:
        h = self.hyper.stage(index, len(self.stages))
        n = len(self.stages[index].samples)
        per_epoch = math.ceil(n / h["batch_size"])
        total = per_epoch * h["epochs"]
        if h.get("max_steps"):
            total = min(total, h["max_steps"])
        warmup = min(h["warmup_steps"], max(0, total - 1))
        return {**h, "steps_per_epoch": per_epoch, "total_steps": total, "warmup": warmup}

    def plan_notes(self) -> list[str]:
        """Settings the data makes moot, said before training: a warm-up longer than a stage (cut to the stage's
        steps less one, the last at the peak rate), a batch above the stage's samples (each step takes them all),
        --max-steps beyond the stage's epochs, --save-every beyond the whole run."""
        notes = []
        for i, data in enumerate(self.stages):
            plan, n = self.stage_plan(i), len(data.samples)
            steps = plural(plan["total_steps"], "step")
            if plan["warmup"] < plan["warmup_steps"]:
                cut = ("it starts at the peak rate (no warm-up)" if plan["warmup"] <= 1
                       else f"its warm-up is cut to {plural(plan['warmup'], 'step')}")
                notes.append(f"note: --warmup-steps {plan['warmup_steps']} is not shorter than the {steps} of "
                             f"{data.task.id}: {cut}")
            if plan["batch_size"] > n:
                notes.append(f"note: the batch size {plan['batch_size']} is above the {plural(n, 'training sample')}"
                             f" of {data.task.id}: each step trains on all {n}")
            if plan.get("max_steps") and plan["max_steps"] > plan["total_steps"]:
                notes.append(f"note: --max-steps {plan['max_steps']} is above the {steps} of "
                             f"{plural(plan['epochs'], 'epoch')} of {data.task.id}: it stops after those")
        every = self.cfg.save_every
        if every is not None and every >= self.total_steps():
            notes.append(f"note: --save-every {every} is not below the run's {plural(self.total_steps(), 'step')}: "
                         "checkpoints are written only at the end of each stage")
        return notes

    def _optimizer(self, plan: dict[str, Any]) -> tuple[Any, Any]:
        opt = self.torch.optim.AdamW(self.params, lr=plan["lr"], weight_decay=plan["weight_decay"],
                                     betas=(0.9, 0.999), eps=1e-8)
        sched = self.torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(
            s, plan["total_steps"], plan["warmup"], plan["lr"], plan["lr_end"], plan["schedule"]))
        return opt, sched

    def global_step(self) -> int:
        done = sum(self.stage_plan(i)["total_steps"] for i in range(self.state["stage"]))
        return done + self.state["stage_step"]

    def total_steps(self) -> int:
        return sum(self.stage_plan(i)["total_steps"] for i in range(len(self.stages)))

    def resume(self) -> tuple[Any, Any] | None:
        ckpt.clean_temporaries(self.root)
        found = ckpt.list_checkpoints(self.root)
        if not found:
            return None
        state = ckpt.read_state(found[-1])
        plan = self.stage_plan(state["stage"]) if state["stage"] < len(self.stages) else self.stage_plan(0)
        opt, sched = self._optimizer(plan)
        self.state = ckpt.restore(found[-1], self.model, opt, sched)
        self._mismatches_before = self.state.get("prefix_mismatches", 0)
        self.state["resumed_at"] = [*self.state["resumed_at"], self.global_step()]
        print(f"resuming the fine-tune in {self.cfg.out}: from its checkpoint at step {self.global_step()} of "
              f"{self.total_steps()}", file=sys.stderr)  # said even with --no-progress, as harness run says it
        if self.state["stage"] < len(self.stages) and self.state["stage_step"] == 0:
            opt, sched = self._optimizer(plan)  # a stage starts with a fresh optimizer and schedule
        return opt, sched

    def _step(self, stage: int, plan: dict[str, Any], opt: Any, sched: Any) -> tuple[float | None, float]:
        data = self.stages[stage]
        step = self.state["stage_step"]
        epoch, k = divmod(step, plan["steps_per_epoch"])
        order = epoch_order(len(data.samples), self.cfg.seed, stage, epoch)
        indices = order[k * plan["batch_size"]:(k + 1) * plan["batch_size"]]
        micro = plan["micro_batch_size"] or plan["batch_size"]
        batches = [self.recipe.prepare(data, [data.samples[i] for i in indices[start:start + micro]])
                   for start in range(0, len(indices), micro)]
        batches = [b for b in batches if b is not None]
        total = sum(n for _, n in batches)
        loss_sum = 0.0
        self.model.train()
        for batch, n in batches:
            if n == 0:
                continue
            loss = self.recipe.loss(batch)
            (loss * (n / total)).backward()
            loss_sum += float(loss.detach()) * n
        if total and plan["max_grad_norm"]:
            self.torch.nn.utils.clip_grad_norm_(self.params, plan["max_grad_norm"])
        lr = opt.param_groups[0]["lr"]
        self._updating = True  # from here until the step is counted, the weights and the state disagree
        opt.step()  # no sample of the batch readable: no gradient, so no parameter is updated
        sched.step()
        opt.zero_grad(set_to_none=True)
        return (loss_sum / total if total else None), lr  # None: a step without a loss (not NaN: JSON has none)

    def run(self, progress: bool) -> None:
        """Train to the end, checkpointing every `save_every` steps and at the end of each stage. SIGINT or
        SIGTERM: checkpoint the last completed step, then raise KeyboardInterrupt (the same on a
        KeyboardInterrupt raised mid-step, unless it came during a weight update or a checkpoint write)."""
        from tqdm import tqdm

        from harness.progress import bar_pacing

        resumed = self.resume()
        self._saved_at, self._rng_at_boundary = self.global_step(), ckpt.rng_state()
        bar = tqdm(total=self.total_steps(), initial=self.global_step(), unit="step", desc="finetune",
                   disable=not progress, dynamic_ncols=True,
                   **bar_pacing())
        opt = sched = None
        try:
            with ckpt.stop_signals() as stop:
                for stage in range(self.state["stage"], len(self.stages)):
                    plan = self.stage_plan(stage)
                    opt, sched = resumed if resumed is not None else self._optimizer(plan)
                    resumed = None
                    bar.set_description(f"finetune {self.stages[stage].task.id}")
                    while self.state["stage_step"] < plan["total_steps"]:
                        self._train_step(stage, plan, opt, sched, bar)
                        last = self.state["stage_step"] == plan["total_steps"]
                        if last or self.global_step() % (self.cfg.save_every or DEFAULT_SAVE_EVERY) == 0:
                            self._save(opt, sched)
                        if stop.requested:
                            self._save_if_new(opt, sched)
                            raise Terminated if stop.signum == signal.SIGTERM else KeyboardInterrupt
                        if last:
                            break
        except KeyboardInterrupt:
            if opt is not None and not (self._updating or self._saving):
                self._save_if_new(opt, sched, self._rng_at_boundary)
            raise
        finally:
            bar.close()

    def _train_step(self, stage: int, plan: dict[str, Any], opt: Any, sched: Any, bar: Any) -> None:
        started = time.perf_counter()
        loss, lr = self._step(stage, plan, opt, sched)
        check_loss(loss, self.global_step() + 1, self.stages[stage].task.id, self.cfg.out, self.dtype, self.cfg.method)
        self.state["stage_time_s"][stage] += time.perf_counter() - started
        self.state["stage_steps_timed"][stage] += 1
        self.state["stage_step"] += 1
        step = self.global_step()
        self.state["loss_curve"].append({"step": step, "stage": stage + 1,
                                         "loss": None if loss is None else round(loss, 6), "lr": lr})
        # the samples skipped so far (unreadable images), kept in the state: a resumed run reports them all
        self.state["skipped"] = list(dict.fromkeys([*self.state.get("skipped", []), *self.recipe.skipped]))
        self.state["prefix_mismatches"] = self._mismatches_before + self.recipe.prefix_mismatches
        self._rng_at_boundary = ckpt.rng_state()
        self._updating = False  # a consistent state again: weights, optimizer, counters and random states
        bar.update(1)
        bar.set_postfix(loss="no readable sample" if loss is None else f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)

    def _save_if_new(self, opt: Any, sched: Any, rng: dict[str, Any] | None = None) -> None:
        if self.global_step() != self._saved_at:
            self._save(opt, sched, rng)

    def _save(self, opt: Any, sched: Any, rng: dict[str, Any] | None = None) -> None:
        memory = peak_memory(self.device)
        self.state["peak_memory_bytes"] = max(self.state["peak_memory_bytes"], memory["bytes"])
        self.state["peak_memory_what"] = memory["what"]
        state = dict(self.state)
        stage = self.state["stage"]
        next_stage = stage + 1 < len(self.stages) and self.state["stage_step"] >= self.stage_plan(stage)["total_steps"]
        if next_stage:  # the checkpoint that ends a stage resumes at the start of the next one
            state.update(stage=stage + 1, stage_step=0)
        step = self.global_step()
        self._saving = True
        try:
            ckpt.save(self.root, step, self.model, opt, sched, state, rng=rng)
        finally:
            self._saving = False
        self._saved_at = step
        if next_stage:
            self.state.update(stage=state["stage"], stage_step=0)


def finetune(cfg: FinetuneConfig, progress: bool = True) -> dict[str, Any]:
    """Train (or resume, or find finished) the fine-tune `cfg` describes; returns its manifest."""
    cfg.validate()
    # one process per --out (the same command twice deleted each other's checkpoints being written), taken before
    # the data and the model load: the second process waits without holding a model, then finds it trained
    folder, name = out_lock(cfg.out)
    with exclusive(folder, name, what=f"--out {cfg.out}", transient=True):
        return _finetune(cfg, progress)


def _finetune(cfg: FinetuneConfig, progress: bool) -> dict[str, Any]:
    """finetune() holding the lock of --out."""
    import torch

    from harness.plugins.finetune_data import load_stage_data
    from harness.plugins.finetune_recipes import trains_itself

    stages = []
    note = None
    if cfg.stage1_task:
        from harness import plugin_manager

        stage1_prompt, note = cfg.stage1_prompt_variant(plugin_manager.task_config(cfg.stage1_task).prompts)
        with cfg.stage1_errors():
            stages.append(load_stage_data(cfg.stage1_task, data_dir=cfg.stage1_data_dir, source=cfg.stage1_source,
                                          prompt=stage1_prompt, limit=cfg.limit))
    stages.append(load_stage_data(cfg.task, data_dir=cfg.data_dir, source=cfg.source, prompt=cfg.prompt,
                                  limit=cfg.limit))
    if note:  # once the main task took --prompt: a variant it lacks too is the one error, without this note
        print(note, file=sys.stderr)
    info, cls, args, context = resolve_model(cfg, stages[-1].task)
    cfg.check_settings(info.id)
    for data in stages[:-1]:
        if data.task.kind not in info.capabilities.get("task_kinds", [data.task.kind]):
            raise UserError(f"model '{info.id}' cannot train on {data.task.kind} task '{data.task.id}'")
    self_training = trains_itself(cls)
    if self_training:
        hyper = cfg.hyperparameters(info.id, "chat")
        args = {**args, "train": "true", "lora_r": str(hyper.rank), "lora_alpha": str(hyper.alpha),
                "lora_dropout": str(hyper.dropout)}
    # one spelling of the base (`llava/`, `./llava` and `/abs/llava`; a default typed out), as harness run names it:
    # a resume with another spelling of the same base was refused as another fine-tune
    if hasattr(cls, "canonical_args"):
        args = cls.canonical_args(args, context)
    base = {"id": info.id, "args": args, **cls.run_identity(args, context)}
    torch.manual_seed(cfg.seed)  # the fresh LoRA and projection of a plugin that trains itself
    plugin = cls(args, context)
    if not self_training:
        hyper = cfg.hyperparameters(info.id, plugin.family)
    elif (kept := continued_rank(plugin, hyper, cfg)) is not hyper:  # a LoRA it continues keeps its rank
        hyper, args = kept, {**args, "lora_r": str(kept.rank)}
        base = {"id": info.id, "args": args, **cls.run_identity(args, context)}
    described = [s.describe() for s in stages]
    config = hashed_config(cfg, hyper, base, described, len(stages[-1].samples))
    as_given = hashed_config(cfg, hyper, base, described, None)
    if held_config_hash(cfg.out) == harness_config_hash(as_given):
        config = as_given  # begun before moot settings hashed as absent: resumed under its own hash
    return _train_into_out(cfg, stages, info, plugin, hyper, base, config, self_training, progress)


def _train_into_out(cfg: FinetuneConfig, stages: list[StageData], info: Any, plugin: Any, hyper: Hyper,
                    base: dict[str, Any], config: dict[str, Any], self_training: bool,
                    progress: bool) -> dict[str, Any]:
    """Train (or resume, or find finished) into --out, then publish; `config` is what the config hash hashes."""
    import torch

    from harness.plugins.finetune_recipes import PeftRecipe, PluginRecipe
    from harness.plugins.lora_targets import plan_targets

    config_hash = harness_config_hash(config)
    done, already = check_out(cfg.out, config_hash, cfg.keep_checkpoints, config)
    if done is not None:
        plugin.close()
        return {**done, "already_done": True} if already else done
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    torch.manual_seed(cfg.seed)
    if self_training:
        recipe: Any = PluginRecipe(plugin, info.id, hyper, cfg.method)
    else:  # the targets are planned before --out is made: a preset that matches nothing leaves no folder
        recipe = PeftRecipe(plugin, plan_targets(plugin.model, hyper.targets, cfg.method), hyper.rank, hyper.alpha,
                            hyper.dropout)
    cfg.out.mkdir(parents=True, exist_ok=True)
    counts = recipe.counts()
    identity = base_identity(plugin)
    base = {**base, "identity": identity}
    if base.get("family") == "auto" and identity.get("family"):  # the family found, not the option's 'auto'
        base["family"] = identity["family"]
    trainer = Trainer(cfg, hyper, recipe, stages, config_hash, config)
    for note in trainer.plan_notes():
        print(note, file=sys.stderr)
    trainer.state["started"] = started  # a resume restores the first attempt's
    trainer.run(progress)
    started = trainer.state.get("started", started)  # a checkpoint of an older harness has none
    if all(point["loss"] is None for point in trainer.state["loss_curve"]):
        skipped = trainer.state.get("skipped", [])
        why = (f"{plural(len(skipped), 'sample')} skipped, the first {skipped[0]}: their images do not decode"
               if skipped else "no batch held an answer token to learn")
        raise UserError(f"no training sample could be read ({why}); repair the data and delete {cfg.out} to train "
                        "again")
    manifest = build_manifest(trainer, cfg, base, recipe.plan_info(), counts, config, started)
    publish(cfg.out, lambda folder: recipe.save(folder, base, cfg.model), manifest, cfg.keep_checkpoints)
    plugin.close()
    return manifest
