"""Where the harness keeps its caches (generated phantom data, judge-call cache)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`HARNESS_CACHE_DIR`, else `$XDG_CACHE_HOME/medvlm-harness`, else `~/.cache/medvlm-harness`."""
    env = os.environ.get("HARNESS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "medvlm-harness"
