"""Run the harness CLI in a subprocess with the test-only plugins of tests/ registered."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import contract_plugin  # noqa: E402
import slow_plugin  # noqa: E402

from harness.cli import main  # noqa: E402
from harness.plugin_manager import get_plugin_manager  # noqa: E402

get_plugin_manager().register(slow_plugin, name="tests.slow_plugin")
get_plugin_manager().register(contract_plugin, name="tests.contract_plugin")
sys.exit(main(sys.argv[1:]))
