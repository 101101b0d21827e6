"""A fine-tune whose loss stops being finite is stopped at that step with one line, not trained to its end."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.errors import UserError


def check_loss(loss: float | None, step: int, task_id: str, out: Path, dtype: Any, method: str) -> None:
    """Raise when a step's loss is NaN or infinite: every later step would train on broken weights, and the
    manifest (strict JSON) could not even be written at the end; a rerun resumes from the last finite checkpoint
    and diverges again, so the folder must go."""
    if loss is None or math.isfinite(loss):
        return
    why = "the learning rate is too high for it (lower --lr, or keep --max-grad-norm on)"
    if method == "full" and "float16" in str(dtype) and "bfloat16" not in str(dtype):
        why = "float16 weights overflow or underflow under AdamW (use --dtype bfloat16 or float32)"
    raise UserError(f"the loss of step {step} ({task_id}) is {loss}: the fine-tune diverged, and {why}; delete "
                    f"{out} and train again with other settings")
