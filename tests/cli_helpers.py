"""Checks shared by the command-line tests: a user mistake ends with exit code 2 and one `error:` line."""

from __future__ import annotations

import subprocess


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The single stderr line of a refused command (asserting exit code 2 and no traceback)."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# A shell starts background jobs (CI runners often are one) with SIGINT ignored, and Python then keeps ignoring
# Ctrl-C; a child run as `python -c CTRL_C_AS_IN_A_TERMINAL <harness args>` restores the KeyboardInterrupt handler
# a terminal's foreground Python has, then runs `harness`. (Not a preexec_fn: Python code between fork and exec can
# deadlock on a lock another thread of pytest held.)
CTRL_C_AS_IN_A_TERMINAL = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                           "runpy.run_module('harness', run_name='__main__', alter_sys=True)")
