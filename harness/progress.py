"""Progress-bar pacing shared by every bar: live in a terminal, one line every 30 s in a log file.

tqdm refreshes at least every `maxinterval` seconds from its monitor thread, so a log file's pace needs both
bounds; and `--no-progress` also silences the loading and download bars of huggingface_hub, transformers and
datasets, which read their variables when first imported (after the command has parsed its arguments).
"""

from __future__ import annotations

import os
import sys
from typing import Any

LOG_INTERVAL_S = 30.0
NO_PROGRESS_VAR = "HARNESS_NO_PROGRESS"


def bar_pacing(terminal_interval: float = 0.1) -> dict[str, Any]:
    """tqdm keyword arguments for the pace of a bar on stderr."""
    if sys.stderr.isatty():
        return {"mininterval": terminal_interval}
    return {"mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S}


def silence_library_progress_bars() -> None:
    """--no-progress: no weight-loading, download or dataset bars from the Hugging Face libraries either."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    os.environ[NO_PROGRESS_VAR] = "1"  # and bars of work a command does on the way (tiny-vlm's one-time build)


def bars_disabled() -> bool:
    """Whether the command was given --no-progress (for bars drawn far from the command's own code)."""
    return os.environ.get(NO_PROGRESS_VAR) == "1"
