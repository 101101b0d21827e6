"""manifest.json of a fine-tune: what `harness finetune` trained, on what, with which settings, and at what cost.

Written last into the output folder (plugins/finetune_output.py); `harness finetune` prints a summary of it
(harness/commands/finetune.py) and a rerun of the same command reads it back to say "already trained".
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.run_files import FINETUNE_FORMAT

if TYPE_CHECKING:
    from harness.plugins.finetune_config import FinetuneConfig
    from harness.plugins.finetune_lora import Trainer

FORMAT = f"{FINETUNE_FORMAT}1"


def epochs_run(plan: dict[str, Any]) -> float | int:
    """Epochs a stage's steps amount to (fewer than planned when --max-steps stops it early)."""
    epochs = plan["total_steps"] / plan["steps_per_epoch"] if plan["steps_per_epoch"] else 0
    return int(epochs) if epochs == int(epochs) else round(epochs, 3)


def build_manifest(trainer: Trainer, cfg: FinetuneConfig, base: dict[str, Any], plan_info: dict[str, Any],
                   counts: tuple[int, int], config: dict[str, Any], started: str) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    from harness import __version__
    from harness.fingerprint import config_hash

    state = trainer.state
    stages = []
    for i, data in enumerate(trainer.stages):
        p = trainer.stage_plan(i)
        timed = state["stage_steps_timed"][i]
        name = f"stage{i + 1}" if len(trainer.stages) > 1 else "main"
        stages.append({"name": name, "task": data.describe(),
                       "steps": p["total_steps"], "epochs": epochs_run(p), "epochs_planned": p["epochs"],
                       "batch_size": min(p["batch_size"], len(data.samples)),
                       "lr": p["lr"], "lr_end": p["lr_end"], "warmup_steps": p["warmup"],
                       "train_time_s": round(state["stage_time_s"][i], 3),
                       "time_per_step_s": round(state["stage_time_s"][i] / timed, 4) if timed else None})
    steps_timed = sum(state["stage_steps_timed"])
    trainable, total = counts
    return {
        "format": FORMAT,
        "kind": trainer.recipe.kind,
        "config_hash": config_hash(config),
        "config": config,  # what the hash hashes: a rerun with other settings is told which differ
        "base_model": base,
        # where the data was read (not in the config hash: the fingerprint says what it was), for the use-line
        "task": {**trainer.stages[-1].describe(), "data_dir": trainer.stages[-1].task.data_dir and str(
            Path(trainer.stages[-1].task.data_dir).expanduser().resolve())},
        "stages": stages,
        "targets": plan_info,
        "hyperparameters": trainer.hyper.describe(len(trainer.stages), cfg.method),
        "seed": cfg.seed,
        "keep_checkpoints": cfg.keep_checkpoints,
        "steps": trainer.global_step(),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_share": trainable / total if total else 0.0,
        "train_time_s": round(sum(state["stage_time_s"]), 3),
        "time_per_step_s": round(sum(state["stage_time_s"]) / steps_timed, 4) if steps_timed else None,
        "peak_memory_bytes": state["peak_memory_bytes"],
        "peak_memory_what": state.get("peak_memory_what"),
        "device": trainer.device,
        "dtype": str(trainer.dtype).replace("torch.", ""),
        "resumed_at_steps": state["resumed_at"],
        "skipped_samples": state.get("skipped", []),  # over every attempt of a resumed fine-tune
        "prompt_prefix_mismatches": state.get("prefix_mismatches", 0),
        "loss_curve": state["loss_curve"],
        "versions": {"harness": __version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__},
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def base_identity(plugin: Any) -> dict[str, Any]:
    """What the loaded base model says of itself (class, commit, family found, ...), for the manifest."""
    try:
        info = plugin.identity()
    except Exception:  # identity is informative only
        return {}
    keep = ("model_class", "commit", "family", "transformers", "hub_id", "revision", "path",
            "local_fingerprint", "modality_classifier",
            "architecture", "llm", "llm_revision", "transform")  # pefomed's (its manifest said {})
    return {k: v for k, v in info.items() if k in keep}
