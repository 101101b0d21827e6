"""`harness finetune`: train LoRA adapters (PEFT) for a hf model or pefomed on a task's train split (resumable).

Example: `harness finetune --model tiny-vlm --task phantom-vqa --out adapters/demo`, then
`harness run --model tiny-vlm --adapter adapters/demo --task phantom-vqa`. Two-stage training as in PeFoMed:
`--stage1-task <caption task>`. Rerunning the same command after a kill resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from harness.plugins.finetune_config import DEFAULT_SAVE_EVERY, GENERIC, MODEL_DEFAULTS
from harness.summary import plural

TARGET_HELP = ("llm-attn (LoRA on the language model's q/v projections), llm-all-linear, decoder-only, "
               "encoder-only, full, or re:<regex> (default: llm-attn for chat VLMs, decoder-only for "
               "captioners; " + "; ".join(f"{m} {d['targets']}" for m, d in MODEL_DEFAULTS.items() if "targets" in d)
               + ")")


def _default(key: str, note: str = "") -> str:
    """'default 64; tiny-vlm 128': the generic default and the models whose own default differs."""
    def shown(value: float) -> str:
        return f"{value:g}".replace("e-0", "e-")  # exact: 3e-5, 2.5e-5, 0.0001

    others = [f"{model} {shown(values[key])}" for model, values in MODEL_DEFAULTS.items()
              if key in values and values[key] != GENERIC[key]]
    return "; ".join([f"default {shown(GENERIC[key])}{note}", *others])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="train a LoRA adapter on a task's train split", description=__doc__)
    p.add_argument("--model", required=True,
                   help="hf preset id (see `harness list models`), checkpoint folder, or pefomed")
    p.add_argument("--model-args", action="append", default=[], metavar="K=V[,K=V]",
                   help="model arguments (hf: revision=..., family=...; pefomed: llm=...,vision=...)")
    p.add_argument("--task", required=True, help="task to train on (its train split)")
    p.add_argument("--out", type=Path, required=True, help="output folder for the adapter and manifest.json")
    p.add_argument("--data-dir", type=Path, default=None, help="folder with your local copy of the dataset")
    p.add_argument("--source", default=None, help="which of the task's sources to read")
    p.add_argument("--prompt", default=None, help="prompt variant of the task (default: 'default')")
    p.add_argument("--stage1-task", default=None, help="captioning task trained first (PeFoMed's stage 1)")
    p.add_argument("--stage1-data-dir", type=Path, default=None, help="folder with your copy of stage 1's dataset")
    p.add_argument("--stage1-source", default=None, help="which of stage 1's task's sources to read")
    p.add_argument("--stage1-prompt", default=None,
                   help="prompt variant of stage 1 (default: the --prompt variant when its task has one, else "
                        "'default')")
    p.add_argument("--limit", type=int, default=None, help="train on the first N samples of each stage")
    g = p.add_argument_group("adapter")
    g.add_argument("--targets", default=None, help=TARGET_HELP)
    g.add_argument("--method", choices=["lora", "full"], default="lora",
                   help="lora: PEFT adapter; full: train the selected parts' weights and save a whole model")
    g.add_argument("--rank", type=int, default=None, help="LoRA rank, one vLLM serves: 1, 8, 16, 32, 64, 128, 256, "
                   f"320, 512 ({_default('rank')})")
    g.add_argument("--alpha", type=float, default=None, help=f"LoRA alpha ({_default('alpha')})")
    g.add_argument("--dropout", type=float, default=None, help=f"LoRA dropout ({_default('dropout')})")
    o = p.add_argument_group("optimisation (AdamW)")
    o.add_argument("--lr", type=float, default=None, help=f"peak learning rate ({_default('lr')})")
    o.add_argument("--lr-end", type=float, default=None,
                   help=f"final learning rate of the decay, at most --lr ({_default('lr_end')})")
    o.add_argument("--stage1-lr", type=float, default=None,
                   help=f"stage-1 peak learning rate ({_default('stage1_lr')})")
    o.add_argument("--stage1-lr-end", type=float, default=None,
                   help=f"stage-1 final learning rate ({_default('stage1_lr_end')})")
    o.add_argument("--schedule", choices=["cosine", "linear", "constant"], default=None,
                   help="after the warm-up (default cosine)")
    o.add_argument("--warmup-steps", type=int, default=None,
                   help=f"optimizer steps of linear warm-up to the peak learning rate ({_default('warmup_steps')})")
    o.add_argument("--epochs", type=int, default=None,
                   help=f"epochs of the main task ({_default('epochs', note=', PeFoMed: 50')})")
    o.add_argument("--stage1-epochs", type=int, default=None,
                   help=f"epochs of stage 1 ({_default('stage1_epochs')})")
    o.add_argument("--max-steps", type=int, default=None, help="stop the main stage after N optimizer steps")
    o.add_argument("--batch-size", type=int, default=None,
                   help=f"examples per optimizer step ({_default('batch_size')})")
    o.add_argument("--micro-batch-size", type=int, default=None,
                   help="examples per forward pass (gradient accumulation; default: the batch size)")
    o.add_argument("--weight-decay", type=float, default=None, help=f"AdamW weight decay ({_default('weight_decay')})")
    o.add_argument("--max-grad-norm", type=float, default=None,
                   help="gradient clipping (default 1.0; 0: off)")
    o.add_argument("--seed", type=int, default=0, help="seed of initialisation, dropout and data order")
    r = p.add_argument_group("run")
    r.add_argument("--save-every", type=int, default=None,
                   help=f"checkpoint every N optimizer steps (default {DEFAULT_SAVE_EVERY}; and at each stage's end)")
    r.add_argument("--keep-checkpoints", action="store_true", help="keep <out>/checkpoints after finishing")
    r.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    r.add_argument("--dtype", default=None,
                   help="bfloat16, float16, float32 (default: bf16 on GPU, fp32 on CPU)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


OVERRIDES = ("targets", "rank", "alpha", "dropout", "lr", "lr_end", "stage1_lr", "stage1_lr_end", "schedule",
             "warmup_steps", "epochs", "stage1_epochs", "max_steps", "batch_size", "micro_batch_size",
             "weight_decay", "max_grad_norm")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def _run_args(base: dict[str, Any]) -> str:
    """The --model-args to evaluate the adapter with: the base model's, less the training-only ones."""
    training_only = ("train", "lora_r", "lora_alpha", "lora_dropout", "checkpoint")
    args = {k: v for k, v in base.get("args", {}).items() if k not in training_only}
    return f" --model-args {shlex.quote(','.join(f'{k}={v}' for k, v in args.items()))}" if args else ""


def _full_model_args(base: dict[str, Any], out: Path) -> str:
    """The --model-args of a fully fine-tuned model: model=<out> and the base's prompt and decoding args
    (prepend_modality=true, ...: the model was trained with them), less those of the base's checkpoint."""
    from harness.plugins.hf_presets import ARGS

    kept = {k: v for k, v in base.get("args", {}).items() if k in ARGS and k not in ("model", "revision",
                                                                                     "merge_adapter")}
    return shlex.quote(",".join(f"{k}={v}" for k, v in {"model": str(out), **kept}.items()))


def _prompt(manifest: dict[str, Any]) -> str:
    """The data and prompt flags of the use-line: the folder trained on (and its source), the prompt variant."""
    task = manifest["task"]
    data = f" --data-dir {shlex.quote(task['data_dir'])} --source {task['source']}" if task.get("data_dir") else ""
    variant = task.get("prompt_variant", "default")
    return data + ("" if variant == "default" else f" --prompt {variant}")


def _loss(curve: list[dict[str, Any]], what: str) -> str | None:
    """'loss 2.1034 (mean of the first 10 steps) -> 0.8123 (of the last 10)': a single step's loss is noisy."""
    curve = [point for point in curve if point["loss"] is not None]  # steps without a readable sample
    if not curve:
        return None
    if len(curve) == 1:
        return f"{what}: {curve[0]['loss']:.4f} (its one step)"
    k = max(1, min(10, len(curve) // 2))
    head = sum(c["loss"] for c in curve[:k]) / k
    tail = sum(c["loss"] for c in curve[-k:]) / k
    if k == 1:
        return f"{what}: {head:.4f} (first step) -> {tail:.4f} (last step)"
    return f"{what}: {head:.4f} (mean of the first {k} steps) -> {tail:.4f} (of the last {k})"


def _stage_line(stage: dict[str, Any], schedule: str | None) -> str:
    task = stage["task"]
    rate = (f"lr {stage['lr']:g} (constant)" if schedule == "constant"
            else f"lr {stage['lr']:g} -> {stage['lr_end']:g} ({schedule or 'cosine'})")
    return (f"{stage['name']}: {task['id']} ({task['split']} split, {plural(task['n_samples'], 'sample')}, "
            f"prompt '{task['prompt_variant']}', data {task['fingerprint']}): {plural(stage['steps'], 'step')}, "
            f"{_epochs(stage)}, {rate}, {stage['train_time_s']:.1f} s")


def _targets_detail(targets: dict[str, Any]) -> str:
    """' (q_proj, v_proj: 64 modules; also trained: llama_proj ...)': what the preset's name stands for here."""
    names = targets.get("target_modules")
    if "n_modules" in targets:
        what = f"{', '.join(names)}: " if isinstance(names, list) else ""
        parts = [f"{what}{plural(targets['n_modules'], 'module')}"]
    elif "n_parameter_tensors" in targets:
        parts = [plural(targets["n_parameter_tensors"], "parameter tensor")]
    else:
        return ""
    if targets.get("also_trained"):
        parts.append(f"also trained: {', '.join(targets['also_trained'])}")
    return f" ({'; '.join(parts)})"


def _hyper_line(manifest: dict[str, Any]) -> str:
    h = manifest["hyperparameters"]
    parts = [f"rank {h['rank']}, alpha {h['alpha']:g}, dropout {h['dropout']:g}"] if manifest["targets"].get(
        "method", "lora") == "lora" else []
    micro = f" (micro-batches of {h['micro_batch_size']})" if h.get("micro_batch_size") else ""
    used = sorted({stage["warmup_steps"] for stage in manifest["stages"]} - {h["warmup_steps"]})
    cut = f" (cut to {' and '.join(map(str, used))}: shorter stages)" if used else ""  # as the note said
    parts += [f"batch {h['batch_size']}{micro}", f"warm-up {plural(h['warmup_steps'], 'step')}{cut}",
              f"weight decay {h['weight_decay']:g}",
              f"grad-norm clip {h['max_grad_norm']:g}" if h["max_grad_norm"] else "no grad-norm clip",
              f"seed {manifest['seed']}"]
    return "hyperparameters: " + ", ".join(parts)


def report(manifest: dict[str, Any], out: Path) -> str:
    """The printed summary: what was trained, with what, its size and cost, and how to use it."""
    lines = []
    base = manifest["base_model"]
    if manifest.get("already_done"):
        lines.append(f"already trained ({out / 'manifest.json'}); delete the folder to train again")
    schedule = manifest["hyperparameters"].get("schedule")
    curve = manifest["loss_curve"]
    staged = len(manifest["stages"]) > 1
    for number, stage in enumerate(manifest["stages"], start=1):
        lines.append(_stage_line(stage, schedule))
        if staged and (loss := _loss([c for c in curve if c["stage"] == number], f"  {stage['name']} loss")):
            lines.append(loss)  # one line per stage: stage 2's loss is on other data than stage 1's
    targets = manifest["targets"]
    where = base.get("hub_id") or base.get("path") or base.get("args", {}).get("llm")
    revision = f", revision {base['revision']}" if base.get("revision") else ""
    how = "LoRA" if targets["method"] == "lora" else "full training"  # --targets full is LoRA on every layer
    lines.append(f"base model: {base['id']} ({where}{revision}); {how} on target preset '{targets['preset']}'"
                 f"{_targets_detail(targets)}")
    lines.append(_hyper_line(manifest))
    share = f"{100 * manifest['trainable_share']:.3f}%"
    if manifest["kind"] != "full-model":
        share += "; the total counts the adapter's own, as PEFT does"
    lines.append(f"trainable parameters: {manifest['trainable_parameters']:,} of "
                 f"{manifest['total_parameters']:,} ({share})")
    per_step = manifest.get("time_per_step_s")
    lines.append(f"time per step: {per_step:.3f} s" if per_step is not None else "time per step: n/a")
    lines.append(f"peak memory: {_size(manifest['peak_memory_bytes'])} ({manifest.get('peak_memory_what')})")
    if not staged and (loss := _loss(curve, "loss")):
        lines.append(loss)
    if manifest.get("skipped_samples"):
        skipped = manifest["skipped_samples"]
        lines.append(f"skipped (image unreadable): {plural(len(skipped), 'sample')} ({', '.join(skipped[:5])}"
                     f"{', ...' if len(skipped) > 5 else ''}), not trained on")
    if manifest.get("resumed_at_steps"):
        lines.append(f"resumed at step(s): {', '.join(str(s) for s in manifest['resumed_at_steps'])}")
    lines.append(f"fine-tune config: {manifest['config_hash']} ({out / 'manifest.json'} has every setting)")
    if manifest["kind"] == "full-model":
        lines.append(f"model: {out}  (use: harness run --model hf --model-args {_full_model_args(base, out)} "
                     f"--task {manifest['task']['id']}{_prompt(manifest)})")
    else:
        lines.append(f"adapter: {out}  (use: harness run --model {base['id']}{_run_args(base)} --adapter "
                     f"{shlex.quote(str(out))} "
                     f"--task {manifest['task']['id']}{_prompt(manifest)})")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from harness.commands.run import parse_model_args
    from harness.plugins.finetune_config import FinetuneConfig
    from harness.plugins.finetune_lora import finetune

    cfg = FinetuneConfig(
        model=args.model, task=args.task, out=args.out, model_args=parse_model_args(args.model_args),
        stage1_task=args.stage1_task, data_dir=args.data_dir, source=args.source, prompt=args.prompt,
        stage1_data_dir=args.stage1_data_dir, stage1_source=args.stage1_source,
        stage1_prompt=args.stage1_prompt,
        limit=args.limit, method=args.method, seed=args.seed, save_every=args.save_every,
        keep_checkpoints=args.keep_checkpoints, device=args.device, dtype=args.dtype,
        overrides={k: getattr(args, k) for k in OVERRIDES},
    )
    manifest = finetune(cfg, progress=not args.no_progress)
    print(report(manifest, args.out))
    return 0


def _epochs(stage: dict) -> str:
    """'1.5 epochs', or '0.469 of 8 epochs (stopped by --max-steps)' when training stopped early."""
    planned = stage.get("epochs_planned")  # manifests written before it was recorded lack it
    if planned is not None and planned != stage["epochs"]:
        return f"{stage['epochs']} of {plural(planned, 'epoch')} (stopped by --max-steps)"
    return plural(stage["epochs"], "epoch")
