"""tiny-vlm builds clean up after killed builds: temporary build folders and pretraining checkpoint temporaries
of dead processes are removed by the next build; a live build's, and the resumable checkpoint, are kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = "from harness.plugins.tiny_vlm import ensure_tiny_vlm; import sys; ensure_tiny_vlm(sys.argv[1], base='random')"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_build_leaves_nothing_after_the_next_one(tmp_path):
    from harness.plugins.tiny_vlm import ensure_tiny_vlm, version

    cache = tmp_path / "cache"
    folder = cache / "tiny-vlm"
    proc = subprocess.Popen([sys.executable, "-c", BUILD, str(cache)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 300
    while not (folder.is_dir() and any(p.name.startswith(".") for p in folder.iterdir())):
        assert proc.poll() is None, "the build ended before its temporary folder appeared"
        assert time.time() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name for p in folder.iterdir()][0].startswith(f".{version()}-random.")  # the killed build's

    built = ensure_tiny_vlm(cache, base="random")
    assert (built / "config.json").is_file()
    assert sorted(p.name for p in folder.iterdir()) == [built.name]
    from harness.io import NEW_DIR_MODE, NEW_FILE_MODE

    modes = {p.stat().st_mode & 0o777 for p in built.rglob("*") if p.is_file()}
    assert modes == {NEW_FILE_MODE} and built.stat().st_mode & 0o777 == NEW_DIR_MODE  # a shared cache: not 0600/0700


def test_stale_temporaries_are_told_from_live_ones(tmp_path):
    from harness.plugins.tiny_vlm import remove_stale_temporaries, temp_tag

    host = temp_tag().split(".")[0]
    old = time.time() - 2 * 3600
    names = {  # name: (what, removed?)
        f".v4-phantom1-random.{host}.{dead_pid()}.ab_12cd": ("dir", True),  # a killed build's
        f".v4-phantom1-random.{temp_tag()}.x1y2z3": ("dir", False),  # this process's: alive
        ".v3-phantom1-random.q8w7e6r5": ("old dir", True),  # an older harness's, two hours old
        ".v4-phantom1-pretrained.k0j9h8g7": ("dir", False),  # an older harness's, fresh (maybe building)
        f".v4-phantom1-pretrained.otherhost.{os.getpid()}.m1n2b3": ("dir", False),  # another host's, fresh
        f".v4-phantom1-pretrained.checkpoint.pt.{host}.{dead_pid()}.tmp": ("file", True),  # a killed write
        ".v4-phantom1-pretrained.checkpoint.pt.12345.tmp": ("old file", True),  # an older harness's
        ".v4-phantom1-pretrained.checkpoint.pt": ("old file", False),  # the resumable checkpoint
        "v4-phantom1-random": ("old dir", False),  # a finished build
    }
    for name, (kind, _) in names.items():
        path = tmp_path / name
        if "dir" in kind:
            path.mkdir()
        else:
            path.write_bytes(b"x")
        if kind.startswith("old"):
            os.utime(path, (old, old))
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(n for n, (_, gone) in names.items() if gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, (_, gone) in names.items() if not gone)
