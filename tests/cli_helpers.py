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
