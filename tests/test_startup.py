"""Start-up stays cheap: `harness --help`, `harness list` and `harness plugins` import no heavy library."""

from __future__ import annotations

import subprocess
import sys

# numpy too (~100 ms): `harness list` reads each loader's OPTIONS, so a loader imports numpy only where it uses it
HEAVY = ("torch", "transformers", "vllm", "datasets", "peft", "pycocoevalcap", "openai", "anthropic", "numpy")

PROBE = """
import sys
from harness.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def heavy_imports(argv: list[str]) -> str:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True,
                          text=True, check=True)
    return proc.stdout.strip().splitlines()[-1]


def test_help_imports_nothing_heavy():
    assert heavy_imports(["--help"]) == "HEAVY="


def test_list_imports_nothing_heavy():
    assert heavy_imports(["list"]) == "HEAVY="


def test_plugins_imports_nothing_heavy():
    assert heavy_imports(["plugins"]) == "HEAVY="


def test_list_shows_builtin_tasks_models_and_judges():
    proc = subprocess.run([sys.executable, "-m", "harness", "list"], capture_output=True, text=True, check=True)
    for name in ("vqa-rad", "slake", "pathvqa", "iu-xray", "rocov2", "phantom-vqa", "phantom-report",
                 "phantom-caption", "prior", "exact"):
        assert name in proc.stdout
    # each task's prompt variants, which --prompt takes (the listing never named them)
    slake = next(line for line in proc.stdout.splitlines() if line.split()[:1] == ["slake"])
    assert slake.endswith("prompts: default, llava-med, pefomed"), slake
