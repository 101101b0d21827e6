"""HARNESS_PLUGINS takes entry-point names (group `harness`): a name that matches none is a one-line error that
names it and lists the installed entry points, instead of silently loading no plugin.

CI installs examples/harness-plugin-example (entry point `example`, package `harness-plugin-example`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cli_helpers import error_line

HEAVY = ("torch", "transformers", "vllm", "datasets", "peft", "openai", "anthropic")


def cli(*args: str, plugins: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          env={**os.environ, "HARNESS_PLUGINS": plugins}, timeout=120)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("harness-plugin-example", "'harness-plugin-example' is the package name; its entry point is 'example'"),
        ("harness_plugin_example", "its entry point is 'example'"),
        ("exampel", "'exampel': did you mean 'example'?"),
        ("totally-unknown", "no installed plugin named 'totally-unknown'"),
    ],
)
def test_unknown_plugin_names_are_one_line_errors(value, expected):
    line = error_line(cli("list", "models", plugins=value))
    assert line.startswith(f"error: HARNESS_PLUGINS={value}: no installed plugin named '{value}'")
    assert expected in line
    assert "entry-point names" in line and "installed: example" in line


def test_only_the_unknown_names_are_named_and_known_ones_load():
    line = error_line(cli("list", "models", plugins="example, nope"))
    assert "named 'nope'" in line and "'example'" not in line.split("installed:")[0]
    listing = cli("list", "--json", plugins="example")
    assert listing.returncode == 0, listing.stderr
    assert "constant" in {m["id"] for m in json.loads(listing.stdout)["models"]}
    builtins_only = cli("list", "--json", plugins="")
    assert builtins_only.returncode == 0 and "constant" not in builtins_only.stdout


def test_a_name_from_a_plugin_left_out_says_so():
    """`constant` is the example plugin's model: with that plugin left out, the error names the plugin, not only
    look-alike built-in names."""
    proc = cli("run", "--model", "constant", "--task", "phantom-vqa", plugins="example-judge")
    line = error_line(proc)
    assert proc.returncode == 2 and line.startswith("error: unknown model 'constant'")
    assert "HARNESS_PLUGINS leaves out the installed plugin(s) example: it may come from one of them" in line


def test_the_check_stays_light():
    probe = ("import sys\nfrom harness.cli import main\nrc = main(['list'])\n"
             f"print(rc, 'HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HARNESS_PLUGINS": "nope"})
    assert proc.stdout.strip().splitlines()[-1] == "2 HEAVY="
    helped = cli("--help", plugins="nope")
    assert helped.returncode == 0 and "usage: harness" in helped.stdout
