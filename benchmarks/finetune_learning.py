"""How fast `tiny-vlm` learns phantom-vqa: closed-question accuracy by question type during training.

The study behind issue 4's learning test (ARCHITECTURE.md, "Fine-tuning and the tiny model"). It trains the
cached tiny-vlm (`--base pretrained`, the default, or `random`) on the phantom-vqa train split (optionally a
larger one, `--n-train`) with the harness's own batch encoding (plugins/finetune_data.py) and prints, before
training and every `--eval-every` steps, the accuracy on the closed test questions. Accuracy is
teacher-forced: a question counts as right when every answer token and the end of sequence are the argmax,
which is exactly when greedy generation reproduces the answer. Types ending in `2` are the two-option
questions ("left or right?").

    .venv/bin/python benchmarks/finetune_learning.py --steps 1056         # what `harness finetune` does by default
    .venv/bin/python benchmarks/finetune_learning.py --base random --method lora --steps 780
    .venv/bin/python benchmarks/finetune_learning.py --base random --method full --n-train 2000 --steps 3000
    .venv/bin/python benchmarks/finetune_learning.py --base random --also "embed|norm|lm_head|patch|position"

`--method lora` is LoRA on every linear layer (rank/alpha as given); `--method full` trains every parameter;
`--freeze REGEX` then freezes the parameters whose names match; `--also REGEX` additionally trains matching
base parameters next to LoRA (what a PEFT adapter without `modules_to_save` cannot carry).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import time
from collections import defaultdict
from typing import Any


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", choices=("pretrained", "random"), default="pretrained", help="which tiny-vlm build")
    p.add_argument("--method", choices=("lora", "full"), default="lora")
    p.add_argument("--steps", type=int, default=1056, help="optimizer steps (1056 = 8 epochs of 300 cases)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-end", type=float, default=0.0, help="end of the cosine schedule")
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--rank", type=int, default=128)
    p.add_argument("--alpha", type=float, default=128.0)
    p.add_argument("--freeze", default="", help="with --method full: freeze parameters matching this regex")
    p.add_argument("--also", default="", help="with --method lora: also train base parameters matching this")
    p.add_argument("--n-train", type=int, default=300, help="phantom cases in the train split (task: 300)")
    p.add_argument("--eval-every", type=int, default=132)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if (args.freeze and args.method != "full") or (args.also and args.method != "lora"):
        p.error("--freeze goes with --method full, --also with --method lora")
    return args


def main() -> None:
    args = parse_args()
    import numpy as np
    import torch

    from harness.loaders import phantom
    from harness.model_api import ModelContext
    from harness.plugins.finetune_data import TrainEncoder, epoch_order, load_stage_data
    from harness.plugins.finetune_lora import lr_factor
    from harness.plugins.hf import HFModel
    from harness.plugins.lora_targets import apply_plan, plan_targets
    from harness.plugins.tiny_vlm import ensure_tiny_vlm

    torch.set_num_threads(args.threads)
    data = load_stage_data("phantom-vqa")
    source = data.task.source
    train = phantom.load(dataclasses.replace(source, options={**(source.options or {}), "n_train": args.n_train}),
                         "train", None, "vqa")
    closed = [s for s in phantom.load(source, "test", None, "vqa") if s.fields["answer_type"] == "CLOSED"]
    context = ModelContext(task=data.task, device="cpu", dtype="float32", cache_dir=None)
    plugin = HFModel({"model": str(ensure_tiny_vlm(base=args.base))}, context)
    torch.manual_seed(0)
    model = apply_plan(plugin.model, plan_targets(plugin.model, "full", args.method), args.rank, args.alpha, 0.0)
    if args.freeze or args.also:
        pattern = re.compile(args.freeze or args.also)
        for name, param in model.named_parameters():
            if pattern.search(name):
                param.requires_grad_(bool(args.also))
    params = [p for p in model.parameters() if p.requires_grad]
    print(f"tiny-vlm, {args.method}: {sum(p.numel() for p in params):,} trainable parameters; "
          f"{len(train)} training questions ({args.n_train} cases), {len(closed)} closed test questions, "
          f"{args.steps} steps of {args.batch_size} (~{args.steps * args.batch_size / len(train):.1f} epochs)")

    encoder = TrainEncoder(plugin)
    test_data = dataclasses.replace(data, samples=closed)
    test_batches = [(closed[i:i + 64], encoder.encode(test_data, closed[i:i + 64])) for i in range(0, len(closed), 64)]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, args.steps, args.warmup, args.lr, args.lr_end, "cosine"))
    per_epoch = math.ceil(len(train) / args.batch_size)
    started, losses = time.time(), []
    before = closed_accuracy(model, test_batches)
    print(f"step     0  closed {before['ALL']:.3f}  (the {args.base} base, before training)", flush=True)
    model.train()
    for step in range(args.steps):
        epoch, k = divmod(step, per_epoch)
        order = epoch_order(len(train), 0, 0, epoch)  # the order harness finetune uses (seed 0, one stage)
        batch = encoder.encode(data, [train[i] for i in order[k * args.batch_size:(k + 1) * args.batch_size]])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            accuracy = closed_accuracy(model, test_batches)
            model.train()
            by_type = " ".join(f"{k} {v:.2f}" for k, v in accuracy.items() if k != "ALL")
            print(f"step {step + 1:5d} {time.time() - started:5.0f} s  loss {np.mean(losses[-args.eval_every:]):.3f}"
                  f"  closed {accuracy['ALL']:.3f}  ({by_type})", flush=True)


def closed_accuracy(model: Any, batches: list[tuple[list[Any], dict[str, Any]]]) -> dict[str, float]:
    """Teacher-forced exact answers, overall and by question type (two-option questions as TYPE2)."""
    import torch

    model.eval()
    right: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    with torch.no_grad():
        for samples, batch in batches:
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            exact = ((logits.argmax(-1) == labels) | (labels == -100)).all(-1).tolist()
            for sample, ok in zip(samples, exact):
                kind = sample.fields["question_type"] + ("2" if " or " in (sample.question or "") else "")
                for key in ("ALL", kind):
                    right[key][0] += int(ok)
                    right[key][1] += 1
    return {k: v[0] / v[1] for k, v in sorted(right.items())}


if __name__ == "__main__":
    main()
