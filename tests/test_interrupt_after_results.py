"""Ctrl-C (or SIGTERM) once a command has written and printed its results, while Python waits for a library's
worker thread at exit: the command's work is done and saved, so it ends with its own exit status and no traceback.
Before, the interrupt escaped the CLI's handler: a KeyboardInterrupt traceback from threading's shutdown and exit
-2 (killed by SIGINT), which scripts read as a failed run although its results were complete.

The model plugin `lingering-models` is installed the way pip lays one out (tests/plugin_site.py); its `generate`
leaves a non-daemon thread running for a few seconds, as thread pools of client libraries do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from plugin_site import install_plugin

PLUGIN = """\
from harness.hookspecs import hookimpl
from harness.registry import ModelInfo


@hookimpl
def register_models(register):
    register(ModelInfo(id="lingering", loader="lingering_models.impl:Lingering", description="leaves a thread",
                       capabilities={"task_kinds": ["vqa"]}))
"""

IMPL = """\
import threading
import time

from harness.model_api import ModelPlugin
from harness.types import GenerationOutput


class Lingering(ModelPlugin):
    def generate(self, requests):
        threading.Thread(target=time.sleep, args=(8,)).start()  # joined by Python at exit
        return [GenerationOutput(text="yes") for _ in requests]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    install_plugin(site, "lingering-models", "lingering_models", {"__init__.py": "", "plugin.py": PLUGIN,
                                                                  "impl.py": IMPL})
    return site


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_after_the_results_are_printed_keeps_the_commands_exit_status(site, tmp_path, signum):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", "--model", "lingering", "--task", "phantom-vqa",
                             "--limit", "2", "--judge", "exact", "--output", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()  # the results table is printed after results.json is written
        deadline = time.monotonic() + 120
        while proc.poll() is None and not (out / "results.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first and (out / "results.json").is_file(), proc.stderr.read() if proc.poll() is not None else first
        time.sleep(1.0)  # main() has returned: Python waits for the plugin's thread
        assert proc.poll() is None
        proc.send_signal(signum)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert [j["id"] for j in json.loads((out / "results.json").read_text())["judges"]] == ["exact"]
