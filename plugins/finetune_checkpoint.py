"""Atomic, resumable training checkpoints for `harness finetune`.

A checkpoint is a folder `<out>/checkpoints/step-<N>/` holding the trainable weights
(`trainable.safetensors`), the optimizer and learning-rate scheduler states (`optimizer.pt`,
`scheduler.pt`), every random generator state (`rng.pt`: torch CPU and CUDA, numpy, python) and
`state.json` (stage, steps, loss curve, timings). It is written into a hidden temporary folder that is
fsync'd and then renamed into place, so a kill at any moment leaves either the previous checkpoint or the
new one, never half of one. Older checkpoints are removed after the rename.

`stop_signals()` turns SIGINT (Ctrl-C) and SIGTERM (Slurm, `docker stop`) into a request the training loop
answers at the next step boundary: it writes a checkpoint of the step just completed and then stops, so an
interrupted fine-tune loses no finished step. A second signal interrupts at once.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import UserError

PREFIX = "step-"
STATE = "state.json"


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder` and the folders themselves."""
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            fsync_tree(entry)
        elif entry.is_file():
            with open(entry, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(folder)


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().to("cpu").contiguous().clone()
            for n, p in model.named_parameters() if p.requires_grad}


def save(root: Path, step: int, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any],
         keep: int = 1, rng: dict[str, Any] | None = None) -> Path:
    """Write checkpoint `step` under `root` atomically and keep only the newest `keep` checkpoints. `rng`: the
    random states to record (those of the step boundary; default: the current ones)."""
    import torch
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng if rng is not None else rng_state(), tmp / "rng.pt")
        (tmp / STATE).write_text(json.dumps({**state, "step": step}, indent=1) + "\n", encoding="utf-8")
        fsync_tree(tmp)
        if final.exists():  # a checkpoint of the same step from an earlier attempt
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of killed writes are ignored)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def clean_temporaries(root: Path) -> None:
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(f".{PREFIX}"):
                shutil.rmtree(p, ignore_errors=True)


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STATE).read_text(encoding="utf-8"))


def restore(folder: Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """Load weights, optimizer, scheduler and random states from a checkpoint; return its state.json."""
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(folder / "trainable.safetensors"))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != expected:
        raise UserError(f"checkpoint {folder} does not fit this model and targets ({len(weights)} saved "
                        f"tensors, {len(expected)} trainable); delete the checkpoints folder to start over")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device, dtype=params[name].dtype))
    optimizer.load_state_dict(safe_load(folder / "optimizer.pt"))
    scheduler.load_state_dict(safe_load(folder / "scheduler.pt"))
    set_rng_state(safe_load(folder / "rng.pt"))
    return read_state(folder)


def safe_load(path: Path) -> Any:
    """torch.load with weights only (tensors, numbers, strings, containers, and the numpy array and dtype of the
    random state): a checkpoints folder copied from someone else cannot run code when a fine-tune resumes from it;
    anything else in the file is a one-line error naming it."""
    import numpy as np
    import torch

    core = getattr(np, "_core", None) or np.core  # numpy 2 / 1
    rebuild = core.multiarray._reconstruct
    allowed = [rebuild, np.ndarray, np.dtype, type(np.dtype("uint32")),
               (rebuild, "numpy.core.multiarray._reconstruct"),  # a state saved under numpy 1, read under 2
               (rebuild, "numpy._core.multiarray._reconstruct")]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError and the like: the file, not the harness
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        found = next((line for line in lines if "global" in line.lower()), lines[0] if lines else "")
        raise UserError(f"checkpoint file {path} holds more than weights and states ({found[:200]}); it was not "
                        "written by harness finetune: delete the checkpoints folder to start over") from None


class StopRequest:
    """Set by `stop_signals`' handler: the signal received (None: keep training)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """While training: SIGINT and SIGTERM ask the loop to checkpoint and stop after the current step (a second
    one raises KeyboardInterrupt at once). Only in the main thread, and never for a signal the process ignores;
    the previous handlers are restored afterwards."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: Any) -> None:
        if request.requested:
            raise KeyboardInterrupt
        request.signum = signum
        os.write(2, f"\n{signal.Signals(signum).name}: saving a checkpoint after the current step, then "
                    "stopping (signal again to stop at once)\n".encode())

    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(signum)
        if old is signal.SIG_IGN or old is None:  # ignored (e.g. nohup'ed), or set outside Python: leave it
            continue
        previous[signum] = old
        signal.signal(signum, handler)
    try:
        yield request
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
