"""Installing a test-only third-party plugin the way pip lays one out, and running the CLI with it.

`install_plugin` writes a package and its `.dist-info` (METADATA and `entry_points.txt`, group `harness`) into a
folder; `cli` runs `python -m harness` with that folder first on PYTHONPATH, so the harness finds the plugin by its
entry point and names its package (`name==0.1`), as for any installed plugin.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def install_plugin(site: Path, dist: str, module: str, files: dict[str, str]) -> None:
    """Package `module` (its `files`) of distribution `dist`, version 0.1, with entry point `dist = module.plugin`."""
    package = site / module
    package.mkdir(parents=True)
    for name, text in files.items():
        (package / name).write_text(text)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[harness]\n{dist} = {module}.plugin\n")


def cli(site: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m harness ARGS` with the plugins installed under `site` (and every other installed one)."""
    env = {**os.environ, **(env or {}),
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("HARNESS_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          timeout=300)
